"""finnchain: a quantized neural network split across a chain of small FPGA boards."""

__version__ = "0.1.0"
