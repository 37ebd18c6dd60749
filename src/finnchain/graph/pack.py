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

import numpy as np
from qonnx.core.datatype import DataType


class PackError(ValueError):
    """Data that does not fit the datatype or the packed size; the message says which."""


def _dt(dt: DataType | str) -> DataType:
    return DataType[dt] if isinstance(dt, str) else dt


def _bits(dt: DataType) -> int:
    if not dt.is_integer():
        raise PackError(f"{dt.name} is not an integer datatype")
    return dt.bitwidth()


def packed_bytes(shape: tuple[int, ...], dt: DataType | str) -> int:
    """Bytes of one frame (batch 1) of ``shape`` packed along its innermost dimension."""
    dt = _dt(dt)
    outer = int(np.prod(shape[1:-1])) if len(shape) > 1 else 1
    inner = shape[-1] if shape else 1
    return outer * math.ceil(inner * _bits(dt) / 8)


def pack(x: np.ndarray, dt: DataType | str) -> np.ndarray:
    """Pack ``x`` (..., n) of ``dt`` values into uint8 (..., ceil(n*bits/8))."""
    dt = _dt(dt)
    b = _bits(dt)
    x = np.asarray(x)
    if x.ndim == 0:
        raise PackError("cannot pack a scalar: the innermost dimension is packed")
    if x.size and (x.min() < dt.min() or x.max() > dt.max()):
        raise PackError(f"values outside {dt.name} ({dt.min()}..{dt.max()})")
    v = x.astype(np.int64)
    if dt == DataType["BIPOLAR"]:
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


def unpack(data: np.ndarray | bytes, dt: DataType | str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack`: ``shape`` is the unpacked shape (..., n). Returns int64."""
    dt = _dt(dt)
    b = _bits(dt)
    n = shape[-1]
    nbytes = math.ceil(n * b / 8)
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, dtype=np.uint8)
    expected = int(np.prod(shape[:-1])) * nbytes
    if raw.size != expected:
        raise PackError(f"{raw.size} bytes where {dt.name}{list(shape)} packs to {expected}")
    raw = raw.reshape(*shape[:-1], nbytes)
    if b == 8:
        u = raw.astype(np.int64)
    elif 8 % b == 0 and n * b % 8 == 0:
        per = 8 // b
        u = (raw[..., None].astype(np.int64) >> (np.arange(per) * b)) & ((1 << b) - 1)
        u = u.reshape(*shape)
    else:
        bits = np.unpackbits(raw, axis=-1, bitorder="little")[..., : n * b]
        bits = bits.reshape(*shape[:-1], n, b).astype(np.int64)
        u = (bits << np.arange(b)).sum(axis=-1)
    if dt == DataType["BIPOLAR"]:
        return u * 2 - 1
    if dt.signed():
        u = np.where(u >= (1 << (b - 1)), u - (1 << b), u)
    if u.size and (u.min() < dt.min() or u.max() > dt.max()):
        raise PackError(f"packed data holds values outside {dt.name} (a narrow or garbled frame)")
    return u
