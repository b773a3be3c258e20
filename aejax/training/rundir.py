"""A run directory: the rules that claim it for one run, and the files of that run.

`RunDir.open` takes the directory's lock (`.lock`, an `flock` held until `close()` or the process ends, a
crash included), so a second process on the same directory, or a resume while the first still runs, is refused
in one line and the first run's files stay intact. It refuses to mix runs: a directory holding a run of another
config (or seeds) is left untouched unless `overwrite`; the same config continues only with `resume`. Every file
is written atomically (`aejax.files`). A run directory holds:

    config.json      the resolved config, the seeds (and sweep members), package versions, device and host
    metrics.jsonl    one line per epoch: train loss and test MSE per model, seconds, images/s
    results.json     one row per model (`aejax.training.results.result_row`): test MSE, PSNR, SSIM, parameters, seconds
    recon.png        the first ten test digits and their reconstructions (first model)
    tensorboard/     event files, one folder per model (`aejax.training.events`)
    checkpoints/     orbax, a step every `checkpoint_every` epochs and the last, the latest `keep_checkpoints` kept
    best_checkpoints/  with select best: each model's best epoch so far, saved when one improves
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from aejax.config import Config
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.evaluation import plots
from aejax.files import make_output_dir, write_atomic, write_json
from aejax.models import inference
from aejax.training import schedules
from aejax.training.events import EventLog
from aejax.training.parallel import is_writer

LOCK_FILE = ".lock"
RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "recon.png", "tensorboard", "checkpoints",
             "best_checkpoints")


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: Path
    lock: int | None = dataclasses.field(default=None, compare=False)  # the file descriptor holding .lock

    def close(self) -> None:
        """Release the directory's lock (the end of the process releases it too)."""
        if self.lock is not None:
            os.close(self.lock)
            object.__setattr__(self, "lock", None)

    @classmethod
    def open(cls, out_dir: str | Path, config: Config, seeds: list[int], *, resume: bool,
             overwrite: bool, sweep: list[dict[str, float]] | None = None) -> RunDir:
        """Claim `out_dir` for this config, seeds and sweep members, writing `config.json`; see the module
        docstring. In a multi-process run only process 0 checks and writes; the others share its directory.
        """
        path = Path(out_dir)
        if not is_writer():
            return cls(path)
        make_output_dir(path)
        lock = _take_lock(path)
        try:
            return cls._claim(path, config, seeds, resume=resume, overwrite=overwrite, sweep=sweep, lock=lock)
        except BaseException:
            os.close(lock)
            raise

    @classmethod
    def _claim(cls, path: Path, config: Config, seeds: list[int], *, resume: bool, overwrite: bool,
               sweep: list[dict[str, float]] | None, lock: int) -> RunDir:
        wanted = {"config": config.to_dict(), "seeds": list(seeds), **({"sweep": sweep} if sweep else {})}
        config_file = path / "config.json"
        if config_file.exists():
            try:
                loaded = json.loads(config_file.read_text())
            except (ValueError, OSError) as e:
                if not overwrite:
                    raise AejaxError(f"{config_file} cannot be read ({type(e).__name__}: {e}); the run in {path} is "
                                     f"left as it is: repair or move it, or pass overwrite=True to replace the run",
                                     cli=f"{config_file} cannot be read ({type(e).__name__}: {e}); the run in "
                                         f"{path} is left as it is: repair or move it, or pass --overwrite to "
                                         f"replace the run") from None
                loaded = None
            try:  # through Config, so settings added later (with their defaults) compare equal
                saved = {"config": Config.from_dict(loaded["config"]).to_dict(), "seeds": loaded["seeds"],
                         **({"sweep": loaded["sweep"]} if loaded.get("sweep") else {})}
            except (ValueError, KeyError, TypeError, AttributeError, AejaxError):
                saved = None
            if saved == wanted and resume:
                return cls(path, lock)
            if resume and saved is not None and _more_epochs(saved, wanted):  # a finished run, continued
                write_json(config_file, {**wanted, "environment": environment(),
                                         "continued_from_epochs": saved["config"]["epochs"]})
                return cls(path, lock)
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
        elif any(p.name != LOCK_FILE for p in path.iterdir()) and not overwrite:
            raise AejaxError(f"{path} is not empty and holds no aejax run; choose another output directory "
                             f"(or pass overwrite=True to write beside its files)",
                             cli=f"{path} is not empty and holds no aejax run; choose another --out "
                                 f"(or pass --overwrite to write beside its files)")
        write_json(config_file, {**wanted, "environment": environment()})
        return cls(path, lock)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metrics lines up to the first that cannot be read (a file cut mid-line loses that epoch's line,
        so a resume starts from the checkpoint before it)."""
        file = self.path / "metrics.jsonl"
        if not file.exists():
            return []
        history = []
        for line in file.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                break
            if not isinstance(entry, dict) or entry.get("epoch") != len(history) + 1:
                break
            history.append(entry)
        return history

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        if is_writer():
            write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    def write_results(self, rows: list[dict[str, Any]]) -> None:
        if is_writer():
            write_json(self.path / "results.json", rows)

    def write_reconstructions(self, model, variables, images: Any, title: str, events: EventLog, step: int) -> None:
        """`recon.png`: `images` (`[n, H, W, C]`) above their reconstructions; also into TensorBoard."""
        if not is_writer():
            return
        path = self.path / "recon.png"
        plots.reconstructions(path, images, np.asarray(inference.reconstruct(model, variables, images)), title=title)
        events.image("reconstructions", path, step)


def _take_lock(path: Path) -> int:
    """An exclusive `flock` on `path/.lock`, or a one-line error naming the directory if another process holds it."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AejaxError(f"{path} is in use by another aejax run (it holds {path / LOCK_FILE}); wait for that run "
                         f"to end, or choose another output directory",
                         cli=f"{path} is in use by another aejax run (it holds {path / LOCK_FILE}); wait for that "
                             f"run to end, or choose another --out") from None
    return fd


def _more_epochs(saved: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether `wanted` is `saved` with more epochs and nothing else changed; an error where the schedule's
    length is the run's (continuing would change the learning rate of every step already taken)."""
    before, after = saved["config"]["epochs"], wanted["config"]["epochs"]
    if after <= before or {**saved, "config": {**saved["config"], "epochs": after}} != wanted:
        return False
    schedule = wanted["config"]["schedule"]
    if schedule in ("cosine", "warmup_cosine") or schedules.registered(schedule):
        raise AejaxError(f"continuing for {after} epochs instead of {before} would stretch the {schedule} schedule, "
                         f"whose length is the run's, and change the learning rate of the steps already taken; "
                         f"start a new run (init_from this one starts from its parameters)",
                         cli=f"continuing for {after} epochs instead of {before} would stretch the {schedule} "
                             f"schedule, whose length is the run's, and change the learning rate of the steps "
                             f"already taken; start a new run (--init-from this one starts from its parameters)")
    return True
