"""Stand-in for finn.util.basic: the board maps as FINN v0.10.1 defines them (two entries)."""
pynq_part_map = {"Pynq-Z1": "xc7z020clg400-1", "Pynq-Z2": "xc7z020clg400-1"}
pynq_native_port_width = {"Pynq-Z1": 64, "Pynq-Z2": 64}
