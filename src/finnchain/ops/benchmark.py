"""``fab benchmark``: stream frames through a deployed chain and report what it did.

Reads the build folder the chain was deployed from (``chain.json``, ``manifest.json``,
``stage<k>/stage.json``), streams frames with a window in flight (progress bar), reads every
stage's counters before and after, and reports frames/s, latency percentiles, per-stage busy
share, per-link MB/s, frames lost, a bit-exact check of a sample against the whole model on this
machine, and the estimated energy per inference (board power from the catalogue), beside the
plan's prediction and the reference system. With labelled images (``--dataset``: an .npz or
ImageNet's validation layout, ``ops/dataset.py``) every image is sent at least once and every
answer is checked bit for bit; it reports the chain's top-1 and top-5 accuracy beside the whole
model's on the same images, and where their answers part. Writes JSON and a PNG.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finnchain.runtime.client import Chain
from finnchain.runtime.metrics import Reading, scrape

REFERENCE = {"model": "mobilenet-v1", "fps": 118.3, "power_w": 16.176, "boards": 6}
SAMPLE = 64  # frames checked bit for bit against the whole model


@dataclass
class Source:
    name: str
    images: np.ndarray  # uint8 (N, C, H, W), cycled


class BenchmarkError(ValueError):
    """Arguments or a build the benchmark cannot run with; the message names them."""


def make_source(spec: str, shape: tuple[int, ...], model_name: str, seed: int = 0) -> Source:
    """``seeded`` (random images), ``dataset`` (digits-cnv's test set) or a .npy file."""
    if spec == "seeded":
        rng = np.random.default_rng(seed)
        return Source("seeded", rng.integers(0, 256, size=(256, *shape), dtype=np.uint8))
    if spec == "dataset":
        if model_name != "digits-cnv":
            raise BenchmarkError("--source dataset exists for digits-cnv only; use seeded or a "
                                 ".npy")
        from finnchain.models.digits_data import dataset

        return Source("digits test set", dataset(seed)[2].astype(np.uint8))
    path = Path(spec)
    if not path.is_file():
        raise BenchmarkError(f"--source {spec}: not seeded, dataset, or an existing .npy file")
    images = np.load(path)
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        raise BenchmarkError(f"{path}: images must be uint8 (N, {', '.join(map(str, shape))}), "
                         f"got {images.dtype} {images.shape}")
    return Source(str(path), images)


def _ends_in_topk(build: Path, manifest: dict) -> bool:
    """Whether the chain answers with class indices: its last stage's model ends in a TopK
    (FINN's LabelSelect), as ``finnchain export`` makes models."""
    import onnx

    last = max(manifest["stages"], key=lambda e: e["index"])
    model = onnx.load(str(build / last["dir"] / last["accelerator"].get("model", "model.onnx")))
    out = model.graph.output[0].name
    return any(n.op_type == "TopK" and out in n.output for n in model.graph.node)


def accuracy(labels: np.ndarray, answers: dict[int, np.ndarray], reference: np.ndarray) -> dict:
    """Top-1 and top-5 of the chain's first answer to each image, beside the whole model's on
    the same images, and the images where the two answers part."""
    from finnchain.ops.dataset import topk

    idx = np.array(sorted(answers), dtype=np.int64)
    got = np.stack([answers[i] for i in idx]).reshape(len(idx), -1)
    ref = reference[idx].reshape(len(idx), -1)
    parted = [int(i) for i, a, b in zip(idx, got, ref) if not np.array_equal(a, b)]
    out = {"images": int(len(idx)), "of": int(len(labels)), "parted": len(parted),
           "parted_images": parted[:20]}
    for k in (1, 5):
        chain, whole = topk(got, labels[idx], k), topk(ref, labels[idx], k)
        out[f"top{k}"] = None if chain is None else round(chain, 4)
        out[f"top{k}_whole_model"] = None if whole is None else round(whole, 4)
    return out


def _metrics(chain: Chain) -> list[Reading]:
    return [scrape(s["host"], s["metrics"], timeout=5) for s in chain.spec.stages]


def predicted(manifest: dict, stages: list[dict]) -> dict:
    """The plan's own prediction for the whole chain and what binds it (a stage's fabric, a
    link, or a board's ARM side), as the build recorded it in its manifest."""
    p = manifest.get("predicted") or {}
    if "fps" in p:
        b = p.get("bottleneck") or {}
        return {"fps": float(p["fps"]),
                "by": f"stage {b.get('stage')} {b.get('limit')}: {b.get('what')}" if b else "-"}
    # a build from before the manifest carried it: the slowest stage's fabric rate
    k = min(range(len(stages)), key=lambda i: stages[i]["predicted_fps"])
    return {"fps": float(stages[k]["predicted_fps"]),
            "by": f"stage {k} fabric (the build's manifest has no chain prediction: rebuild "
                  f"for one that counts links and ARM sides)"}


def whole_model_results(build: Path, manifest: dict, images: np.ndarray) -> np.ndarray:
    """What the whole model says for ``images``, on this machine (the emulated executor)."""
    from finnchain.fabric.executor import Executor
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
        x = Executor(build / entry["dir"] / entry["accelerator"].get("model", "model.onnx")).run(x)
    return x.astype(np.int32)


def check_arguments(frames: int, duration: float, window: int, timeout: float) -> None:
    """BenchmarkError naming the first argument out of range (before anything is sent, so
    that no earlier report is overwritten)."""
    for ok, what in ((duration >= 0 and math.isfinite(duration), f"--duration {duration}: "
                      "seconds, 0 or more"),
                     (duration > 0 or frames >= 1, f"--frames {frames}: at least 1"),
                     (window >= 1, f"--window {window}: at least 1 frame in flight"),
                     (timeout > 0 and math.isfinite(timeout), f"--timeout {timeout}: seconds, "
                      "more than 0")):
        if not ok:
            raise BenchmarkError(what)


def run(build: Path, frames: int = 1000, duration: float = 0.0, window: int = 16,
        source: str = "seeded", timeout: float = 30.0, out: Path | None = None,
        console=None, dataset: str | None = None) -> tuple[dict, Path]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from finnchain.boards.catalogue import Catalogue

    check_arguments(frames, duration, window, timeout)
    if not (build / "manifest.json").is_file():
        raise BenchmarkError(f"{build} is no deployed build: it has no manifest.json "
                             "(`finnchain build` writes one; --build names the folder)")
    manifest = json.loads((build / "manifest.json").read_text())
    stages = [json.loads((build / e["dir"] / "stage.json").read_text())
              for e in sorted(manifest["stages"], key=lambda e: e["index"])]
    catalogue = Catalogue()
    labelled = None
    if dataset and source != "seeded":
        raise BenchmarkError(f"--dataset {dataset} and --source {source}: the dataset is the "
                             "source; give one")
    if dataset and not _ends_in_topk(build, manifest):
        raise BenchmarkError(f"--dataset {dataset}: the chain of {build} does not answer with "
                             "class indices (its last stage does not end in a TopK), so its "
                             "accuracy cannot be read")
    with Chain(build / "chain.json", window=window, timeout=timeout) as chain:
        if dataset:
            from finnchain.ops.dataset import DatasetError, load_dataset

            try:
                labelled = load_dataset(dataset, chain.image_shape)
            except DatasetError as exc:
                raise BenchmarkError(str(exc)) from None
            src = Source(labelled.name, labelled.images)
            if not duration:  # every image at least once
                frames = max(frames, len(labelled.images))
        else:
            src = make_source(source, chain.image_shape, manifest["model"]["name"])
        before = _metrics(chain)
        stream = chain.stream(src.images)
        with Progress(TextColumn("streaming"), BarColumn(), TextColumn("{task.completed} frames"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("frames", total=frames if not duration else None)

            def tick(s) -> None:
                progress.update(task, completed=len(s.answers))

            if duration:
                stream.send(seconds=duration, each=tick)
            else:
                stream.send(frames=frames, each=tick)
            report = stream.finish()
        after = _metrics(chain)
    seconds = report.seconds
    n, refused = len(report.seqs), len(report.failed)
    received = len(report.delivered)
    # labelled images: every answer is checked; otherwise a sample
    sample = report.delivered if labelled is not None else report.delivered[:SAMPLE]
    if labelled is not None:
        reference = whole_model_results(build, manifest, labelled.images)
        expected = reference[[report.carried[s] for s, _ in sample]]
    else:
        expected = whole_model_results(build, manifest,
                                       src.images[[report.carried[s] for s, _ in sample]])
    got = np.stack([v for _, v in sample]) if sample else np.zeros((0, 1), np.int32)
    bit_exact = bool(sample) and bool(np.array_equal(got, expected))
    lat = report.latency_ms() if report.answers else np.array([np.nan])
    per_stage = []
    for k, (b, a, st) in enumerate(zip(before, after, stages)):
        busy = a.total("finnchain_busy_seconds_total") - b.total("finnchain_busy_seconds_total")
        out_bytes = (a.total("finnchain_bytes_total", direction="out")
                     - b.total("finnchain_bytes_total", direction="out"))
        errs = a.total("finnchain_errors_total") - b.total("finnchain_errors_total")
        per_stage.append({"stage": k, "board": chain.spec.stages[k].get("name", st["board"]),
                          "busy_percent": round(100 * busy / seconds, 1),
                          "link_out_mb_s": round(out_bytes / seconds / 1e6, 3),
                          "errors": int(errs), "predicted_fps": st["predicted_fps"]})
    predicted_rate = predicted(manifest, stages)
    power = sum(st.get("power_w_estimate") or (catalogue.board(st["board"]).power_w
                if st["board"] in catalogue.boards else 0.0) for st in stages)
    fps = received / seconds if seconds else 0.0
    result = {
        "model": manifest["model"]["name"], "plan_hash": manifest["plan_hash"],
        "boards": len(stages), "source": src.name, "window": window,
        "frames": n, "frames_received": received, "frames_failed": refused,
        "frames_lost": report.lost,
        "errors": [str(v) for _, v in report.failed[:10]],
        "seconds": round(seconds, 3), "frames_per_s": round(fps, 2),
        "latency_ms_p50": round(float(np.nanpercentile(lat, 50)), 3),
        "latency_ms_p95": round(float(np.nanpercentile(lat, 95)), 3),
        "latency_ms_p99": round(float(np.nanpercentile(lat, 99)), 3),
        "bit_exact": bit_exact, "bit_exact_sample": len(sample),
        "predicted_fps": round(predicted_rate["fps"], 2), "predicted_by": predicted_rate["by"],
        "power_w_estimate": round(power, 2),
        "mj_per_inference_estimate": round(power / fps * 1e3, 2) if fps else None,
        "stages": per_stage, "reference": REFERENCE,
        "throughput_timeline": report.timeline(),
    }
    if labelled is not None:
        first: dict[int, np.ndarray] = {}
        for seq, value in report.delivered:
            first.setdefault(report.carried[seq], value)
        result["accuracy"] = {"dataset": labelled.name,
                              **accuracy(labelled.labels, first, reference)}
    out = out or Path("artifacts/reports")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"benchmark-{result['model']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    _chart(result, lat, out / f"benchmark-{result['model']}.png")
    return result, path


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


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


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
    console.print(f"the plan's rate is bound by {result['predicted_by']}")
    acc = result.get("accuracy")
    if acc:
        a = Table(title=f"accuracy on {acc['dataset']}: {acc['images']} of {acc['of']} images "
                        "answered")
        for col in ("", "chain", "whole model (this machine)"):
            a.add_column(col, justify="right")
        for k in (1, 5):
            a.add_row(f"top-{k}", _share(acc[f"top{k}"]), _share(acc[f"top{k}_whole_model"]))
        a.add_row("images where the answers part", str(acc["parted"]), "-")
        console.print(a)
    s = Table(title="per stage")
    for col in ("stage", "board", "busy %", "link out MB/s", "errors", "plan fps"):
        s.add_column(col, justify="right")
    for row in result["stages"]:
        s.add_row(str(row["stage"]), row["board"], str(row["busy_percent"]),
                  str(row["link_out_mb_s"]), str(row["errors"]), str(row["predicted_fps"]))
    console.print(s)
    console.print(f"wrote {path} and {path.with_suffix('.png')}")
