"""Quantized models (Brevitas) and their export to QONNX. Needs the models extra (torch, Brevitas)."""
