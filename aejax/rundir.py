"""A run directory: its config, per-epoch metrics, results, and the rules that protect what is written.

`RunDir.open` refuses to mix runs: a directory holding a run of another config (or seeds) is left untouched
unless `overwrite`; the same config continues only with `resume`. Every file is written to a temporary name
and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import socket
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from aejax.config import Config
from aejax.errors import AejaxError

RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "recon.png", "checkpoints")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy", "aejax")


def environment() -> dict[str, Any]:
    """Versions, devices and host of this process, for reproducibility records."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {"versions": versions, "python": platform.python_version(), "platform": platform.platform(),
            "host": socket.gethostname(), "backend": jax.default_backend(),
            "device_kind": devices[0].device_kind, "device_count": len(devices),
            "cpu_count": os.cpu_count()}


def _is_writer() -> bool:
    import jax

    return jax.process_index() == 0


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
        raise AejaxError(f"{', '.join(existing)} already exist(s); choose another --out or pass --overwrite "
                         f"to replace it")


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2) + "\n")


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def open(cls, out_dir: str | Path, config: Config, seeds: list[int], *, resume: bool,
             overwrite: bool) -> RunDir:
        """Claim `out_dir` for this config and seeds, writing `config.json`; see the module docstring.

        In a multi-process run only process 0 checks and writes; the others share its directory.
        """
        path = Path(out_dir)
        if not _is_writer():
            return cls(path)
        make_output_dir(path)
        wanted = {"config": config.to_dict(), "seeds": list(seeds)}
        config_file = path / "config.json"
        if config_file.exists():
            try:
                saved = json.loads(config_file.read_text())
                # Through Config, so settings added later (with their defaults) compare equal.
                saved = {"config": Config.from_dict(saved["config"]).to_dict(), "seeds": saved["seeds"]}
            except (ValueError, KeyError, TypeError, AejaxError):
                saved = None
            if saved == wanted and resume:
                return cls(path)
            if not overwrite:
                if saved == wanted:
                    raise AejaxError(f"{path} already holds a run of this config; pass --resume to continue it "
                                     f"or --overwrite to start it again")
                raise AejaxError(f"{path} holds a run of a different config; choose another --out, or pass "
                                 f"--overwrite to replace it")
            for name in RUN_FILES:
                target = path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        elif any(path.iterdir()) and not overwrite:
            raise AejaxError(f"{path} is not empty and holds no aejax run; choose another --out "
                             f"(or pass --overwrite to write beside its files)")
        write_json(config_file, {**wanted, "environment": environment()})
        return cls(path)

    def read_metrics(self) -> list[dict[str, Any]]:
        file = self.path / "metrics.jsonl"
        if not file.exists():
            return []
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        if _is_writer():
            write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    def write_results(self, rows: list[dict[str, Any]]) -> None:
        if _is_writer():
            write_json(self.path / "results.json", rows)
