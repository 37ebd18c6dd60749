"""FINN's cost formulas against values worked out by hand, and the lowering to FINN ops.

Each expected number below is derived in the comment next to it from the formula in
``finnchain.cost.ops`` (FINN v0.10.1), not read back from the code.
"""

from __future__ import annotations

import math

import pytest

from finnchain.cost.lower import LoweringError, segments
from finnchain.cost.ops import (
    DWC,
    FIFO,
    IODMA,
    MVAU,
    SWG,
    VVAU,
    Fold,
    GlobalAccPool,
    LabelSelect,
    StreamingMaxPool,
    Thresholding,
    acc_bits,
    bram_ladder,
)


def test_bram_ladder_rungs():
    assert bram_ladder(8192, 512) == 8 * 29  # d > 512: ceil(8192/1024) * ceil(512/18)
    assert bram_ladder(4096, 4) == 1  # w <= 4: ceil(4096/4096) * ceil(4/4)
    assert bram_ladder(4097, 4) == 2
    assert bram_ladder(300, 16) == 1  # w <= 18: ceil(300/1024) * ceil(16/18)
    assert bram_ladder(100, 40) == 2  # w > 18, d <= 512: ceil(100/512) * ceil(40/36)
    assert bram_ladder(20000, 1) == 2  # w = 1: ceil(20000/16384)
    assert bram_ladder(9000, 2) == 2  # w = 2: ceil(9000/8192)
    assert bram_ladder(3000, 8) == 2  # w <= 9: ceil(3000/2048) * ceil(8/9)
    assert bram_ladder(512, 36, (8, 16, 32)) == 2  # the VVAU rungs: ceil(36/32)
    assert bram_ladder(512, 36) == 1


def test_accumulator_bound():
    # alpha = log2(64) + 4 + 4 - 1 - 0 = 13 -> ceil(13 + log2(1 + 2^-13) + 1) = 15
    assert acc_bits(64, 4, 4, False) == 15
    # alpha = log2(9) + 8 - 1 = 10.17 -> ceil(11.17) = 12
    assert acc_bits(9, 4, 4, False) == 12
    # a signed input takes one bit less: alpha = log2(27) + 8 + 8 - 1 - 1 = 18.75 -> 20
    assert acc_bits(27, 8, 8, True) == 20
    assert acc_bits(2**30, 8, 8, False) == 32  # never above FINN's default INT32


MV = MVAU(name="m", node="n", mw=64, mh=128, vectors=56 * 56, wbits=4, abits=4, obits=4)


