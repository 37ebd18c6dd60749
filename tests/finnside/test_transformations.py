"""Each of finnside's transformations on a small graph of its own, executed before and after
with FINN's ``execute_onnx`` (python mode for the HW layers), as FINN tests its own in
tests/transformation/. Runs in FINN's environment: ``tests/test_finn.py`` starts it there."""

from __future__ import annotations

import numpy as np
import pytest
from finn.core.onnx_exec import execute_onnx
from finnchain_steps import (
    AbsorbInputFlatten,
    BipolarInputToXnor,
    GiveForkedInputAProducer,
    MergeTwinTransposes,
    MoveMulPastDWConvKeepingInputTypes,
    MoveScalarMulPastIntegerAdd,
    NameAsPlanned,
    SplitMVAU,
    TruncAvgPoolToThresholds,
    layer_key,
)
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

HW = "finn.custom_op.fpgadataflow"
RNG = np.random.default_rng(0)


def model(nodes, inputs: dict, outputs: dict, inits: dict | None = None,
          types: dict | None = None) -> ModelWrapper:
    """A graph of ``nodes``; inputs and outputs as name -> shape (None: inferred)."""
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    vo = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()]
    for v in vo:  # (TopK's indices)
        if v.name == "i":
            v.type.tensor_type.elem_type = TensorProto.INT64
    m = ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "g", vi, vo)))
    for name, value in (inits or {}).items():
        m.set_initializer(name, value)
    for name, dt in (types or {}).items():
        m.set_tensor_datatype(name, DataType[dt])
    return m.transform(InferShapes())


def run(m: ModelWrapper, **inputs) -> dict:
    return execute_onnx(m, {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()})


def ops(m: ModelWrapper) -> list[str]:
    return [n.op_type for n in m.graph.node]


def codes(lo: int, hi: int, shape) -> np.ndarray:
    """Whole numbers lo..hi, at least three distinct ones (not degenerate)."""
    while True:
        x = RNG.integers(lo, hi + 1, shape).astype(np.float32)
        if len(np.unique(x)) > 2:
            return x


def test_MoveScalarMulPastIntegerAdd():
    s = np.float32(0.25)
    n = RNG.integers(-20, 20, (1, 10)).astype(np.float32)

    def make(bias):
        return model([helper.make_node("Mul", ["x", "s"], ["m"]),
                      helper.make_node("Add", ["m", "b"], ["a"]),
                      helper.make_node("TopK", ["a", "k"], ["v", "i"], axis=-1)],
                     {"x": [1, 10]}, {"v": [1, 3], "i": [1, 3]},
                     {"s": np.asarray(s, np.float32).reshape(1), "b": bias,
                      "k": np.asarray([3], np.int64)})

    x = codes(-50, 50, (1, 10))
    m = make((n * s).astype(np.float32))
    before = run(m, x=x)
    moved = m.transform(MoveScalarMulPastIntegerAdd())
    assert ops(moved) == ["Add", "Mul", "TopK"]
    assert np.array_equal(moved.get_initializer(moved.graph.node[0].input[1]), n)
    after = run(moved, x=x)
    assert np.array_equal(before["i"], after["i"]) and np.allclose(before["v"], after["v"])
    # a bias that is not whole steps stays behind the Mul
    kept = make((n * s + 0.1).astype(np.float32)).transform(MoveScalarMulPastIntegerAdd())
    assert ops(kept) == ["Mul", "Add", "TopK"]


def test_AbsorbInputFlatten():
    w = codes(-3, 3, (18, 4))
    m = model([helper.make_node("Flatten", ["x"], ["f"], axis=1),
               helper.make_node("MatMul", ["f", "w"], ["y"])],
              {"x": [1, 2, 3, 3]}, {"y": [1, 4]}, {"w": w}, {"x": "UINT4"})
    x = codes(0, 15, (1, 2, 3, 3))
    before = run(m, x=x)["y"]
    m = m.transform(AbsorbInputFlatten())
    assert ops(m) == ["MatMul"] and m.get_tensor_shape("x") == [1, 18]
    assert m.get_tensor_datatype("x") == DataType["UINT4"]
    after = run(m, x=x.transpose(0, 2, 3, 1).reshape(1, 18))["y"]  # NHWC on the wire
    assert np.array_equal(before, after)


