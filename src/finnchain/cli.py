"""The ``finnchain`` command: one entry point for every step. ``finnchain <command> --help``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _export(args: argparse.Namespace) -> int:
    from finnchain.models import zoo

    out = Path(args.out) if args.out else zoo.default_path(args.model)
    try:
        zoo.recipe(args.model)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    weights = Path(args.weights) if args.weights else None
    if weights is not None and not weights.is_file():
        print(f"error: --weights {weights}: no such file", file=sys.stderr)
        return 2
    print(f"exporting {args.model} ({weights or f'seed {args.seed}'}) ...")
    try:
        path = zoo.export(args.model, out, seed=args.seed, weights=weights)
    except (ValueError, RuntimeError) as exc:  # a state dict of another model: its keys named
        print(f"error: {str(exc)[:2000]}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _cuts(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from finnchain.graph.cuts import examine
    from finnchain.models.zoo import resolve_model

    try:
        model = resolve_model(args.model)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cuts, rej = examine(model)  # one pass: the cuts and why the other quantizers are not
    if args.json:
        print(json.dumps([c.to_dict() for c in cuts], indent=1))
    else:
        table = Table(title=f"{len(cuts)} legal cut points")
        for col in ("index", "tensor", "datatype", "shape", "scale", "bytes/frame",
                    "nodes before"):
            table.add_column(col)
        for c in cuts:
            scale = (f"{min(c.scale):.3g}-{max(c.scale):.3g} per channel" if c.per_channel
                     else f"{c.scale:.6g}")
            table.add_row(str(c.index), c.tensor, c.datatype, "x".join(map(str, c.shape[1:])),
                          scale, f"{c.bytes_per_frame:,}", str(c.nodes_before))
        Console().print(table)
    if args.why and not rej:
        Console(stderr=args.json).print("every activation quantizer is a legal cut")
    elif args.why or not cuts:
        why = Table(title=f"{len(rej)} activation quantizers that are not cuts, and why")
        for col in ("node", "op", "why not"):
            why.add_column(col)
        for r in rej:
            why.add_row(r.node, r.op_type, r.reason)
        Console(stderr=args.json).print(why)
    if not cuts:
        print(f"error: {args.model} has no legal cut point: it cannot be split over boards "
              "(the reasons are above)", file=sys.stderr)
        return 1
    return 0


def _split(args: argparse.Namespace) -> int:
    from finnchain.graph.cuts import even_cuts
    from finnchain.graph.model import save
    from finnchain.graph.split import split
    from finnchain.models.zoo import resolve_model

    try:
        model = resolve_model(args.model)
        cuts = [int(c) for c in args.cuts.split(",")] if args.cuts else even_cuts(model, args.stages)
        stages = split(model, cuts)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    for k, stage in enumerate(stages):
        path = save(stage, out / f"stage{k}.onnx")
        print(f"wrote {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from finnchain import check

    return check.run(args)


def _manifest_verify(args: argparse.Namespace) -> int:
    from finnchain.finn.manifest import verify_command

    return verify_command(Path(args.build))


def _keys(args: argparse.Namespace) -> int:
    from finnchain.runtime.curve import make_certificates

    made = make_certificates(Path(args.dir), args.names)
    print("made " + ", ".join(made) if made else "nothing to make")
    return 0


def _ports(args: argparse.Namespace) -> int:
    from finnchain.runtime.ports import board_ports

    print(json.dumps(vars(board_ports())))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from finnchain.demo import run_cluster_demo, run_demo

    if args.no_cluster:
        return run_demo()
    return run_cluster_demo(args.model)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finnchain",
        description="Run a quantized network split over a chain of FPGA boards (or emulated ones).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    from finnchain.models.zoo import MODELS

    e = sub.add_parser(
        "export", help="make a model and write its QONNX file",
        description="Make a model and write its QONNX file, ready for cuts, plan and build: "
                    "uint8 images in (any /255 and normalisation inside the model), a TopK "
                    "out. Ours: " + "; ".join(f"{r.name}: {r.description}" for r in
                                              MODELS.values() if not r.takes_weights)
                    + ". Brevitas' bnn_pynq examples (the networks of FINN's BNN-PYNQ and "
                    "finn-examples), /255 inside, random weights from the seed or --weights: "
                    + ", ".join(r.name for r in MODELS.values() if r.takes_weights) + ".")
    e.add_argument("model", help="one of: " + ", ".join(MODELS))
    e.add_argument("--out", help="output file (default artifacts/<model>/model.onnx)")
    e.add_argument("--seed", type=int, default=0, help="seed of weights, data and training")
    e.add_argument("--weights", help="a state dict of the model (Brevitas' examples only, e.g. "
                                     "a released bnn_pynq checkpoint you have); nothing is "
                                     "downloaded")
    e.set_defaults(func=_export)

    c = sub.add_parser("cuts", help="list the legal cut points of a model")
    c.add_argument("model", help="QONNX file or model name")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--why", action="store_true", help="also list every activation quantizer "
                   "that is not a cut, with the reason (always shown when there is no cut; "
                   "exit 1 then)")
    c.set_defaults(func=_cuts)

    s = sub.add_parser("split", help="write one QONNX model per stage")
    s.add_argument("model", help="QONNX file or model name")
    s.add_argument("--stages", type=int, default=2, help="stages, cut evenly (default 2)")
    s.add_argument("--cuts", help="comma-separated cut indices instead of --stages")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=_split)

    from finnchain.check import add_arguments

    k = sub.add_parser("check", help="split, run the chain and the whole model, compare bits")
    add_arguments(k)
    k.set_defaults(func=_check)

    from finnchain.plan import command as plan_command

    n = sub.add_parser("plan", help="plan a model onto a chain of boards (FINN cost model)")
    plan_command.add_arguments(n)
    n.set_defaults(func=plan_command.run)

    from finnchain.finn import command as build_command

    b = sub.add_parser("build", help="from plan.json to one overlay per stage (FINN or emulated)")
    build_command.add_arguments(b)
    b.set_defaults(func=build_command.run)

    from finnchain.finn import env as finn_env

    fe = sub.add_parser("finn-env", help="make FINN's own environment (.venv-finn)")
    finn_env.add_arguments(fe)
    fe.set_defaults(func=finn_env.run)

    from finnchain.ops import command as rt
    from finnchain.runtime import stage as stage_daemon

    st = sub.add_parser("stage", help="run one stage daemon (what each board runs)")
    stage_daemon.add_arguments(st)
    st.set_defaults(func=stage_daemon.run)
    for name, add, func, text in (
        ("up", rt.add_up, rt.run_up, "start a chain of stages on this machine"),
        ("infer", rt.add_infer, rt.run_infer, "send images through a running chain"),
        ("bench", rt.add_bench, rt.run_bench, "stream frames through a running chain"),
    ):
        q = sub.add_parser(name, help=text)
        add(q)
        q.set_defaults(func=func)

    from finnchain.serve import server as serve_command

    sv = sub.add_parser("serve", help="serve a chain with the Open Inference Protocol (KServe "
                        "v2: HTTP and gRPC, as Triton)")
    serve_command.add_arguments(sv)
    sv.set_defaults(func=serve_command.run)

    m = sub.add_parser("manifest", help="check a build's files against its manifest.json")
    m_sub = m.add_subparsers(dest="manifest_command", required=True)
    mv = m_sub.add_parser("verify", help="every file present and unchanged, none unlisted "
                          "(exit 1 if not; the deployment runs it before copying anything)")
    mv.add_argument("build", help="a build folder (finnchain build --out)")
    mv.set_defaults(func=_manifest_verify)

    ky = sub.add_parser("keys", help="make the chain's CURVE certificates that are missing",
                        description="ZeroMQ certificates <NAME>.key and <NAME>.key_secret in "
                        "DIR, one per name (the deployment makes stage0..N and client); "
                        "existing ones are kept. Prints what it made.")
    ky.add_argument("dir", help="the folder for the certificates (made if missing)")
    ky.add_argument("names", nargs="+", metavar="NAME", help="e.g. client stage0 stage1")
    ky.set_defaults(func=_keys)

    po = sub.add_parser("ports", help="print a board's ports as JSON (data, results, metrics)",
                        description="The ports every board's stage uses, as JSON: the one "
                        "source the deployment reads them from.")
    po.set_defaults(func=_ports)

    from finnchain.emu import cluster

    emu = sub.add_parser("emu", help="emulated boards on this machine (needs root)")
    emu_sub = emu.add_subparsers(dest="emu_command", required=True)
    e_up = emu_sub.add_parser("up", help="make N emulated PYNQ boards and their inventory",
                              description=cluster.__doc__.split("\n\n")[0])
    e_up.add_argument("--boards", type=int, default=3, help="how many boards (default 3)")
    e_up.add_argument("--inventory", default=str(cluster.DEFAULT_INVENTORY),
                      help="where to write the Ansible inventory (default "
                      f"{cluster.DEFAULT_INVENTORY}; the boards' host keys go to the known_hosts "
                      "its group_vars name)")
    e_up.add_argument("--stock", action="store_true",
                      help="boards as stock PYNQ images: no operator key (the default "
                      "password only), as a board whose SD card was not seeded")
    e_up.set_defaults(func=cluster.main_up)
    e_down = emu_sub.add_parser("down", help="remove the boards, the switch and their state")
    e_down.set_defaults(func=cluster.main_down)
    e_st = emu_sub.add_parser("status", help="list the boards (exit 1 if one is down)")
    e_st.set_defaults(func=cluster.main_status)
    faults = {  # name: (help, description, states, function)
        "link": ("take a board's Ethernet link down or up (a fault)",
                 ("Set the link of BOARD's eth0 down or up inside its namespace; its processes "
                 "keep running."), ("down", "up"), cluster.main_link),
        "power": ("cut a board's power or boot it again (a fault)",
                  ("off: every process of BOARD dies and its link goes down, as when its plug "
                  "is pulled. on: it boots again (sshd and the services enabled at boot); with "
                  "--fresh from a freshly flashed PYNQ image, as a replacement board would."),
                  ("off", "on"), cluster.main_power)}
    h = emu_sub.add_parser(
        "heat", help="set the air around a board (its temperature rises; a drill)",
        description="Set the ambient temperature of BOARD's emulated XADC: its die settles "
        "this many degrees Celsius plus what its load adds (default ambient 40). 'default' "
        "restores the default. For testing the temperature alert.")
    h.add_argument("board", help="a board's name, e.g. board2")
    h.add_argument("ambient", help="degrees Celsius, or 'default'")
    h.set_defaults(func=cluster.main_heat)
    for name, (text, description, states, func) in faults.items():
        f = emu_sub.add_parser(name, help=text, description=description)
        f.add_argument("board", help="a board's name, e.g. board2")
        f.add_argument("state", choices=states)
        f.set_defaults(func=func)
        if name == "power":
            f.add_argument("--fresh", action="store_true", help="with on: boot from a fresh "
                           "image (the board's writes are dropped; a new host key, recorded "
                           "in the known_hosts the inventory's group_vars name)")
            f.add_argument("--inventory", default=str(cluster.DEFAULT_INVENTORY),
                           help="the emulated inventory, whose group_vars name the known_hosts "
                           f"file (default {cluster.DEFAULT_INVENTORY})")
            f.add_argument("--sdcard", metavar="IMG", help="with on: boot from this SD card "
                           "image, seeded by playbooks/sdcard.yml (implies --fresh)")

    d = sub.add_parser("demo", help="the README's main job",
                       description="As root: plan, build, bring up emulated boards, deploy with "
                       "Ansible, fab benchmark and health checks, leaving the cluster up. "
                       "Without root (or with --no-cluster): plan, build and check the chain's "
                       "bits on this machine.")
    d.add_argument("--model", choices=("digits-cnv", "mobilenet-v1"), default="digits-cnv",
                   help="digits-cnv on 3 small boards (default) or MobileNetV1-W4A4 on six "
                   "paced Zedboards")
    d.add_argument("--no-cluster", action="store_true", help="skip the emulated cluster")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    import warnings

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stage"]:  # the board's entry point: numpy and pyzmq only, no model tools
        from finnchain.runtime import stage

        return stage.main(argv[1:])

    # brevitas announces an optional accelerator package on import; it is not needed here
    warnings.filterwarnings("ignore", message="fast_hadamard_transform")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
