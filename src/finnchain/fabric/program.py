"""A compiled stage program on onnxruntime: what an emulated board runs in place of a bitstream.

``Runner`` holds the integer program ``fabric.compile`` made from a stage's QONNX and runs batches
of codes through it. It needs numpy and onnxruntime only (no qonnx, no model tools), so a board
runs it from ``program.onnx`` and ``program.json``, written by the build (``Runner.save``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

# onnxruntime fusions that fold a float constant into integer weights (so the weights stop being
# integers and the sums stop being exact). The others (the blocked NCHWc layout, activation
# fusion) keep each element's arithmetic as written, which the bit-exactness tests check.
UNSAFE_FUSIONS = ["ConvMulFusion", "ConvAddFusion", "ConvBNFusion", "MatMulScaleFusion"]
PROGRAM, META = "program.onnx", "program.json"


class InputError(ValueError):
    """A batch that does not match what the stage takes; the message says what is wrong."""


class Runner:
    """An integer program, its input shape and range, and how its output reads back."""

    def __init__(self, program: bytes, input_shape: tuple[int, ...], input_range: tuple[int, int],
                 raw_output: bool, output_dtype: str, threads: int = 0,
                 weights: dict[str, tuple] | None = None) -> None:
        self.threads = threads
        self.session = self._session(program, {})
        self.program_bytes = program
        self.input_shape = tuple(input_shape)
        self.input_range = tuple(input_range)
        self._raw_output = raw_output  # int64 (TopK indices) rather than float codes
        self.output_dtype = np.dtype(output_dtype)
        # fully connected node -> (constant, layout, inputs, outputs) of its weight codes
        self.weights = {k: tuple(v) for k, v in (weights or {}).items()}

    def _session(self, program: bytes, overrides: dict[str, np.ndarray]) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        values = [(k, ort.OrtValue.ortvalue_from_numpy(v)) for k, v in overrides.items()]
        for name, value in values:
            opts.add_initializer(name, value)
        self._overrides = values  # onnxruntime keeps no reference to them
        return ort.InferenceSession(program, opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=UNSAFE_FUSIONS)

    def with_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Compute from now on with other weight codes for fully connected nodes (node ->
        (inputs, outputs) integer matrix, the program's shape): what a weight DMA read."""
        overrides = {}
        for node, w in weights.items():
            name, layout, *want = self._weight(node)
            if list(w.shape) != want:
                raise InputError(f"weights of {node}: shape {w.shape}, the program's "
                                 f"{tuple(want)}")
            w = np.asarray(w, np.float32)
            overrides[name] = np.ascontiguousarray(w if layout == "in_out" else w.T)
        self.session = self._session(self.program_bytes, overrides)

    def _weight(self, node: str) -> tuple:
        if node not in self.weights:
            raise InputError(f"the program has no fully connected node {node!r} whose weights "
                             f"can be replaced ({', '.join(self.weights) or 'none'})")
        return self.weights[node]

    def save(self, folder: Path) -> None:
        (folder / PROGRAM).write_bytes(self.program_bytes)
        (folder / META).write_text(json.dumps({
            "input_shape": list(self.input_shape), "input_range": list(self.input_range),
            "raw_output": self._raw_output, "output_dtype": self.output_dtype.str,
            "weights": {k: list(v) for k, v in self.weights.items()}}) + "\n")

    @classmethod
    def load(cls, folder: Path, threads: int = 0) -> Runner:
        meta = json.loads((folder / META).read_text())
        return cls((folder / PROGRAM).read_bytes(), tuple(meta["input_shape"]),
                   tuple(meta["input_range"]), meta["raw_output"], meta["output_dtype"], threads,
                   meta.get("weights"))

    def check(self, x: np.ndarray) -> np.ndarray:
        """Validate a batch and return it as float32 codes."""
        x = np.asarray(x)
        if x.dtype.kind not in "iuf":
            raise InputError(f"input dtype {x.dtype} is not numeric")
        if x.ndim == len(self.input_shape):
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise InputError(
                f"input shape {tuple(x.shape)} does not match (N, {', '.join(map(str, self.input_shape))})"
            )
        lo, hi = self.input_range
        if x.size and (x.min() < lo or x.max() > hi):
            raise InputError(f"input values outside [{lo}, {hi}] (got {x.min()}..{x.max()})")
        xf = x.astype(np.float32, copy=False)
        if x.dtype.kind == "f" and not np.array_equal(xf, np.round(xf)):
            raise InputError("input values are not integers")
        return xf

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch (N, *input_shape) of integer codes; returns the output codes."""
        xf = self.check(x)
        (y,) = self.session.run(None, {"x": xf})
        return y if self._raw_output else y.astype(self.output_dtype)


def weight_codes(folder: Path) -> dict[str, np.ndarray]:
    """Each replaceable fully connected node's weight codes as the saved program in ``folder``
    holds them, (inputs, outputs): read from its files, without an inference session (the
    controller's side; needs onnx, which a board lacks)."""
    import onnx
    from onnx import numpy_helper

    weights = json.loads((folder / META).read_text()).get("weights", {})
    inits = {i.name: i for i in onnx.load(str(folder / PROGRAM)).graph.initializer}
    out = {}
    for node, (name, layout, *_) in weights.items():
        w = numpy_helper.to_array(inits[name])
        out[node] = w if layout == "in_out" else w.T
    return out
