"""The board catalogue: facts, chains, overrides, and clear errors."""

from __future__ import annotations

import pytest

from finnchain.boards.catalogue import Catalogue, CatalogueError


def test_xc7z020_boards_and_finn_limits():
    cat = Catalogue()
    for kind, part in (("zedboard", "xc7z020clg484-1"), ("pynq-z1", "xc7z020clg400-1"),
                       ("pynq-z2", "xc7z020clg400-1")):
        b = cat.board(kind)
        assert b.part == part
        assert b.resources == {"lut": 53200, "ff": 106400, "bram18": 280, "uram": 0, "dsp": 220}
        assert b.limits == {"lut": 0.7, "ff": 0.5, "bram18": 0.8, "uram": 0.8, "dsp": 0.8}
        assert b.clock_mhz == 100 and b.ethernet_mbps == 1000
    assert cat.board("zedboard").finn_board is None  # not among FINN's boards
    assert cat.board("zedboard").limit("bram18") == pytest.approx(224)
    for kind in ("ultra96-v2", "kv260", "zcu104", "zcu102"):
        assert cat.board(kind).resources["lut"] > 53200


def test_chain_spec_keeps_order_and_counts():
    chain = Catalogue().chain("zedboard:2, pynq-z2 ,kv260:1")
    assert [b.kind for b in chain] == ["zedboard", "zedboard", "pynq-z2", "kv260"]


@pytest.mark.parametrize("spec, message", [
    ("nosuch:2", "unknown board kind 'nosuch'; known: "),
    ("zedboard:x", "bad board count"),
    ("zedboard:0", "at least 1"),
    (" , ", "no boards"),
])
def test_bad_chain_specs_are_named(spec, message):
    with pytest.raises(CatalogueError, match=message):
        Catalogue().chain(spec)


def test_overrides_merge_per_key(tmp_path):
    f = tmp_path / "boards.yml"
    f.write_text("finnchain_boards:\n  boards:\n    zedboard:\n      clock_mhz: 125\n"
                 "      limits: {lut: 0.6}\n    mine:\n      part: xc7z020clg400-1\n"
                 "      family: xc7z020\n      clock_mhz: 50\n      ethernet_mbps: 100\n"
                 "      power_w: 2\n      arm: {frame_us: 1, byte_ns: 1}\n")
    cat = Catalogue(f)
    z = cat.board("zedboard")
    assert z.clock_mhz == 125 and z.limits["lut"] == 0.6 and z.limits["bram18"] == 0.8
    assert z.part == "xc7z020clg484-1"  # untouched keys stay
    assert cat.board("mine").resources["dsp"] == 220 and cat.board("mine").link_bytes_per_s == 12.5e6
    # a board whose catalogue entry gives no DMA cost: DMA_SHARE of its per-frame cost
    from finnchain.boards.catalogue import DMA_SHARE

    assert cat.board("mine").arm_dma_us == pytest.approx(DMA_SHARE * 1)


def test_bad_catalogue_files_are_named(tmp_path):
    with pytest.raises(CatalogueError, match="not found"):
        Catalogue(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("boards: [unclosed")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        Catalogue(bad)
    partial = tmp_path / "partial.yml"
    partial.write_text("boards:\n  half:\n    part: x\n")
    with pytest.raises(CatalogueError, match="boards.half lacks 'family'"):
        Catalogue(partial)


def test_catalogue_values_of_the_wrong_type_or_range_name_their_field(tmp_path):
    wrong = tmp_path / "wrong.yml"
    wrong.write_text("boards:\n  zedboard:\n    clock_mhz: fast\n    link_efficiency: 1.5\n"
                     "    limits: {luts: 0.5}\n")
    with pytest.raises(CatalogueError) as info:
        Catalogue(wrong)
    text = str(info.value)
    assert "wrong.yml" in text
    assert "boards.zedboard.clock_mhz: Input should be a valid number" in text and "'fast'" in text
    assert "boards.zedboard.link_efficiency: Input should be less than or equal to 1" in text
    assert "boards.zedboard.limits.luts: not a known field" in text


def test_arm_and_link_figures():
    z = Catalogue().board("zedboard")
    assert z.link_bytes_per_s == pytest.approx(1e9 / 8 * z.link_efficiency)
    # one frame: fixed cost plus a cost per byte in and out
    us = z.arm_frame_us + z.arm_byte_ns * 3000 / 1000
    assert z.arm_fps(1000, 2000) == pytest.approx(1e6 / us)
    # and each weight DMA it starts with the batch (a layer's weights from DDR)
    assert z.arm_fps(1000, 2000, weight_dmas=2) == pytest.approx(1e6 / (us + 2 * z.arm_dma_us))
    assert 0 < z.arm_dma_us < z.arm_frame_us
