#!/usr/bin/env python3
"""Plan a model onto a chain of boards: ``python build/plan.py MODEL --boards KIND:COUNT --out DIR``.

Writes DIR/plan.json, DIR/stage<k>/ (QONNX, FINN folding, specialisation and build configs) and
DIR/plan.png; prints a table per board. ``--target-fps`` asks for the fewest boards reaching a
rate. Thin over ``finnchain plan`` (see ``--help``)."""

import sys

from finnchain.cli import main

if __name__ == "__main__":
    sys.exit(main(["plan", *sys.argv[1:]]))
