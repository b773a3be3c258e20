"""MNIST for a run: through tensorflow-datasets where it can be imported, else straight from the IDX files.

`load_mnist` and `split_size` read the prepared tfds data (`aejax.data.mnist_tfds`: a TF-free builder, ArrayRecord,
verified before use), preparing it once from the IDX files (`aejax.data.mnist_idx`). Where tensorflow-datasets (or
ArrayRecord, which it reads) cannot be imported, as on a machine that lacks them, the same arrays come from the
IDX files directly, each verified by its pinned checksum, with one warning line per process; `data_dir` is then
unused. Either way: images `[N, 28, 28, 1]` uint8 and labels `[N]` int32 in IDX order.

An installed package (a wheel) does not carry the vendored files: it needs `mnist_dir`, or data already prepared
in the tfds data directory; without either it stops at once with one line saying so (it never downloads).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import ModuleType

import numpy as np

from aejax.data.mnist_idx import PINNED_SHA256, SPLITS, Mnist, count, read_split
from aejax.data.source import Source
from aejax.errors import AejaxError

_warned = []  # the tfds-missing warning is printed once per process


def tfds_available() -> ModuleType | None:
    """`aejax.data.mnist_tfds` where tensorflow-datasets and ArrayRecord can be imported, else None (warning once)."""
    try:
        from aejax.data import mnist_tfds
    except Exception as e:  # ImportError where it is missing; anything from an installation that is broken
        if not _warned:
            _warned.append(True)
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"warning: tensorflow-datasets cannot be imported ({why}); MNIST is read from its IDX files "
                  f"directly (and lfw_faces, photo_patches from their sources)", file=sys.stderr)
        return None
    return mnist_tfds


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise AejaxError(f"unknown MNIST split {split!r}; choose one of {', '.join(SPLITS)}")


def split_size(split: str, *, data_dir: str | os.PathLike | None = None,
               mnist_dir: str | os.PathLike | None = None,
               checksums: Mapping[str, str] | None = PINNED_SHA256) -> int:
    """The number of records in a split, without reading them."""
    _check_split(split)
    tfds = tfds_available()
    if tfds is None:
        return count(split, mnist_dir)
    return len(tfds.prepared_source(split, data_dir, mnist_dir, checksums))


def load_mnist(split: str, *, data_dir: str | os.PathLike | None = None,
               mnist_dir: str | os.PathLike | None = None,
               checksums: Mapping[str, str] | None = PINNED_SHA256, examples: int | None = None,
               rows: range | None = None) -> Mnist:
    """Prepare MNIST once (if needed) and return one split as NumPy arrays.

    Returns images `[N, 28, 28, 1]` uint8 and labels `[N]` int32; only the first `examples` records when given
    (quick checks on part of a split), or only the records in `rows` (one host's shard).
    """
    if examples is not None and (isinstance(examples, bool) or not isinstance(examples, int) or examples < 1):
        raise AejaxError(f"examples must be a positive integer or None, got {examples!r}")
    _check_split(split)
    tfds = tfds_available()
    if tfds is None:
        whole = read_split(split, mnist_dir, checksums)
        size = len(whole.labels)
    else:
        source = tfds.prepared_source(split, data_dir, mnist_dir, checksums)
        size = len(source)
    if examples is not None:
        if examples > size:
            raise AejaxError(f"asked for {examples} {split} examples; the split has {size}")
        rows = range(examples)
    rows = range(size) if rows is None else rows
    if not (rows.step == 1 and 0 <= rows.start <= rows.stop <= size):
        raise AejaxError(f"rows {rows} are not a contiguous range within the {size} {split} examples")
    if tfds is None:
        return Mnist(whole.images[rows.start:rows.stop], whole.labels[rows.start:rows.stop])
    return tfds.read_records(source, rows)


def mnist_source(data_dir: str | os.PathLike | None = None, mnist_dir: str | os.PathLike | None = None) -> Source:
    """MNIST as a `Source` (prepared once if needed; the training rows are read only when asked for)."""
    def rows(r: range) -> np.ndarray:
        return load_mnist("train", data_dir=data_dir, mnist_dir=mnist_dir, rows=r).images

    opened = []  # the training split, opened (and verified) on the first `take`

    def take(indices: np.ndarray) -> np.ndarray:  # [n] -> uint8 [n, 28, 28, 1]
        if not opened:
            tfds = tfds_available()
            opened.append(read_split("train", mnist_dir, PINNED_SHA256).images if tfds is None
                          else tfds.prepared_source("train", data_dir, mnist_dir, PINNED_SHA256))
        split = opened[0]
        if isinstance(split, np.ndarray):
            return split[indices]
        return np.stack([record["image"] for record in split.__getitems__(indices.tolist())])

    return Source(split_size("train", data_dir=data_dir, mnist_dir=mnist_dir), rows,
                  load_mnist("test", data_dir=data_dir, mnist_dir=mnist_dir).images, take)
