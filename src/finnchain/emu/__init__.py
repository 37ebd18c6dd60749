"""The emulated cluster: PYNQ boards as network namespaces on this machine, each with its own
sshd, /etc and state (``cluster``; the boot script and PID-1 reaper are package data files).
The fabric they run is emulated by :mod:`finnchain.fabric`."""
