"""The README's main job: export the models, plan MobileNetV1 onto six Zedboards with FINN's cost
model, build its overlays for the emulated accelerator, split it where the plan cuts, run the
chain of stages on the emulated accelerator and say whether it matches the whole model bit for
bit. Later steps of the project (emulated cluster, deployment, benchmark) grow this command."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from finnchain.boards.catalogue import Catalogue
from finnchain.check import check_split, print_result
from finnchain.graph.cuts import even_cuts
from finnchain.graph.model import load
from finnchain.models import zoo
from finnchain.plan.command import REFERENCE
from finnchain.plan.make import make_plan, write_plan
from finnchain.plan.report import chart, print_plan

ARTIFACTS = Path("artifacts")
# digits-cnv fits one board (the planner says so), so it is split evenly to exercise a chain;
# MobileNetV1 is planned onto six Zedboards and split where the plan cuts
CHAINS = [("digits-cnv", None, 3), ("mobilenet-v1", "zedboard:6", None)]


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


def _plan(model, name: str, spec: str, catalogue: Catalogue, console: Console) -> list[str]:
    """Plan ``model`` onto ``spec``, write and show the plan; the cut tensors it chose."""
    with console.status(f"planning {name} onto {spec} ..."):
        plan, _, stage_models = make_plan(model, catalogue.chain(spec), name,
                                          str(zoo.default_path(name, ARTIFACTS)))
    out = ARTIFACTS / name / f"plan-{spec.replace(':', 'x')}"
    write_plan(plan, stage_models, out)
    chart(plan, out / "plan.png")
    print_plan(plan, console, REFERENCE if name == "mobilenet-v1" else None)
    console.print(f"wrote {out}/plan.json, plan.png and {len(plan.stages)} stage folders")
    # the emulated accelerator's overlays (the fabric: no FINN needed to check the bits)
    from finnchain.finn.command import build, cluster_name

    build(out / "plan.json", target="emulate", out=ARTIFACTS / name / cluster_name(plan),
          fabric_only=True)
    return [s.output.name for s in plan.stages[:-1]]


def run_demo(full: bool = True) -> int:
    console = Console(width=max(Console().width, 132))
    ok = True
    catalogue = Catalogue()
    for name, spec, stages in CHAINS:
        console.rule(f"{name} on {spec}" if spec else f"{name}: {stages} even stages")
        model = _model(name, console)
        if spec is None:
            cuts = even_cuts(model, stages)
        else:
            cuts = _plan(model, name, spec, catalogue, console)
        shape = tuple(model.get_tensor_shape(model.graph.input[0].name))
        if name == "digits-cnv":
            from finnchain.models.digits_data import dataset

            _, _, x, labels = dataset(0)
        else:
            x, labels = zoo.sample_inputs(shape, 2, seed=0), None
        with console.status("splitting and running the chain and the whole model ..."):
            res = check_split(model, cuts, x)
        print_result(res, console)
        ok &= res.equal
        if labels is not None:
            from finnchain.fabric.executor import Executor

            pred = Executor(model).run(x)[:, 0]
            acc = float(np.mean(pred == labels))
            console.print(f"integer model accuracy on the {len(labels)} held-out digits: {acc:.1%}")
    console.rule()
    console.print("[green]all chains bit-exact[/green]" if ok else "[red]a chain differs[/red]")
    return 0 if ok else 1


# -- the demo on the emulated cluster (root) ----------------------------------------------------
DEMO_BOARDS = Path(__file__).with_name("boards") / "demo.yaml"
CLUSTER_DEMOS = {
    # model, boards for the plan, emulated boards, frames for fab benchmark, their source
    # ("labelled": digits-cnv's test images with their labels, for its accuracy)
    "digits-cnv": ("demo-small:3", 3, 2000, "labelled"),
    "mobilenet-v1": ("zedboard:6", 6, 300, "seeded"),
}
# what the cluster demo runs from the folder it is started in (the repository's root)
OPERATIONS = ("deploy.yml", "fabfile.py", "health")
# where deploy.yml's monitoring play serves the chain's dashboard (the role's defaults)
DASHBOARD = "http://127.0.0.1:9090/consoles/finnchain.html"


def _step(console: Console, text: str, cmd: list[str], env: dict | None = None) -> None:
    import os
    import subprocess

    console.rule(text)
    console.print("$ " + " ".join(cmd), markup=False, highlight=False)
    r = subprocess.run(cmd, env={**os.environ, **(env or {})}, check=False)
    if r.returncode != 0:
        raise SystemExit(f"demo stopped: {text} failed (exit {r.returncode})")


def _call(text: str, code: int) -> None:
    if code != 0:
        raise SystemExit(f"demo stopped: {text} failed (exit {code})")


def run_cluster_demo(model: str = "digits-cnv") -> int:
    """Plan, build, bring up emulated boards, deploy with Ansible, benchmark, check health."""
    import os
    import sys

    from finnchain.finn.command import build
    from finnchain.plan.command import plan

    console = Console(width=max(Console().width, 132))
    if os.geteuid() != 0:
        console.print("[red]the emulated cluster needs root[/red] (network namespaces, mounts, "
                      "sshd): run `sudo make demo` (or as root). Without root, this runs the "
                      "part that needs none: planning, building and checking the chain's bits.")
        return run_demo()
    missing = [f for f in OPERATIONS if not Path(f).exists()]
    if missing:
        console.print(f"[red]the cluster demo runs from the finnchain repository's root[/red] "
                      f"(it deploys with its {', '.join(OPERATIONS)}): {Path.cwd()} has no "
                      f"{', '.join(missing)}")
        return 2
    spec, count, frames, source = CLUSTER_DEMOS[model]
    bin_dir = Path(sys.executable).parent
    py, venv = sys.executable, {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    plan_dir, build_dir = ARTIFACTS / "demo" / model / "plan", ARTIFACTS / "deploy"
    _model(model, console)
    console.rule(f"plan {model} onto {spec}")
    _call("planning", plan(model, boards=spec, out=plan_dir, catalogues=[str(DEMO_BOARDS)]))
    from finnchain.finn import env as finn_env

    # the boards run FINN's own driver on the pynq library, the emulated PL behind it; without
    # FINN's environment (which makes the driver) they run the emulated accelerator instead
    fabric_only = finn_env.find() is None
    console.rule("build the emulated overlays" + (
        " (the fabric alone: no FINN environment for FINN's driver; `make finn-env`)"
        if fabric_only else ": FINN's driver, the emulated bitstream"))
    _call("building", build(plan_dir, target="emulate", out=build_dir, fabric_only=fabric_only))
    from finnchain.emu import cluster

    if cluster.load():
        _step(console, "take down the cluster already up", [py, "-m", "finnchain.cli", "emu", "down"])
    _step(console, f"bring up {count} emulated boards",
          [py, "-m", "finnchain.cli", "emu", "up", "--boards", str(count)])
    _step(console, "deploy with Ansible (deploy.yml)",
          [str(bin_dir / "ansible-playbook"), "deploy.yml", "-i", str(cluster.DEFAULT_INVENTORY),
           "-e", f"finnchain_build={build_dir.absolute()}"], env=venv)
    if source == "labelled":  # the test images the model was not trained on, and their labels
        from finnchain.models.digits_data import dataset

        _, _, x, y = dataset(0)
        labelled = ARTIFACTS / "demo" / model / "test-images.npz"
        np.savez(labelled, images=x.astype(np.uint8), labels=y)
        feed = ["--dataset", str(labelled)]
    else:
        feed = ["--source", source]
    _step(console, "fab benchmark",
          [str(bin_dir / "fab"), "benchmark", "--build", str(build_dir), "--frames", str(frames),
           *feed], env=venv)
    _step(console, "health checks (testinfra)",
          [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "health",
           "--hosts=ansible://boards", f"--ansible-inventory={cluster.DEFAULT_INVENTORY}"],
          env={**venv, "FINNCHAIN_BUILD": str(build_dir.absolute())})
    console.rule("done")
    report = Path(f"artifacts/reports/benchmark-{model}.json")  # where fab benchmark wrote it
    acc = json.loads(report.read_text()).get("accuracy")
    if acc:
        console.print(f"accuracy of the chain on {acc['of']} test images it was not trained on: "
                      f"top-1 {acc['top1']:.2%} (the whole model on this machine: "
                      f"{acc['top1_whole_model']:.2%}; the answers part on {acc['parted']})")
    console.print(f"report: {report} and .png; plan: "
                  f"{plan_dir}/plan.json and plan.png")
    console.print("the cluster is still up: `.venv/bin/fab status --inventory "
                  f"{cluster.DEFAULT_INVENTORY}`, `.venv/bin/finnchain emu status`; tear it down "
                  "with `.venv/bin/finnchain emu down`")
    console.print(f"dashboards: {DASHBOARD} (Prometheus on this machine, scraping every "
                  "board; alerts at http://127.0.0.1:9090/alerts)")
    return 0
