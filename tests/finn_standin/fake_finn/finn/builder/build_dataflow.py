"""Stand-in for finn.builder.build_dataflow: records what it was asked to build."""
import json
from dataclasses import asdict


def build_dataflow_cfg(model_filename, cfg):
    from finn.transformation.fpgadataflow import templates
    from finn.util import basic

    record = {"model": model_filename, "cfg": asdict(cfg),
              "part_map": basic.pynq_part_map, "port_width": basic.pynq_native_port_width,
              "template": templates.custom_zynq_shell_template,
              "types": {"shell_flow_type": type(cfg.shell_flow_type).__name__,
                        "generate_outputs": sorted({type(o).__name__ for o in cfg.generate_outputs})}}
    with open("standin_record.json", "w") as f:
        json.dump(record, f, default=str)
    return 0
