"""`python -m ironhub_emulator ARGS...` runs the installed emulator binary with ARGS (e.g. `serve
--state-dir DIR`), for environments where the scripts directory is not on PATH."""

import os
import subprocess
import sys

from ._binary import find_binary


def main() -> int:
    try:
        binary = find_binary()
    except FileNotFoundError as e:
        print("ironhub_emulator: {}".format(e), file=sys.stderr)
        return 1
    if os.name == "posix":
        # Replace this process so signals (Ctrl-C, SIGTERM from a supervisor) reach the emulator.
        os.execv(binary, [binary] + sys.argv[1:])
    return subprocess.call([binary] + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
