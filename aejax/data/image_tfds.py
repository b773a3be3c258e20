"""Image sets through tensorflow-datasets without TensorFlow: the builders of `lfw_faces` and `photo_patches`,
and the reader of any tfds dataset prepared as ArrayRecord.

`ArraysBuilder` writes uint8 `Tensor` images (no labels) to ArrayRecord from arrays computed in memory
(`aejax.data.image_sets`), read back through `as_data_source`, as `aejax.data.mnist_tfds` does for MNIST. A set is
prepared once into the tfds data directory (`data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`);
every later load compares what it reads with the arrays its source gives (a few milliseconds for these sizes),
so damaged prepared files are one line naming the directory, never trained on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_data_source  # noqa: F401 - tfds reads ArrayRecord lazily

from aejax.data.image_sets import BUILDERS
from aejax.errors import AejaxError


class ArraysBuilder(tfds.core.GeneratorBasedBuilder):
    """uint8 `Tensor` images `[H, W, C]` from a function returning (train, test) arrays, in their order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from scikit-image's bundled files, without TensorFlow."}
    SET = ""  # the key of aejax.data.image_sets.BUILDERS

    def _info(self) -> tfds.core.DatasetInfo:
        _, shape, description = BUILDERS[self.SET]
        return tfds.core.DatasetInfo(
            builder=self, description=description,
            features=tfds.features.FeaturesDict({"image": tfds.features.Tensor(shape=shape, dtype=np.uint8)}),
            disable_shuffling=True)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        train, test = BUILDERS[self.SET][0]()
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

    def _generate_examples(self, images: np.ndarray):
        for i, image in enumerate(images):
            yield i, {"image": image}


class LfwFaces(ArraysBuilder):
    name = "aejax_lfw_faces"
    SET = "lfw_faces"


class PhotoPatches(ArraysBuilder):
    name = "aejax_photo_patches"
    SET = "photo_patches"


_BUILDER_CLASSES = {"lfw_faces": LfwFaces, "photo_patches": PhotoPatches}


def _read(source) -> np.ndarray:
    records = source.__getitems__(range(len(source)))
    return np.stack([np.asarray(r["image"]) for r in records]) if records else np.zeros((0, 1, 1, 1), np.uint8)


def load(name: str, data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) uint8 images of the built-in set `name`, prepared first if needed, checked against their
    source."""
    builder = _BUILDER_CLASSES[name](data_dir=None if data_dir is None else os.fspath(data_dir),
                                     file_format="array_record")
    root = Path(builder.data_dir)
    expected = BUILDERS[name][0]()
    try:
        builder.download_and_prepare()
        got = tuple(_read(builder.as_data_source(split=split)) for split in ("train", "test"))
    except Exception as e:  # tfds and ArrayRecord report damage as RuntimeError, ValueError, OSError, ...
        raise _damaged(name, root, f"it cannot be read ({type(e).__name__}: {_first_line(e)})") from None
    for split, a, b in zip(("train", "test"), got, expected, strict=True):
        if a.shape != b.shape or not np.array_equal(a, b):
            raise _damaged(name, root, f"its {split} split differs from its source")
    return got


def prepared_split(name: str, split: str, data_dir: str | os.PathLike | None) -> PreparedSplit:
    """One split of a tfds dataset prepared in `data_dir`, read lazily: its size and a reader of its `image`
    feature at any indices, as uint8 `[n, H, W, C]` (checked on the first image)."""
    where = f"in {data_dir}" if data_dir is not None else "in tfds's data directory (give --data-dir)"
    try:
        source = tfds.data_source(name, split=split, data_dir=None if data_dir is None else os.fspath(data_dir),
                                  download=False)
        prepared = PreparedSplit(name, source)
        prepared.take(np.arange(min(1, len(source))))
    except AejaxError:
        raise
    except Exception as e:
        raise AejaxError(f"dataset {name!r}: no prepared {split} split with an image feature {where} "
                         f"({type(e).__name__}: {_first_line(e)})") from None
    return prepared


class PreparedSplit:
    """A prepared split's `image` feature, read on demand (`take`, `rows`), never stacked whole."""

    def __init__(self, name: str, source):
        self.name, self.source = name, source

    def __len__(self) -> int:
        return len(self.source)

    def take(self, indices) -> np.ndarray:
        records = self.source.__getitems__([int(i) for i in indices])
        images = np.stack([np.asarray(r["image"]) for r in records]) if records else np.zeros((0, 1, 1), np.uint8)
        images = images[..., None] if images.ndim == 3 else images
        if images.dtype != np.uint8:
            raise AejaxError(f"dataset {self.name!r}: its images are {images.dtype}; aejax reads uint8 images")
        return images

    def rows(self, r: range) -> np.ndarray:
        return self.take(np.arange(r.start, r.stop))


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "no message"


def _damaged(name: str, root: Path, why: str) -> AejaxError:
    return AejaxError(f"prepared {name} in {root} is damaged: {why}; delete {root} and run again to prepare it "
                      f"afresh")
