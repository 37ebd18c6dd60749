"""A quantizer's codes are read in one place (finnchain_rules.quantizer_codes, which FINN's side
copies): its bit width, sign and range, with qonnx's defaults for missing attributes."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.general.quant import Quant, max_int, min_int
from qonnx.custom_op.general.trunc import Trunc_v2

from finnchain.finn.finnside.finnchain_rules import QUANT_DEFAULTS, Codes
from finnchain.finn.finnside.finnchain_rules import quantizer_codes as rules_codes
from finnchain.graph.model import quantizer_codes

SRC = Path(__file__).resolve().parents[1] / "src" / "finnchain"


def test_the_code_range_is_qonnxs():
    for bits, signed, narrow in itertools.product(range(1, 9), (False, True), (False, True)):
        c = Codes(bits, signed, narrow)
        assert (c.lo, c.hi) == (min_int(signed, narrow, bits), max_int(signed, narrow, bits))
    bipolar = rules_codes("BipolarQuant", {}, None)
    assert (bipolar.lo, bipolar.hi, bipolar.bits, bipolar.signed) == (-1, 1, 1, True)


def test_missing_attributes_are_as_qonnx_has_them():
    """A Trunc's take qonnx's defaults; a Quant's are required, by qonnx too."""
    types = Trunc_v2(helper.make_node("Trunc", list("xszbob"), ["y"])).get_nodeattr_types()
    assert {k: types[k][2] for k in QUANT_DEFAULTS} == QUANT_DEFAULTS
    assert rules_codes("Trunc", {}, 4) == Codes(4, True, False)
    types = Quant(helper.make_node("Quant", ["x", "s", "z", "b"], ["y"])).get_nodeattr_types()
    assert all(types[k][1] for k in QUANT_DEFAULTS)  # required
    assert rules_codes("Quant", {"signed": 0, "narrow": 1}, np.float32(3)) == Codes(3, False, True)
    with pytest.raises(ValueError, match="a Quant needs the attributes signed and narrow .* "
                                         "lacks narrow"):
        rules_codes("Quant", {"signed": 1}, 4)


def _model(node, inits: dict) -> ModelWrapper:
    g = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                          [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k)
                           for k, v in inits.items()])
    return ModelWrapper(helper.make_model(g))


def test_each_quantizer_s_bit_width_is_read_from_its_own_input():
    ones = {"s": 1.0, "z": 0.0}
    quant = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], signed=0, narrow=0, name="q")
    assert quantizer_codes(_model(quant, {**ones, "b": 5}), quant) == Codes(5, False, False)
    # Trunc v2: x, scale, zeropt, in_bits, out_scale, out_bits; v1: x, scale, zeropt, in, out
    v2 = helper.make_node("Trunc", ["x", "s", "z", "ib", "os", "ob"], ["y"], name="t2")
    m = _model(v2, {**ones, "ib": 9, "os": 4.0, "ob": 3})
    assert quantizer_codes(m, v2) == Codes(3, True, False)
    v1 = helper.make_node("Trunc", ["x", "s", "z", "ib", "ob"], ["y"], narrow=1, name="t1")
    assert quantizer_codes(_model(v1, {**ones, "ib": 9, "ob": 6}), v1) == Codes(6, True, True)
    with pytest.raises(ValueError, match="quantizer q has a computed bit width"):
        quantizer_codes(_model(quant, ones), quant)
    with pytest.raises(ValueError, match=r"Quant's bit width must be one whole number .* \[2.5\]"):
        quantizer_codes(_model(quant, {**ones, "b": [2.5]}), quant)
    with pytest.raises(ValueError, match="Relu is not a quantizer"):
        rules_codes("Relu", {}, 4)


def test_no_other_module_reads_a_quantizers_sign_or_range():
    """The attributes ``signed`` and ``narrow`` are read only by finnchain_rules: every other
    module asks it (six readers once had three different defaults for a Trunc's sign)."""
    readers = [f"{p.relative_to(SRC)}:{i}" for p in sorted(SRC.rglob("*.py"))
               if p.name != "finnchain_rules.py"
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if re.search(r"""(get|\[)\(?["'](signed|narrow)["']""", line)]
    assert not readers, readers
