"""FINN's packed layout for integer tensors on the wire.

FINN's generated PYNQ driver packs a folded tensor with ``finnpy_to_packed_bytearray(x, dt,
reverse_endian=True, reverse_inner=True)``: the innermost dimension of ``n`` elements of ``b`` bits
becomes one little-endian integer of ``ceil(n*b/8)`` bytes in which element ``i`` occupies bits
``i*b .. i*b+b-1`` (element 0 in the least significant bits). Signed values are stored as ``b``-bit
two's complement; BIPOLAR stores -1 as 0 and +1 as 1. Padding bits are zero. What one board's
output DMA writes in this layout is what the next board's input DMA reads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np


class PackError(ValueError):
    """Data that does not fit the datatype or the packed size; the message says which."""


@dataclass(frozen=True)
class IntType:
    """FINN's integer datatypes by name (UINT4, INT8, BIPOLAR, BINARY, TERNARY), without qonnx, so that
    a board packs and unpacks with numpy alone. Same methods as qonnx's DataType."""

    name: str

    def _parts(self) -> tuple[bool, int]:
        if self.name == "BIPOLAR":
            return True, 1
        if self.name == "BINARY":
            return False, 1
        if self.name == "TERNARY":
            return True, 2
        m = re.fullmatch(r"(U?)INT(\d+)", self.name)
        if not m:
            raise PackError(f"{self.name} is not an integer datatype")
        return m.group(1) != "U", int(m.group(2))

    def is_integer(self) -> bool:
        try:
            self._parts()
            return True
        except PackError:
            return False

    def bitwidth(self) -> int:
        return self._parts()[1]

    def signed(self) -> bool:
        return self._parts()[0]

    def min(self) -> int:
        signed, bits = self._parts()
        if self.name in ("BIPOLAR", "TERNARY"):
            return -1
        return -(1 << (bits - 1)) if signed else 0

    def max(self) -> int:
        signed, bits = self._parts()
        if self.name in ("BIPOLAR", "TERNARY"):
            return 1
        return (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1


BIPOLAR = IntType("BIPOLAR")


def same_bits(finn: str, wire: str) -> bool:
    """A FINN overlay's input or output datatype against the wire's: equal, or BINARY where the
    wire says BIPOLAR (FINN's XNOR layers take -1/+1 as the bits 0/1: the wire's packing)."""
    return finn == wire or (finn, wire) == ("BINARY", "BIPOLAR")


def _dt(dt) -> IntType:
    """A datatype from its name or from a qonnx DataType (by name)."""
    return IntType(dt if isinstance(dt, str) else dt.name)


def _bits(dt: IntType) -> int:
    if not dt.is_integer():
        raise PackError(f"{dt.name} is not an integer datatype")
    return dt.bitwidth()


def packed_bytes(shape: tuple[int, ...], dt) -> int:
    """Bytes of one frame (batch 1) of ``shape`` packed along its innermost dimension."""
    dt = _dt(dt)
    outer = int(np.prod(shape[1:-1])) if len(shape) > 1 else 1
    inner = shape[-1] if shape else 1
    return outer * math.ceil(inner * _bits(dt) / 8)


def pack(x: np.ndarray, dt) -> np.ndarray:
    """Pack ``x`` (..., n) of ``dt`` values into uint8 (..., ceil(n*bits/8))."""
    dt = _dt(dt)
    b = _bits(dt)
    x = np.asarray(x)
    if x.ndim == 0:
        raise PackError("cannot pack a scalar: the innermost dimension is packed")
    if x.size and (x.min() < dt.min() or x.max() > dt.max()):
        raise PackError(f"values outside {dt.name} ({dt.min()}..{dt.max()})")
    v = x.astype(np.int64)
    if dt == BIPOLAR:
        if np.any(v == 0):
            raise PackError("BIPOLAR values must be -1 or +1")
        v = (v + 1) // 2
    u = v & ((1 << b) - 1)
    n = x.shape[-1]
    nbytes = math.ceil(n * b / 8)
    if b == 8:
        out = u.astype(np.uint8)
    elif 8 % b == 0 and n * b % 8 == 0:
        per = 8 // b
        g = u.reshape(*x.shape[:-1], n // per, per)
        out = (g << (np.arange(per) * b)).sum(axis=-1).astype(np.uint8)
    else:
        bits = ((u[..., None] >> np.arange(b)) & 1).astype(np.uint8)
        bits = bits.reshape(*x.shape[:-1], n * b)
        pad = nbytes * 8 - n * b
        if pad:
            bits = np.concatenate([bits, np.zeros((*x.shape[:-1], pad), np.uint8)], axis=-1)
        out = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(out)


def unpack(data: np.ndarray | bytes, dt, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack`: ``shape`` is the unpacked shape (..., n). Returns int64."""
    dt = _dt(dt)
    b = _bits(dt)
    n = shape[-1]
    nbytes = math.ceil(n * b / 8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(data, dtype=np.uint8)
    else:
        raw = np.asarray(data, dtype=np.uint8)
    expected = int(np.prod(shape[:-1])) * nbytes
    if raw.size != expected:
        raise PackError(f"{raw.size} bytes where {dt.name}{list(shape)} packs to {expected}")
    raw = raw.reshape(*shape[:-1], nbytes)
    if b == 8:
        u = raw.astype(np.int64)
    elif b in (16, 32):  # whole little-endian words: read as they are
        u = np.ascontiguousarray(raw).view(f"<u{b // 8}").astype(np.int64)
    elif 8 % b == 0 and n * b % 8 == 0:
        per = 8 // b
        u = (raw[..., None].astype(np.int64) >> (np.arange(per) * b)) & ((1 << b) - 1)
        u = u.reshape(*shape)
    else:
        bits = np.unpackbits(raw, axis=-1, bitorder="little")[..., : n * b]
        bits = bits.reshape(*shape[:-1], n, b).astype(np.int64)
        u = (bits << np.arange(b)).sum(axis=-1)
    if dt == BIPOLAR:
        return u * 2 - 1
    if dt.signed():
        u = np.where(u >= (1 << (b - 1)), u - (1 << b), u)
    if u.size and (u.min() < dt.min() or u.max() > dt.max()):
        raise PackError(f"packed data holds values outside {dt.name} (a narrow or garbled frame)")
    return u


def unpack_external_weights(data: np.ndarray | bytes, mw: int, mh: int, pe: int, simd: int,
                            dt) -> np.ndarray:
    """An MVAU's weight matrix (MW inputs x MH outputs) from the bytes FINN's weight DMA reads
    (the ``runtime_weights/<dma>.npy`` FINN v0.10.1's ``MakePYNQDriver`` writes).

    FINN's layout (``InsertIODMA.get_mem_init``, ``to_external_tensor``): one word per (output
    fold ``fr``, input fold ``fc``), ``fr`` outer; word element ``p*SIMD + s`` is weight
    (``fc*SIMD + s``, ``fr*PE + p``) and sits at bits ``(p*SIMD + s)*W`` of the word, each word
    little-endian in whole bytes (P*Q*W a multiple of 8: the only words FINN's driver packs).
    """
    dt = _dt(dt)
    w = _bits(dt)
    if mw % simd or mh % pe or pe * simd * w % 8:
        raise PackError(f"no FINN weight words for MW={mw}, MH={mh}, PE={pe}, SIMD={simd}, "
                        f"{w}-bit weights")
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    words = (mw // simd) * (mh // pe)
    if raw.size != words * pe * simd * w // 8:
        raise PackError(f"{raw.size} bytes of weights; MW={mw} x MH={mh} of {w} bits in FINN's "
                        f"words are {words * pe * simd * w // 8}")
    bits = np.unpackbits(raw, bitorder="little").reshape(words, pe * simd, w)
    v = (bits.astype(np.int64) << np.arange(w)).sum(axis=-1)
    if dt.name == "BIPOLAR":
        v = 2 * v - 1
    elif dt.signed():
        v = np.where(v >= 1 << (w - 1), v - (1 << w), v)
    v = v.reshape(mh // pe, mw // simd, pe, simd)  # [fr, fc, p, s]
    return v.transpose(1, 3, 0, 2).reshape(mw, mh)
