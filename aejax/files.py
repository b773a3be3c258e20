"""Writing result files safely: the output directory, the overwrite rule of the experiment scripts, and atomic
writes (a temporary name, then a rename, so a crash never leaves half a file). Files get the mode any file of
this process gets (0666 less the umask: 0644 under umask 022)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from aejax.errors import AejaxError


def make_output_dir(path: str | Path) -> Path:
    """Create `path` (and parents) if needed; a one-line error if it cannot be, or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AejaxError(f"output path {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AejaxError(f"cannot create output directory {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise AejaxError(f"output directory {path} is not writable")
    return path


def refuse_overwrite(paths: list[str | Path], overwrite: bool) -> None:
    """Stop before any work if a result file a script is about to write exists, unless `overwrite`."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        existing = ", ".join(existing)
        raise AejaxError(f"{existing} already exist(s); choose another output directory or pass overwrite=True "
                         f"to replace it", cli=f"{existing} already exist(s); choose another --out or pass "
                                               f"--overwrite to replace it")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory, renamed over `path` when complete."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any file
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(value, indent=2) + "\n")


