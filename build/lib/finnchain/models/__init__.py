"""Quantized models (Brevitas) and their export to QONNX. Needs the controller extra (torch)."""
