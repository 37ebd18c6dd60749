"""TEST STAND-IN for pynq.ps: the PL clock the driver sets."""


class Clocks:
    fclk0_mhz = 100.0
