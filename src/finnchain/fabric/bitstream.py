"""The emulated bitstream's format, shared by the build that writes it (``finn.overlay``) and
the emulated PL that loads it (``emu.pl``): a JSON document in place of ``finn-accel.bit``.

Fields: ``format`` (``FORMAT``), ``stage``, ``plan_hash``, ``board``, ``clock_mhz`` (the
plan's), ``cycles`` (per frame, the plan's: the pace of the emulated fabric), ``program`` (the
folder of the stage's integer program, relative to the .bit), ``input`` and ``output`` (the
wire's tensors: datatype, shape, bytes per frame) and ``dmas`` (each DMA's instance name, its
``role``, input, output or weights, and the bytes it moves a frame).
"""

FORMAT = "finnchain.emulated-bitstream/1"
