"""The board side as a real board runs it: FINN's driver, the pynq library, the emulated PL.

Every script here runs on a PYNQ v3.0 image's Python (``board_python``: Python 3.10, numpy
1.21, the image's pynq 3.0.1 and the emulated PL's hook, as an emulated board has them), on the
overlays ``finnchain build --target emulate`` makes for emulated boards: FINN's own driver
(``MakePYNQDriver``), the block design's ``.hwh`` (parsed by pynq's own parser) and the
emulated bitstream. Nothing of pynq or FINN's driver is stood in for.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import distinct
from finnchain.fabric.executor import Executor

RUN = """
import json, sys, time
from pathlib import Path
import numpy as np
from finnchain.runtime import accel
from finnchain.runtime.accel import load_accelerator
build, frames = Path(sys.argv[1]), np.load(sys.argv[2])
out = {}
"""


def _board(python: Path, script: str, *args, timeout: float = 300) -> dict:
    r = subprocess.run([str(python), "-c", RUN + script, *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _whole(build: Path, images: np.ndarray) -> np.ndarray:
    codes = images
    for k in range(len(list(build.glob("stage[0-9]*")))):
        codes = np.asarray(Executor(build / f"stage{k}" / "fabric" / "model.onnx").run(codes))
    return codes[:, 0]


@pytest.fixture(scope="module")
def frames(digits_test_set, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("frames") / "images.npy"
    np.save(path, digits_test_set[0][:48].astype(np.uint8))
    return path


def test_the_emulated_overlay_is_what_a_board_loads(build):
    """FINN's own driver, a .hwh in Vivado's format naming FINN's DMAs at the addresses FINN's
    Zynq flow gives them, the emulated bitstream's configuration, and the fabric's program."""
    from finnchain.graph.driver import read_io_shape_dict

    for k in range(3):
        stage = build / f"stage{k}"
        info = json.loads((stage / "stage.json").read_text())
        assert info["accelerator"]["kind"] == "finn" and info["accelerator"]["emulated"]
        io = read_io_shape_dict(stage / "driver" / "driver.py")
        assert io["input_dma_name"] == ["idma0"] and io["output_dma_name"] == ["odma0"]
        hwh = (stage / "bitfile" / "finn-accel.hwh").read_text()
        assert 'INSTANCE="idma0"' in hwh and 'BASEVALUE="0x40000000"' in hwh
        assert 'INSTANCE="odma0"' in hwh and 'BASEVALUE="0x40001000"' in hwh
        bit = json.loads((stage / "bitfile" / "finn-accel.bit").read_text())
        assert {d["name"]: d["role"] for d in bit["dmas"]} == {"idma0": "input",
                                                               "odma0": "output"}
        assert bit["dmas"][0]["bytes_per_frame"] == info["input"]["bytes_per_frame"]
        assert (stage / "fabric" / "program.onnx").is_file()


def test_finns_driver_runs_on_pynq_and_the_emulated_pl_bit_for_bit(build, board_python,
                                                                   frames, digits_test_set):
    """Every stage through FINN's driver on pynq (Overlay, allocate, MMIO, Clocks) and the
    emulated PL at its registers; the batch changes mid-stream (FINN's driver reallocates its
    buffers) and the chain still gives the whole model's labels."""
    got = _board(board_python, """
import os, pynq
from pynq.ps import Clocks
batches = [frames[lo:hi].transpose(0, 2, 3, 1).tobytes() for lo, hi in
           ((0, 1), (1, 9), (9, 12), (12, 48))]  # batches of 1, 8, 3 and 36 frames
buffers = []
for k in range(3):  # one overlay on the PL at a time, as on a board
    acc = load_accelerator(build / f"stage{k}")[0]
    for b, payload in enumerate(batches):
        batches[b] = bytes(acc.run(payload, len(payload) // acc.in_bytes))
        buffers.append(acc.overlay.ibuf_packed_device[0].device_address)
labels = np.frombuffer(b"".join(batches), dtype=np.uint8)
dev = pynq.Device.active_device
out.update(labels=[int(x) for x in labels], machine=os.uname().machine, pynq=pynq.__version__,
           device=type(dev).__name__, fclk=Clocks.fclk0_mhz, transfers=dev.transfers,
           buffers=[int(b) for b in buffers], faults=dev.faults, describe=acc.describe())
print(json.dumps(out))
""", build, frames)
    want = _whole(build, digits_test_set[0][:48])
    assert np.array_equal(np.array(got["labels"]), want) and distinct(want) >= 8
    assert (got["machine"], got["pynq"], got["device"]) == ("armv7l", "3.0.1", "EmulatedPL")
    assert got["fclk"] == 100.0 and got["describe"]["fclk_mhz"] == "100"
    # four batches per stage, and the one FINN's driver runs when it loads (to flush stale
    # runtime weights from the weight streamers: load_runtime_weights)
    assert got["transfers"] == 3 * (4 + 1) and got["faults"] == []
    assert len(set(got["buffers"])) >= 2  # new buffers for new batch sizes


