"""Models users bring: Brevitas' own bnn_pynq examples, exported with export_qonnx as a FINN user
would (and with `finnchain export`, which prepares them as finn-examples does), random weights.
The ones finnchain takes run end to end, bit-exact against qonnx's reference; what it cannot
take yet is refused up front with the reason and the fix, never with a traceback."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest

pytest.importorskip("brevitas_examples")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """tfc_1w1a (BipolarQuant activations) and tfc_2w2a, random weights, FLOAT32 input."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    folder = tmp_path_factory.mktemp("byom")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("tfc_1w1a", "tfc_2w2a"):
            model, _ = model_with_cfg(name, pretrained=False)
            model.eval()
            export_qonnx(model, input_t=torch.randn(1, 1, 28, 28),
                         export_path=str(folder / f"{name}.onnx"))
            out[name] = folder / f"{name}.onnx"
    return out


@pytest.fixture(scope="module")
def tfc_uint8(tmp_path_factory):
    """tfc_2w2a as finn-examples prepares a model: UINT8 images in (the /255 inside the
    model), a TopK out, shapes inferred."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg
    from qonnx.core.datatype import DataType
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.insert_topk import InsertTopK
    from qonnx.util.cleanup import cleanup_model

    from finnchain.graph.model import load, save

    class Scale(torch.nn.Module):
        def forward(self, x):
            return x / 255.0

    folder = tmp_path_factory.mktemp("tfc")
    model, _ = model_with_cfg("tfc_2w2a", pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(torch.nn.Sequential(Scale(), model).eval(),
                     input_t=torch.randint(0, 256, (1, 1, 28, 28)).float(),
                     export_path=str(folder / "raw.onnx"))
    m = cleanup_model(load(folder / "raw.onnx"))
    m.set_tensor_datatype(m.graph.input[0].name, DataType["UINT8"])
    return save(m.transform(InsertTopK(k=1)).transform(InferShapes()), folder / "tfc.onnx")


def test_a_flatten_behind_the_scaling_and_batch_norm_run_bit_exactly(tfc_uint8):
    """TFC's first stages (the /255, a flatten, the input quantizer; a dense layer with batch
    norm and its quantizer) on the emulated fabric equal qonnx's reference, non-degenerate."""
    import numpy as np

    from finnchain.fabric.executor import Executor
    from finnchain.graph.cuts import cut_points
    from finnchain.graph.model import load
    from finnchain.graph.reference import run_reference
    from finnchain.graph.split import split

    model = load(tfc_uint8)
    cuts = cut_points(model)
    assert [c.datatype for c in cuts] == ["INT2"] * 4
    ops = {n.op_type for n in model.graph.node}
    assert {"Reshape", "BatchNormalization", "Div"} <= ops
    x = np.random.default_rng(0).integers(0, 256, (32, 1, 28, 28), dtype=np.uint8)
    for stage in split(model, [c.index for c in cuts[:2]])[:2]:
        ours = Executor(stage).run(x)
        assert np.array_equal(ours, run_reference(stage, x.astype(np.float32)))
        assert np.unique(ours).size >= 3  # 2-bit codes: not degenerate
        x = ours
    # the whole model, TensorNorm's float tail before the TopK included (on the host, as FINN
    # leaves it), split in two: bit-exact
    r = _finnchain("check", tfc_uint8, "--stages", "2", "--inputs", "16")
    assert r.returncode == 0 and "bit-exact" in r.stdout, r.stdout + r.stderr[-1500:]


