"""Cut points and stages: the chain computes exactly what the whole model computes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from qonnx.core.datatype import DataType

from conftest import distinct
from finnchain.check import check_split
from finnchain.graph.cuts import cut_points, even_cuts
from finnchain.graph.pack import packed_bytes
from finnchain.graph.reference import run_reference
from finnchain.graph.split import SplitError, split


def test_digits_cut_points(digits):
    cuts = cut_points(digits)
    assert [c.datatype for c in cuts] == ["UINT8"] + ["UINT4"] * 5
    for c in cuts:
        _, ch, *rest = c.shape
        hw = int(np.prod(rest)) if rest else 1
        assert c.bytes_per_frame == hw * -(-ch * DataType[c.datatype].bitwidth() // 8)
        assert c.scale > 0 and np.log2(c.scale) == round(np.log2(c.scale))


def test_mobilenet_cut_points(mobilenet):
    cuts = cut_points(mobilenet)
    assert len(cuts) == 29  # the input quantizer, 27 activations and the pool
    assert cuts[0].datatype == "INT8" and {c.datatype for c in cuts[1:]} == {"UINT4"}
    biggest = max(cuts[1:], key=lambda c: c.bytes_per_frame)
    assert biggest.shape == (1, 64, 112, 112)
    assert biggest.bytes_per_frame == packed_bytes((1, 112, 112, 64), "UINT4") == 401408


def test_illegal_cuts_are_named(digits):
    conv_out = next(n for n in digits.graph.node if n.op_type == "Conv").output[0]
    with pytest.raises(SplitError, match=conv_out):
        split(digits, [conv_out])
    with pytest.raises(SplitError, match="out of range"):
        split(digits, [99])
    with pytest.raises(SplitError, match="distinct and in graph order"):
        split(digits, [3, 1])


def test_stages_are_valid_models_with_integer_boundaries(digits):
    cuts = cut_points(digits)
    stages = split(digits, [1, 3])
    assert len(stages) == 3
    for k, st in enumerate(stages):
        onnx.checker.check_model(st.model)
        if k > 0:
            assert st.get_tensor_datatype(st.graph.input[0].name) == DataType[cuts[[1, 3][k - 1]].datatype]
            assert st.graph.node[0].op_type == "Mul"  # the scale enters first
        if k < 2:
            assert st.get_tensor_datatype(st.graph.output[0].name) == DataType["UINT4"]
            assert st.graph.node[-1].op_type == "Div"  # and leaves last


def _each_single_cut(model, x, min_distinct):
    whole = run_reference(model, x)
    assert distinct(whole) > 1
    for cut in cut_points(model):
        first, second = split(model, [cut.index])
        mid = run_reference(first, x)
        assert mid.shape[1:] == cut.shape[1:]
        assert np.array_equal(mid, np.round(mid)), cut.tensor  # integer codes cross the link
        assert distinct(mid) >= min_distinct, (cut.tensor, distinct(mid))
        out = run_reference(second, mid)
        assert np.array_equal(out, whole), cut.tensor


def test_every_single_cut_digits(digits, digits_test_set):
    _each_single_cut(digits, digits_test_set[0][:64], min_distinct=8)


@pytest.mark.slow
def test_every_single_cut_mobilenet(mobilenet, mobilenet_images):
    _each_single_cut(mobilenet, mobilenet_images[:2], min_distinct=8)


@pytest.mark.parametrize("seed", range(4))
def test_random_multi_cut_plans_digits(digits, digits_test_set, seed):
    rng = np.random.default_rng(seed)
    n = len(cut_points(digits))
    stages = int(rng.integers(2, min(8, n + 1) + 1))
    cuts = sorted(rng.choice(n, size=stages - 1, replace=False).tolist())
    res = check_split(digits, cuts, digits_test_set[0])
    assert res.equal, res.detail
    assert res.stages == stages
    assert all(c.distinct >= 8 for c in res.cuts)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_random_multi_cut_plans_mobilenet(mobilenet, mobilenet_images, seed):
    rng = np.random.default_rng(100 + seed)
    stages = int(rng.integers(2, 9))
    cuts = sorted(rng.choice(len(cut_points(mobilenet)), size=stages - 1, replace=False).tolist())
    res = check_split(mobilenet, cuts, mobilenet_images)
    assert res.equal, res.detail
    assert all(c.distinct >= 8 for c in res.cuts), [c.distinct for c in res.cuts]


def test_even_cuts(mobilenet):
    cuts = even_cuts(mobilenet, 6)
    assert len(cuts) == 5 and [c.index for c in cuts] == sorted({c.index for c in cuts})
    with pytest.raises(ValueError, match="has 29"):
        even_cuts(mobilenet, 40)
