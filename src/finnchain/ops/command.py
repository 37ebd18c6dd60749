"""``finnchain up``, ``finnchain infer`` and ``finnchain bench``: a chain from the user's side."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def add_up(p: argparse.ArgumentParser) -> None:
    p.description = ("Start a chain of stage daemons on this machine from a build folder "
                     "(manifest.json), last stage first, and keep it up until Ctrl-C. Writes "
                     "WORKDIR/chain.json for clients (finnchain infer/bench --chain).")
    p.add_argument("build", help="a build folder (finnchain build --out), with manifest.json")
    p.add_argument("--workdir", default="artifacts/local-chain", help="configs, logs, chain.json")
    p.add_argument("--accelerator", help="emulate, emulate-paced, pass-through or "
                   "pass-through-paced (default: what the stages were built for; -paced: held "
                   "to the plan's cycles per frame)")
    p.add_argument("--batch", type=int, default=1, help="frames per accelerator call")


def run_up(args: argparse.Namespace) -> int:
    import signal
    import threading

    from finnchain.finn.manifest import ManifestError
    from finnchain.ops.local import LaunchError, LocalChain

    try:
        chain = LocalChain(args.build, args.workdir, args.accelerator, args.batch).start()
    except (LaunchError, ManifestError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"chain up: {len(chain.procs)} stages; clients use --chain {chain.file}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    chain.stop()
    return 0


def add_infer(p: argparse.ArgumentParser) -> None:
    p.description = ("Send images (a .npy file of uint8, N x C x H x W) through a running "
                     "chain and print or save the top-k class indices, in order.")
    p.add_argument("images", help=".npy file of uint8 images")
    p.add_argument("--chain", required=True, help="chain.json of a running chain")
    p.add_argument("--out", help="save the results here (.npy) instead of printing them")
    p.add_argument("--window", type=int, default=16, help="frames in flight (default 16)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per frame (default 30)")


def run_infer(args: argparse.Namespace) -> int:
    from finnchain.runtime.client import Chain, ChainError, ChainTimeout

    try:
        images = np.load(args.images)
        with Chain(args.chain, window=args.window, timeout=args.timeout) as chain:
            results = chain.infer(images)
    except (OSError, ValueError, TypeError, ChainError, ChainTimeout) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        np.save(args.out, results)
        print(f"wrote {args.out}: {results.shape[0]} results")
    else:
        for i, row in enumerate(results):
            print(i, " ".join(map(str, row)))
    return 0


def add_bench(p: argparse.ArgumentParser) -> None:
    p.description = "Stream seeded images through a running chain: frames/s and latency."
    p.add_argument("--chain", required=True, help="chain.json of a running chain")
    p.add_argument("--frames", type=int, default=200, help="frames to send (default 200)")
    p.add_argument("--window", type=int, default=16, help="frames in flight (default 16)")


def stream(chain, frames: int, seed: int = 0) -> dict:
    """Send ``frames`` seeded images through ``chain``; rate and latency percentiles."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(min(frames, 32), *chain.image_shape), dtype=np.uint8)
    s = chain.stream(images)
    s.send(frames=frames)
    r = s.finish()
    return {"frames": frames, "failed": len(r.failed), "seconds": round(r.seconds, 3),
            # every frame answered, failures too: the chain's rate (failures are counted apart)
            "frames_per_s": round(len(r.answers) / r.seconds, 2),
            "latency_ms_p50": r.percentile_ms(50), "latency_ms_p99": r.percentile_ms(99)}


def run_bench(args: argparse.Namespace) -> int:
    from finnchain.runtime.client import Chain, ChainError, ChainTimeout

    try:
        with Chain(args.chain, window=args.window) as chain:
            r = stream(chain, args.frames)
    except (OSError, ChainError, ChainTimeout) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{r['frames']} frames in {r['seconds']} s: {r['frames_per_s']} frames/s, latency "
          f"p50 {r['latency_ms_p50']} ms, p99 {r['latency_ms_p99']} ms"
          + (f"; {r['failed']} failed" if r["failed"] else ""))
    return 0
