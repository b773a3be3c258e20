"""MNIST through tensorflow-datasets without TensorFlow.

tfds's official `mnist` builder imports TensorFlow to extract and encode images. `MnistBuilder` reads the four
standard IDX files with Python's gzip, verifies the sha256 of their *decompressed* bytes against pinned values,
and writes `Tensor`/`ClassLabel` features to ArrayRecord, read back through `as_data_source` (no TensorFlow).

Sources: an explicit directory (`mnist_dir`, `--mnist-dir`), else the repository's vendored `data/mnist/`. An
installed package (a wheel) does not carry the vendored files: it needs `mnist_dir`, or data already prepared
in the tfds data directory; without either it stops at once with one line saying so (it never downloads).
Prepared data goes to `data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets` (tfds's rule); a second
preparation reuses the first. tfds writes into an `incomplete.*` directory and renames it only on success, and
every source file is read and checked before anything is written, so a failed preparation leaves nothing
that a later run would trust.

Prepared data is verified before it is trusted. The first time a prepared directory is used, every record of
both splits is decoded and checked against the sources: the IDX bytes rebuilt from the decoded arrays must have
the pinned sha256 (or, without pinned checksums, the sources' own), so no source files are needed for the
check. Then the sha256 of every prepared file is recorded in `aejax_sha256.json` beside them, and each later use
hashes the files against it (tens of milliseconds for MNIST). A truncated, altered, missing or extra file is one
line naming the directory and how to rebuild it; nothing is trained on it and nothing is deleted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from aejax.config import IMAGE_SHAPE, IMAGE_SIDE
from aejax.errors import AejaxError
from aejax.files import write_json

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
VENDORED_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
MANIFEST = "aejax_sha256.json"  # the sha256 of each prepared file, written once their content is verified


class Mnist(NamedTuple):
    """One split in memory."""

    images: np.ndarray  # [N, 28, 28, 1] uint8
    labels: np.ndarray  # [N] int32


def _decompress(path: Path) -> bytes:
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
    raw = _decompress(path)
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
    if is_images and tuple(header[2:]) != IMAGE_SHAPE[:2]:
        raise AejaxError(f"MNIST file {path} holds {header[2]}x{header[3]} images, "
                         f"expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    count = int(header[1])
    shape = (count, *IMAGE_SHAPE) if is_images else (count,)
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


class MnistBuilder(tfds.core.GeneratorBasedBuilder):
    """MNIST as uint8 `Tensor` images `[28, 28, 1]` and `ClassLabel` labels, in IDX order (no shuffling)."""

    name = "aejax_mnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "TensorFlow-free MNIST from the standard IDX files."}

    def __init__(self, *, mnist_dir: str | os.PathLike | None = None,
                 checksums: Mapping[str, str] | None = PINNED_SHA256, **kwargs):
        self._mnist_dir = mnist_dir
        self._checksums = checksums
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="The MNIST database of handwritten digits (LeCun, Cortes, Burges), CC BY-SA 3.0.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="http://yann.lecun.com/exdb/mnist/",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        source = find_source_dir(self._mnist_dir)
        names = [name for pair in FILES.values() for name in pair]
        paths = {name: source / name for name in names}
        checksums = self._checksums or {}
        arrays = {name: read_idx(Path(paths[name]), checksums.get(name)) for name in names}
        splits = {}
        for split, (images_name, labels_name) in FILES.items():
            images, labels = arrays[images_name], arrays[labels_name]
            if len(images) != len(labels):
                raise AejaxError(f"MNIST {split} split has {len(images)} images but {len(labels)} labels")
            if labels.size and labels.max() > 9:
                raise AejaxError(f"MNIST file {paths[labels_name]} holds label {labels.max()}, expected 0..9")
            splits[split] = self._generate_examples(images, labels)
        return splits

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i in range(len(labels)):
            yield i, {"image": images[i], "label": int(labels[i])}


def _source(split: str, data_dir: str | os.PathLike | None, mnist_dir: str | os.PathLike | None,
            checksums: Mapping[str, str] | None):
    """The prepared split as a random-access tfds data source (prepared first if needed)."""
    if split not in SPLITS:
        raise AejaxError(f"unknown MNIST split {split!r}; choose one of {', '.join(SPLITS)}")
    builder = MnistBuilder(mnist_dir=mnist_dir, checksums=checksums,
                           data_dir=None if data_dir is None else os.fspath(data_dir),
                           file_format="array_record")
    root = Path(builder.data_dir)
    if (root / MANIFEST).exists():
        _check_manifest(root)
    try:
        builder.download_and_prepare()
        sources = {name: builder.as_data_source(split=name) for name in SPLITS}
        if not (root / MANIFEST).exists():
            _check_content(root, sources, mnist_dir, checksums)
    except AejaxError:
        raise
    except Exception as e:  # tfds and ArrayRecord report damage as RuntimeError, ValueError, OSError, ...
        raise _damaged(root, f"it cannot be read ({type(e).__name__}: {_first_line(e)})") from None
    return sources[split]


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "no message"


def _damaged(root: Path, why: str) -> AejaxError:
    return AejaxError(f"prepared MNIST in {root} is damaged: {why}; delete {root} and run again to prepare it "
                      f"afresh from the IDX files")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _prepared_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != MANIFEST and not p.name.startswith("."))


def _check_manifest(root: Path) -> None:
    """Every prepared file is there, none is added, and each has the sha256 recorded when it was verified."""
    try:
        recorded = json.loads((root / MANIFEST).read_text())
        if not (isinstance(recorded, dict) and all(isinstance(v, str) for v in recorded.values())):
            raise ValueError("not a mapping of file names to sha256")
    except (OSError, ValueError) as e:
        raise _damaged(root, f"its {MANIFEST} cannot be read ({e})") from None
    present = _prepared_files(root)
    missing, added = sorted(set(recorded) - set(present)), sorted(set(present) - set(recorded))
    if missing:
        raise _damaged(root, f"{', '.join(missing)} missing")
    if added:
        raise _damaged(root, f"{', '.join(added)} was not part of it when it was verified")
    for name in present:
        if _sha256(root / name) != recorded[name]:
            raise _damaged(root, f"{name} fails its sha256 (recorded in {MANIFEST})")


def _idx_sha256(magic: int, array: np.ndarray) -> str:
    """The sha256 of the IDX file that holds `array` (the bytes `read_idx` verifies)."""
    header = np.array([magic, *array.shape[:3]], dtype=">u4")  # images: N, 28, 28; labels: N
    return hashlib.sha256(header.tobytes() + np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()


def _check_content(root: Path, sources: Mapping, mnist_dir: str | os.PathLike | None,
                   checksums: Mapping[str, str] | None) -> None:
    """Decode every prepared record and compare with the sources (their pinned sha256 where given, else the
    source files themselves), then record the prepared files' sha256 in the manifest."""
    checksums = dict(checksums or {})
    for split, (images_name, labels_name) in FILES.items():
        records = sources[split].__getitems__(range(len(sources[split])))
        images = np.stack([r["image"] for r in records]) if records else np.zeros((0, *IMAGE_SHAPE), np.uint8)
        labels = np.asarray([r["label"] for r in records], dtype=np.uint8)
        for name, magic, array in ((images_name, IMAGES_MAGIC, images), (labels_name, LABELS_MAGIC, labels)):
            expected = checksums.get(name)
            if expected is None:
                expected = hashlib.sha256(_decompress(find_source_dir(mnist_dir) / name)).hexdigest()
            if _idx_sha256(magic, array) != expected:
                raise _damaged(root, f"its {split} split does not decode to the content of {name}")
    try:
        write_json(root / MANIFEST, {name: _sha256(root / name) for name in _prepared_files(root)})
    except OSError:
        pass  # a read-only shared directory: its content was checked above, and is checked again next time


