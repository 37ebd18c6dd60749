"""FINN builds: one build folder per stage, FINN's docker flow, overlays and a manifest."""
