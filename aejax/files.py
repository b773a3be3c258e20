"""Writing result files safely: the output directory, the overwrite rule of the experiment scripts, and atomic
writes (a temporary name, then a rename, so a crash never leaves half a file). Files get the mode any file of
this process gets (0666 less the umask: 0644 under umask 022)."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
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


class NoSpace(AejaxError):
    """A write that failed because its filesystem (or the user's quota) is full: names the path, the bytes the
    write needed and the bytes free there."""

    def __init__(self, path: str | Path, needed: int | None):
        self.path, self.needed = Path(path), needed
        needs = f"it needs {describe_bytes(needed)}, " if needed else ""
        super().__init__(f"no space left on the device for {self.path}: {needs}{describe_bytes(free_bytes(path))} "
                         f"free there")


def is_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, says the filesystem or quota is full (ENOSPC, EDQUOT;
    tensorstore, under orbax, reports them as text: `No space left on device [os_error_code='28']`)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, NoSpace) or (isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        if any(mark in str(seen) for mark in ("No space left on device", "Disk quota exceeded")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def free_bytes(path: str | Path) -> int:
    """Bytes free to this user on the filesystem of `path` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def describe_bytes(n: int) -> str:
    """`n` bytes for a person: '812 bytes', '3.4 kB', '1.2 MB', '5.0 GB' (powers of 1000)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write `content` to `path` through a temporary file in the same directory, renamed over `path` when
    complete; a full disk is `NoSpace` (the temporary file removed, `path` as it was)."""
    path = Path(path)
    raw = content.encode() if isinstance(content, str) else content
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any file
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        if is_full(e):
            raise NoSpace(path, len(raw)) from None
        raise


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(value, indent=2) + "\n")