def _finnchain(*args):
    import os

    return subprocess.run([sys.executable, "-m", "finnchain.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "COLUMNS": "200"})  # rich: one row per line


def _per_channel_zero_point_model(path):
    """uint8 in, two dense layers whose activations have a scale and a zero point per channel,
    a TopK out: a model with activation quantizers and no legal cut."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"

    def const(name, value):
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, np.shape(value),
                                        np.asarray(value, np.float32).flatten()))
        return name

    def quant(src, out, scale, bits, signed):
        zp = np.zeros(np.shape(scale)) if np.size(scale) > 1 else 0.0
        nodes.append(helper.make_node(
            "Quant", [src, const(out + "_s", scale), const(out + "_z", zp),
                      const(out + "_b", float(bits))], [out],
            domain="qonnx.custom_op.general", signed=signed, narrow=0, rounding_mode="ROUND"))
        return out

    x = quant(x, "q0", 1.0, 8, 0)
    for k, (n_in, n_out) in enumerate([(8, 6), (6, 4)]):
        nodes.append(helper.make_node("MatMul", [x, const(f"w{k}", rng.integers(
            -3, 4, (n_in, n_out)))], [f"mm{k}"]))
        x = quant(f"mm{k}", f"a{k}", rng.uniform(1, 4, (1, n_out)), 4, 0)
    return _uint8_in_top1_out(nodes, inits, x, [1, 8], path)


def _uint8_in_top1_out(nodes, inits, last: str, in_shape: list[int], path):
    """A model of ``nodes`` from a UINT8 input "x" of ``in_shape`` to the top-1 of ``last``,
    with shapes inferred, saved to ``path``."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import qonnx_make_model

    inits.append(helper.make_tensor("k", TensorProto.INT64, [1], [1]))
    nodes.append(helper.make_node("TopK", [last, "k"], ["v", "i"]))
    graph = helper.make_graph(
        nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("i", TensorProto.INT64, [1, 1])], inits)
    model = ModelWrapper(qonnx_make_model(graph)).transform(InferShapes())
    model.set_tensor_datatype("x", DataType["UINT8"])
    model.save(str(path))
    return path


def test_no_legal_cut_says_why_for_each_quantizer(tmp_path):
    path = _per_channel_zero_point_model(tmp_path / "per-channel.onnx")
    r = _finnchain("cuts", path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "has no legal cut point" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout.count("zero point is per-channel (") == 2, r.stdout
    assert "quantizes the model input itself" in r.stdout
    r = _finnchain("split", path, "--stages", "2", "--out", tmp_path / "split")
    assert r.returncode == 2 and "2 stages need 1 cuts; the model has 0" in r.stderr
    assert "per-channel" in r.stderr and "Traceback" not in r.stderr


def _depthwise_model(path):
    """uint8 8x8 images, a convolution and two depthwise ones whose activations have a scale
    per channel (odd whole numbers, each channel its own: no float rounding can tie), a last
    one per tensor, a dense layer and a TopK: the shape of Brevitas' MobileNet, where the
    per-channel scales sit ahead of depthwise layers. Scales are calibrated on the data, so
    the codes at every activation spread over the range."""
    import numpy as np
    import torch
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1)
    x = torch.tensor(rng.integers(0, 256, (16, 3, 8, 8)), dtype=torch.float64)
    inits, nodes = [], []

    def const(name, value, dtype=TensorProto.FLOAT):
        inits.append(helper.make_tensor(name, dtype, np.shape(value),
                                        np.asarray(value).flatten().tolist()))
        return name

    def quant(src, out, scale, bits):
        nodes.append(helper.make_node(
            "Quant", [src, const(out + "_s", scale), const(out + "_z", 0.0),
                      const(out + "_b", float(bits))], [out],
            domain="qonnx.custom_op.general", signed=0, narrow=0, rounding_mode="ROUND"))

    quant("x", "q0", 1.0, 8)
    src, value = "q0", x
    for k, (cin, group, per_channel) in enumerate([(3, 1, True), (1, 4, True), (1, 4, False)]):
        w = rng.integers(-3, 4, (4, cin, 3, 3))
        nodes.append(helper.make_node("Conv", [src, const(f"w{k}", w)], [f"c{k}"],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group))
        acc = torch.nn.functional.conv2d(value, torch.tensor(w, dtype=torch.float64),
                                         padding=1, groups=group)
        top = acc.amax(dim=(0, 2, 3)).numpy() if per_channel else acc.max().item()
        scale = 2 * np.floor(np.asarray(top) / 15 / 2 * rng.uniform(0.4, 0.9, np.shape(top))) + 1
        scale = scale.reshape(1, 4, 1, 1) if per_channel else float(scale)
        quant(f"c{k}", f"a{k}", scale, 4)
        value = torch.clamp(torch.round(acc / torch.tensor(scale)), 0, 15) * torch.tensor(scale)
        src = f"a{k}"
    nodes.append(helper.make_node("Flatten", [src], ["f"], axis=1))
    nodes.append(helper.make_node("MatMul", ["f", const("w3", rng.integers(-3, 4, (256, 10)))],
                                  ["m"]))
    return _uint8_in_top1_out(nodes, inits, "m", [1, 3, 8, 8], path)


def test_a_per_channel_scale_is_a_cut(tmp_path):
    """An activation with one learned scale per channel, ahead of a depthwise layer, is a cut:
    its integer codes cross, the scales stay with the stages on either side ([1, C, 1, 1]
    constants of the Div that ends one and the Mul that starts the next), and the chain of
    emulated stages, one of which starts and ends at such a cut, equals qonnx's reference of
    the whole model on codes that are not degenerate at either cut. Its nodes have no names,
    as ONNX allows (split took a stage's nodes by name, and every stage got all of them)."""
    import numpy as np

    from finnchain.fabric.executor import Executor
    from finnchain.graph.cuts import cut_points
    from finnchain.graph.model import load
    from finnchain.graph.reference import run_reference
    from finnchain.graph.split import split

    model = load(_depthwise_model(tmp_path / "depthwise.onnx"))
    assert not any(n.name for n in model.graph.node)
    cuts = cut_points(model)
    assert [(c.tensor, c.per_channel) for c in cuts] == [("a0", True), ("a1", True),
                                                         ("a2", False)]
    for c in cuts[:2]:
        s = model.get_initializer(c.tensor + "_s")
        assert s.shape == c.scale_array().shape and np.array_equal(s, c.scale_array())
        assert len(set(c.scale)) == len(c.scale) == c.shape[1] == 4
    stages = split(model, cuts[:2])
    assert [len(st.graph.node) for st in stages] == [4, 4, 6]  # 10 nodes, a Div and a Mul per cut
    for k, c in enumerate(cuts[:2]):
        div, mul = stages[k].graph.node[-1], stages[k + 1].graph.node[0]
        assert (div.op_type, mul.op_type) == ("Div", "Mul")
        assert np.array_equal(stages[k].get_initializer(div.input[1]), c.scale_array())
        assert np.array_equal(stages[k + 1].get_initializer(mul.input[1]), c.scale_array())
    x = np.random.default_rng(2).integers(0, 256, (32, 3, 8, 8)).astype(np.float32)
    y = x
    for k, stage in enumerate(stages):
        y = np.asarray(Executor(stage).run(y))
        if k < 2:
            assert np.unique(y).size >= 12, f"degenerate codes at {cuts[k].tensor}"
            assert y.min() >= 0 and y.max() <= 15 and np.array_equal(y, np.round(y))
    whole = np.asarray(run_reference(model, x))
    assert np.unique(whole).size >= 4 and np.array_equal(y, whole)
    r = _finnchain("cuts", tmp_path / "depthwise.onnx")
    assert r.returncode == 0 and r.stdout.count(" per channel") == 2, r.stdout + r.stderr


def test_a_residual_network_cuts_between_blocks_and_costs_its_adds(bnn_pynq):
    """resnet18_4w4a: cuts only where one tensor crosses (between residual blocks, each
    quantizer inside one named with the branch that crosses beside it); the planner costs
    each residual join as FINN's AddStreams and each fork as DuplicateStreams, a strided 1x1
    skip as a DownSampler, and gives each layer the bits of the tensor it reads and each
    quantizer's thresholds to the layer it reads, whatever the branch order; on
    Zedboards it is refused by name, as one 256-channel block needs more block RAM than one
    has."""
    from finnchain.cost.lower import segments
    from finnchain.graph.cuts import examine
    from finnchain.graph.model import load

    path = bnn_pynq("resnet18_4w4a")
    model = load(path)
    cuts, rejected = examine(model)
    assert len(cuts) >= 8 and all(c.datatype == "UINT4" for c in cuts)
    assert sum("other tensors cross here too" in r.reason for r in rejected) >= 10
    joins = [n for n in model.graph.node if n.op_type == "Add"
             and all(model.get_initializer(t) is None for t in n.input)]
    ops = [op for seg in segments(model) for layer in seg.layers for op in layer.ops]
    kinds = [op.kind for op in ops]
    assert kinds.count("AddStreams") == len(joins) >= 8
    assert kinds.count("DuplicateStreams") == len(joins)
    # each quantizer's thresholds go into the layer it reads, found by tensor: the skip
    # branch's 1x1 convolution lies between the main branch's and its quantizer. Only the
    # classifier has none; stand-alone thresholds follow each join and the truncating pool
    assert [op.obits for op in ops if op.kind == "MVAU"].count(0) == 1
    assert kinds.count("Thresholding") == len(joins) + 1
    # a downsampling skip (1x1, stride 2) is FINN's DownSampler and an MVAU that reads the
    # block's input codes, not the accumulator of the main branch's layer lowered before it
    assert kinds.count("DownSampler") == 3
    assert all(op.abits <= 8 and not op.asigned for op in ops if op.kind == "MVAU")
    # the skip side waits for the main branch's two 3x3 window generators: a row and two
    # pixels of each one's input, 2 * (W + 2) pixels in an identity block; in a downsampling
    # block (the first of each width but 32) the first one reads the map of twice the width
    widths = [op.dims[1] for op in ops if op.kind == "AddStreams"]
    assert widths == [32, 32, 16, 16, 8, 8, 4, 4]
    identity = [2 * (w + 2) for w in widths]
    down = [math.ceil((2 * w + 2) / 4 + w + 2) for w in widths]
    want = [down[i] if i in (2, 4, 6) else identity[i] for i in range(8)]
    assert [op.skip_pixels for op in ops if op.kind == "AddStreams"] == want
    r = _finnchain("plan", path, "--boards", "zedboard:3", "--out", path.parent / "rn-plan")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "do not fit one zedboard however folded" in r.stderr and "RAMB18" in r.stderr


def test_a_float_input_or_no_top_k_is_refused_with_the_fix(exported, tmp_path):
    from qonnx.core.datatype import DataType

    from finnchain.graph.model import load, save

    r = _finnchain("plan", exported["tfc_2w2a"], "--boards", "zedboard:2", "--out",
                   tmp_path / "p1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "input 'x' is FLOAT32" in r.stderr and "UINT8" in r.stderr
    model = load(exported["tfc_2w2a"])
    model.set_tensor_datatype(model.graph.input[0].name, DataType["UINT8"])
    marked = save(model, tmp_path / "tfc_2w2a-uint8.onnx")
    r = _finnchain("plan", marked, "--boards", "zedboard:2", "--out", tmp_path / "p2")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "not a TopK" in r.stderr and "InsertTopK" in r.stderr
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()


@pytest.fixture(scope="module")
def bnn_pynq(tmp_path_factory):
    """``finnchain export``'s bnn_pynq models (uint8 in, /255 inside, TopK out), by name."""
    from finnchain.models import zoo

    folder = tmp_path_factory.mktemp("bnn_pynq")
    made = {}

    def get(name):
        if name not in made:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                made[name] = zoo.export(name, folder / f"{name}.onnx", seed=1)
        return made[name]

    return get


@pytest.mark.parametrize("name", ["tfc_1w1a", "tfc_1w2a", "sfc_2w2a", "cnv_1w1a", "cnv_2w2a"])
def test_brevitas_examples_split_three_ways_run_bit_exactly(bnn_pynq, name):
    """Each exported model in three stages on the emulated fabric, the float tail before the
    TopK included, equals qonnx's reference of the whole model, with the codes at every cut
    not degenerate (2-bit: at least 3 of 4 codes seen; BIPOLAR: both)."""
    from finnchain.check import check_split
    from finnchain.graph.cuts import even_cuts
    from finnchain.graph.model import load
    from finnchain.models.zoo import recipe, sample_inputs

    model = load(bnn_pynq(name))
    x = sample_inputs(recipe(name).input_shape, 24, seed=2)
    res = check_split(model, even_cuts(model, 3), x)
    assert res.equal, res.detail
    assert res.stages == 3, res.cuts
    assert all(c.distinct >= (2 if c.datatype == "BIPOLAR" else 3) for c in res.cuts), res.cuts
    assert res.output_distinct >= 3  # the top-1 classes are not all one


def test_cnv_end_to_end_on_zedboards_through_a_running_chain(bnn_pynq, make_build, tmp_path):
    """cnv_2w2a: planned onto three Zedboards (FINN's cost model), built for the emulated
    accelerator, run as a chain of stage daemons over sockets: the client's answers are the
    reference's top-1 classes of the whole model, in order."""
    from finnchain.boards.catalogue import Catalogue
    from finnchain.graph.model import load
    from finnchain.graph.reference import run_reference
    from finnchain.models.zoo import recipe, sample_inputs
    from finnchain.ops.local import LocalChain
    from finnchain.runtime.client import Chain

    model = load(bnn_pynq("cnv_2w2a"))
    build = make_build(model, Catalogue().chain("zedboard:3"), "cnv")
    x = sample_inputs(recipe("cnv_2w2a").input_shape, 16, seed=3)
    want = run_reference(model, x.astype("float32")).astype("int64")
    with LocalChain(build, tmp_path) as lc, Chain(lc.file, timeout=60) as c:
        got = c.infer(x)
    assert got.tolist() == want.tolist() and len(set(want.ravel().tolist())) >= 3


def test_export_names_a_missing_or_foreign_weights_file(tmp_path):
    import torch

    r = _finnchain("export", "tfc_2w2a", "--weights", tmp_path / "none.pth")
    assert r.returncode == 2 and "no such file" in r.stderr
    torch.save({"not.a.layer": torch.zeros(1)}, tmp_path / "other.pth")
    r = _finnchain("export", "tfc_2w2a", "--weights", tmp_path / "other.pth", "--out",
                   tmp_path / "m.onnx")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert "not.a.layer" in r.stderr and not (tmp_path / "m.onnx").exists()
    r = _finnchain("export", "digits-cnv", "--weights", tmp_path / "other.pth")
    assert r.returncode == 2 and "--weights is for Brevitas' examples" in r.stderr


def test_brevitas_mobilenet_with_learned_scales_runs_as_the_integer_function(
        brevitas_mobilenet_path):
    """Brevitas' own quant_mobilenet_v1_4b, the network finn-examples deploys (learned float
    scales, per-channel ones ahead of the depthwise layers, 8-bit first-layer weights,
    TruncAvgPool, the /255, mean and std inside): it cuts, plans onto six Zedboards above the
    reference rate, and each stage on the emulated fabric parts from qonnx's reference, both
    fed the same codes, on few codes: the reference's float rounding, where the emulator
    computes the integer function FINN builds with FINN's own thresholds (FINN's execution
    equals it: tests/test_finn.py, bench/models.py). Here one threshold of one quantizer is a
    float32 tie where the two part, and the following layers spread its few codes to about 0.2%
    of the third quarter's; a scale or grid taken wrongly would part on far more."""
    import numpy as np

    from finnchain.boards.catalogue import Catalogue
    from finnchain.fabric.executor import Executor
    from finnchain.graph.cuts import cut_points, even_cuts
    from finnchain.graph.model import is_pow2, load
    from finnchain.graph.reference import run_reference
    from finnchain.graph.split import split
    from finnchain.models.zoo import sample_inputs
    from finnchain.plan.make import make_plan
    from finnchain.plan.schema import Plan

    model = load(brevitas_mobilenet_path)
    cuts = cut_points(model)
    assert len(cuts) >= 25 and not any(is_pow2(np.array(c.scale)) for c in cuts)
    assert sum(c.per_channel for c in cuts) == 12  # the activations Brevitas scales per channel
    plan, _, _ = make_plan(model, Catalogue().chain("zedboard:6"), "mobilenet", "m.onnx")
    assert len(plan.stages) == 6 and plan.predicted_fps > 118.3
    assert Plan.from_dict(plan.to_dict()).content_hash() == plan.content_hash()
    x = sample_inputs((1, 3, 224, 224), 2, seed=3)
    differ = total = 0
    for stage in split(model, even_cuts(model, 4)):
        ours = np.asarray(Executor(stage).run(x))
        ref = np.round(np.asarray(run_reference(stage, x.astype(np.float32))))
        differ, total = differ + int((ours != ref).sum()), total + ref.size
        assert np.unique(ref).size >= 3, "degenerate codes"
        x = ref
    assert differ <= 1e-2 * total, f"{differ} of {total} codes differ"