def test_the_pl_paces_a_transfer_by_the_plans_cycles_at_its_clock(build, board_python, frames):
    """A transfer reports done when the plan's cycles per frame have passed at the PL clock
    that pynq's Clocks set: at half the clock it takes twice as long (the device's own
    record of the transfer, not a wall-clock measurement)."""
    got = _board(board_python, """
import pynq
from pynq.ps import Clocks
acc = load_accelerator(build / "stage1")[0]
stage = json.loads((build / "stage1" / "stage.json").read_text())
dev = pynq.Device.active_device
n = 8
x = np.zeros((n, acc.in_bytes), np.uint8).tobytes()
spans = []
for mhz in (100.0, 50.0):
    Clocks.fclk0_mhz = mhz
    acc.run(x, n)
    spans.append(dev.last_transfer["seconds"])
    assert dev.last_transfer["frames"] == n and dev.last_transfer["fclk_mhz"] == mhz
out.update(spans=spans, cycles=stage["cycles"], fclk=[100.0, 50.0])
print(json.dumps(out))
""", build, frames)
    for span, mhz in zip(got["spans"], got["fclk"]):
        assert span == pytest.approx(8 * got["cycles"] / (mhz * 1e6), rel=1e-6)


HANG = """
import pynq
accel.HANG_SECONDS = 0.3
acc = load_accelerator(build / "stage0", batch=1)[0]
ov, dev = acc.overlay, pynq.Device.active_device
ibuf, obuf = ov.ibuf_packed_device[0], ov.obuf_packed_device[0]  # one frame each
big = pynq.allocate((2 * acc.in_bytes,), dtype=np.uint8)
big[:] = frames[:2].transpose(0, 2, 3, 1).reshape(-1)
big.flush()
case = sys.argv[3]
for name, address in (("odma0", 0 if case == "no buffer" else obuf.device_address),
                      ("idma0", big.device_address)):
    getattr(ov, name).write(0x10, address)
    getattr(ov, name).write(0x1C, 2)  # two frames: the output buffer holds one
    getattr(ov, name).write(0x00, 1)
    if case == "started twice" and name == "odma0":
        ov.odma0.write(0x00, 1)
try:
    acc._wait(2)
    out["error"] = None
except accel.AcceleratorHang as exc:
    out["error"] = str(exc)
out["faults"] = dev.faults
print(json.dumps(out))
"""


@pytest.mark.parametrize("case, fault", [
    ("no buffer", "odma0 (output, 2 frames of {out} bytes): no buffer at 0x00000000"),
    ("too small", "odma0 (output, 2 frames of {out} bytes): the buffer at 0x{addr} holds "
                  "{out} bytes, the transfer {twice}"),
    ("started twice", "odma0 started again before its transfer finished")])
def test_a_transfer_the_hardware_could_not_do_hangs_and_names_the_registers(
        build, board_python, frames, case, fault):
    """A DMA started with no buffer at its address, with a buffer too small for its frames, or
    again before its transfer finished never reports done, as the hardware would hang; the
    accelerator gives up at its deadline naming the DMAs' registers, and the PL logs why."""
    got = _board(board_python, HANG, build, frames, case)
    assert got["error"] and "the accelerator did not finish 2 frame(s)" in got["error"]
    assert "idma0 ctrl=0x0 " in got["error"] and "odma0 ctrl=0x0 " in got["error"]
    assert "frames=2" in got["error"]
    out = json.loads((build / "stage0" / "stage.json").read_text())["output"]["bytes_per_frame"]
    want = fault.format(out=out, twice=2 * out, addr="")
    if case == "too small":  # the address is the driver's one-frame output buffer's
        assert any(f.startswith(want.split("0x")[0]) and f"holds {out} bytes, the transfer "
                   f"{2 * out}" in f for f in got["faults"]), got["faults"]
    else:
        assert any(want in f for f in got["faults"]), got["faults"]