def test_BipolarInputToXnor():
    w = RNG.choice([-1.0, 1.0], (16, 5)).astype(np.float32)
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [4, 16]}, {"y": [4, 5]},
              {"w": w}, {"x": "BIPOLAR", "w": "BIPOLAR"})
    x = RNG.choice([-1.0, 1.0], (4, 16)).astype(np.float32)
    before = run(m, x=x)["y"]
    m = m.transform(BipolarInputToXnor())
    assert "XnorPopcountMatMul" in ops(m) and "MultiThreshold" not in ops(m)
    assert m.get_tensor_datatype("x") == DataType["BINARY"]
    after = run(m, x=(x + 1) / 2)["y"]  # -1 as bit 0, +1 as bit 1
    assert np.array_equal(before, after)


def mvau(name: str, inp: str, out: str, mw: int, mh: int, w: str, t: str | None):
    return helper.make_node(
        "MVAU", [inp, w] + ([t] if t else []), [out], domain=HW, backend="fpgadataflow",
        name=name, MW=mw, MH=mh, SIMD=1, PE=1, inputDataType="UINT2", weightDataType="INT2",
        outputDataType="UINT2" if t else "INT32", noActivation=0 if t else 1, ActVal=0,
        binaryXnorMode=0, numInputVectors=[1], mem_mode="internal_embedded")


def test_SplitMVAU():
    w = codes(-2, 1, (8, 6))
    t = np.sort(RNG.integers(-6, 6, (6, 3)), axis=1).astype(np.float32)
    m = model([mvau("MVAU_0", "x", "y", 8, 6, "w", "t")], {"x": [1, 8]}, {"y": [1, 6]},
              {"w": w, "t": t}, {"x": "UINT2", "w": "INT2", "y": "UINT2"})
    x = codes(0, 3, (1, 8))
    before = run(m, x=x)["y"]
    assert len(np.unique(before)) > 2
    m = m.transform(SplitMVAU([{"position": 0, "mw": 8, "mh": 6, "first": 2}]))
    assert ops(m) == ["DuplicateStreams", "MVAU", "MVAU", "StreamingConcat"]
    parts = [n for n in m.graph.node if n.op_type == "MVAU"]
    assert [helper.get_attribute_value(a) for p in parts for a in p.attribute
            if a.name == "MH"] == [2, 4]
    assert np.array_equal(before, run(m, x=x)["y"])
    with pytest.raises(ValueError, match="MVAU #0 is 8x6 .* the plan split a 8x7 layer"):
        model([mvau("MVAU_0", "x", "y", 8, 6, "w", "t")], {"x": [1, 8]}, {"y": [1, 6]},
              {"w": w, "t": t}).transform(
            SplitMVAU([{"position": 0, "mw": 8, "mh": 7, "first": 2}]))


def test_GiveForkedInputAProducer():
    m = model([helper.make_node("Relu", ["x"], ["r"]),
               helper.make_node("Add", ["x", "r"], ["y"])],
              {"x": [1, 2, 3, 3]}, {"y": [1, 2, 3, 3]}, types={"x": "INT4"})
    x = codes(-8, 7, (1, 2, 3, 3))
    before = run(m, x=x)["y"]
    m = m.transform(GiveForkedInputAProducer())
    assert ops(m)[:2] == ["Transpose", "Transpose"]
    assert len(m.find_consumers("x")) == 1  # the fork is on a node's output now
    assert m.get_tensor_datatype(m.graph.node[1].output[0]) == DataType["INT4"]
    assert np.array_equal(before, run(m, x=x)["y"])
    # an input that does not fork is left alone
    single = model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 2, 3, 3]},
                   {"y": [1, 2, 3, 3]}).transform(GiveForkedInputAProducer())
    assert ops(single) == ["Relu"]


