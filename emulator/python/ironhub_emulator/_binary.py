"""Owns finding the `ironhub-emulator` executable that the wheel installed.

maturin's `bin` bindings install it as a script of the environment the wheel went into (the
venv's `bin/`, the user scheme's `bin/` for `pip install --user`, or a `--target`/`--prefix`
layout), so look there first and on PATH last.
"""

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Iterator, Optional

EXE_NAME = "ironhub-emulator" + (".exe" if sys.platform == "win32" else "")
ENV_OVERRIDE = "IRONHUB_EMULATOR"


def _script_dirs() -> Iterator[Path]:
    yield Path(sysconfig.get_path("scripts"))
    user_scheme = "nt_user" if os.name == "nt" else ("osx_framework_user" if sys.platform == "darwin" else "posix_user")
    try:
        yield Path(sysconfig.get_path("scripts", scheme=user_scheme))
    except KeyError:
        pass
    # `pip install --target DIR` puts the package in DIR and the scripts in DIR/bin.
    yield Path(__file__).resolve().parent.parent / "bin"


def find_binary(explicit: Optional[str] = None) -> str:
    """The path of the emulator executable: `explicit`, else $IRONHUB_EMULATOR, else the one
    installed with this package, else the first on PATH. Raises FileNotFoundError naming every
    place it looked."""
    chosen = explicit or os.environ.get(ENV_OVERRIDE)
    if chosen:
        if not Path(chosen).is_file():
            origin = "given" if explicit else "named by $" + ENV_OVERRIDE
            raise FileNotFoundError("emulator binary {} does not exist: {}".format(origin, chosen))
        return str(chosen)
    looked = []
    for directory in _script_dirs():
        candidate = directory / EXE_NAME
        looked.append(str(candidate))
        if candidate.is_file():
            return str(candidate)
    on_path = shutil.which(EXE_NAME)
    if on_path:
        return on_path
    raise FileNotFoundError(
        "{} not found (looked in {} and on PATH); install the ironhub-emulator wheel or set ${}".format(
            EXE_NAME, ", ".join(looked), ENV_OVERRIDE
        )
    )
