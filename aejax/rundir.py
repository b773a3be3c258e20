"""A run directory: its config, per-epoch metrics, TensorBoard events, results, the rules that protect what is
written, and reloading a trained model from it.

`RunDir.open` refuses to mix runs: a directory holding a run of another config (or seeds) is left untouched
unless `overwrite`; the same config continues only with `resume`. Every file is written to a temporary name
and renamed, so a crash never leaves half a file. A run directory holds:

    config.json      every setting, the seeds, package versions, device and host
    metrics.jsonl    one line per epoch: train loss and test MSE per seed, seconds, images/s
    results.json     one row per seed (`result_row`): test MSE, PSNR, SSIM, parameters, seconds, warnings
    recon.png        the first ten test digits and their reconstructions (first seed)
    tensorboard/     event files, one folder per seed: the metrics.jsonl scalars and the recon figure
    checkpoints/     orbax, one step per epoch, the last `keep_checkpoints` kept

A study keeps one run directory per arm and depth under `STUDY/runs/` (`study_run_dir`, `study_runs`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import shutil
import socket
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from aejax.config import IMAGE_PIXELS, Config
from aejax.errors import AejaxError

RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "recon.png", "tensorboard", "checkpoints")
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
            "cpu_count": os.cpu_count(), **_cpu()}


CPU_FEATURES = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")  # what XLA's CPU code generation uses


def _cpu() -> dict[str, Any]:
    """The CPU model and its vector instruction sets: XLA compiles for the host CPU, so float results are
    bit-identical only on the same kind of CPU."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or None, "cpu_features": None}
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name"), "cpu_features": [f for f in CPU_FEATURES if f in flags]}


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
        existing = ", ".join(existing)
        raise AejaxError(f"{existing} already exist(s); choose another output directory or pass overwrite=True "
                         f"to replace it", cli=f"{existing} already exist(s); choose another --out or pass "
                                               f"--overwrite to replace it")


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
             overwrite: bool, sweep: list[dict[str, float]] | None = None) -> RunDir:
        """Claim `out_dir` for this config, seeds and sweep members, writing `config.json`; see the module
        docstring. In a multi-process run only process 0 checks and writes; the others share its directory.
        """
        path = Path(out_dir)
        if not _is_writer():
            return cls(path)
        make_output_dir(path)
        wanted = {"config": config.to_dict(), "seeds": list(seeds), **({"sweep": sweep} if sweep else {})}
        config_file = path / "config.json"
        if config_file.exists():
            try:
                saved = json.loads(config_file.read_text())
                # Through Config, so settings added later (with their defaults) compare equal.
                saved = {"config": Config.from_dict(saved["config"]).to_dict(), "seeds": saved["seeds"],
                         **({"sweep": saved["sweep"]} if saved.get("sweep") else {})}
            except (ValueError, KeyError, TypeError, AejaxError):
                saved = None
            if saved == wanted and resume:
                return cls(path)
            if not overwrite:
                if saved == wanted:
                    raise AejaxError(f"{path} already holds a run of this config; pass resume=True to continue "
                                     f"it or overwrite=True to start it again",
                                     cli=f"{path} already holds a run of this config; pass --resume to continue "
                                         f"it or --overwrite to start it again")
                raise AejaxError(f"{path} holds a run of a different config; choose another output directory, or "
                                 f"pass overwrite=True to replace it",
                                 cli=f"{path} holds a run of a different config; choose another --out, or pass "
                                     f"--overwrite to replace it")
            for name in RUN_FILES:
                target = path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        elif any(path.iterdir()) and not overwrite:
            raise AejaxError(f"{path} is not empty and holds no aejax run; choose another output directory "
                             f"(or pass overwrite=True to write beside its files)",
                             cli=f"{path} is not empty and holds no aejax run; choose another --out "
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

    def write_reconstructions(self, model, params, images: Any, title: str, events: EventLog, step: int) -> None:
        """`recon.png`: `images` (uint8 `[n, 28, 28, 1]`) above their reconstructions; also into TensorBoard."""
        if not _is_writer():
            return
        from aejax import inference, plots

        path = self.path / "recon.png"
        plots.reconstructions(path, images, np.asarray(inference.reconstruct(model, params, images)), title=title)
        events.image("reconstructions", path, step)


def result_row(*, model: str, variant: str, latent_dim: int, epochs: int, seed: int | None,
               scores: dict[str, float], params: int, train_seconds: float, **extra: Any) -> dict[str, Any]:
    """One row of a results.json (a trained model's or a baseline's), the schema every table and figure reads.

    `scores` is `metrics.finalize`'s dict (mse, psnr_db, ssim); `extra` adds fields after the common ones.
    """
    return {"model": model, "variant": variant, "latent_dim": latent_dim,
            "compression_ratio": IMAGE_PIXELS / latent_dim, "epochs": epochs, "seed": seed,
            "test_mse": scores["mse"], "test_psnr_db": scores["psnr_db"], "test_ssim": scores["ssim"],
            "params": params, "train_seconds": train_seconds, **extra}


class EventLog:
    """TensorBoard event files of a run (tensorboardX, no TensorFlow): one folder per trained model under
    `tensorboard/` (`seed_<s>`, or `<member>_seed_<s>` in a sweep), with the scalars of each metrics.jsonl line at
    step = epoch (a loss's aux terms as `train_<name>`). Only process 0 writes; a resumed run appends."""

    def __init__(self, run_path: Path, folders: list[str]):
        self.folders = list(folders)
        self.root = run_path / "tensorboard"
        self._writers: dict[int, Any] = {}
        self.enabled = _is_writer()

    def _writer(self, i: int):
        if i not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[i] = SummaryWriter(str(self.root / self.folders[i]))
        return self._writers[i]

    def epoch(self, entry: dict[str, Any]) -> None:
        """Scalars of one metrics.jsonl line: train_loss, test_mse, train aux (per model), images_per_second,
        epoch_seconds."""
        if not self.enabled:
            return
        for i in range(len(self.folders)):
            writer = self._writer(i)
            for tag in ("train_loss", "test_mse"):
                writer.add_scalar(tag, entry[tag][i], entry["epoch"])
            for name, values in entry.get("train_aux", {}).items():
                writer.add_scalar(f"train_{name}", values[i], entry["epoch"])
            for tag in ("images_per_second", "epoch_seconds"):
                writer.add_scalar(tag, entry[tag], entry["epoch"])
            writer.flush()

    def image(self, tag: str, png: Path, step: int) -> None:
        """A PNG written by `aejax.plots`, under the first model."""
        if not self.enabled:
            return
        from PIL import Image

        pixels = np.asarray(Image.open(png).convert("RGB"))  # [H, W, 3]
        writer = self._writer(0)
        writer.add_image(tag, pixels, step, dataformats="HWC")
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def load_model(run_dir: str | Path, seed: int | None = None, member: int | dict[str, float] | None = None):
    """Reload a trained model from a run directory's latest checkpoint: `(model, params, config)`.

    `seed` picks one of the run's seeds (default: its first); in a sweep, `member` picks a member by index or by
    its values (default: the first), and the config returned is that member's. No training, no data needed. A
    run of a plug-in model needs the module that registers it imported first.
    """
    from aejax import checkpoint, models, sweeps, train

    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        config, seeds, grid = Config.from_dict(saved["config"]), list(saved["seeds"]), saved.get("sweep") or [{}]
    except FileNotFoundError:
        raise AejaxError(f"{run_dir} holds no aejax run (no config.json)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise AejaxError(f"{run_dir / 'config.json'} is not a valid run config ({e})") from None
    if seed is not None and seed not in seeds:
        raise AejaxError(f"{run_dir} has seeds {seeds}, not {seed}")
    if member is None:
        m = 0
    elif isinstance(member, dict) and member in grid:
        m = grid.index(member)
    elif isinstance(member, int) and not isinstance(member, bool) and 0 <= member < len(grid):
        m = member
    else:
        raise AejaxError(f"{run_dir} has sweep members {grid}; member must be one of them or an index, "
                         f"got {member!r}")
    trainer = train.make_trainer(config, swept=list(grid[0]))
    target = _abstract_state(trainer, len(grid) * len(seeds))
    state, _ = checkpoint.restore(checkpoint.manager(run_dir / "checkpoints", config.keep_checkpoints), target)
    lane = m * len(seeds) + (seeds.index(seed) if seed is not None else 0)
    member_config = sweeps.member_config(config, grid[m])
    return models.build(member_config), train.unstack(state.params, lane), member_config


def _abstract_state(trainer, k: int):
    """Shapes and dtypes of a stack of `k` train states, placed on this process's first device (whatever
    devices wrote the checkpoint)."""
    import jax

    from aejax import train

    keys = jax.random.split(jax.random.key(0), k)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                  jax.eval_shape(jax.vmap(functools.partial(train.init_state, trainer)), keys))


def study_run_dir(study_dir: str | Path, label: str, depth: int) -> Path:
    """Where a study keeps the run of arm `label` at code size `depth`."""
    return Path(study_dir) / "runs" / f"{label}_d{depth}"


def study_runs(study_dir: str | Path) -> dict[str, list[tuple[int, Path]]]:
    """The trained runs of a study directory: arm label -> [(depth, run directory)], by depth."""
    runs: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted((Path(study_dir) / "runs").glob("*_d*")):
        label, depth = path.name.rsplit("_d", 1)
        if depth.isdigit() and (path / "config.json").exists():
            runs.setdefault(label, []).append((int(depth), path))
    return {label: sorted(found) for label, found in runs.items()}