def test_mvau_cycles_and_memory():
    f = Fold(pe=4, simd=8)
    assert MV.cycles(f) == (128 // 4) * (64 // 8) * 3136 == 802_816
    assert MV.wmem(f) == 64 * 128 // 32 == 256
    assert MV.tmem(f) == 32
    # weights 256 deep, 4*8*4 = 128 bits wide: ceil(256/512) * ceil(128/36) = 4
    assert MV.resources(f).bram18 == 4
    assert not MV.legal(Fold(pe=3, simd=8)) and not MV.legal(Fold(pe=4, simd=7))


def test_mvau_luts_by_hand():
    f = Fold(pe=4, simd=8, thr_style="distributed")
    # mult = 8*(2*ceil(8/6)-1)*8 = 192; adder = 8*(2*8-1) = 120; acc = 15;
    # thr = 15*15*ceil(32/64) = 225; comp = 15*15 = 225 -> 777 per PE
    # LUT = 300 + 1.1*4*777 = 3718.8
    r = MV.resources(f)
    assert r.lut == pytest.approx(3718.8)
    assert r.lutram == pytest.approx(1.1 * 4 * 225)
    # weights in LUTs add c2 = 4*8*4*ceil(256/64) = 512 and need no RAMB18
    d = MV.resources(Fold(pe=4, simd=8, ram_style="distributed"))
    assert d.lut == pytest.approx(3718.8 + 512) and d.bram18 == 0
    # DSP multipliers: no mult LUTs, P*Q*ceil(8/48) = 32 DSPs
    s = MV.resources(Fold(pe=4, simd=8, res_type="dsp"))
    assert s.dsp == 32 and s.lut == pytest.approx(300 + 1.1 * 4 * (777 - 192))
    # thresholds in block RAM: 32 deep, 4*15*15 = 900 bits wide: ceil(32/512)*ceil(900/36) = 25
    b = MV.resources(Fold(pe=4, simd=8, thr_style="block"))
    assert b.bram18 == 4 + 25 and b.lut == pytest.approx(300 + 1.1 * 4 * (777 - 225))


def test_mvau_without_activation_has_no_thresholds():
    fc = MVAU(name="fc", node="n", mw=1024, mh=1000, vectors=1, obits=0)
    f = Fold(pe=1, simd=4)
    assert fc.tmem(f) == 0
    acc = acc_bits(1024, 4, 4, False)  # log2(1024) + 7 = 17 -> 19
    assert acc == 19
    # mult = 4*3*8 = 96, adder = 8*7 = 56 -> 300 + 1.1*(96 + 56 + 19)
    assert fc.resources(f).lut == pytest.approx(300 + 1.1 * (96 + 56 + 19))
    assert fc.out_width(f) == 19


def test_external_weights_by_hand():
    """A dense MVAU with its weights in DDR: no weight memory, a weight DMA beside it that
    reads MW*MH*W bits a frame through the 64-bit HP port; FINN's mem_mode external. Only a
    dense layer may (a convolution's MVAU reads its weights once per pixel), only with
    whole-byte weight words (FINN's driver packs them so)."""
    fc = MVAU(name="fc", node="Gemm_0", mw=1024, mh=1000, vectors=1, obits=0)
    f = Fold(pe=1, simd=4, ram_style="external")
    assert f in fc.folds() and fc.buildable(f)
    r = fc.resources(f)
    assert r.bram18 == 0 and r.uram == 0 and r.lutram == 0
    assert r.lut == pytest.approx(fc.resources(Fold(pe=1, simd=4)).lut)  # compute alone
    (dma,) = fc.attached(f)
    assert isinstance(dma.op, IODMA) and dma.op.role == "weights" and not dma.op.on_stream
    # 1024*1000 weights of 4 bits = 512,000 bytes a frame, 64 bits a cycle: 64,000 cycles
    assert dma.op.bytes_per_frame == 512_000 and dma.cycles == 64_000
    # the DMA's LUTs and its depth-8 FIFO of 16 bits: 2*3 + ceil(8/32)*ceil(16/2) = 14
    assert dma.res.lut == 800 + 14 and dma.res.bram18 == 0
    assert fc.finn_config(f)["mem_mode"] == "external"
    assert fc.finn_config(Fold(pe=1, simd=4))["mem_mode"] == "internal_decoupled"
    assert not fc.attached(Fold(pe=1, simd=4))
    # 1*1*4 bits a word: half a byte, which FINN v0.10.1's driver cannot pack
    assert not fc.buildable(Fold(pe=1, simd=1, ram_style="external"))
    conv = MVAU(name="conv", node="Conv_1", mw=288, mh=64, vectors=196, obits=4)
    assert not any(x.ram_style == "external" for x in conv.folds())
    dw = VVAU(name="dw", node="Conv_2", channels=64, kernel=(3, 3), out_dims=(14, 14))
    assert not any(x.ram_style == "external" for x in dw.folds())


def test_vvau_by_hand():
    v = VVAU(name="v", node="n", channels=128, kernel=(3, 3), out_dims=(56, 56), obits=4)
    f = Fold(pe=4, simd=1)
    assert v.cycles(f) == 128 * 9 // 4 * 3136 == 903_168
    # WMEM = 9*128/4 = 288 deep, 16 bits wide: VVAU rung ceil(288/1024)*ceil(16/16) = 1
    r = v.resources(f)
    assert r.bram18 == 1
    # acc 12; mult 24, adder 8, thr = 15*12*32/64 = 90, comp = 180 -> 314 per PE
    assert r.lut == pytest.approx(300 + 1.1 * 4 * 314)
    # DSPs: the model counts P*Q (FINN counts P)
    assert v.resources(Fold(pe=4, simd=9, res_type="dsp")).dsp == 36


def test_window_generator_cycles_and_buffers():
    dw = SWG(name="s", node="n", channels=32, in_dims=(114, 114), out_dims=(112, 112),
             kernel=(3, 3), stride=(1, 1), abits=4, depthwise=True)
    f = Fold(simd=32)
    # buffer_min = (2*114 + 2 + 1)*1 = 231; 231 + 112*max(112*9, 114) = 113,127
    assert dw.cycles(f) == 113_127
    assert dw.buffer_depth(f) == 231
    # 128 bits wide, 231 deep: 36-bit RAMB18s, ceil(128/36) = 4
    assert dw.resources(f).bram18 == 4
    assert dw.resources(Fold(simd=32, ram_style="distributed")).lut == 300 + 128 * 7
    s2 = SWG(name="s", node="n", channels=64, in_dims=(114, 114), out_dims=(56, 56),
             kernel=(3, 3), stride=(2, 2), abits=4, depthwise=True)
    # cf = 8: 1848 + 56*(max(4032, 1824) + 56*1*7) + 1*114*8 = 250,504
    assert s2.cycles(Fold(simd=8)) == 250_504
    first = SWG(name="s", node="n", channels=3, in_dims=(226, 226), out_dims=(112, 112),
                kernel=(3, 3), stride=(2, 2), abits=8)
    assert first.cycles(Fold(simd=3, parallel_window=True)) == 226 * 226 + 2
    assert first.out_width(Fold(simd=3, parallel_window=True)) == 27 * 8


def test_small_ops_by_hand():
    t = Thresholding(name="t", node="n", channels=3, dims=(224, 224), abits=8, obits=8)
    assert t.cycles(Fold(pe=1)) == 150_528
    # 255 comparators of 8 bits; 8*ceil(3/64) memory LUTs when distributed
    assert t.resources(Fold(pe=1, ram_style="distributed")).lut == 2040 + 8
    assert t.resources(Fold(pe=1, ram_style="block")).bram18 == 1
    m = StreamingMaxPool(name="p", node="n", channels=16, in_dims=(8, 8), kernel=2)
    # FINN's figure, but folded as if one cycle per input word
    assert m.cycles(Fold(pe=1)) == 80 and m.bound_cycles(Fold(pe=1)) == 1024
    assert m.bound_cycles(Fold(pe=16)) == 80
    assert m.cycles(Fold(pe=16)) == 80
    g = GlobalAccPool(name="g", node="n", channels=1024, dims=(7, 7))
    assert g.cycles(Fold(pe=2)) == 49 * 512 + 512
    assert LabelSelect(name="l", node="n", labels=1000, k=5).cycles(Fold(pe=8)) == 125


def test_fifo_and_converter_by_hand():
    small = FIFO(name="f", node="", depth=256, width=64).resources(Fold())
    assert small.lut == 2 * 8 + 8 * 32 and small.bram18 == 0
    big = FIFO(name="f", node="", depth=1000, width=8).resources(Fold())
    assert big.bram18 == 1 and big.lut == 2 * math.ceil(math.log2(1000))
    assert DWC(name="d", node="", inw=64, outw=16).resources(Fold()).lut == 2 + 16
    assert DWC(name="d", node="", inw=16, outw=64).resources(Fold()).lut == 2 + 64
    assert DWC(name="d", node="", inw=12, outw=8).resources(Fold()).lut == 1 + 24 + 2 + 8


def test_lowering_mobilenet_matches_finn_examples(mobilenet):
    segs = segments(mobilenet)
    ops = [op for s in segs for layer in s.layers for op in layer.ops]
    kinds = [op.kind for op in ops]
    # finn-examples' MobileNetV1 has 15 MVAUs and 13 VVAUs
    assert kinds.count("MVAU") == 15 and kinds.count("VVAU") == 13
    assert kinds.count("ConvolutionInputGenerator") == 14 == kinds.count("FMPadding")
    assert kinds.count("LabelSelect") == 1 and kinds.count("GlobalAccPool") == 1
    assert len(segs) == 30  # 29 legal cuts
    first = next(op for op in ops if op.kind == "MVAU")
    assert (first.mw, first.mh, first.wbits, first.abits, first.asigned) == (27, 32, 8, 8, True)
    fc = [op for op in ops if op.kind == "MVAU"][-1]
    assert (fc.mw, fc.mh, fc.obits) == (1024, 1000, 0)
    assert all(op.obits == 4 for op in ops if op.kind in ("MVAU", "VVAU") and op is not fc)
    macs = sum(op.mw * op.mh * op.vectors for op in ops if op.kind == "MVAU")
    macs += sum(op.channels * op.k2 * op.out_dims[0] * op.out_dims[1]
                for op in ops if op.kind == "VVAU")
    assert 565e6 < macs < 575e6  # MobileNetV1-1.0-224: about 569 M multiply-accumulates
    assert segs[0].in_bytes == 3 * 224 * 224 and segs[-1].cut is None


def test_lowering_digits_and_unknown_ops(digits):
    segs = segments(digits)
    kinds = [op.kind for s in segs for layer in s.layers for op in layer.ops]
    assert kinds.count("StreamingMaxPool") == 2 and kinds.count("MVAU") == 6
    bad = digits.model.__class__()
    bad.CopyFrom(digits.model)
    node = next(n for n in bad.graph.node if n.op_type == "MaxPool")
    node.op_type = "LpPool"
    from qonnx.core.modelwrapper import ModelWrapper

    with pytest.raises(LoweringError, match="MaxPool_0 \\(LpPool\\)"):
        segments(ModelWrapper(bad))
