"""QONNX graphs: cut points, splitting into stages, wire packing, the reference run."""
