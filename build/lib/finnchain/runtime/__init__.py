"""The inference chain at run time: stage daemon, transport, accelerators, client."""
