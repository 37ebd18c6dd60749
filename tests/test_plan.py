"""The planner: folding rules, the exactness of the fit and of the partition, plan.json."""

from __future__ import annotations

import itertools
import json
import random
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import distinct
from finnchain.boards.catalogue import Catalogue
from finnchain.cost.lower import segments
from finnchain.cost.ops import MVAU, SWG, VVAU, Res
from finnchain.fabric.executor import Executor
from finnchain.graph.model import load
from finnchain.plan.fit import StageFitter, dsp_swaps
from finnchain.plan.folding import Candidates, DspSwap, Option
from finnchain.plan.partition import Search, _edge_ok, chain
from finnchain.plan.schema import Plan, PlanFileError


def _opt(bram, lut, lutram=0.0, swaps=()):
    return Option((), Res(lut=lut, bram18=bram, lutram=lutram), 0, tuple(swaps))


def test_folding_respects_finn_constraints_and_targets(mobilenet):
    segs = segments(mobilenet)
    target = 401_408
    for seg in segs:
        for opt in Candidates(seg).at(target):
            assert opt.cycles <= target
            for p in opt.placed:
                op, f = p.op, p.fold
                if isinstance(op, MVAU):
                    assert op.mh % f.pe == 0 and op.mw % f.simd == 0
                if isinstance(op, VVAU):
                    assert op.channels % f.pe == 0 and op.k2 % f.simd == 0
                if isinstance(op, SWG):
                    assert op.channels % f.simd == 0
            # the generator feeding a layer runs at the width its consumer takes
            ops = [p for p in opt.placed if p.op.kind != "StreamingFIFO"]
            for a, b in zip(ops, ops[1:]):
                if isinstance(a.op, SWG):
                    assert a.op.out_width(a.fold) == b.op.in_width(b.fold)


def test_a_dsp_swap_changes_only_where_the_multipliers_go(mobilenet):
    """A swap's saving is the LUT its layer saves with DSP multipliers and all else as placed
    (thresholds in block RAM stay there; once the swap was costed with LUT thresholds)."""
    seen = set()
    for seg in segments(mobilenet):
        for opt in Candidates(seg).at(401_408):
            for sw in opt.swaps:
                p = opt.placed[sw.op_index]
                dsp = p.op.resources(replace(p.fold, res_type="dsp"))
                assert (sw.dsp, sw.lut_saved) == (dsp.dsp, p.res.lut - dsp.lut)
                assert sw.lut_saved > 0, (p.op.name, p.fold)
                seen.add(p.fold.thr_style)
    assert seen == {"block", "distributed"}  # both kinds of threshold memory were swapped


def test_a_slower_target_never_removes_the_cheapest_fit(mobilenet):
    cands = [Candidates(s) for s in segments(mobilenet)]
    for c in cands:
        fast, slow = c.at(200_704), c.at(802_816)
        assert slow, c.segment.index
        if fast:
            assert min(o.res.lut for o in slow) <= min(o.res.lut for o in fast)
            assert min(o.res.bram18 for o in slow) <= min(o.res.bram18 for o in fast)


def test_the_fit_is_exact_against_brute_force():
    rng = random.Random(7)
    board = replace(Catalogue().board("zedboard"), lutram=64)  # LUT-RAM bins of 1
    budget_b = int(board.limit("bram18")) - board.shell["bram18"]
    for _ in range(30):
        segs = [[_opt(rng.randrange(0, 120), rng.uniform(100, 9000), rng.randrange(0, 30))
                 for _ in range(rng.randrange(1, 4))] for _ in range(4)]
        fitter = StageFitter(board)
        added = all(fitter.add(s) for s in segs)
        best = min((sum(o.res.lut for o in combo) for combo in itertools.product(*segs)
                    if sum(o.res.bram18 for o in combo) <= budget_b
                    and sum(o.res.lutram for o in combo) <= 64), default=None)
        if best is None:
            assert not added
            continue
        assert added and fitter.dp[-1, -1] == pytest.approx(best)
        chosen = fitter.choose()
        assert sum(o.res.lut for o in chosen) == pytest.approx(best)
        assert sum(o.res.bram18 for o in chosen) <= budget_b


