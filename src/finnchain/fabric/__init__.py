"""The FPGA fabric, emulated bit for bit: a stage's QONNX compiled once into an integer program
(``compile``) and run on the CPU (``program``: numpy or onnxruntime; ``executor``: the whole
path from a model file). A board's runtime runs it in place of a FINN bitstream."""
