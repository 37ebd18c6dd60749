"""TEST STAND-IN: the few names of FINN v0.10.1 a finnchain build script touches."""