def test_MergeTwinTransposes():
    m = model([helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
               helper.make_node("Transpose", ["x"], ["b"], perm=[0, 2, 3, 1]),
               helper.make_node("Relu", ["a"], ["y1"]),
               helper.make_node("Neg", ["b"], ["y2"])],
              {"x": [1, 2, 3, 4]}, {"y1": [1, 3, 4, 2], "y2": [1, 3, 4, 2]})
    x = codes(-8, 7, (1, 2, 3, 4))
    before = run(m, x=x)
    m = m.transform(MergeTwinTransposes())
    assert ops(m).count("Transpose") == 1
    after = run(m, x=x)
    assert all(np.array_equal(before[k], after[k]) for k in ("y1", "y2"))


def test_NameAsPlanned_and_layer_key():
    m = model([mvau("MVAU_0", "x", "h", 8, 6, "w0", None),
               mvau("MVAU_1", "h", "y", 6, 4, "w1", None)],
              {"x": [1, 8]}, {"y": [1, 4]},
              {"w0": codes(-2, 1, (8, 6)), "w1": codes(-2, 1, (6, 4))})
    attrs = {"MVAU": ["MW", "MH"]}
    assert [layer_key(n, attrs) for n in m.graph.node] == [["MVAU", 8, 6], ["MVAU", 6, 4]]
    assert layer_key(m.graph.node[0], {}) == ["MVAU"]  # a kind the plan does not make
    named = m.transform(NameAsPlanned([["fc_b", "MVAU", 6, 4], ["fc_a", "MVAU", 8, 6]], attrs))
    assert [n.name for n in named.graph.node] == ["fc_a", "fc_b"]
    # a node that matches no planned layer: nothing is renamed
    kept = m.transform(NameAsPlanned([["fc_a", "MVAU", 8, 6], ["fc_c", "MVAU", 6, 5]], attrs))
    assert [n.name for n in kept.graph.node] == ["MVAU_0", "MVAU_1"]


def test_MoveMulPastDWConvKeepingInputTypes():
    c = RNG.uniform(0.1, 1.0, (1, 2, 1, 1)).astype(np.float32)
    m = model([helper.make_node("Mul", ["x", "c"], ["m"]),
               helper.make_node("Conv", ["m", "w"], ["y"], group=2, kernel_shape=[3, 3],
                                pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1])],
              {"x": [1, 2, 4, 4]}, {"y": [1, 2, 4, 4]},
              {"c": c, "w": codes(-2, 1, (2, 1, 3, 3))}, {"x": "UINT4"})
    x = codes(0, 15, (1, 2, 4, 4))
    before = run(m, x=x)["y"]
    m = m.transform(MoveMulPastDWConvKeepingInputTypes())
    assert ops(m) == ["Conv", "Mul"]
    assert m.get_tensor_datatype("x") == DataType["UINT4"]  # FINN's own marks it FLOAT32
    assert np.allclose(before, run(m, x=x)["y"], rtol=1e-6)


@pytest.mark.parametrize("scaled_input", [True, False])
def test_TruncAvgPoolToThresholds(scaled_input):
    """Brevitas' TruncAvgPool2d (AveragePool over the whole 4x4 map, Trunc with its own
    output scale) against its definition: the window's sum of codes s, shifted right by t
    bits and clamped: floor(s / 2**t) in 0..15."""
    a, kk, t = np.float32(0.5), 16, 4
    scale, out_scale = np.float32(a / kk), np.float32(a / kk * 2**t)
    trunc = helper.make_node("Trunc", ["p", "sc", "zp", "ib", "os", "ob"], ["y"],
                             domain="qonnx.custom_op.general", rounding_mode="FLOOR",
                             signed=0, narrow=0)
    first = [helper.make_node("Mul", ["q", "a"], ["x"])] if scaled_input else []
    src = "x" if scaled_input else "q"
    m = model([*first, helper.make_node("AveragePool", [src], ["p"], kernel_shape=[4, 4]),
               trunc], {"q": [1, 3, 4, 4]}, {"y": [1, 3, 1, 1]},
              {"a": np.asarray(a, np.float32), "sc": np.asarray(scale), "zp": np.float32(0),
               "ib": np.float32(8), "os": np.asarray(out_scale), "ob": np.float32(4)},
              {"q": "UINT4"} if scaled_input else {})
    q = codes(0, 15, (1, 3, 4, 4))
    q[0, 0], q[0, 1] = 5, 5  # sums right at a step (80 = 5 * 16) and just below it (79)
    q[0, 1, 0, 0] = 4
    m = m.transform(TruncAvgPoolToThresholds())
    assert "Trunc" not in ops(m) and ["GlobalAveragePool", "MultiThreshold", "Mul"] == \
        [o for o in ops(m) if o in ("GlobalAveragePool", "MultiThreshold", "Mul")][-3:]
    x = q * a if not scaled_input else q
    got = run(m, q=x)["y"]
    want = np.clip(np.floor(q.sum(axis=(2, 3), keepdims=True) / 2**t), 0, 15) * out_scale
    assert len(np.unique(want)) > 1 and np.array_equal(got, want.astype(np.float32))