def test_the_dma_reads_only_what_the_caches_wrote_back(build, board_python, frames):
    """DDR sits behind the ARM's caches: a DMA reads what the last flush wrote back, and the
    CPU reads the output after an invalidate; FINN's driver does both, a driver that skipped
    the flush would compute on stale memory."""
    got = _board(board_python, """
acc = load_accelerator(build / "stage0", batch=4)[0]
ov = acc.overlay
x = np.frombuffer(frames[:4].transpose(0, 2, 3, 1).tobytes(), np.uint8).reshape(ov.ishape_packed(0))
right = np.asarray(acc.run(x.tobytes(), 4)).copy()
ov.ibuf_packed_device[0][:] = 0
ov.ibuf_packed_device[0].flush()           # DDR holds zeros
ov.ibuf_packed_device[0][:] = x            # the CPU's view only: no flush
ov.execute_on_buffers()
stale = np.empty(ov.oshape_packed(0), np.uint8)
ov.copy_output_data_from_device(stale)
zeros = np.asarray(acc.run(np.zeros_like(x).tobytes(), 4))
out.update(right=right.tolist(), stale=stale.tolist(), zeros=zeros.tolist())
print(json.dumps(out))
""", build, frames)
    assert got["stale"] == got["zeros"] and got["stale"] != got["right"]


