#!/usr/bin/env python3
"""From a plan to overlays: ``python build/build.py PLAN.json --target emulate|finn [--out DIR]``.

``--target finn`` runs FINN's docker flow per stage (needs ``FINN_ROOT``, Docker and Vivado);
``--target emulate`` writes the same layout for the emulated accelerator. Writes
``DIR/stage<k>/`` and ``DIR/manifest.json``. Thin over ``finnchain build`` (see ``--help``)."""

import sys

from finnchain.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
