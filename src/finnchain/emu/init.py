"""PID 1 of an emulated board (the last step of emu/boot.sh): reap whatever is orphaned, as
init does, and end on SIGTERM. Passed to ``python3 -c`` as text, so it is never imported.

It also stands in for the board's system monitor (the Zynq-7000's XADC): an iio device folder
of the board's own, ``$FC_IIO/iio:device0``, with the files Linux's xadc driver gives (``name``,
``in_temp0_raw``, ``in_temp0_offset``, ``in_temp0_scale``). Its temperature follows the board's
load: the CPU time of every process of the board (its own PID namespace, its own /proc) heats
the die above the ambient, with a thermal time constant. The ambient is the machine's default
or what ``finnchain emu heat BOARD CELSIUS`` wrote into the board (``$FC_AMBIENT``), so a hot board
can be made on purpose.
"""

import os
import signal
import threading
import time

AMBIENT_C = 40.0  # a Zynq-7020's die, idle, in a room
HEAT_C_PER_CORE = 15.0  # degrees above the ambient per core of load, once settled
TAU_S = 4.0  # thermal time constant
# the XADC as Linux's xadc driver scales it: 12 bits over 503.975 K (UG480), offset in codes
SCALE = 123.040771484  # millidegrees per code
OFFSET = -2219


def _cpu_ticks() -> int:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total


def _ambient(path: str) -> float:
    try:
        with open(path) as f:
            return float(f.read())
    except (OSError, ValueError):
        return AMBIENT_C


def _write(path: str, text: str) -> None:
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


def thermal() -> None:
    # where the folder and the ambient are: emu/cluster.py's EMU_IIO and EMU_AMBIENT, passed by
    # its _boot (its inventory gives the folder to the stage; its heat() writes the ambient);
    # read here, in the thread, so that nothing about them can stop PID 1
    iio, ambient = os.environ["FC_IIO"], os.environ["FC_AMBIENT"]
    dev = os.path.join(iio, "iio:device0")
    os.makedirs(dev, exist_ok=True)
    _write(os.path.join(dev, "name"), "xadc\n")
    _write(os.path.join(dev, "in_temp0_offset"), f"{OFFSET}\n")
    _write(os.path.join(dev, "in_temp0_scale"), f"{SCALE}\n")
    hz = os.sysconf("SC_CLK_TCK")
    temp, ticks, then = _ambient(ambient), _cpu_ticks(), time.monotonic()
    while True:
        raw = round(temp * 1000 / SCALE - OFFSET)
        _write(os.path.join(dev, "in_temp0_raw"), f"{raw}\n")
        time.sleep(1.0)
        now, t = time.monotonic(), _cpu_ticks()
        load = max(0, t - ticks) / hz / max(now - then, 1e-3)
        ticks, then = t, now
        target = _ambient(ambient) + HEAT_C_PER_CORE * load
        temp += (target - temp) * min(1.0, 1.0 / TAU_S)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    threading.Thread(target=thermal, daemon=True).start()
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)
