"""Emulation: the bit-exact CPU executor that stands in for a stage's FPGA fabric."""