def split_size(split: str, *, data_dir: str | os.PathLike | None = None,
               mnist_dir: str | os.PathLike | None = None,
               checksums: Mapping[str, str] | None = PINNED_SHA256) -> int:
    """The number of records in a split, without reading them."""
    return len(_source(split, data_dir, mnist_dir, checksums))


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
    source = _source(split, data_dir, mnist_dir, checksums)
    if examples is not None:
        if examples > len(source):
            raise AejaxError(f"asked for {examples} {split} examples; the split has {len(source)}")
        rows = range(examples)
    rows = range(len(source)) if rows is None else rows
    if not (rows.step == 1 and 0 <= rows.start <= rows.stop <= len(source)):
        raise AejaxError(f"rows {rows} are not a contiguous range within the {len(source)} {split} examples")
    records = source.__getitems__(rows)
    images = np.stack([r["image"] for r in records]) if records else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    labels = np.asarray([r["label"] for r in records], dtype=np.int32)
    return Mnist(images, labels)


class Source(NamedTuple):
    """Training and test images of one run, wherever they come from: the training set's size, a loader of a
    contiguous range of its rows (one host's shard, or the first `train_examples`), and the test images."""

    n_train: int
    rows: Callable[[range], np.ndarray]  # uint8 [len(range), 28, 28, 1]
    test: np.ndarray  # uint8 [N_test, 28, 28, 1]


def mnist_source(data_dir: str | os.PathLike | None = None, mnist_dir: str | os.PathLike | None = None) -> Source:
    """MNIST as a `Source` (prepared once if needed; the training rows are read only when asked for)."""
    def rows(r: range) -> np.ndarray:
        return load_mnist("train", data_dir=data_dir, mnist_dir=mnist_dir, rows=r).images

    return Source(split_size("train", data_dir=data_dir, mnist_dir=mnist_dir), rows,
                  load_mnist("test", data_dir=data_dir, mnist_dir=mnist_dir).images)


def array_source(train_images: np.ndarray, test_images: np.ndarray) -> Source:
    """Arrays already in memory (host or device) as a `Source`."""
    return Source(len(train_images), lambda r: train_images[r.start:r.stop], test_images)
