"""PID 1 of an emulated board (the last step of emu/boot.sh): reap whatever is orphaned, as
init does, and end on SIGTERM. Passed to ``python3 -c`` as text, so it is never imported."""

import os
import signal
import time

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)
