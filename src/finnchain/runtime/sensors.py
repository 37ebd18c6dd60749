"""The board's own readings for the stage's metrics: the die temperature, the board's uptime.

A Zynq's temperature sensor is an Industrial I/O device of Linux: ``xadc`` on a Zynq-7000,
``ams`` on a Zynq UltraScale+. It is found by its ``name`` file, never by its index (the index
depends on the order drivers probed), and read as the kernel's iio ABI gives it:
``(in_temp0_raw + in_temp0_offset) * in_temp0_scale`` millidegrees Celsius. Standard library
only: this runs on the board.
"""

from __future__ import annotations

from pathlib import Path

IIO_DEVICES = "/sys/bus/iio/devices"
SENSOR_NAMES = ("xadc", "ams")  # Zynq-7000, Zynq UltraScale+


def find_temperature_sensor(root: str | Path = IIO_DEVICES) -> Path | None:
    """The iio device of the Zynq's system monitor under ``root``, found by its name; None
    when the board has none (not a Zynq, or its driver not loaded)."""
    root = Path(root)
    try:
        devices = sorted(root.iterdir())
    except OSError:
        return None
    for dev in devices:
        try:
            name = (dev / "name").read_text().strip()
        except OSError:
            continue
        if name in SENSOR_NAMES and (dev / "in_temp0_raw").exists():
            return dev
    return None


def read_celsius(device: Path) -> float | None:
    """The die temperature from the iio device, in degrees Celsius; None when a read fails."""
    try:
        raw = float((device / "in_temp0_raw").read_text())
        offset_file = device / "in_temp0_offset"
        offset = float(offset_file.read_text()) if offset_file.exists() else 0.0
        scale = float((device / "in_temp0_scale").read_text())
    except (OSError, ValueError):
        return None
    return (raw + offset) * scale / 1000.0


def board_uptime() -> float | None:
    """Seconds since the board booted (Linux's /proc/uptime), None elsewhere."""
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
