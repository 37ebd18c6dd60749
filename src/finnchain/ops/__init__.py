"""Operating a deployed chain: inventory, benchmark, status and control (fabfile.py is thin over this)."""
