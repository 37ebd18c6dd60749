#!/usr/bin/env python3
"""Export a model to QONNX: ``python build/export.py MODEL [--out FILE] [--seed N]``.

MODEL is mobilenet-v1 or digits-cnv. The same seed writes the same bytes. Thin over
``finnchain export``."""

import sys

from finnchain.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
