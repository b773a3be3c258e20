"""TensorBoard event files of a run, written by tensorboardX (no TensorFlow). Where tensorboardX is not
installed the events are skipped with one warning line; everything else a run writes is unchanged."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from aejax.training.parallel import is_writer


class EventLog:
    """TensorBoard event files of a run (tensorboardX, no TensorFlow): one folder per trained model under
    `tensorboard/` (`seed_<s>`, or `<member>_seed_<s>` in a sweep), with the scalars of each metrics.jsonl line at
    step = epoch (a loss's aux terms as `train_<name>`), per-step scalars where asked (`steps`), and each model's
    hyper-parameters with its last scores. Only process 0 writes; a resumed run appends."""

    def __init__(self, run_path: Path, folders: list[str], hparams: list[dict[str, Any]] | None = None):
        self.folders = list(folders)
        self.root = run_path / "tensorboard"
        self.hparams = hparams  # per model, written with its last scores when the log is closed
        self._writers: dict[int, Any] = {}
        self._last: dict[str, Any] | None = None
        self.enabled = is_writer() and _summary_writer() is not None

    def _writer(self, i: int):
        if i not in self._writers:
            self._writers[i] = _summary_writer()(str(self.root / self.folders[i]))
        return self._writers[i]

    def epoch(self, entry: dict[str, Any]) -> None:
        """Scalars of one metrics.jsonl line: train_loss, test_mse or val_mse, train aux (per model), images/s,
        epoch_seconds."""
        if not self.enabled:
            return
        self._last = entry
        for i in range(len(self.folders)):
            writer = self._writer(i)
            for tag in ("train_loss", "test_mse", "val_mse"):
                if tag in entry:
                    writer.add_scalar(tag, entry[tag][i], entry["epoch"])
            for name, values in entry.get("train_aux", {}).items():
                writer.add_scalar(f"train_{name}", values[i], entry["epoch"])
            for tag in ("images_per_second", "epoch_seconds"):
                writer.add_scalar(tag, entry[tag], entry["epoch"])
            writer.flush()

    def steps(self, end: Any, learning_rates: np.ndarray, every: int) -> None:
        """Per-step scalars of one epoch (`end`, a `loop.EpochEnd`), every `every` steps, at the global step:
        `step/loss`, `step/learning_rate` (`[K, steps]`) and each aux term (`step/grad_norm`), from the arrays the
        compiled epoch gathered."""
        if not self.enabled:
            return
        epoch, losses, aux, steps = end.epoch, end.losses, end.step_aux, end.losses.shape[1]
        for i in range(len(self.folders)):
            writer = self._writer(i)
            for s in range(0, steps, every):
                step = (epoch - 1) * steps + s
                writer.add_scalar("step/loss", float(losses[i, s]), step)
                writer.add_scalar("step/learning_rate", float(learning_rates[i, s]), step)
                for name, values in aux.items():
                    writer.add_scalar(f"step/{name}", float(values[i, s]), step)
            writer.flush()

    def image(self, tag: str, png: Path, step: int) -> None:
        """A PNG written by `aejax.evaluation.plots`, under the first model."""
        if not self.enabled:
            return
        from PIL import Image

        pixels = np.asarray(Image.open(png).convert("RGB"))  # [H, W, 3]
        writer = self._writer(0)
        writer.add_image(tag, pixels, step, dataformats="HWC")
        writer.flush()

    def close(self) -> None:
        """Write each model's hyper-parameters with its last epoch's scores (TensorBoard's HParams tab, under
        `<model>/hparams`), then close the files."""
        if self.enabled and self.hparams is not None and self._last is not None:
            for i, hparams in enumerate(self.hparams):
                scores = {f"hparam/{tag}": float(self._last[tag][i]) for tag in ("train_loss", "test_mse", "val_mse")
                          if tag in self._last}
                self._writer(i).add_hparams(hparams, scores, name="hparams", global_step=self._last["epoch"])
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


_WARNED: list[bool] = []


def _summary_writer():
    """tensorboardX's `SummaryWriter`, or None (with one warning per process) where it cannot be imported."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as e:
        if not _WARNED:
            _WARNED.append(True)
            print(f"warning: tensorboardX is not installed ({e}); TensorBoard events are not written",
                  file=sys.stderr)
        return None
    return SummaryWriter
