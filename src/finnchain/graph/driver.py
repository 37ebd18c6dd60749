"""What FINN's generated PYNQ driver exchanges with a stage's DMAs, against the plan's wire.

FINN's ``MakePYNQDriver`` writes ``driver.py`` with an ``io_shape_dict``: the datatypes and the
normal, folded and packed shapes of the accelerator's input and output (from the first and last
HW layer), the DMA names and the count of external weight DMAs. The driver's buffers hold the
*packed folded* tensor: each innermost folded group packed and padded to whole bytes. The
planner folds every stage's first and last layer so that this is the wire's packing, so one
board's output DMA writes what the next board's input DMA reads.

``read_io_shape_dict`` reads that dictionary from the file without importing it (the driver
imports pynq, which only a board has); ``check_io_shapes`` compares it with a stage's wire and
names the end and both figures where they differ. The board's ``FinnAccelerator`` and the
controller's check of a FINN build (``finn.compare``) both use them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from finnchain.graph.pack import packed_bytes, same_bits


class DriverMismatch(ValueError):
    """A FINN driver that does not exchange what the plan's wire carries (or cannot be read)."""


class _DataTypeNames(ast.NodeTransformer):
    """``DataType['UINT4']`` in the driver's source becomes the literal ``'UINT4'``."""

    def visit_Subscript(self, node):
        if isinstance(node.value, ast.Name) and node.value.id == "DataType" and \
                isinstance(node.slice, ast.Constant):
            return ast.copy_location(ast.Constant(node.slice.value), node)
        return self.generic_visit(node)


def read_io_shape_dict(driver_py: Path) -> dict:
    """The ``io_shape_dict`` of FINN's generated ``driver.py``, datatypes as their names."""
    try:
        tree = ast.parse(Path(driver_py).read_text(), filename=str(driver_py))
    except (OSError, SyntaxError) as exc:
        raise DriverMismatch(f"cannot read FINN's driver {driver_py}: {exc}") from exc
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "io_shape_dict" for t in node.targets):
            try:
                return ast.literal_eval(_DataTypeNames().visit(node.value))
            except ValueError as exc:
                raise DriverMismatch(f"{driver_py}: io_shape_dict is not a literal FINN's "
                                     f"MakePYNQDriver writes: {exc}") from exc
    raise DriverMismatch(f"{driver_py} has no io_shape_dict: not a driver FINN's "
                         "MakePYNQDriver wrote")


def _name(datatype) -> str:
    return getattr(datatype, "name", str(datatype))  # a DataType of the driver's qonnx copy


def driver_bytes(io_shape_dict: dict, end: str) -> int:
    """Bytes a frame takes in the driver's ``end`` ("input" or "output") DMA buffer."""
    prefix = "ishape" if end == "input" else "oshape"
    return int(np.prod(io_shape_dict[f"{prefix}_packed"][0][1:]))


def check_io_shapes(io_shape_dict: dict, stage: dict) -> None:
    """The driver's datatypes and folded shapes against the stage's wire (``stage["input"]``
    and ``["output"]``: datatype, bytes_per_frame): DriverMismatch naming the end and both
    figures when they differ. (A stage that starts at a BIPOLAR cut takes BINARY in FINN: the
    same bits, so the payload goes to the DMA as is.)"""
    for end, dt_key, prefix in (("input", "idt", "ishape"), ("output", "odt", "oshape")):
        datatype = _name(io_shape_dict[dt_key][0])
        folded = tuple(int(d) for d in io_shape_dict[f"{prefix}_folded"][0])
        packed = tuple(io_shape_dict[f"{prefix}_packed"][0])
        plan = stage[end]
        nbytes = driver_bytes(io_shape_dict, end)
        if not same_bits(datatype, plan["datatype"]):
            raise DriverMismatch(f"the overlay's {end} is {datatype}, the plan's "
                                 f"{plan['datatype']}: overlay and plan differ (a build of "
                                 "another plan?)")
        if packed_bytes(folded, datatype) != nbytes:
            raise DriverMismatch(f"the overlay's {end} packs {list(folded)} into "
                                 f"{list(packed)}, not as FINN's driver packs it: a damaged "
                                 "driver.py?")
        if nbytes != int(plan["bytes_per_frame"]):
            raise DriverMismatch(
                f"the overlay's {end} DMA moves {nbytes} bytes a frame ({datatype} folded "
                f"{list(folded)}), the plan's wire {plan['bytes_per_frame']}: overlay and plan "
                "differ (a build of another plan, or a plan made before finnchain folded cuts "
                "to FINN's driver layout)")
