"""FINN v0.10.1 cost model: HW layers of a QONNX model, their cycles and resources."""
