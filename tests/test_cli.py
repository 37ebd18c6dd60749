"""The command lines a user runs: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys

from finnchain.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "finnchain.cli", "check", *args],
                          capture_output=True, text=True, timeout=600, check=False)


def test_check_passes_on_a_split_model(digits_path):
    r = _run(str(digits_path), "--stages", "4", "--inputs", "16")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bit-exact" in r.stdout


def test_check_refuses_bad_input_clearly(digits_path, tmp_path):
    r = _run(str(tmp_path / "missing.onnx"), "--stages", "2")
    assert r.returncode == 2 and "missing.onnx" in r.stderr
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    r = _run(str(garbage))
    assert r.returncode == 2 and "not an ONNX model" in r.stderr
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")  # parses as an empty ModelProto
    r = _run(str(empty))
    assert r.returncode == 2 and "empty.onnx is not an ONNX model: it has no graph" in r.stderr
    assert "Traceback" not in r.stderr
    # four bytes overwritten in a tensor name: still parses, but one node reads a tensor
    # nothing writes (the cut finder once read that as two branches and exited 0)
    import onnx

    name = onnx.load(str(digits_path)).graph.node[5].output[0]
    data = bytearray(digits_path.read_bytes())
    at = data.find(name.encode(), data.find(name.encode()) + 1)  # where a node reads it
    data[at:at + 4] = b"XXXX"
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(bytes(data))
    for command in (["cuts", str(damaged), "--why"],
                    ["plan", str(damaged), "--boards", "zedboard:2", "--out", str(tmp_path)]):
        r = subprocess.run([sys.executable, "-m", "finnchain.cli", *command], capture_output=True,
                           text=True, timeout=600, check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert "damaged.onnx is not a whole ONNX graph: node" in r.stderr
        assert f"reads 'XXXX{name[4:]}', which no node" in r.stderr
    assert not list(tmp_path.glob("plan.json"))
    r = _run(str(digits_path), "--cuts", "77")
    assert r.returncode == 2 and "77" in r.stderr
    r = _run("no-such-model")
    assert r.returncode == 2 and "mobilenet-v1" in r.stderr


def test_split_and_cuts_commands(digits_path, tmp_path, capsys):
    assert main(["cuts", str(digits_path)]) == 0
    assert "6 legal cut points" in capsys.readouterr().out
    assert main(["split", str(digits_path), "--stages", "3", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("stage*.onnx")) == [
        "stage0.onnx", "stage1.onnx", "stage2.onnx"]


def test_the_deployments_helpers_are_subcommands(tmp_path, capsys):
    """What Ansible runs on the controller: `finnchain ports`, `finnchain keys`."""
    import json

    from finnchain.runtime.ports import board_ports

    assert main(["ports"]) == 0
    assert json.loads(capsys.readouterr().out) == vars(board_ports())
    assert main(["keys", str(tmp_path / "keys"), "client", "stage0"]) == 0
    assert capsys.readouterr().out.strip() == "made client, stage0"
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "client.key", "client.key_secret", "stage0.key", "stage0.key_secret"]
    assert main(["keys", str(tmp_path / "keys"), "client", "stage1"]) == 0
    assert capsys.readouterr().out.strip() == "made stage1"


def test_plan_refuses_a_rate_that_is_no_number(digits_path, tmp_path):
    for bad in ("nan", "inf", "-3"):
        r = subprocess.run([sys.executable, "build/plan.py", str(digits_path), "--boards",
                            "zedboard:1", "--target-fps", bad, "--out", str(tmp_path / bad)],
                           capture_output=True, text=True, timeout=600, check=False)
        assert r.returncode == 2 and "--target-fps must be a positive number" in r.stderr
        assert not (tmp_path / bad).exists()
