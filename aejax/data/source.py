"""Where a run's images come from, whatever the dataset: a `Source` (the training set's size, a loader of a
range of its rows, the test images), arrays checked into one (`array_source`), and the checks every image set
passes (`check_images`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from aejax.errors import AejaxError


class Source(NamedTuple):
    """Training and test images of one run, wherever they come from: the training set's size, a loader of a
    contiguous range of its rows (one host's shard, or the first `train_examples`), the test images, and a
    loader of rows at any indices (what a streamed run gathers its batches with; None where the source has
    none, which then trains from device-resident images only). A source whose rows are ordered by a hash of
    each image's name (`aejax.data.folder`) gives it as `split_hash`, and a validation split then takes its first
    rows, so adding images moves none between the splits."""

    n_train: int
    rows: Callable[[range], np.ndarray]  # uint8 (or float in [0, 1]) [len(range), H, W, C]
    test: np.ndarray  # [N_test, H, W, C], the training images' dtype
    take: Callable[[np.ndarray], np.ndarray] | None = None  # int indices [n] -> [n, H, W, C]
    split_hash: np.ndarray | None = None  # [n_train] ascending in [0, 1): rows ordered by a hash of their names
    note: str = ""  # a line about where the images come from, printed by a run

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(n) for n in self.test.shape[1:])


def check_images(images, what: str) -> None:
    """One-line errors for images a run cannot train on: they must be uint8 `[N, H, W, C]` (0..255) or float
    `[N, H, W, C]` in [0, 1] (float 0..255, a missing channel axis, channels first, NaN, an empty set are
    refused)."""
    shape, dtype = tuple(getattr(images, "shape", ())), np.dtype(getattr(images, "dtype", object))
    if len(shape) != 4 or min(shape, default=0) < 1:
        hint = "; add a channel axis: images[..., None]" if len(shape) == 3 else ""
        raise AejaxError(f"{what} must be shaped [N, H, W, C] with N, H, W, C >= 1, got {list(shape)}{hint}")
    if shape[1] in (1, 3, 4) and shape[3] > 4 and shape[2] > 4:  # [N, C, H, W], the PyTorch habit
        raise AejaxError(f"{what} look channels-first, {list(shape)} ([N, C, H, W]); aejax takes channels last: "
                         f"images.transpose(0, 2, 3, 1)")
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
    file_rows = FileRows.of(train_images)
    if file_rows is not None:
        return Source(len(train_images), file_rows.rows, test_images, file_rows.take)
    return Source(len(train_images), lambda r: train_images[r.start:r.stop], test_images,
                  lambda indices: train_images[np.asarray(indices)])


class FileRows:
    """The rows of a C-contiguous memmap (`np.load(path, mmap_mode="r")`, or a slice of one) read with positioned
    reads of its file rather than through the mapping: pages a mapping touches count in the process's memory
    until it ends, so an epoch over a set larger than memory would hold all of it; read this way, the process
    holds a batch (the kernel's page cache, which it may drop, holds the rest)."""

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        self._fd = os.open(path, os.O_RDONLY)  # positioned reads share it safely across loader threads

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    @classmethod
    def of(cls, images) -> FileRows | None:
        """The file rows behind `images`, or None where it is not a contiguous memmap of a file."""
        if not isinstance(images, np.memmap) or not images.flags.c_contiguous or not images.filename:
            return None
        root = images
        while isinstance(root.base, np.ndarray):  # a slice's base is the memmap `np.load` made
            root = root.base
        if not isinstance(root, np.memmap):
            return None
        offset = root.offset + (images.ctypes.data - root.ctypes.data)
        return cls(images.filename, offset, tuple(images.shape), images.dtype)

    def _read(self, index: int, count: int) -> bytes:
        data = os.pread(self._fd, count * self.row_bytes, self.offset + index * self.row_bytes)
        if len(data) != count * self.row_bytes:
            raise AejaxError(f"{self.path} ends before row {index + count} of the {self.shape[0]} it held")
        return data

    def rows(self, r: range) -> np.ndarray:
        return np.frombuffer(self._read(r.start, len(r)), self.dtype).reshape(len(r), *self.shape[1:])

    def take(self, indices) -> np.ndarray:
        indices = np.asarray(indices)
        out = np.empty((len(indices), *self.shape[1:]), self.dtype)
        for i, index in enumerate(indices.tolist()):
            out[i] = np.frombuffer(self._read(index, 1), self.dtype).reshape(self.shape[1:])
        return out
