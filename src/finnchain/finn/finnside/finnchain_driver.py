"""FINN's own PYNQ driver for a stage, without Vivado (finnchain; do not edit).

Copied into every finnchain build folder beside ``finnchain_steps.py``; runs in FINN's
environment and imports FINN and qonnx only.

In FINN's Zynq flow the driver is written after the bitstream: ``step_synthesize_bitfile``
(``ZynqBuild``) turns the dataflow graph into FINN's top-level graph (``InsertIODMA`` with the
board's AXI port width, ``InsertDWC``, ``SpecializeLayers``, ``Floorplan``,
``CreateDataflowPartition``: one partition per DMA and one for the layers), synthesizes it, and
``MakeZYNQProject`` names the DMA partitions' instances in its Vivado block design; then
``step_make_pynq_driver`` runs FINN's ``MakePYNQDriver`` on that graph and
``step_deployment_package`` copies the driver into ``deploy/driver``. None of that graph part
needs Vivado, so ``step_finnchain_pynq_driver`` runs it where no bitstream is made (``build.py
--estimate`` or ``--cppsim``) and names the instances as ``MakeZYNQProject`` does (a partition
with no producer is ``idma<k>``, one with no consumer ``odma<k>``, the others keep their
node's name, in graph order). The driver lands where FINN's own steps put it: ``output/driver``
and ``output/deploy/driver``. In a full build (FINN's docker flow and Vivado) FINN's own steps
write it and this step is not run.

The step also records the block design's IPs that the PS addresses, in the order
``MakeZYNQProject`` creates them (``report/finnchain_zynq.json``): each DMA's instance name,
role (the stage's input or output, or a layer's weights) and bytes per frame, and the AXI-lite
interfaces of the layers' partition (layers with runtime-writable weights). finnchain writes an
emulated overlay's ``.hwh`` from it (``finnchain.finn.overlay``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
from finn.transformation.fpgadataflow.floorplan import Floorplan
from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
from finn.transformation.fpgadataflow.make_pynq_driver import MakePYNQDriver
from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
from finn.util.basic import pynq_native_port_width
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
from qonnx.transformation.infer_data_layouts import InferDataLayouts

ZYNQ_REPORT = "finnchain_zynq.json"


def zynq_graph(model: ModelWrapper, board: str, fpga_part: str, partitions: Path
               ) -> ModelWrapper:
    """The graph part of FINN's ``ZynqBuild``: DMAs at the stage's ends (and for layers with
    external weights), width converters, specialisation, one partition per DMA and one for
    the layers (their models written into ``partitions``)."""
    model = model.transform(InferDataLayouts())
    for t in (InsertIODMA(pynq_native_port_width[board]), InsertDWC(),
              SpecializeLayers(fpga_part), Floorplan(),
              CreateDataflowPartition(partition_model_dir=str(partitions))):
        model = model.transform(t)
        model = model.transform(GiveUniqueNodeNames())
        model = model.transform(GiveReadableTensorNames())
    return model


def name_instances(model: ModelWrapper) -> dict[str, str]:
    """Each partition's instance name in the block design, as ``MakeZYNQProject`` gives it."""
    idma = odma = 0
    names = {}
    for node in model.graph.node:
        producer = model.find_producer(node.input[0]) if node.input else None
        if producer is None:
            names[node.name], idma = f"idma{idma}", idma + 1
        elif not model.find_consumers(node.output[0]):
            names[node.name], odma = f"odma{odma}", odma + 1
        else:
            names[node.name] = node.name
        getCustomOp(node).set_nodeattr("instance_name", names[node.name])
    return names


def _weights_consumer(model: ModelWrapper, tensor: str) -> dict:
    """The MVAU a weight DMA's stream (``tensor``) feeds, in the layers' partition: its name
    and what lays its weights out (MW, MH, PE, SIMD, weight datatype)."""
    for node in model.graph.node:
        child = ModelWrapper(getCustomOp(node).get_nodeattr("model"))
        for n in child.graph.node:
            if tensor in n.input and n.op_type.startswith("MVAU"):
                mv = getCustomOp(n)
                return {"layer": n.name, "mw": mv.get_nodeattr("MW"), "mh": mv.get_nodeattr("MH"),
                        "pe": mv.get_nodeattr("PE"), "simd": mv.get_nodeattr("SIMD"),
                        "datatype": mv.get_nodeattr("weightDataType")}
    raise RuntimeError(f"no MVAU reads the weight stream {tensor}")


def zynq_ips(model: ModelWrapper, names: dict[str, str], driver: Path) -> list[dict]:
    """The PS-addressed IPs of FINN's top-level graph, in block-design order: DMAs (role,
    bytes per frame: what one repetition moves; a weight DMA also the MVAU it feeds) and the
    AXI-lite interfaces of the rest."""
    ips = []
    for node in model.graph.node:
        child = ModelWrapper(getCustomOp(node).get_nodeattr("model"))
        first = child.graph.node[0]
        if len(child.graph.node) == 1 and first.op_type == "IODMA_hls":
            dma = getCustomOp(first)
            if dma.get_nodeattr("burstMode") == "wrap":
                role = "weights"
                nbytes = int(np.load(driver / "runtime_weights" / f"{names[node.name]}.npy").size)
            else:
                role = "input" if dma.get_nodeattr("direction") == "in" else "output"
                nbytes = int(np.prod(dma.get_nodeattr("numInputVectors"))
                             * dma.get_nodeattr("NumChannels"))
            ip = {"name": names[node.name], "kind": "dma", "role": role,
                  "bytes_per_frame": nbytes}
            if role == "weights":
                ip["feeds"] = _weights_consumer(model, child.graph.output[0].name)
            ips.append(ip)
            continue
        axilite = [n.name for n in child.graph.node
                   if getCustomOp(n).get_verilog_top_module_intf_names()["axilite"]]
        ips.append({"name": names[node.name], "kind": "layers", "axilite": axilite})
    return ips


def step_finnchain_pynq_driver(model: ModelWrapper, cfg):
    """FINN's PYNQ driver for the stage, written by FINN's ``MakePYNQDriver`` on the graph of
    its Zynq flow (see the module), into ``output/driver`` and ``output/deploy/driver``. The
    model the build goes on with is unchanged."""
    out = Path(cfg.output_dir)
    top = zynq_graph(ModelWrapper(model.model), cfg.board, cfg._resolve_fpga_part(),
                     out / "intermediate_models" / "zynq_partitions")
    names = name_instances(top)
    top = top.transform(MakePYNQDriver(cfg._resolve_driver_platform()))
    top.save(str(out / "intermediate_models" / "finnchain_pynq_driver.onnx"))
    for dest in (out / "driver", out / "deploy" / "driver"):
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(top.get_metadata_prop("pynq_driver_dir"), dest)
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / ZYNQ_REPORT).write_text(json.dumps(
        {"platform": "zynq-iodma", "ips": zynq_ips(top, names, out / "driver")}, indent=1)
        + "\n")
    return model
