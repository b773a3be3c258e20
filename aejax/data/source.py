"""Where a run's images come from, whatever the dataset: a `Source` (the training set's size, a loader of a
range of its rows, the test images), arrays checked into one (`array_source`), and the checks every image set
passes (`check_images`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from aejax.errors import AejaxError


class Source(NamedTuple):
    """Training and test images of one run, wherever they come from: the training set's size, a loader of a
    contiguous range of its rows (one host's shard, or the first `train_examples`), the test images, and a
    loader of rows at any indices (what a streamed run gathers its batches with; None where the source has
    none, which then trains from device-resident images only)."""

    n_train: int
    rows: Callable[[range], np.ndarray]  # uint8 (or float in [0, 1]) [len(range), H, W, C]
    test: np.ndarray  # [N_test, H, W, C], the training images' dtype
    take: Callable[[np.ndarray], np.ndarray] | None = None  # int indices [n] -> [n, H, W, C]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(n) for n in self.test.shape[1:])


def check_images(images, what: str) -> None:
    """One-line errors for images a run cannot train on: they must be uint8 `[N, H, W, C]` (0..255) or float
    `[N, H, W, C]` in [0, 1] (float 0..255, a missing channel axis, NaN, an empty set are refused)."""
    shape, dtype = tuple(getattr(images, "shape", ())), np.dtype(getattr(images, "dtype", object))
    if len(shape) != 4 or min(shape, default=0) < 1:
        hint = "; add a channel axis: images[..., None]" if len(shape) == 3 else ""
        raise AejaxError(f"{what} must be shaped [N, H, W, C] with N, H, W, C >= 1, got {list(shape)}{hint}")
    if dtype == np.uint8:
        return
    if not np.issubdtype(dtype, np.floating):
        raise AejaxError(f"{what} must be uint8 (0..255) or float in [0, 1], got dtype {dtype}")
    low, high = float(np.min(images)), float(np.max(images))
    if not (0.0 <= low and high <= 1.0):  # NaN fails both
        raise AejaxError(f"float {what} must lie in [0, 1], got values in [{low:g}, {high:g}]; pass uint8 images as "
                         f"they are, or divide by 255")


def array_source(train_images: np.ndarray, test_images: np.ndarray) -> Source:
    """Arrays already in memory (host or device) as a `Source`, checked first (`check_images`; the two sets
    must share their image shape and dtype)."""
    check_images(train_images, "training images")
    check_images(test_images, "test images")
    if tuple(train_images.shape[1:]) != tuple(test_images.shape[1:]) or train_images.dtype != test_images.dtype:
        raise AejaxError(f"training and test images differ: {train_images.dtype} {list(train_images.shape[1:])} "
                         f"against {test_images.dtype} {list(test_images.shape[1:])}; give both one shape and dtype")
    return Source(len(train_images), lambda r: train_images[r.start:r.stop], test_images,
                  lambda indices: train_images[np.sort(indices)][np.argsort(np.argsort(indices))])
