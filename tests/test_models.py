"""The models: topology, determinism of the export, a trained network that really learned."""

from __future__ import annotations

import hashlib

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType

from finnchain.fabric.executor import Executor
from finnchain.models import zoo


def _quant_bits(model, node):
    return int(model.get_initializer(node.input[3]))


def test_mobilenet_topology(mobilenet):
    g = mobilenet.graph
    assert mobilenet.get_tensor_shape(g.input[0].name) == [1, 3, 224, 224]
    assert mobilenet.get_tensor_datatype(g.input[0].name) == DataType["UINT8"]
    assert mobilenet.get_tensor_shape(g.output[0].name) == [1, 5]
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == 27
    groups = [helper.get_attribute_value(a) for n in convs for a in n.attribute if a.name == "group"]
    depthwise = [n for n, gr in zip(convs, groups) if gr > 1]
    assert len(depthwise) == 13
    weight_bits = []
    for n in convs:
        wq = mobilenet.find_producer(n.input[1])
        weight_bits.append(_quant_bits(mobilenet, wq))
    assert weight_bits[0] == 8 and set(weight_bits[1:]) == {4}
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    w = mobilenet.get_tensor_shape(gemm.input[1])
    assert sorted(w) == [1000, 1024]
    acts = [n for n in g.node if n.op_type == "Quant" and mobilenet.find_producer(n.input[0])
            is not None and mobilenet.find_producer(n.input[0]).op_type == "Relu"]
    assert len(acts) == 27 and {_quant_bits(mobilenet, n) for n in acts} == {4}


def test_export_is_deterministic(mobilenet_path, tmp_path):
    again = zoo.export("mobilenet-v1", tmp_path / "again.onnx", seed=0)
    other = zoo.export("mobilenet-v1", tmp_path / "other.onnx", seed=1)
    def digest(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()
    assert digest(again) == digest(mobilenet_path)
    assert digest(other) != digest(mobilenet_path)


def test_digits_export_is_deterministic(digits_path, tmp_path):
    again = zoo.export("digits-cnv", tmp_path / "again.onnx", seed=0)
    assert again.read_bytes() == digits_path.read_bytes()


def test_digits_model_learned(digits, digits_test_set):
    x, labels = digits_test_set
    pred = Executor(digits).run(x)[:, 0]
    accuracy = float(np.mean(pred == labels))
    assert accuracy >= 0.95, accuracy
    assert len(np.unique(pred)) == 10
