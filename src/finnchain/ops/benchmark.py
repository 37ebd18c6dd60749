"""``fab benchmark``: stream frames through a deployed chain and report what it did.

Reads the build folder the chain was deployed from (``chain.json``, ``manifest.json``,
``stage<k>/stage.json``), streams frames with a window in flight (progress bar), reads every
stage's counters before and after, and reports frames/s, latency percentiles, per-stage busy
share, per-link MB/s, frames lost, a bit-exact check of a sample against the whole model on this
machine, and the estimated energy per inference (board power from the catalogue), beside the
plan's prediction and the reference system. Writes JSON and a PNG.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finnchain.runtime.client import Chain, ChainError
from finnchain.runtime.metrics import scrape

REFERENCE = {"model": "mobilenet-v1", "fps": 118.3, "power_w": 16.176, "boards": 6}
SAMPLE = 64  # frames checked bit for bit against the whole model


@dataclass
class Source:
    name: str
    images: np.ndarray  # uint8 (N, C, H, W), cycled


def make_source(spec: str, shape: tuple[int, ...], model_name: str, seed: int = 0) -> Source:
    """``seeded`` (random images), ``dataset`` (digits-cnv's test set) or a .npy file."""
    if spec == "seeded":
        rng = np.random.default_rng(seed)
        return Source("seeded", rng.integers(0, 256, size=(256, *shape), dtype=np.uint8))
    if spec == "dataset":
        if model_name != "digits-cnv":
            raise ValueError("--source dataset exists for digits-cnv only; use seeded or a .npy")
        from finnchain.models.digits_cnv import dataset

        return Source("digits test set", dataset(seed)[2].astype(np.uint8))
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--source {spec}: not seeded, dataset, or an existing .npy file")
    images = np.load(path)
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        raise ValueError(f"{path}: images must be uint8 (N, {', '.join(map(str, shape))}), "
                         f"got {images.dtype} {images.shape}")
    return Source(str(path), images)


def _metrics(chain: Chain) -> list[dict[str, float]]:
    return [scrape(s["host"], s["metrics"], timeout=5) for s in chain.spec.stages]


def whole_model_results(build: Path, manifest: dict, images: np.ndarray) -> np.ndarray:
    """What the whole model says for ``images``, on this machine (the emulated executor)."""
    from finnchain.emu.executor import Executor
    from finnchain.files import sha256_file
    from finnchain.models import zoo

    name, digest = manifest["model"]["name"], manifest["model"]["sha256"]
    candidates = [Path(manifest["model"].get("file", "")), zoo.default_path(name)
                  if name in zoo.MODELS else Path("")]
    for path in candidates:
        if path.is_file() and sha256_file(path) == digest:
            return Executor(path).run(images).astype(np.int32)
    # the model file is not here: its stages, chained, compute the same (tests/test_split.py)
    x = images
    for entry in sorted(manifest["stages"], key=lambda e: e["index"]):
        x = Executor(build / entry["dir"] / "model.onnx").run(x)
    return x.astype(np.int32)


def run(build: Path, frames: int = 1000, duration: float = 0.0, window: int = 16,
        source: str = "seeded", timeout: float = 30.0, out: Path | None = None,
        console=None) -> tuple[dict, Path]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from finnchain.boards.catalogue import Catalogue

    manifest = json.loads((build / "manifest.json").read_text())
    stages = [json.loads((build / e["dir"] / "stage.json").read_text())
              for e in sorted(manifest["stages"], key=lambda e: e["index"])]
    catalogue = Catalogue()
    with Chain(build / "chain.json", window=window, timeout=timeout) as chain:
        src = make_source(source, chain.image_shape, manifest["model"]["name"])
        before, t0 = _metrics(chain), time.perf_counter()
        sent_at: dict[int, float] = {}
        done_at: list[float] = []
        latency: list[float] = []
        errors: list[str] = []
        results: dict[int, np.ndarray] = {}
        seqs: list[int] = []
        total = frames if not duration else None
        with Progress(TextColumn("streaming"), BarColumn(), TextColumn("{task.completed} frames"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("frames", total=total)

            def record(seq: int, value) -> None:
                now = time.perf_counter()
                latency.append(now - sent_at.pop(seq))
                done_at.append(now - t0)
                if isinstance(value, ChainError):
                    errors.append(str(value))
                elif seq < SAMPLE:
                    results[seq] = value
                progress.advance(task)

            i = 0
            while (duration and time.perf_counter() - t0 < duration) or \
                    (not duration and i < frames):
                (seq,) = chain.submit(src.images[i % len(src.images)][None])
                sent_at[seq] = time.perf_counter()
                seqs.append(seq)
                i += 1
                for s in [s for s in list(chain.done) if s in sent_at]:
                    record(s, chain.done.pop(s))
            for s, value in chain.results([s for s in seqs if s in sent_at]):
                record(s, value)
        seconds = time.perf_counter() - t0
        after = _metrics(chain)
    n = len(seqs)
    answered = len(latency)  # every frame ends answered: a result or an explicit failure
    refused = len(errors)  # explicit failures: refused frames and frames lost on the way
    received = answered - refused
    sample = sorted(results)[:SAMPLE]
    expected = whole_model_results(build, manifest, src.images[[s % len(src.images)
                                                                 for s in sample]])
    got = np.stack([results[s] for s in sample]) if sample else np.zeros((0, 1), np.int32)
    bit_exact = bool(sample) and bool(np.array_equal(got, expected))
    lat = np.array(latency) * 1e3 if latency else np.array([np.nan])
    per_stage = []
    for k, (b, a, st) in enumerate(zip(before, after, stages)):
        busy = a.get("finnchain_busy_seconds_total", 0) - b.get("finnchain_busy_seconds_total", 0)
        out_bytes = (a.get('finnchain_bytes_total{direction="out"}', 0)
                     - b.get('finnchain_bytes_total{direction="out"}', 0))
        errs = sum(v for key, v in a.items() if key.startswith("finnchain_errors_total{")) - sum(
            v for key, v in b.items() if key.startswith("finnchain_errors_total{"))
        per_stage.append({"stage": k, "board": chain.spec.stages[k].get("name", st["board"]),
                          "busy_percent": round(100 * busy / seconds, 1),
                          "link_out_mb_s": round(out_bytes / seconds / 1e6, 3),
                          "errors": int(errs), "predicted_fps": st["predicted_fps"]})
    power = sum(st.get("power_w_estimate") or (catalogue.board(st["board"]).power_w
                if st["board"] in catalogue.boards else 0.0) for st in stages)
    fps = received / seconds if seconds else 0.0
    result = {
        "model": manifest["model"]["name"], "plan_hash": manifest["plan_hash"],
        "boards": len(stages), "source": src.name, "window": window,
        "frames": n, "frames_received": received, "frames_failed": refused,
        "frames_lost": n - answered,
        "errors": errors[:10], "seconds": round(seconds, 3), "frames_per_s": round(fps, 2),
        "latency_ms_p50": round(float(np.nanpercentile(lat, 50)), 3),
        "latency_ms_p95": round(float(np.nanpercentile(lat, 95)), 3),
        "latency_ms_p99": round(float(np.nanpercentile(lat, 99)), 3),
        "bit_exact": bit_exact, "bit_exact_sample": len(sample),
        "predicted_fps": round(min(st["predicted_fps"] for st in stages), 2),
        "power_w_estimate": round(power, 2),
        "mj_per_inference_estimate": round(power / fps * 1e3, 2) if fps else None,
        "stages": per_stage, "reference": REFERENCE,
        "throughput_timeline": _timeline(done_at),
    }
    out = out or Path("artifacts/reports")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"benchmark-{result['model']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    _chart(result, lat, out / f"benchmark-{result['model']}.png")
    return result, path


def _timeline(done_at: list[float]) -> list[list[float]]:
    """Frames per second over the run, in about 40 steps."""
    if not done_at:
        return []
    step = max(max(done_at) / 40, 0.01)
    edges = np.arange(0, max(done_at) + step, step)
    counts, _ = np.histogram(done_at, bins=edges)
    return [[round(float(e), 2), round(float(c / step), 1)] for e, c in zip(edges[:-1], counts)]


def _chart(result: dict, latency_ms: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4))
    tl = np.array(result["throughput_timeline"] or [[0, 0]])
    a.plot(tl[:, 0], tl[:, 1], marker=".", label="measured")
    a.axhline(result["predicted_fps"], color="tab:red", linestyle="--", label="plan")
    a.set_xlabel("s")
    a.set_ylabel("frames/s")
    a.set_title("throughput")
    a.legend(fontsize="small")
    b.hist(latency_ms[np.isfinite(latency_ms)], bins=40)
    b.set_xlabel("ms")
    b.set_title("latency")
    names = [f"{s['stage']}\n{s['board']}" for s in result["stages"]]
    c.bar(names, [s["busy_percent"] for s in result["stages"]])
    c.set_ylabel("busy %")
    c.set_title("per-stage load")
    fig.suptitle(f"{result['model']} on {result['boards']} boards: "
                 f"{result['frames_per_s']} frames/s (plan {result['predicted_fps']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def print_report(result: dict, path: Path, console) -> None:
    from rich.table import Table

    t = Table(title=f"fab benchmark: {result['model']} on {result['boards']} boards "
                    f"({result['frames']} frames, window {result['window']})")
    t.add_column("figure")
    t.add_column("measured", justify="right")
    t.add_column("plan", justify="right")
    t.add_column("reference", justify="right")
    ref = result["reference"] if result["model"] == REFERENCE["model"] else None
    t.add_row("frames/s", f"{result['frames_per_s']}", f"{result['predicted_fps']}",
              f"{ref['fps']}" if ref else "-")
    t.add_row("latency p50 / p95 / p99 ms",
              f"{result['latency_ms_p50']} / {result['latency_ms_p95']} / {result['latency_ms_p99']}",
              "-", "-")
    t.add_row("frames lost", str(result["frames_lost"]), "0", "-")
    t.add_row("bit-exact (sample)", f"{result['bit_exact']} ({result['bit_exact_sample']})", "-", "-")
    t.add_row("energy mJ/inference (estimate)", str(result["mj_per_inference_estimate"]), "-",
              f"{ref['power_w'] / ref['fps'] * 1e3:.0f}" if ref else "-")
    console.print(t)
    s = Table(title="per stage")
    for col in ("stage", "board", "busy %", "link out MB/s", "errors", "plan fps"):
        s.add_column(col, justify="right")
    for row in result["stages"]:
        s.add_row(str(row["stage"]), row["board"], str(row["busy_percent"]),
                  str(row["link_out_mb_s"]), str(row["errors"]), str(row["predicted_fps"]))
    console.print(s)
    console.print(f"wrote {path} and {path.with_suffix('.png')}")