def test_the_shared_rules():
    """finnchain_rules.py, which the emulated fabric imports too: a bias as whole steps (an
    empty one is none), and a quantizer's codes as qonnx's own min_int and max_int."""
    from finnchain_rules import int_range, whole_steps
    from qonnx.custom_op.general.quant import max_int, min_int

    s = np.float32(0.037)
    n = np.array([-3, 0, 5, 2**21], dtype=np.float64)
    assert np.array_equal(whole_steps((n * s).astype(np.float32), s), n)
    assert whole_steps((n * s + s / 3).astype(np.float32), s) is None
    assert whole_steps(np.array([2.0**22]) * s, s) is None  # past float32's margin
    assert whole_steps(np.zeros((0,), np.float32), s) is None
    for bits in range(1, 9):
        for signed in (False, True):
            for narrow in (False, True) if bits > 1 else (False,):
                assert int_range(bits, signed, narrow) == (min_int(signed, narrow, bits),
                                                           max_int(signed, narrow, bits))
    # a quantizer node's codes, as the emulator reads them too (the pool's Trunc here)
    from finnchain_rules import quantizer_codes

    codes = quantizer_codes("Trunc", {"signed": 0, "rounding_mode": b"FLOOR"}, np.float32(4))
    assert (codes.lo, codes.hi) == (min_int(0, 0, 4), max_int(0, 0, 4)) == (0, 15)
    assert quantizer_codes("Trunc", {}, np.float32(4)).lo == min_int(1, 0, 4)


def test_an_rtl_layer_verilator_does_not_build_stays_on_finns_python_model(monkeypatch):
    """pyverilator goes on after Verilator fails and leaves no model (the registry's Verilator
    has an internal error on finn-rtllib's depth-1 register buffer): the layer stays on FINN's
    python model and the report gets Verilator's first error, the stage's check goes on."""
    import shutil
    from types import SimpleNamespace

    from finn.custom_op.fpgadataflow.rtl.fmpadding_rtl import FMPadding_rtl
    from finnchain_cppsim import rtl_in_verilator
    from qonnx.custom_op.registry import getCustomOp

    if shutil.which("verilator") is None:
        pytest.skip("no verilator on the PATH (finnchain finn-env installs the registry's)")
    node = helper.make_node("FMPadding_rtl", ["x"], ["y"], domain=HW + ".rtl",
                            backend="fpgadataflow", name="FMPadding_rtl_0", ImgDim=[4, 4],
                            Padding=[1, 1, 1, 1], NumChannels=2, SIMD=1, inputDataType="UINT4",
                            numInputVectors=1)
    m = model([node], {"x": [1, 4, 4, 2]}, {"y": [1, 6, 6, 2]}, types={"x": "UINT4"})
    said = "%Error: swg_common.sv:198:47: Internal: Unexpected Call"

    def verilator_fails(self):
        import sys

        sys.stderr.write(f"%Warning-WIDTH: a warning\n{said}\n")
        raise OSError("VFMPadding_rtl_0: cannot open shared object file")

    monkeypatch.setattr(FMPadding_rtl, "prepare_rtlsim", verilator_fails)
    cfg = SimpleNamespace(_resolve_fpga_part=lambda: "xc7z020clg400-1", synth_clk_period_ns=10.0)
    names, failed = rtl_in_verilator(m, cfg)
    assert names == [] and failed == {"FMPadding_rtl_0": said}
    assert getCustomOp(m.graph.node[0]).get_nodeattr("exec_mode") != "rtlsim"
