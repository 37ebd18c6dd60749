"""The emulated accelerator equals qonnx's reference bit for bit, and refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from conftest import distinct
from finnchain.check import inexact_scales
from finnchain.fabric import compile as emc
from finnchain.fabric.affine import apply_affine, fit_affine
from finnchain.fabric.compile import CompileError, compile_model, integer_codes
from finnchain.fabric.executor import Executor, InputError
from finnchain.graph.model import load
from finnchain.graph.reference import run_reference
from finnchain.graph.split import split


def test_whole_digits_equals_reference(digits, digits_test_set):
    x = digits_test_set[0]
    ex = Executor(digits)
    y = ex.run(x)
    assert np.array_equal(y, run_reference(digits, x))
    assert distinct(y) == 10


def test_whole_mobilenet_equals_reference(mobilenet, mobilenet_images):
    ex = Executor(mobilenet)
    y = ex.run(mobilenet_images)
    assert np.array_equal(y, run_reference(mobilenet, mobilenet_images))
    assert y.shape == (3, 5) and distinct(y) >= 5
    # every requantization of MobileNetV1 found its verified affine form (the fast path)
    assert ex.program.stats["affine"] == 29 and ex.program.stats["linear"] == 28
    assert ex.program.stats["lut"] == ex.program.stats["thresholds"] == 0


def test_stage_outputs_are_codes_of_the_cut_datatype(mobilenet, mobilenet_images):
    first, second = split(mobilenet, [5])
    ex = Executor(first)
    mid = ex.run(mobilenet_images)
    assert mid.dtype == np.uint8 and mid.max() <= 15
    assert np.array_equal(mid, run_reference(first, mobilenet_images))
    assert distinct(mid) == 16
    out = Executor(second).run(mid)
    assert np.array_equal(out, run_reference(mobilenet, mobilenet_images))


@pytest.mark.parametrize("mode", ["thresholds", "tables"])
def test_fallback_paths_are_exact(digits, digits_test_set, monkeypatch, mode):
    monkeypatch.setattr(emc, "fit_affine", lambda *a, **k: None)
    monkeypatch.setattr(emc, "LUT_LIMIT", 0 if mode == "thresholds" else 1 << 20)
    ex = Executor(digits)
    key = "thresholds" if mode == "thresholds" else "lut"
    assert ex.program.stats[key] >= 5
    x = digits_test_set[0][:100]
    assert np.array_equal(ex.run(x), run_reference(digits, x))


def test_integer_codes():
    codes, scale = integer_codes(np.array([0.5, -1.5, 0.25]), None, "w")
    assert scale == 0.25 and codes.tolist() == [2, -6, 1]
    codes, scale = integer_codes(np.array([[1.0, 3.0], [0.125, 0.0]]), 0, "w")
    assert scale.reshape(-1).tolist() == [1.0, 0.125] and codes.tolist() == [[1, 3], [1, 0]]
    with pytest.raises(CompileError, match="power-of-two"):
        integer_codes(np.array([0.1, 0.3]), None, "weights of conv0")


def test_affine_fit_verifies_or_refuses():
    # floor(a / 3) on [0, 40] clipped to 0..7: thresholds 3, 6, ..., 21
    T = np.array([[3.0 * j for j in range(1, 8)]])
    lo, hi = np.array([0]), np.array([40])
    ends = np.array([[0.0], [7.0]])
    B, M = fit_affine(T, lo, hi, ends, 0, 7)
    a = np.arange(0, 41)
    assert np.array_equal(apply_affine(a, B[0], M[0], 0, 7), np.clip(a // 3, 0, 7))
    irregular = np.array([[1.0, 2.0, 30.0, 31, 32, 33, 34]])
    assert fit_affine(irregular, lo, hi, ends, 0, 7) is None


def test_bad_input_is_named(digits):
    ex = Executor(digits)
    with pytest.raises(InputError, match=r"shape \(2, 1, 8, 9\)"):
        ex.run(np.zeros((2, 1, 8, 9), np.uint8))
    with pytest.raises(InputError, match="outside"):
        ex.run(np.full((1, 1, 8, 8), 300, np.int32))
    with pytest.raises(InputError, match="not integers"):
        ex.run(np.full((1, 1, 8, 8), 0.5, np.float32))
    with pytest.raises(InputError, match="not numeric"):
        ex.run(np.array([["a"] * 8] * 8))
    assert ex.run(np.zeros((1, 8, 8), np.uint8)).shape == (1, 1)  # one frame without batch axis


def test_weights_with_a_learned_scale_run_as_their_quantizers_codes(digits_path,
                                                                     digits_test_set):
    """A weight scale that is not a power of two (a learned one): the program's weights are
    the weight quantizer's integer codes and the outputs those of the integer function,
    which the float reference matches on nearly every image; a zero point other than 0 is
    refused by name."""
    model = load(digits_path)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    quant = model.find_producer(conv.input[1])
    s = model.get_initializer(quant.input[1])
    model.set_initializer(quant.input[1], (s * 0.3).astype(np.float32))
    program = compile_model(model).model
    acc = [n for n in program.graph.node if n.op_type == "Conv" and n.output[0].startswith("acc")]
    weights = {i.name: numpy_helper.to_array(i) for i in program.graph.initializer}
    first = weights[acc[0].input[1]]
    assert np.all(first == np.round(first)) and np.abs(first).max() >= 2  # codes, not values
    images = digits_test_set[0][:200]
    ours = Executor(model).run(images)
    ref = run_reference(model, images.astype(np.float32))
    assert np.mean(ours == ref) >= 0.99 and np.unique(ref).size >= 8
    # finnchain check names the cause when the reference parts from the emulator
    assert not inexact_scales([load(digits_path)])
    assert inexact_scales([model]).startswith(quant.name)
    model.set_initializer(quant.input[2], np.array(1.0, np.float32))
    with pytest.raises(CompileError, match="zero point"):
        Executor(model)


def test_a_float32_tie_takes_finns_side(tie_model, monkeypatch):
    """An accumulator within float32 rounding of a step (conftest.TIE, resnet18_4w4a's): the
    emulator's thresholds are FINN's, derived in its float32 order, so the tie's code is FINN's
    4 where exact arithmetic gives 3, and frame 0's label follows (a measurement of the
    reference's chain on the accumulator's value, the emulator's way before, gave 3 too)."""
    from conftest import TIE, TIE_LABEL

    path, frames = tie_model
    model = load(path)
    ours = np.asarray(Executor(model).run(frames)).reshape(-1)
    exact = TIE["acc"] * TIE["scale"] * TIE["weight_scale"] * TIE["bn_mul"] + TIE["bn_add"]
    assert round(exact / TIE["scale"]) == 3 and ours[0] == TIE_LABEL
    assert distinct(ours) >= 2
    monkeypatch.setattr(emc._Compiler, "_finn_thresholds", lambda *args: None)
    measured = np.asarray(Executor(model).run(frames)).reshape(-1)
    assert measured[0] == 0 and np.array_equal(measured[1:], ours[1:])


def test_thresholds_that_part_from_the_chain_are_not_taken(tie_model, monkeypatch):
    """FINN's thresholds are taken only where they agree with the chain measured through the
    reference at all but a tie or two of its probes: thresholds off by a step (a chain FINN's
    derivation does not describe) are left for the measurement, whose outputs are the result."""
    _, frames = tie_model
    model = load(tie_model[0])
    assert compile_model(model).stats["finn_order"] == 1
    derive = emc._Compiler._finn_thresholds

    def off_by_a_step(self, *args):
        found = derive(self, *args)
        return None if found is None else (found[0], found[1] + 33)

    monkeypatch.setattr(emc._Compiler, "_finn_thresholds", off_by_a_step)
    assert compile_model(model).stats["finn_order"] == 0
    shifted = np.asarray(Executor(model).run(frames))
    monkeypatch.setattr(emc._Compiler, "_finn_thresholds", lambda *args: None)
    assert np.array_equal(shifted, np.asarray(Executor(model).run(frames)))