def _stage_start(python: Path, stage_dir: Path, tmp: Path) -> subprocess.CompletedProcess:
    cfg = tmp / "stage.json"
    cfg.write_text(json.dumps({"stage_dir": str(stage_dir), "listen": "tcp://127.0.0.1:0",
                               "downstream": "tcp://127.0.0.1:1"}))
    return subprocess.run([str(python), "-m", "finnchain.cli", "stage", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("damage, words", [
    ("no hwh", ["finn-accel.bit has no finn-accel.hwh beside it"]),
    ("hwh without odma0", ["finn-accel.hwh: the block design has no IP 'odma0'",
                           "output DMA"]),
    ("driver of another plan", ["the overlay's input DMA moves", "the plan's wire"])])
def test_an_overlay_that_is_not_what_the_driver_or_plan_say_is_refused_at_start(
        build, board_python, tmp_path, damage, words):
    """A .bit without its .hwh, a .hwh lacking a DMA the bitstream has, a driver whose shapes
    disagree with the plan: the stage refuses to start, naming the file and the field."""
    stage = tmp_path / "stage0"
    shutil.copytree(build / "stage0", stage)
    if damage == "no hwh":
        (stage / "bitfile" / "finn-accel.hwh").unlink()
    elif damage == "hwh without odma0":
        hwh = stage / "bitfile" / "finn-accel.hwh"
        hwh.write_text(hwh.read_text().replace("odma0", "odma9"))
    else:
        driver = stage / "driver" / "driver.py"
        text = driver.read_text()
        from finnchain.graph.driver import read_io_shape_dict

        folded = read_io_shape_dict(driver)["ishape_folded"][0]
        packed = read_io_shape_dict(driver)["ishape_packed"][0]
        doubled = (*folded[:-2], folded[-2] * 2, folded[-1])
        text = text.replace(str(tuple(folded)), str(doubled), 1).replace(
            str(tuple(packed)), str((*packed[:-2], packed[-2] * 2, packed[-1])), 1)
        driver.write_text(text)
    r = _stage_start(board_python, stage, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def ddr_build(digits, make_build):
    """digits-cnv on one Zedboard with both fully connected layers' weights in DDR (FINN's
    mem_mode external): FINN's driver loads them into buffers its weight DMAs read."""
    from finnchain.boards.catalogue import Catalogue

    return make_build(digits, Catalogue().chain("zedboard:1"), "ddr", overlay=True,
                      weights_from_ddr=["MatMul_0", "Gemm_0"])


WEIGHTS = """
acc = load_accelerator(build / "stage0", batch=4)[0]
labels = [bytes(acc.run(frames[lo:lo + 16].transpose(0, 2, 3, 1).tobytes(), 16))
          for lo in (0, 16, 32)]
import pynq
dev = pynq.Device.active_device
out.update(labels=[int(v) for v in np.frombuffer(b"".join(labels), np.uint8)],
           weights=sorted((name, int(buf.nbytes)) for _, buf, name in acc.overlay.external_weights),
           dmas={d.name: d.role for d in dev.dmas.values()}, faults=dev.faults)
print(json.dumps(out))
"""


def test_weights_from_ddr_through_finns_driver_and_the_weight_dmas(ddr_build, board_python,
                                                                   frames, digits_test_set):
    """FINN's driver loads the weight files FINN's MakePYNQDriver wrote (runtime_weights/) into
    DDR buffers and starts each weight DMA with every batch; the emulated PL runs a transfer
    only when they run too, reading the weights once a frame: the labels are the model's."""
    plan = json.loads((ddr_build / "stage0" / "stage.json").read_text())
    got = _board(board_python, WEIGHTS, ddr_build, frames)
    want = _whole(ddr_build, digits_test_set[0][:48])
    assert np.array_equal(np.array(got["labels"]), want) and distinct(want) >= 8
    # the plan's weight bytes, MW*MH weights of W bits: what FINN's driver put in DDR
    (stage,) = json.loads((ddr_build.parent / "plan" / "plan.json").read_text())["stages"]
    ops = {op["node"]: op["shape"] for op in stage["ops"] if op["kind"] == "MVAU"}
    assert sorted(n for _, n in got["weights"]) == sorted(
        ops[k]["mw"] * ops[k]["mh"] * ops[k]["wbits"] // 8 for k in ("MatMul_0", "Gemm_0"))
    assert sorted(got["dmas"].values()) == ["input", "output", "weights", "weights"]
    assert got["faults"] == [] and plan["accelerator"]["kind"] == "finn"


def test_the_pl_computes_with_the_weights_its_dma_read(ddr_build, board_python, frames,
                                                        tmp_path):
    """The weight DMA's bytes are what the fabric computes with: FINN's words decoded and
    FINN's rows (NHWC after the flatten) put back in the program's order. The classifier's
    weight file replaced by zeros gives every frame the same label (the bias alone), where the
    build's give many; without the weight files the accelerator refuses to start (FINN's
    driver loads none, silently)."""
    bit = json.loads((ddr_build / "stage0" / "bitfile" / "finn-accel.bit").read_text())
    layout = {d["node"]: d for d in bit["dmas"] if d["role"] == "weights"}
    assert sorted(layout) == ["Gemm_0", "MatMul_0"]
    assert layout["Gemm_0"]["rows"] is None  # FINN keeps the classifier's rows in order
    rows = layout["MatMul_0"]["rows"]  # the flattened map's rows, NCHW -> NHWC in FINN
    assert sorted(rows) == list(range(len(rows))) and rows != sorted(rows)
    bad = tmp_path / "bad"
    shutil.copytree(ddr_build, bad)
    weights = bad / "stage0" / "driver" / "runtime_weights"
    gemm = weights / f"{layout['Gemm_0']['name']}.npy"
    np.save(gemm, np.zeros_like(np.load(gemm)))
    r = subprocess.run([str(board_python), "-c", RUN + WEIGHTS, str(bad), str(frames)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    good = _board(board_python, WEIGHTS, ddr_build, frames)
    assert len(set(got["labels"])) == 1 and len(set(good["labels"])) >= 8
    assert "weight DMAs read weights other than the build's" in r.stderr
    shutil.rmtree(weights)
    r = subprocess.run([str(board_python), "-c", RUN + WEIGHTS, str(bad), str(frames)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode != 0
    assert "FINN's driver loaded 0 of the 2 weight files its weight DMAs read" in r.stderr, \
        r.stderr[-2000:]
