"""Stand-in for finn.builder.build_dataflow_config: the enums and the config's fields."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class DataflowOutputType(str, Enum):
    STITCHED_IP = "stitched_ip"
    ESTIMATE_REPORTS = "estimate_reports"
    OOC_SYNTH = "out_of_context_synth"
    RTLSIM_PERFORMANCE = "rtlsim_performance"
    BITFILE = "bitfile"
    PYNQ_DRIVER = "pynq_driver"
    DEPLOYMENT_PACKAGE = "deployment_package"


class ShellFlowType(str, Enum):
    VIVADO_ZYNQ = "vivado_zynq"
    VITIS_ALVEO = "vitis_alveo"


@dataclass
class DataflowBuildConfig:
    output_dir: str
    synth_clk_period_ns: float
    generate_outputs: list[DataflowOutputType]
    specialize_layers_config_file: str | None = None
    folding_config_file: str | None = None
    target_fps: int | None = None
    board: str | None = None
    shell_flow_type: ShellFlowType | None = None
    fpga_part: str | None = None
    auto_fifo_depths: bool | None = True
    split_large_fifos: bool | None = False
    standalone_thresholds: bool | None = False
    steps: list[Any] | None = None
