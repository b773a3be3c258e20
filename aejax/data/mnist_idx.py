"""The four standard MNIST IDX files: where they are, their pinned checksums, and reading them.

The sha256 pinned for each file is that of its *decompressed* bytes, so it identifies the data whatever gzip
produced the file. Sources: an explicit directory (`mnist_dir`, `--mnist-dir`), else the repository's vendored
`data/mnist/`; an installed package (a wheel) carries no vendored files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aejax.config import MNIST_SHAPE
from aejax.errors import AejaxError

SPLITS = ("train", "test")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# sha256 of the decompressed IDX bytes: they identify the data whatever gzip produced the file.
PINNED_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
VENDORED_DIR = Path(__file__).resolve().parents[2] / "data" / "mnist"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049



class Mnist(NamedTuple):
    """One split in memory."""

    images: np.ndarray  # [N, 28, 28, 1] uint8
    labels: np.ndarray  # [N] int32


def decompress(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise AejaxError(f"MNIST file {path} is missing") from None
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise AejaxError(f"MNIST file {path} is truncated or not a gzip file ({e})") from None


def read_idx(path: Path, expected_sha256: str | None) -> np.ndarray:
    """Decompress one IDX file, verify its content checksum, and parse it.

    Returns images as `[N, 28, 28, 1]` uint8 (magic 2051) or labels as `[N]` uint8 (magic 2049).
    """
    raw = decompress(path)
    if expected_sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != expected_sha256:
            raise AejaxError(f"MNIST file {path} fails its checksum (decompressed sha256): "
                             f"expected {expected_sha256}, got {got}")
    is_images = "images" in path.name
    magic = IMAGES_MAGIC if is_images else LABELS_MAGIC
    header_len = 16 if is_images else 8
    if len(raw) < header_len:
        raise AejaxError(f"MNIST file {path} is too short for an IDX header ({len(raw)} bytes)")
    header = np.frombuffer(raw[:header_len], dtype=">u4")
    if header[0] != magic:
        raise AejaxError(f"MNIST file {path} has IDX magic {header[0]}, expected {magic}")
    if is_images and tuple(header[2:]) != MNIST_SHAPE[:2]:
        raise AejaxError(f"MNIST file {path} holds {header[2]}x{header[3]} images, "
                         f"expected {MNIST_SHAPE[0]}x{MNIST_SHAPE[1]}")
    count = int(header[1])
    shape = (count, *MNIST_SHAPE) if is_images else (count,)
    body = raw[header_len:]
    if len(body) != int(np.prod(shape)):
        raise AejaxError(f"MNIST file {path} header says {count} items but holds {len(body)} data bytes, "
                         f"expected {int(np.prod(shape))}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def find_source_dir(mnist_dir: str | os.PathLike | None) -> Path:
    """The directory holding the four IDX files: `mnist_dir`, which must hold all four, else the vendored
    `data/mnist/` of a repository checkout; a one-line error when neither has them."""
    names = [name for pair in FILES.values() for name in pair]
    if mnist_dir is not None:
        root = Path(mnist_dir)
        missing = [name for name in names if not (root / name).is_file()]
        if missing:
            missing = f"MNIST file(s) {', '.join(missing)} missing from {root}"
            raise AejaxError(f"{missing} (the mnist_dir given)", cli=f"{missing} (the --mnist-dir given)")
        return root
    if all((VENDORED_DIR / name).is_file() for name in names):
        return VENDORED_DIR
    where = (f"MNIST is not prepared in the tfds data directory and its IDX files are not at {VENDORED_DIR} (an "
             f"installed package does not ship them)")
    raise AejaxError(f"{where}; pass mnist_dir=DIR, a directory with the four .gz files "
                     f"({', '.join(names)})", cli=f"{where}; pass --mnist-dir DIR, a directory with the four .gz "
                                                 f"files ({', '.join(names)})")


def idx_sha256(magic: int, array: np.ndarray) -> str:
    """The sha256 of the IDX file that holds `array` (the bytes `read_idx` verifies)."""
    header = np.array([magic, *array.shape[:3]], dtype=">u4")  # images: N, 28, 28; labels: N
    return hashlib.sha256(header.tobytes() + np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()



def read_split(split: str, mnist_dir: str | os.PathLike | None,
               checksums: Mapping[str, str] | None) -> Mnist:
    """One split straight from its two IDX files, each verified: images `[N, 28, 28, 1]` uint8, labels `[N]`
    int32, in IDX order (the arrays the tfds builder writes)."""
    images_name, labels_name = FILES[split]
    source = find_source_dir(mnist_dir)
    checksums = checksums or {}
    images = read_idx(source / images_name, checksums.get(images_name))
    labels = read_idx(source / labels_name, checksums.get(labels_name))
    check_pair(split, images, labels, source / labels_name)
    return Mnist(images, labels.astype(np.int32))


def check_pair(split: str, images: np.ndarray, labels: np.ndarray, labels_path: Path) -> None:
    """A split's images and labels agree in number, and every label is a digit."""
    if len(images) != len(labels):
        raise AejaxError(f"MNIST {split} split has {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise AejaxError(f"MNIST file {labels_path} holds label {labels.max()}, expected 0..9")


def count(split: str, mnist_dir: str | os.PathLike | None) -> int:
    """The number of images in a split, from its IDX header alone."""
    path = find_source_dir(mnist_dir) / FILES[split][0]
    try:
        with gzip.open(path, "rb") as f:
            header = f.read(16)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise AejaxError(f"MNIST file {path} is truncated or not a gzip file ({e})") from None
    if len(header) < 16:
        raise AejaxError(f"MNIST file {path} is too short for an IDX header ({len(header)} bytes)")
    return int(np.frombuffer(header, dtype=">u4")[1])
