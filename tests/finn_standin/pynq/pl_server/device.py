"""TEST STAND-IN for pynq.pl_server.device (imported by FINN's driver.py)."""


class Device:
    active_device = None
