"""FINN's packed wire layout: hand-worked bytes, round trips for every integer type, bad data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qonnx.core.datatype import DataType

from finnchain.graph.pack import PackError, pack, packed_bytes, unpack

INTEGER_TYPES = (
    [f"UINT{b}" for b in range(1, 33)]
    + [f"INT{b}" for b in range(2, 33)]
    + ["BIPOLAR", "BINARY", "TERNARY"]
)


def test_hand_worked_bytes():
    # element 0 in the least significant bits, little-endian, padded to whole bytes
    assert pack(np.array([1, 2, 3]), "UINT4").tolist() == [0x21, 0x03]
    assert pack(np.array([-1, 1]), "INT4").tolist() == [0x1F]
    assert pack(np.array([-1, 1, 1]), "BIPOLAR").tolist() == [0b110]
    assert pack(np.array([7, 1, 0]), "UINT3").tolist() == [0x0F, 0x00]
    assert pack(np.array([0x1234]), "UINT16").tolist() == [0x34, 0x12]
    assert pack(np.array([[5, 6], [7, 8]]), "UINT8").tolist() == [[5, 6], [7, 8]]


def test_packed_bytes_pads_the_innermost_dimension():
    assert packed_bytes((1, 56, 56, 128), "UINT4") == 56 * 56 * 64
    assert packed_bytes((1, 3, 3), "UINT3") == 3 * 2  # 9 bits -> 2 bytes per row
    assert packed_bytes((1, 1000), "BIPOLAR") == 125


@st.composite
def typed_arrays(draw):
    name = draw(st.sampled_from(INTEGER_TYPES))
    dt = DataType[name]
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    n = int(np.prod(shape))
    if name == "BIPOLAR":
        vals = draw(st.lists(st.sampled_from([-1, 1]), min_size=n, max_size=n))
    else:
        vals = draw(st.lists(st.integers(int(dt.min()), int(dt.max())), min_size=n, max_size=n))
    return name, np.array(vals, dtype=np.int64).reshape(shape)


@settings(max_examples=300, deadline=None)
@given(typed_arrays())
def test_round_trip_every_integer_type(case):
    name, x = case
    packed = pack(x, name)
    assert packed.dtype == np.uint8
    assert packed.shape[-1] == -(-x.shape[-1] * DataType[name].bitwidth() // 8)
    assert np.array_equal(unpack(packed.tobytes(), name, x.shape), x)


@pytest.mark.parametrize("name", INTEGER_TYPES)
def test_extremes_round_trip(name):
    dt = DataType[name]
    x = np.array([dt.min(), dt.max(), dt.max(), dt.min(), dt.max()], dtype=np.int64)
    assert np.array_equal(unpack(pack(x, name), name, x.shape), x)


def test_bad_data_is_refused_with_a_reason():
    with pytest.raises(PackError, match="outside UINT4"):
        pack(np.array([16]), "UINT4")
    with pytest.raises(PackError, match="outside INT4"):
        pack(np.array([-9]), "INT4")
    with pytest.raises(PackError, match="BIPOLAR"):
        pack(np.array([0]), "BIPOLAR")
    with pytest.raises(PackError, match="packs to 4"):
        unpack(b"\x00" * 3, "UINT4", (2, 4))
    with pytest.raises(PackError, match="not an integer"):
        pack(np.array([1.0]), "FLOAT32")


def test_an_overlay_taking_binary_is_the_wire_of_a_bipolar_cut():
    """FINN's XNOR layers take a BIPOLAR stage input as BINARY (-1 as bit 0, +1 as bit 1), the
    wire's own packing: the accelerator's check accepts it, and still refuses other types."""
    from finnchain.graph.driver import DriverMismatch, check_io_shapes

    x = np.where(np.random.default_rng(0).random((1, 3, 3, 16)) > 0.5, 1, -1)
    assert pack(x, "BIPOLAR").tobytes() == pack((x + 1) // 2, "BINARY").tobytes()

    def io(idt):
        return {"idt": [type("DT", (), {"name": idt})()], "odt": ["UINT8"],
                "ishape_folded": [(1, 3, 3, 1, 16)], "ishape_packed": [(1, 3, 3, 1, 2)],
                "oshape_folded": [(1, 1, 1)], "oshape_packed": [(1, 1, 1)]}

    stage = {"input": {"datatype": "BIPOLAR", "bytes_per_frame": 18},
             "output": {"datatype": "UINT8", "bytes_per_frame": 1}}
    check_io_shapes(io("BINARY"), stage)
    check_io_shapes(io("BIPOLAR"), stage)
    with pytest.raises(DriverMismatch, match="the overlay's input is UINT1, the plan's BIPOLAR"):
        check_io_shapes(io("UINT1"), stage)