def test_dsp_swaps_are_the_best_knapsack():
    rng = random.Random(3)
    for _ in range(30):
        opts = [_opt(0, 0, 0, [DspSwap(0, rng.randrange(1, 40), rng.uniform(10, 900))])
                for _ in range(6)]
        cap = rng.randrange(0, 100)
        saved, chosen = dsp_swaps(opts, cap)
        best = 0.0
        for mask in itertools.product((0, 1), repeat=6):
            if sum(m * o.swaps[0].dsp for m, o in zip(mask, opts)) <= cap:
                best = max(best, sum(m * o.swaps[0].lut_saved for m, o in zip(mask, opts)))
        assert saved == pytest.approx(best)
        assert sum(opts[k].swaps[s].dsp for k, s in chosen) <= cap
        assert sum(opts[k].swaps[s].lut_saved for k, s in chosen) == pytest.approx(saved)


def _brute_force_feasible(search: Search, fps: float, kmax: int) -> bool:
    """Every way to cut the segments into at most kmax runs, each checked on its own."""
    n = len(search.segments)
    for k in range(1, kmax + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = list(zip((0, *cuts), (*cuts, n)))
            ok = True
            for b, (i, j) in enumerate(bounds):
                board = search.boards[b]
                target = search.target(board, fps)
                # a stage's first and last segment folded to FINN's driver layout
                opts = {s: search.opts(s, board, target, s == i, s == j - 1)
                        for s in range(i, j)}
                fitter = StageFitter(board)
                if not all(opts[s] and fitter.add(opts[s]) for s in range(i, j)) \
                        or not fitter.fits() \
                        or not _edge_ok(search.segments, search.boards, b, i, j, fps):
                    ok = False
                    break
            if ok:
                return True
    return False


def test_partition_is_exact_against_brute_force(digits, tiny_file):
    boards = Catalogue(tiny_file).chain("tiny:4")
    search = Search(segments(digits), boards)
    answers = []
    for fps in (700, 2000, 5000, 10_000, 20_000, 40_000):
        for kmax in (1, 2, 3, 4):
            dp = chain(search, fps, kmax) is not None
            assert dp == _brute_force_feasible(search, fps, kmax), (fps, kmax)
            answers.append(dp)
    assert any(answers) and not all(answers)  # the grid crosses the feasibility boundary


def _plan_cli(*args):
    return subprocess.run([sys.executable, "build/plan.py", *map(str, args)], capture_output=True,
                          text=True, timeout=900, check=False,
                          cwd=Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def digits_plan(digits_path, tiny_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    r = _plan_cli(digits_path, "--boards", "tiny:4", "--out", out, "--catalogue", tiny_file)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout


def test_plan_files_and_schema(digits_plan):
    out, stdout = digits_plan
    data = json.loads((out / "plan.json").read_text())
    assert data["schema"] == "finnchain.plan/1" and data["predicted_fps"] > 0
    assert [b["kind"] for b in data["boards"]] == ["tiny"] * 4
    plan = Plan.read(out / "plan.json")
    assert 2 <= len(plan.stages) <= 4
    assert plan.stages[0].segments[0] == 0 and plan.stages[-1].segments[1] == plan.model["segments"]
    for a, b in zip(plan.stages, plan.stages[1:]):
        assert a.segments[1] == b.segments[0]
        assert a.output == b.input and a.output.datatype == "UINT4"
    for s in plan.stages:
        assert s.cycles == max(op.cycles for op in s.ops)
        assert plan.predicted_fps <= s.fabric_fps + 1e-6
        for key in ("lut", "bram18", "dsp"):
            assert s.resources[key] <= s.limits[key], (s.index, key)
        folder = out / f"stage{s.index}"
        fold = json.loads((folder / "folding_config.json").read_text())
        names = [op.finn_name for op in s.ops if op.finn_name]
        assert sorted(fold) == sorted(["Defaults", *names]) and len(set(names)) == len(names)
        for op in s.ops:
            if op.kind == "MVAU" and "_" not in op.name.removeprefix("MVAU_"):
                entry = fold[op.finn_name]
                assert op.shape["mh"] % entry["PE"] == 0 and op.shape["mw"] % entry["SIMD"] == 0
        build = json.loads((folder / "build_config.json").read_text())
        assert build["fpga_part"] == "xc7z020clg484-1" and build["synth_clk_period_ns"] == 10.0
        assert build["shell_flow_type"] == "vivado_zynq"
    assert (out / "plan.png").stat().st_size > 1000
    assert "frames/s predicted" in stdout


def test_each_planned_op_is_the_cost_models_op_again(digits_plan):
    """plan.json's kind and shape rebuild the op the planner costed (``OpPlan.op``): the same
    cycles and resources at the planned fold, FINN's type as the name's prefix and a key that
    tells it from the stage's other layers of its kind (what FINN's steps name them by)."""
    out, _ = digits_plan
    plan = Plan.read(out / "plan.json")
    kinds = set()
    for s in plan.stages:
        keys = []
        for op in s.ops:
            built = op.op()
            kinds.add(built.kind)
            assert built.cycles(op.fold_of()) == op.cycles, op.name
            assert built.resources(op.fold_of()).to_dict() == op.resources, op.name
            assert bool(op.finn_name) != built.inserted_by_finn, op.name
            if op.finn_name:
                assert op.finn_name.startswith(built.finn_type + "_"), op.name
                keys.append([op.kind, *built.key()])
        assert len(keys) == len({json.dumps(k) for k in keys}) or s.index, keys
    assert {"MVAU", "ConvolutionInputGenerator", "StreamingFIFO", "LabelSelect"} <= kinds
    with pytest.raises(ValueError, match="kind 'Conv' is none the cost model knows"):
        replace(plan.stages[0].ops[0], kind="Conv").op()


def test_plan_stage_models_chain_bit_exactly(digits_plan, digits, digits_test_set):
    out, _ = digits_plan
    plan = Plan.read(out / "plan.json")
    x = digits_test_set[0][:64]
    whole = Executor(digits).run(x)
    y = x
    for s in plan.stages:
        y = Executor(load(out / s.files["model"])).run(y)
        if s.index < len(plan.stages) - 1:
            assert distinct(y) >= 8, (s.index, distinct(y))
            assert list(y.shape[1:]) == s.output.shape[1:]
    assert np.array_equal(y, whole)


def test_an_edited_plan_is_refused(digits_plan, tmp_path):
    out, _ = digits_plan
    data = json.loads((out / "plan.json").read_text())
    data["predicted_fps"] *= 2
    edited = tmp_path / "plan.json"
    edited.write_text(json.dumps(data))
    with pytest.raises(PlanFileError, match="edited after planning"):
        Plan.read(edited)
    data["schema"] = "other/9"
    edited.write_text(json.dumps(data))
    with pytest.raises(PlanFileError, match="schema"):
        Plan.read(edited)


def test_plan_errors_name_the_problem(digits_path, tiny_file, tmp_path):
    r = _plan_cli(digits_path, "--boards", "tiny:1", "--out", tmp_path, "--catalogue", tiny_file)
    assert r.returncode == 1 and "too few" in r.stderr
    suggested = re.search(r"--boards tiny:(\d+)", r.stderr)
    assert suggested, r.stderr
    n = int(suggested.group(1))  # the smallest chain that fits: it plans, one board less not
    ok = _plan_cli(digits_path, "--boards", f"tiny:{n}", "--out", tmp_path / "ok",
                   "--catalogue", tiny_file, "--no-chart")
    assert ok.returncode == 0, ok.stderr
    if n > 2:
        short = _plan_cli(digits_path, "--boards", f"tiny:{n - 1}", "--out", tmp_path / "no",
                          "--catalogue", tiny_file, "--no-chart")
        assert short.returncode == 1
    r = _plan_cli(digits_path, "--boards", "nosuch:3", "--out", tmp_path)
    assert r.returncode == 2 and "unknown board kind 'nosuch'" in r.stderr
    r = _plan_cli(tmp_path / "missing.onnx", "--out", tmp_path)
    assert r.returncode == 2 and "missing.onnx" in r.stderr
    assert not (tmp_path / "plan.json").exists()


def test_mobilenet_on_five_zedboards_streams_the_classifiers_weights(mobilenet_path, tmp_path):
    """MobileNetV1 on five Zedboards, faster than the reference system on six: the
    classifier's 4.1 Mbit of weights stream from DDR (FINN's mem_mode external) instead of
    taking a board's block RAM, and the plan says so with the DMAs' traffic."""
    r = _plan_cli(mobilenet_path, "--boards", "zedboard:5", "--out", tmp_path, "--no-chart")
    assert r.returncode == 0, r.stderr
    plan = Plan.read(tmp_path / "plan.json")
    assert len(plan.stages) == 5 and plan.predicted_fps > 118.3  # the reference system
    for s in plan.stages:
        assert all(s.utilization[k] <= 1.0 for k in ("lut", "bram18", "dsp", "lutram"))
        assert s.board["part"] == "xc7z020clg484-1"
    ddr = [(s.index, op) for s in plan.stages for op in s.ops if op.fold["ram_style"] == "external"]
    assert [op.node for _, op in ddr] == ["Gemm_0"]
    k, fc = ddr[0]
    assert fc.resources["bram18"] == 0 and fc.op().finn_config(fc.fold_of())["mem_mode"] == "external"
    dma = [op for op in plan.stages[k].ops if op.shape.get("role") == "weights"]
    assert [op.shape["bytes_per_frame"] for op in dma] == [1024 * 1000 * 4 // 8]
    assert re.search(rf"stage {k}: weights from DDR: Gemm_0 \(512,000 B/frame\); all DMAs "
                     r"[\d.,]+ MB/s of the HP port's 800 MB/s", r.stdout), r.stdout


def test_weights_from_ddr_on_request_and_refused_where_finn_cannot(digits_path, tmp_path):
    """--weights-from-ddr: a fully connected layer's weights stream from DDR as asked (and its
    weight DMA's start costs the ARM); a convolution, an op without weights or a node the model
    lacks is refused by name, with why."""
    r = _plan_cli(digits_path, "--boards", "zedboard:1", "--out", tmp_path / "p", "--no-chart",
                  "--weights-from-ddr", "MatMul_0")
    assert r.returncode == 0, r.stderr
    ops = {op.name: op for op in Plan.read(tmp_path / "p" / "plan.json").stages[0].ops}
    assert ops["MVAU_MatMul_0"].fold["ram_style"] == "external"
    mv, fold = ops["MVAU_MatMul_0"].op(), ops["MVAU_MatMul_0"].fold_of()
    # no block RAM for the weights (the thresholds may have some): as many as with LUT weights
    assert mv.resources(fold).bram18 == mv.resources(replace(fold, ram_style="distributed")).bram18
    assert ops["IODMA_weights_MVAU_MatMul_0"].shape["role"] == "weights"
    assert ops["MVAU_Gemm_0"].fold["ram_style"] != "external"  # not asked, not chosen here
    assert "weights from DDR: MatMul_0" in r.stdout
    # the ARM starts one more DMA with every batch: the stage's ARM rate counts it
    stage, zed = Plan.read(tmp_path / "p" / "plan.json").stages[0], Catalogue().board("zedboard")
    sizes = stage.input.bytes_per_frame, stage.output.bytes_per_frame
    assert stage.arm_fps == pytest.approx(zed.arm_fps(*sizes, weight_dmas=1), rel=1e-4)
    assert zed.arm_fps(*sizes, weight_dmas=1) < zed.arm_fps(*sizes)
    for node, why in (("Conv_1", "a convolution, whose MVAU reads each weight 64 times"),
                      ("MaxPool_0", "a StreamingMaxPool, which has no weights"),
                      ("Conv_9", "the model has no layer 'Conv_9'")):
        r = _plan_cli(digits_path, "--boards", "zedboard:1", "--out", tmp_path / node,
                      "--no-chart", "--weights-from-ddr", node)
        assert r.returncode == 2 and f"--weights-from-ddr {node}: {why}" in r.stderr, r.stderr
        assert not (tmp_path / node).exists()


def test_layer_by_layer_pruning_keeps_the_cheapest_builds(mobilenet, monkeypatch):
    """A segment of many layers with many options each (a residual block: millions of
    combinations) is pruned after each layer instead of costing every combination: the
    cheapest build in LUTs and the one with fewest RAMB18 are the same either way."""
    from finnchain.cost.lower import segments
    from finnchain.plan import folding
    from finnchain.plan.folding import Candidates

    seg = max(segments(mobilenet), key=lambda s: len(s.layers))
    assert len(seg.layers) >= 3
    target = 401_408
    full = Candidates(seg).at(target)
    monkeypatch.setattr(folding, "MAX_COMBOS", 0)
    pruned = Candidates(seg).at(target)
    assert full and pruned
    for cost in (lambda o: (o.res.lut, o.res.bram18), lambda o: (o.res.bram18, o.res.lut)):
        assert cost(min(full, key=cost)) == cost(min(pruned, key=cost))
    assert all(o.bound <= target for o in pruned)


def test_a_network_too_small_for_its_fabric_to_matter_is_planned_at_the_arm_rate(tie_model):
    """One small layer: even fully folded it runs far faster than the ARM side moves frames,
    so the chain's rate is the ARM side's per-frame cost (the search looks below the fabric's
    slowest rate, where it used to stop with 'boards are too few')."""
    from finnchain.plan.make import make_plan
    from finnchain.plan.partition import Search, floor_fps

    model = load(tie_model[0])
    boards = Catalogue().chain("zedboard:2")
    plan, stages, _ = make_plan(model, boards, "tie", "tie.onnx")
    (stage,) = plan.stages  # one board is enough
    assert plan.bottleneck["limit"] == "arm"
    assert plan.predicted_fps == pytest.approx(stage.arm_fps, rel=1e-4)
    assert plan.predicted_fps < floor_fps(Search(segments(model), boards))


def test_options_with_more_uram_survive_only_where_they_save_block_ram_or_luts():
    """Options are pruned within each URAM count, and one with more URAM is dropped when an
    option kept with less costs no more RAMB18 and no more LUT (it was kept before, and the
    sums of a residual block's layers grew to 91,420 options per segment on a ZCU104)."""
    from finnchain.plan.folding import pareto

    def opt(bram, lut, uram, lutram=0.0):
        return Option((), Res(lut=lut, bram18=bram, lutram=lutram, uram=uram), 0)

    base = opt(10, 100, 0)
    beaten = opt(10, 100, 2)  # more URAM, nothing saved
    beaten_too = opt(12, 150, 3, lutram=5)  # more of everything
    saves_bram = opt(2, 100, 2)  # more URAM for less block RAM
    saves_lut = opt(10, 60, 4)  # more URAM for fewer LUTs
    kept = pareto([beaten, saves_lut, base, beaten_too, saves_bram])
    assert {id(o) for o in kept} == {id(base), id(saves_bram), id(saves_lut)}


def test_a_segment_offers_no_build_beyond_the_boards_uram(mobilenet):
    """``Candidates.at`` with the URAM a stage holds gives only options within it, the
    cheapest in LUTs among them kept; with none (a Zedboard) none uses URAM."""
    from finnchain.cost.lower import segments
    from finnchain.plan.fit import stage_uram

    assert stage_uram(Catalogue().chain("zcu104:1")[0]) == 76  # 96 at the 0.8 limit
    assert stage_uram(Catalogue().chain("zedboard:1")[0]) == 0
    target = 200_704
    seg = max(segments(mobilenet), key=lambda s: max(o.res.uram for o in Candidates(s).at(target)))
    c = Candidates(seg)
    unbounded = c.at(target)
    cap = max(o.res.uram for o in unbounded) // 2
    bounded, none = c.at(target, cap), c.at(target, 0)
    assert cap >= 1 and max(o.res.uram for o in bounded) <= cap
    assert none and not any(o.res.uram for o in none)
    within = [o for o in unbounded if o.res.uram <= cap]
    assert min(o.res.lut for o in bounded) <= min(o.res.lut for o in within)


def _window_attrs(model) -> dict:
    from onnx.helper import get_attribute_value

    keys = ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")
    return {n.name: {a.name: get_attribute_value(a) for a in n.attribute if a.name in keys}
            for n in model.graph.node if n.op_type in ("Conv", "MaxPool")}


def test_terse_onnx_windows_are_written_out_and_planned_as_the_explicit_ones(
        digits, bare_digits_path):
    """A Conv or pool that leaves its attributes to ONNX's defaults (auto_pad=SAME_UPPER, no
    strides, dilations, group or kernel_shape) is loaded with them written out, the values the
    explicit model has (FINN's LowerConvsToMatMul reads them from the node), and it plans as
    the explicit model does; onnxruntime computes the same convolution either way."""
    from qonnx.core.onnx_exec import execute_onnx

    from conftest import BARE

    bare_proto = __import__("onnx").load(str(bare_digits_path))
    assert _window_attrs(bare_proto) != _window_attrs(digits.model)
    assert all("strides" not in a for n, a in _window_attrs(bare_proto).items()
               if n.startswith("Conv")) and len(BARE) == 6
    bare = load(bare_digits_path)
    assert _window_attrs(bare) == _window_attrs(digits.model)
    from qonnx.core.modelwrapper import ModelWrapper

    wrapped = ModelWrapper(__import__("onnx").load(str(bare_digits_path)))
    assert load(wrapped) is wrapped and _window_attrs(wrapped) == _window_attrs(digits.model)
    x = np.random.default_rng(0).integers(0, 256, size=(1, 1, 8, 8)).astype(np.float32)
    conv = [n.output[0] for n in digits.graph.node if n.name == "Conv_0"][0]
    got = execute_onnx(ModelWrapper(bare_proto), {digits.graph.input[0].name: x}, True)[conv]
    want = execute_onnx(digits, {digits.graph.input[0].name: x}, True)[conv]
    assert distinct(want) > 50 and np.array_equal(got, want)
    boards = Catalogue().chain("zedboard:2")
    from finnchain.plan.make import make_plan

    fresh = ModelWrapper(__import__("onnx").load(str(bare_digits_path)))  # not through load
    (a, _, _), (b, _, _) = (make_plan(m, boards, "d", "d.onnx") for m in (digits, fresh))
    assert [s.ops for s in a.stages] == [s.ops for s in b.stages]


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_same_padding_is_written_as_onnxruntimes_pads(auto_pad):
    """auto_pad SAME at stride 2 on an even map pads one pixel on one side only: the pads
    written out are the ones onnxruntime applies (compared on its own outputs)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from finnchain.graph.model import explicit_windows

    w = np.random.default_rng(1).normal(size=(3, 2, 3, 3)).astype(np.float32)
    x = np.random.default_rng(2).normal(size=(1, 2, 8, 7)).astype(np.float32)

    def model(**attrs):
        g = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], name="c", strides=[2, 2], **attrs)], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.flatten())])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    def run(m):
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {"x": x})[0]

    terse = model(auto_pad=auto_pad)
    written = explicit_windows(load(onnx.load_from_string(terse.SerializeToString()))).model
    attrs = _window_attrs(written)["c"]
    assert "auto_pad" not in attrs and attrs["pads"] != [1, 1, 1, 1]  # one-sided somewhere
    assert attrs["kernel_shape"] == [3, 3] and attrs["group"] == 1
    assert np.array_equal(run(written), run(terse))


def test_a_pool_with_onnxs_default_stride_is_not_planned_as_a_strided_one(digits, tmp_path):
    """ONNX's MaxPool strides default to 1 (overlapping windows, which FINN's StreamingMaxPool
    does not compute); without them the pool is refused by name, not costed as stride 2."""
    import onnx

    from finnchain.cost.lower import LoweringError

    proto = onnx.load_from_string(digits.model.SerializeToString())
    pool = next(n for n in proto.graph.node if n.name == "MaxPool_0")
    kept = [a for a in pool.attribute if a.name != "strides"]
    del pool.attribute[:]
    pool.attribute.extend(kept)
    with pytest.raises(LoweringError, match="MaxPool_0: only square non-overlapping"):
        segments(load(proto))


def test_a_map_flattened_straight_into_the_top_k_is_refused_by_name(digits):
    """digits-cnv without its fully connected layers (its last pool's 2x2 map flattened into
    the top-k) is refused before planning, naming the Flatten and the fix; the model itself,
    with a MatMul between, is planned."""
    import onnx

    from finnchain.cost.lower import LoweringError

    proto = onnx.load_from_string(digits.model.SerializeToString())
    nodes = list(proto.graph.node)
    flat = next(n for n in nodes if n.op_type == "Flatten")
    top = next(n for n in nodes if n.op_type == "TopK")
    top.input[0] = flat.output[0]
    keep = nodes[: nodes.index(flat) + 1] + [top]
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    with pytest.raises(LoweringError, match=r"Flatten_0 \(Flatten\) flattens a 32x2x2 map "
                                            r"straight into the top-k TopK_0.*MatMul or Gemm"):
        segments(load(proto))
    assert segments(digits)


def test_a_split_layer_is_known_by_its_parts_not_by_its_name(mobilenet, tmp_path):
    """MobileNetV1 on six Zedboards splits layers (one part in block RAM, one in LUTs).
    The plan marks each part (``split_part``), and the FINN folder's split list is read from
    those marks: the same when every op is renamed, an unsplit MVAU called ``..._lut``
    included (names come from the user's ONNX nodes)."""
    from finnchain.finn.folder import split_mvaus
    from finnchain.plan.make import make_plan, write_plan

    plan, _, models = make_plan(mobilenet, Catalogue().chain("zedboard:6"), "m", "m")
    write_plan(plan, models, tmp_path)
    stages = Plan.read(tmp_path / "plan.json").stages
    parts = [(s.index, o.node, o.shape["split_part"]) for s in stages for o in s.ops
             if "split_part" in o.shape]
    pairs: dict = {}
    for index, node, part in parts:
        pairs.setdefault((index, node), []).append(part)
    assert pairs and all(sorted(v) == ["bram", "lut"] for v in pairs.values()), pairs
    assert all(o.kind == "MVAU" for s in stages for o in s.ops if "split_part" in o.shape)
    for s in stages:
        before = split_mvaus(s)
        renamed = replace(s, ops=[replace(o, name=f"op{i}_lut")
                                              for i, o in enumerate(s.ops)])
        assert split_mvaus(renamed) == before
        assert len(before) == sum(k[0] == s.index for k in pairs)
        assert all(b["first"] < b["mh"] for b in before)


def test_the_dmas_stream_through_the_boards_own_port(digits_path):
    """FINN's IODMAs are as wide as the board's HP port (its pynq_native_port_width): 64 bits
    on a Zedboard, 128 on a ZCU104, so a frame (and a layer's weights from DDR) takes half the
    cycles there; the plan records the width."""
    from finnchain.cost.ops import IODMA
    from finnchain.plan.make import make_plan

    model = load(digits_path)
    for spec, bits in (("zedboard:1", 64), ("zcu104:1", 128)):
        plan, (stage,), _ = make_plan(model, Catalogue().chain(spec), "d", "d",
                                      weights_from_ddr=["MatMul_0"])
        dmas = [p for p in stage.placed if isinstance(p.op, IODMA)]
        assert sorted(p.op.role for p in dmas) == ["frame", "frame", "weights"]
        for p in dmas:
            assert p.op.port_bits == bits == stage.board.hp_port_bits
            assert p.cycles == -(-p.op.bytes_per_frame * 8 // bits)
        ops = [o for o in plan.stages[0].ops if o.kind == "IODMA"]
        assert {o.shape["port_bits"] for o in ops} == {bits}
