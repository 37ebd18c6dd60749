"""``finnchain serve``: the Open Inference Protocol (KServe v2) in front of a chain, on the
controller. HTTP/REST on uvicorn (Starlette) and gRPC on grpc.aio share one event loop; the
chain's connection has a thread of its own (``dispatch``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys

from finnchain.runtime.chainfile import ChainFile
from finnchain.runtime.errors import ChainFileError

HTTP_PORT, GRPC_PORT = 8000, 8001  # Triton's defaults


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Serve a running chain with the Open Inference Protocol (KServe v2), over HTTP/REST and "
        "gRPC, on Triton's default ports: any KServe v2 or Triton client (tritonclient, curl) "
        "sends uint8 frames and gets the chain's class indices back. The model is named as in "
        "the plan (--model to rename it) and its version is the plan's hash. Concurrent "
        "requests share the chain's window in turn; each request's frames come back in order. "
        "Runs on the controller; the boards need nothing more. Stop with Ctrl-C or SIGTERM.")
    p.add_argument("--chain", required=True, help="the chain file (chain.json, written by the "
                   "deployment beside the build, or by finnchain up)")
    p.add_argument("--host", default="0.0.0.0", help="the address to listen on (default: all)")
    p.add_argument("--http-port", type=int, default=HTTP_PORT, help="HTTP/REST (default 8000)")
    p.add_argument("--grpc-port", type=int, default=GRPC_PORT, help="gRPC (default 8001)")
    p.add_argument("--model", help="the model's name (default: the plan's)")
    p.add_argument("--window", type=int, default=16, help="frames in flight in the chain, "
                   "shared by all requests (default 16)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a frame may take "
                   "before it fails, naming the board that does not answer (default 10)")
    p.add_argument("--max-frames", type=int, default=1024, help="frames one request may "
                   "carry (default 1024); larger bodies are refused before they are read")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run(args: argparse.Namespace) -> int:
    from finnchain.serve.dispatch import Dispatcher
    from finnchain.serve.oip import ModelInfo

    try:
        spec = ChainFile.read(args.chain)
        model = ModelInfo.from_chain(spec, args.model, args.max_frames)
    except (FileNotFoundError, ChainFileError, ValueError) as exc:
        print(f"error: --chain {args.chain}: {exc}", file=sys.stderr)
        return 2
    for flag, value, low in (("--window", args.window, 1), ("--max-frames", args.max_frames, 1),
                             ("--timeout", args.timeout, 0.1)):
        if value < low:
            print(f"error: {flag} {value}: at least {low}", file=sys.stderr)
            return 2
    for flag, port in (("--http-port", args.http_port), ("--grpc-port", args.grpc_port)):
        if not _port_free(args.host, port):
            print(f"error: {flag} {port}: the port is in use on {args.host}", file=sys.stderr)
            return 2
    dispatcher = Dispatcher(spec, args.window, args.timeout).start()
    try:
        asyncio.run(_serve(args, model, dispatcher))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        dispatcher.stop()
    return 0


def _quiet_server():
    import uvicorn

    class Quiet(uvicorn.Server):
        """uvicorn's server without its own signal handling, which raises the signal again
        once it has stopped (the process would die of the SIGTERM it handled)."""

        def capture_signals(self):
            return contextlib.nullcontext()

    return Quiet


async def _serve(args: argparse.Namespace, model, dispatcher) -> None:
    import uvicorn

    from finnchain.serve import grpc_api, rest
    from finnchain.serve.service import Service

    service = Service(model, dispatcher)
    grpc_server = grpc_api.server(service, f"{args.host}:{args.grpc_port}")
    await grpc_server.start()
    config = uvicorn.Config(rest.app(service), host=args.host, port=args.http_port,
                            log_level="warning", access_log=False, lifespan="off")
    http = _quiet_server()(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # a clean stop, exit status 0
        loop.add_signal_handler(sig, lambda: setattr(http, "should_exit", True))
    watch = asyncio.create_task(service.watch())
    serving = asyncio.create_task(http.serve())  # until SIGINT or SIGTERM
    while not http.started and not serving.done():
        await asyncio.sleep(0.05)
    if http.started:
        print(f"serving model '{model.name}' (plan {model.version[:12]}, input "
              f"{model.input_name} UINT8 {[-1, *model.frame_shape]}) from the chain "
              f"{dispatcher.spec.first} -> {dispatcher.spec.last}: HTTP on "
              f"{args.host}:{args.http_port}, gRPC on {args.host}:{args.grpc_port}", flush=True)
    try:
        await serving
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await grpc_server.stop(grace=1.0)
