"""The streamed pipeline, for training sets that do not fit on the device: where the training images live
(`placement`), and each epoch's batches gathered from the source on the host by grain and handed over a chunk
of steps at a time (`epoch_chunks`). With several processes, each gathers only its own part of every batch:
the positions its devices hold on the mesh.

The order is the device-resident path's: the batches of image indices come from the same per-epoch key
(`aejax.training.step.epoch_order`), so a streamed epoch trains on the same batches, in the same order, with
the same step keys. A loader's position is therefore the epoch alone: a run resumed from an epoch's checkpoint
draws the rest of its batches exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from aejax.config import PLACEMENTS
from aejax.data.source import Source
from aejax.errors import AejaxError

CHUNK_BYTES = 32 << 20  # uint8 images per chunk handed to the device: a scan over that many steps' batches
DEVICE_SHARE = 0.5  # auto keeps a training set on an accelerator up to this share of its memory
HOST_SHARE = 0.25  # and on a CPU (whose device memory is the host's) up to this share of the host's free memory


class Placement(NamedTuple):
    """Where a run's training images are, and why."""

    where: str  # "device" or "stream"
    train_bytes: int  # the uint8 training set's size
    budget: int | None  # bytes auto allowed on the device (None: not asked)
    reason: str  # one line for the log

    def describe(self, n_train: int) -> str:
        return f"data: {n_train:,} training images, {_mib(self.train_bytes)} uint8: {self.where} ({self.reason})"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n < 10 << 30 else f"{n / (1 << 30):,.1f} GiB"


def _free_host_bytes() -> int | None:
    """Available host memory (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _device_budget() -> tuple[int | None, str]:
    """Bytes auto may place on the device, and how that was decided."""
    import jax

    device = jax.local_devices()[0]  # one this process can ask
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if device.platform != "cpu" and stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"] * DEVICE_SHARE), f"{DEVICE_SHARE:.0%} of the device's memory"
    free = _free_host_bytes()
    if free is None:
        return None, "the host's free memory is unknown"
    return int(free * HOST_SHARE), f"{HOST_SHARE:.0%} of the host's available memory"


def placement(choice: str, n_train: int, image_shape: tuple[int, ...]) -> Placement:
    """`device` or `stream` as `choice` says, or for `auto` whichever the uint8 training set's size and the
    budget (`DEVICE_SHARE` of an accelerator's memory, `HOST_SHARE` of the host's free memory on a CPU) allow."""
    if choice not in PLACEMENTS:
        raise AejaxError(f"data_placement must be one of {', '.join(PLACEMENTS)}, got {choice!r}")
    train_bytes = n_train * math.prod(image_shape)
    if choice != "auto":
        return Placement(choice, train_bytes, None, "as asked")
    budget, how = _device_budget()
    if budget is None or train_bytes <= budget:
        return Placement("device", train_bytes, budget,
                         f"auto: within {how}" + (f", {_mib(budget)}" if budget else ""))
    return Placement("stream", train_bytes, budget, f"auto: over {how}, {_mib(budget)}")


def chunk_steps(steps: int, lanes: int, batch_size: int, image_shape: tuple[int, ...]) -> int:
    """Steps per chunk: about `CHUNK_BYTES` of uint8 images for every lane, at least one step."""
    per_step = lanes * batch_size * math.prod(image_shape)
    return max(1, min(steps, CHUNK_BYTES // per_step))


def epoch_chunks(source: Source, orders: np.ndarray, steps_per_chunk: int, threads: int | None = None,
                 columns: range | None = None) -> Iterator[np.ndarray]:
    """An epoch's training images, chunk by chunk, as uint8 `[S, K, B, H, W, C]` (the last chunk may be shorter),
    for `orders` `[K, steps, B]`, each lane's batches of indices into `source`'s training rows; with `columns`,
    only those positions of each batch (the part of it this process's devices hold: B is then their count).
    grain gathers the chunks on `threads` background threads (default: the CPU count, at most 4), two ahead of
    the one being trained on."""
    if source.take is None:
        raise AejaxError("this dataset's source cannot read rows by index, so it cannot be streamed; use "
                         "data_placement device")
    if columns is not None:
        orders = orders[:, :, columns.start:columns.stop]
    lanes, steps, batch = orders.shape

    def load(c: int) -> np.ndarray:
        part = orders[:, c * steps_per_chunk:(c + 1) * steps_per_chunk]  # [K, s, B]
        s = part.shape[1]
        images = source.take(part.transpose(1, 0, 2).reshape(-1))  # [s * K * B, H, W, C], step-major
        return np.asarray(images).reshape(s, lanes, batch, *images.shape[1:])

    try:  # imported here: grain needs ArrayRecord, without which device-resident runs still train
        import grain
    except ImportError as e:
        raise AejaxError(f"a streamed training set is read by grain, which cannot be imported here ({e}); "
                         f"install grain, or use data_placement device") from None
    n_chunks = -(-steps // steps_per_chunk)
    threads = threads or min(4, os.cpu_count() or 1)
    dataset = grain.MapDataset.range(n_chunks).map(load)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2)))
