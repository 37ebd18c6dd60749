"""Stand-in for finn.transformation.fpgadataflow.templates: the board branches of the shell."""
custom_zynq_shell_template = """
if {$BOARD == "ZCU104"} {
    set ZYNQ_TYPE "zynq_us+"
} elseif {$BOARD == "Pynq-Z2"} {
    set ZYNQ_TYPE "zynq_7000"
} elseif {$BOARD == "Pynq-Z1"} {
    set ZYNQ_TYPE "zynq_7000"
} else {
    puts "Unrecognized board"
}
"""
