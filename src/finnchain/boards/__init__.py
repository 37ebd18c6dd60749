"""Board catalogue."""
