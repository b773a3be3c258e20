"""Helpers the tests share (imported as `tests.helpers`): tiny synthetic IDX sets and running a command line
in this process or in a new one."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from aejax import data

REPO = Path(__file__).resolve().parent.parent


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = np.array([magic, *array.shape[:3 if magic == data.IMAGES_MAGIC else 1]], dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(root: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict[str, str]:
    """Write the four gzipped IDX files of a tiny random MNIST-like set; return their content sha256s."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images_name, labels_name = data.FILES[split]
        payloads = {images_name: idx_bytes(rng.integers(0, 256, (n, 28, 28)), data.IMAGES_MAGIC),
                    labels_name: idx_bytes(np.arange(n) % 10, data.LABELS_MAGIC)}
        for name, raw in payloads.items():
            (root / name).write_bytes(gzip.compress(raw))
            checksums[name] = hashlib.sha256(raw).hexdigest()
    return checksums


def run_in_process(capsys, main: Callable[[list[str]], None], *argv: str) -> tuple[int, str, str]:
    """`main(argv)` of a command line in this process, as the process would end: (exit status, stdout, stderr).
    Faster than `run_cli` (no new interpreter, compiled programs reused); `run_cli` checks the process itself."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m ...` in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)


@contextlib.contextmanager
def tmpfs(path, size: str):
    """A small tmpfs at `path` (skips the test where one cannot be mounted: not root, no CAP_SYS_ADMIN)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill_disk(directory) -> None:
    """Fill the filesystem of `directory` to the last byte (files of 1 MB, then 4 kB, then single bytes)."""
    with open(directory / "filler", "wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


# A prelude for `python -c`: importing any of these packages raises ImportError, as on a machine that lacks them.
WITHOUT_PACKAGES = r"""
import importlib.abc, sys
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, _Missing())
"""


def without(*packages: str) -> str:
    """`WITHOUT_PACKAGES` for `packages`."""
    return WITHOUT_PACKAGES.format(BLOCKED=set(packages))
