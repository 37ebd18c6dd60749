"""finnchain serve: the Open Inference Protocol (KServe v2) in front of a chain of stage
daemons, checked with clients nobody here wrote: Triton's tritonclient (HTTP and gRPC) and
curl. Answers are checked bit for bit against the whole model."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import distinct
from finnchain.boards.catalogue import Catalogue
from finnchain.fabric.executor import Executor
from finnchain.ops.local import LocalChain
from finnchain.runtime.chainfile import ChainFile

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

FINNCHAIN = Path(sys.executable).parent / "finnchain"
MODEL = "digits-cnv"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Server:
    """``finnchain serve`` as a user runs it, on free ports."""

    def __init__(self, chain_file: Path, *args: str) -> None:
        self.http_port, self.grpc_port = free_ports(2)
        self.proc = subprocess.Popen(
            [str(FINNCHAIN), "serve", "--chain", str(chain_file), "--host", "127.0.0.1",
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.banner = self.proc.stdout.readline()
        if "serving model" not in self.banner:
            self.proc.kill()
            raise AssertionError(self.banner + self.proc.stdout.read())
        self.http = httpclient.InferenceServerClient(f"127.0.0.1:{self.http_port}")
        self.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self, ready: bool = True, timeout: float = 20) -> float:
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            if self.http.is_server_ready() == ready:
                return time.monotonic() - t
            time.sleep(0.2)
        raise AssertionError(f"the server was not {'ready' if ready else 'unready'} within "
                             f"{timeout} s")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self.proc.kill()


@pytest.fixture(scope="module")
def build_dir(digits, tiny_file, make_build):
    return make_build(digits, Catalogue(tiny_file).chain("tiny:3"), "serve")


@pytest.fixture(scope="module")
def chain(build_dir, tmp_path_factory):
    with LocalChain(build_dir, tmp_path_factory.mktemp("serve-run")) as running:
        yield running


@pytest.fixture(scope="module")
def server(chain):
    s = Server(chain.file, "--timeout", "3", "--max-frames", "256")
    try:
        s.wait_ready()
        yield s
    finally:
        assert s.stop() == 0


@pytest.fixture(scope="module")
def images(digits_test_set):
    return digits_test_set[0].astype(np.uint8)[:200]


@pytest.fixture(scope="module")
def reference(digits, images):
    out = Executor(digits).run(images).astype(np.int32)
    assert distinct(images) > 10 and distinct(out) >= 5  # not a degenerate check
    return out


def infer(client, module, images: np.ndarray, binary: bool = True, name: str = MODEL):
    x = module.InferInput("global_in", list(images.shape), "UINT8")
    if module is httpclient:
        x.set_data_from_numpy(images, binary_data=binary)
        out = [module.InferRequestedOutput("global_out", binary_data=binary)]
    else:
        x.set_data_from_numpy(images)
        out = [module.InferRequestedOutput("global_out")]
    return client.infer(name, [x], outputs=out).as_numpy("global_out")


def test_metadata_names_the_plan(server, chain):
    spec = ChainFile.read(chain.file)
    for client in (server.http, server.grpc):
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL)
    meta = server.http.get_model_metadata(MODEL)
    assert meta["name"] == MODEL == spec.model
    assert meta["versions"] == [spec.plan_hash]
    assert meta["inputs"] == [{"name": "global_in", "datatype": "UINT8", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"][0]["datatype"] == "INT32"
    g = server.grpc.get_model_metadata(MODEL, as_json=True)
    assert g["versions"] == [spec.plan_hash] and g["inputs"][0]["shape"] == ["-1", "1", "8", "8"]
    assert "binary_tensor_data" in server.http.get_server_metadata()["extensions"]


@pytest.mark.parametrize("transport", ["http-binary", "http-json", "grpc"])
def test_answers_equal_the_whole_model(server, images, reference, transport):
    client, module = (server.grpc, grpcclient) if transport == "grpc" else \
        (server.http, httpclient)
    got = infer(client, module, images, binary=transport != "http-json")
    assert got.dtype == np.int32 and got.shape == reference.shape
    np.testing.assert_array_equal(got, reference)
    # the plan's version is accepted; another build's is not
    spec_version = server.http.get_model_metadata(MODEL)["versions"][0]
    x = module.InferInput("global_in", [1, 1, 8, 8], "UINT8")
    x.set_data_from_numpy(images[:1])
    r = client.infer(MODEL, [x], model_version=spec_version)
    assert r.as_numpy("global_out")[0, 0] == reference[0, 0]
    with pytest.raises(InferenceServerException, match="no version 'f00d'.*runs plan"):
        client.infer(MODEL, [x], model_version="f00d")


def test_concurrent_requests_each_get_their_own_frames_in_order(server, images, reference):
    """Eight clients at once, each with its own slice of frames, over both transports."""
    errors, results = [], {}

    def client(k: int) -> None:
        try:
            module = grpcclient if k % 2 else httpclient
            c = module.InferenceServerClient(f"127.0.0.1:"
                                             f"{server.grpc_port if k % 2 else server.http_port}")
            sl = slice(k * 20, k * 20 + 37)
            for _ in range(3):
                results.setdefault(k, []).append((sl, infer(c, module, images[sl])))
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(len(v) for v in results.values()) == 24
    for runs in results.values():
        for sl, got in runs:
            np.testing.assert_array_equal(got, reference[sl])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_json_and_binary(server, images, reference):
    body = {"id": "req-7", "inputs": [{"name": "global_in", "shape": [3, 1, 8, 8],
                                       "datatype": "UINT8",
                                       "data": images[:3].reshape(-1).tolist()}]}
    out = subprocess.run(["curl", "-sS", "-H", "Content-Type: application/json", "-d",
                          json.dumps(body), f"{server.url}/v2/models/{MODEL}/infer"],
                         capture_output=True, text=True, check=True).stdout
    answer = json.loads(out)
    assert answer["id"] == "req-7" and answer["model_name"] == MODEL
    assert answer["outputs"][0]["data"] == reference[:3].reshape(-1).tolist()
    # the binary tensor data extension, by hand: JSON header, then the frames' bytes
    head = json.dumps({"inputs": [{"name": "global_in", "shape": [4, 1, 8, 8],
                                   "datatype": "UINT8",
                                   "parameters": {"binary_data_size": 256}}],
                       "outputs": [{"name": "global_out",
                                    "parameters": {"binary_data": True}}]}).encode()
    raw = subprocess.run(
        ["curl", "-sS", "-D", "-", "--data-binary", "@-", "-H",
         f"Inference-Header-Content-Length: {len(head)}", "-H",
         "Content-Type: application/octet-stream", f"{server.url}/v2/models/{MODEL}/infer"],
        input=head + images[:4].tobytes(), capture_output=True, check=True).stdout
    headers, _, body = raw.partition(b"\r\n\r\n")
    n = int(next(line.split(b":")[1] for line in headers.split(b"\r\n")
                 if line.lower().startswith(b"inference-header-content-length")))
    meta = json.loads(body[:n])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 16
    np.testing.assert_array_equal(np.frombuffer(body[n:], "<i4"), reference[:4].reshape(-1))


def post(server, body: bytes, headers: dict | None = None, model: str = MODEL):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{server.url}/v2/models/{model}/infer", data=body,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def tensor(shape, datatype="UINT8", data=None, name="global_in"):
    n = int(np.prod(shape))
    return {"name": name, "shape": shape, "datatype": datatype,
            "data": data if data is not None else [7] * n}


@pytest.mark.parametrize("request_, status, message", [
    ({"inputs": [tensor([2, 8, 8])]}, 400, r"shape \[2, 8, 8\], expected \[-1, 1, 8, 8\]"),
    ({"inputs": [tensor([1, 1, 8, 8], "FP32")]}, 400, "datatype FP32, expected UINT8"),
    ({"inputs": [tensor([1, 1, 8, 8], name="x")]}, 400, "input 'x': .* one input, 'global_in'"),
    ({"inputs": [tensor([1, 1, 8, 8], data=[300] * 64)]}, 400, "outside UINT8"),
    ({"inputs": [tensor([1, 1, 8, 8], data=[1] * 63)]}, 400, "63 values of data"),
    ({"inputs": [tensor([0, 1, 8, 8])]}, 400, "holds no frame"),
    ({"inputs": [tensor([1, 1, 8, 8])] * 2}, 400, "2 inputs"),
    ({"inputs": [tensor([1, 1, 8, 8])], "outputs": [{"name": "probs"}]}, 400,
     "requested output 'probs'"),
    ({"input": []}, 400, "no 'inputs' list"),
    ({"inputs": [tensor([300, 1, 8, 8])]}, 413, "300 frames, at most 256"),
], ids=["shape", "datatype", "name", "range", "count", "empty", "two-inputs", "output",
        "no-inputs", "too-many-frames"])
def test_bad_requests_get_the_protocols_error_naming_the_field(server, request_, status,
                                                               message):
    got, body = post(server, json.dumps(request_).encode())
    assert got == status and set(body) == {"error"}
    assert __import__("re").search(message, body["error"]), body["error"]


def test_bad_bodies_and_models(server, images, reference):
    assert post(server, b"{not json")[0] == 400
    status, body = post(server, b"{}", model="resnet50")
    assert status == 404 and "unknown model 'resnet50'" in body["error"]
    # binary data that does not match its shape, and bytes no input accounts for
    head = json.dumps({"inputs": [{"name": "global_in", "shape": [1, 1, 8, 8],
                                   "datatype": "UINT8",
                                   "parameters": {"binary_data_size": 60}}]}).encode()
    status, body = post(server, head + bytes(60),
                        {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400 and "60 bytes of data for shape [1, 1, 8, 8] of UINT8, expected 64" \
        in body["error"]
    status, body = post(server, head + bytes(70),
                        {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400 and "10 bytes follow" in body["error"]
    # a body larger than --max-frames allows is refused from its Content-Length
    status, body = post(server, bytes(300 * 64 + 70_000))
    assert status == 413 and "at most" in body["error"]
    # gRPC: the protocol's status codes with the same messages
    x = grpcclient.InferInput("global_in", [1, 64], "UINT8")
    x.set_data_from_numpy(np.zeros((1, 64), np.uint8))
    with pytest.raises(InferenceServerException, match="shape \\[1, 64\\]") as exc:
        server.grpc.infer(MODEL, [x])
    assert exc.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="unknown model") as exc:
        server.grpc.infer("nope", [x])
    assert exc.value.status() == "StatusCode.NOT_FOUND"
    # and nothing was lost: the server still answers correctly
    np.testing.assert_array_equal(infer(server.http, httpclient, images[:5]), reference[:5])


def test_a_stage_down_fails_the_request_by_name_and_unreadies(build_dir, tmp_path, images,
                                                               reference):
    with LocalChain(build_dir, tmp_path) as lc:
        s = Server(lc.file, "--timeout", "2")
        try:
            s.wait_ready()
            np.testing.assert_array_equal(infer(s.http, httpclient, images[:8]), reference[:8])
            lc.procs[1].send_signal(signal.SIGKILL)
            lc.procs[1].wait()
            t = time.monotonic()
            with pytest.raises(InferenceServerException,
                               match=r"stage 1 \(at 127\.0\.0\.1:\d+\) does not answer") as exc:
                infer(s.http, httpclient, images[:8])
            assert exc.value.status() == "500" and time.monotonic() - t < 10
            s.wait_ready(False, timeout=5)
            assert not s.grpc.is_server_ready()
            lc.restart(1)
            s.wait_ready(True)
            np.testing.assert_array_equal(infer(s.grpc, grpcclient, images[:8]), reference[:8])
        finally:
            assert s.stop() == 0


def test_a_chain_that_is_not_up(chain, tmp_path):
    """A chain file whose stages are gone: live, not ready, and requests refused at once."""
    spec = json.loads(Path(chain.file).read_text())
    dead = free_ports(2)
    spec["first"], spec["last"] = (f"tcp://127.0.0.1:{p}" for p in dead)
    for st in spec["stages"]:
        st["metrics"] = free_ports(1)[0]
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(spec))
    s = Server(path, "--timeout", "5")
    try:
        assert s.http.is_server_live() and not s.http.is_server_ready()
        status, body = post(s, json.dumps({"inputs": [tensor([1, 1, 8, 8])]}).encode())
        assert status == 503 and "does not answer" in body["error"]
    finally:
        assert s.stop() == 0


def test_bad_arguments_are_named(chain, tmp_path):
    def serve(*args):
        return subprocess.run([str(FINNCHAIN), "serve", *args], capture_output=True, text=True)

    r = serve("--chain", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "missing.json" in r.stderr
    (tmp_path / "bad.json").write_text('{"first": 1}')
    r = serve("--chain", str(tmp_path / "bad.json"))
    assert r.returncode == 2 and "bad.json" in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = serve("--chain", str(chain.file), "--host", "127.0.0.1", "--http-port",
                  str(busy.getsockname()[1]))
    assert r.returncode == 2 and "--http-port" in r.stderr and "in use" in r.stderr
    r = serve("--chain", str(chain.file), "--window", "0")
    assert r.returncode == 2 and "--window 0" in r.stderr


def test_the_documented_unit_runs_the_command_it_documents():
    """docs/finnchain-serve.service: its ExecStart is a command line finnchain serve takes."""
    import shlex

    from finnchain.cli import build_parser

    unit = (Path(__file__).resolve().parents[1] / "docs" / "finnchain-serve.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/.venv/bin/finnchain") and argv[1] == "serve"
    args = build_parser().parse_args(argv[1:])
    assert args.func.__module__ == "finnchain.serve.server"
    assert (args.http_port, args.grpc_port) == (8000, 8001) and args.chain.endswith("chain.json")
