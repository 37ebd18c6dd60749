"""Run a stage's FINN graph with FINN's own python-mode execution, frame by frame.

Runs in FINN's environment (imports FINN and qonnx only), started by finnchain:

    python execute.py MODEL.onnx INPUTS.npy OUTPUTS.npy

MODEL is an intermediate model of a finnchain build folder (``step_finnchain_convert_to_hw.onnx``:
the stage as FINN HW layers, layout Transposes included, before specialisation); INPUTS holds
frames (N, ...) in the model's input layout as integer codes. FINN executes HW layers in python
mode here (no C++ or RTL simulation), one frame at a time as FINN's graphs have batch 1. The
outputs (N, ...) are written as int64.

One adaptation, layout only: where FINN's RemoveCNVtoFCFlatten took a Flatten away in front of
a dense layer (its weights reordered for NHWC), the MVAU is fed the 4-D feature map, which the
hardware streams as the flat vector but FINN's python-mode MVAU multiplies as is; a Reshape to
the flat NHWC vector is put back in front of such MVAUs before executing.
"""

import sys
import time

import numpy as np
from finn.core.onnx_exec import execute_onnx
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp


def flatten_dense_inputs(model: ModelWrapper) -> ModelWrapper:
    for node in list(model.graph.node):
        if not node.op_type.startswith("MVAU"):
            continue
        shape = model.get_tensor_shape(node.input[0])
        mw = getCustomOp(node).get_nodeattr("MW")
        if len(shape) > 2 and shape[-1] != mw and int(np.prod(shape[1:])) == mw:
            flat = node.input[0] + "_flat"
            target = node.input[0] + "_flat_shape"
            model.set_initializer(target, np.asarray([shape[0], mw], dtype=np.int64))
            reshape = helper.make_node("Reshape", [node.input[0], target], [flat])
            model.graph.node.insert(list(model.graph.node).index(node), reshape)
            model.set_tensor_shape(flat, [shape[0], mw])
            node.input[0] = flat
    return model


def main(argv) -> int:
    model_path, in_path, out_path = argv
    model = flatten_dense_inputs(ModelWrapper(model_path))
    name_in, name_out = model.graph.input[0].name, model.graph.output[0].name
    frames = np.load(in_path)
    outs = []
    t0 = time.time()
    for k in range(len(frames)):
        x = frames[k: k + 1].astype(np.float32)
        y = execute_onnx(model, {name_in: x})[name_out]
        outs.append(np.asarray(y))
        print(f"frame {k + 1}/{len(frames)} done, {time.time() - t0:.1f} s", flush=True)
    out = np.concatenate(outs)
    if not np.all(out == np.round(out)):
        print("FINN's outputs are not integers", file=sys.stderr)
        return 1
    np.save(out_path, out.astype(np.int64))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
