"""MNIST through tensorflow-datasets without TensorFlow, its prepared files verified before they are trusted.

tfds's official `mnist` builder imports TensorFlow to extract and encode images. `MnistBuilder` reads the four
IDX files (`aejax.data.mnist_idx`, each checked against its pinned sha256) and writes `Tensor`/`ClassLabel` features
to ArrayRecord, read back through `as_data_source` (no TensorFlow). Prepared data goes to `data_dir`, else
`$TFDS_DATA_DIR`, else `~/tensorflow_datasets` (tfds's rule); a second preparation reuses the first. tfds writes
into an `incomplete.*` directory and renames it only on success, and every source file is read and checked
before anything is written, so a failed preparation leaves nothing that a later run would trust.

The first time a prepared directory is used, every record of both splits is decoded and checked against the
sources: the IDX bytes rebuilt from the decoded arrays must have the pinned sha256 (or, without pinned
checksums, the sources' own), so no source files are needed for the check. Then the sha256 of every prepared
file is recorded in `aejax_sha256.json` beside them, and each later use hashes the files against it (tens of
milliseconds for MNIST). A truncated, altered, missing or extra file is one line naming the directory and how
to rebuild it; nothing is trained on it and nothing is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_data_source  # noqa: F401 - tfds reads ArrayRecord lazily

from aejax.config import MNIST_SHAPE
from aejax.data.mnist_idx import (
    FILES,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    PINNED_SHA256,
    SPLITS,
    Mnist,
    check_pair,
    decompress,
    find_source_dir,
    idx_sha256,
    read_idx,
)
from aejax.errors import AejaxError
from aejax.files import write_json

MANIFEST = "aejax_sha256.json"  # the sha256 of each prepared file, written once their content is verified


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
                "image": tfds.features.Tensor(shape=MNIST_SHAPE, dtype=np.uint8),
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
            check_pair(split, images, labels, paths[labels_name])
            splits[split] = self._generate_examples(images, labels)
        return splits

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i in range(len(labels)):
            yield i, {"image": images[i], "label": int(labels[i])}


def prepared_source(split: str, data_dir: str | os.PathLike | None, mnist_dir: str | os.PathLike | None,
            checksums: Mapping[str, str] | None):
    """The prepared split as a random-access tfds data source (prepared first if needed, verified always)."""
    base = Path(os.fspath(data_dir)) if data_dir is not None else Path(tfds.core.constants.DATA_DIR)
    root = base.expanduser() / MnistBuilder.name / str(MnistBuilder.VERSION)  # the builder's data_dir
    with _preparing(root):
        if (root / MANIFEST).exists():
            _check_manifest(root)  # every prepared file, dataset_info.json too, before tfds reads any
        try:
            builder = MnistBuilder(mnist_dir=mnist_dir, checksums=checksums,
                                   data_dir=None if data_dir is None else os.fspath(data_dir),
                                   file_format="array_record")
            builder.download_and_prepare()
            sources = {name: builder.as_data_source(split=name) for name in SPLITS}
            if not (root / MANIFEST).exists():
                _check_content(root, sources, mnist_dir, checksums)
        except AejaxError:
            raise
        except Exception as e:  # tfds and ArrayRecord report damage as RuntimeError, ValueError, OSError, ...
            unwritable = _unwritable(e)
            if unwritable is not None and not (root / MANIFEST).exists():
                raise AejaxError(f"cannot prepare MNIST in {root}: {unwritable}; give data_dir a writable "
                                 f"directory with room for 24 MB",
                                 cli=f"cannot prepare MNIST in {root}: {unwritable}; give --data-dir a writable "
                                     f"directory with room for 24 MB") from None
            raise _damaged(root, f"it cannot be read ({type(e).__name__}: {_first_line(e)})") from None
    return sources[split]


WRITE_ERRORS = {errno.ENOTDIR: "a file stands where a directory must be", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.EROFS: "a read-only file system",
                errno.ENOSPC: "no space left", errno.EDQUOT: "the disk quota is exceeded"}


def _unwritable(error: BaseException) -> str | None:
    """What stopped a preparation writing, where `error` (or one it came from) says the data directory cannot be
    written; None for anything else (which is then damage)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in WRITE_ERRORS:
            return WRITE_ERRORS[seen.errno] + (f" ({seen.filename})" if seen.filename else "")
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def _preparing(root: Path) -> Iterator[None]:
    """Hold a lock beside the prepared dataset's folder while it is checked or prepared, so that two runs
    starting on one fresh data directory prepare it once (the second waits, then finds it prepared). Where the
    lock cannot be made (a read-only directory, which nothing can prepare into either), go on without it."""
    lock = root.parent.with_name(f".{root.parent.name}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # noqa: SIM115 - closed below
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def read_records(source, rows: range) -> Mnist:
    """Rows of a prepared split as arrays: images `[n, 28, 28, 1]` uint8, labels `[n]` int32."""
    records = source.__getitems__(rows)
    images = np.stack([r["image"] for r in records]) if records else np.zeros((0, *MNIST_SHAPE), np.uint8)
    return Mnist(images, np.asarray([r["label"] for r in records], dtype=np.int32))


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


def _check_content(root: Path, sources: Mapping, mnist_dir: str | os.PathLike | None,
                   checksums: Mapping[str, str] | None) -> None:
    """Decode every prepared record and compare with the sources (their pinned sha256 where given, else the
    source files themselves), then record the prepared files' sha256 in the manifest."""
    checksums = dict(checksums or {})
    for split, (images_name, labels_name) in FILES.items():
        images, labels = read_records(sources[split], range(len(sources[split])))
        for name, magic, array in ((images_name, IMAGES_MAGIC, images), (labels_name, LABELS_MAGIC, labels)):
            expected = checksums.get(name)
            if expected is None:
                expected = hashlib.sha256(decompress(find_source_dir(mnist_dir) / name)).hexdigest()
            if idx_sha256(magic, array) != expected:
                raise _damaged(root, f"its {split} split does not decode to the content of {name}")
    try:
        write_json(root / MANIFEST, {name: _sha256(root / name) for name in _prepared_files(root)})
    except OSError:
        pass  # a read-only shared directory: its content was checked above, and is checked again next time


