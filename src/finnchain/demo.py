"""The README's main job: export the models, split them, run the split chain on the emulated
accelerator and say whether it matches the whole model bit for bit. Later steps of the project
(planner, emulated cluster, deployment, benchmark) grow this same command."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console

from finnchain.graph.check import check_split, even_cuts, print_result
from finnchain.graph.model import load
from finnchain.models import zoo

ARTIFACTS = Path("artifacts")
PLAN = [("digits-cnv", 3), ("mobilenet-v1", 6)]


def _model(name: str, console: Console):
    path = zoo.default_path(name, ARTIFACTS)
    if not path.exists():
        t = time.perf_counter()
        with console.status(f"exporting {name} ..."):
            zoo.export(name, path)
        console.print(f"exported {name} to {path} in {time.perf_counter() - t:.1f} s")
    else:
        console.print(f"using {path} (delete it to export again)")
    return load(path)


def run_demo(full: bool = True) -> int:
    console = Console()
    ok = True
    for name, stages in PLAN:
        console.rule(f"{name}: {stages} stages")
        model = _model(name, console)
        shape = tuple(model.get_tensor_shape(model.graph.input[0].name))
        if name == "digits-cnv":
            from finnchain.models.digits_cnv import dataset

            _, _, x, labels = dataset(0)
        else:
            x, labels = zoo.sample_inputs(shape, 2, seed=0), None
        with console.status("splitting and running the chain and the whole model ..."):
            res = check_split(model, even_cuts(model, stages), x)
        print_result(res, console)
        ok &= res.equal
        if labels is not None:
            from finnchain.emu.executor import Executor

            pred = Executor(model).run(x)[:, 0]
            acc = float(np.mean(pred == labels))
            console.print(f"integer model accuracy on the {len(labels)} held-out digits: {acc:.1%}")
    console.rule()
    console.print("[green]all chains bit-exact[/green]" if ok else "[red]a chain differs[/red]")
    return 0 if ok else 1
