"""Datasets by name (`Config.dataset`): each gives a run its training and test images and says their shape.

- `mnist` (default): `aejax.data.mnist_source`, through tfds where it can be imported, else the IDX files.
- `lfw_faces` (25x25x1) and `photo_patches` (32x32x3): `aejax.data.image_sets`, prepared once through TF-free tfds
  builders (`aejax.data.image_tfds`) into the tfds data directory and read back with `data_source`; where tfds
  cannot be imported, the same arrays straight from their source.
- `folder:PATH`: a folder of image files (`aejax.data.folder`), prepared once into ArrayRecord shards.
- any other name: a tfds dataset already prepared as ArrayRecord in `data_dir` (`tfds.data_source(name,
  data_dir=...)`, no TensorFlow, nothing downloaded), with an `image` feature (`Tensor` or `Image`, uint8, H x W
  or H x W x C) and `train` and `test` splits. Its shape is known once it is read.

`register_dataset` adds a loader of your own. Arrays already in memory go to `aejax.run(data=...)` instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from aejax.config import MNIST_SHAPE, MNIST_TRAIN_SIZE
from aejax.data import Source, array_source, check_images, image_folder, mnist_source, tfds_available
from aejax.data.image_sets import BUILDERS
from aejax.errors import AejaxError, check_registration

Loader = Callable[[str | None, str | None], Source]  # (data_dir, mnist_dir) -> Source


class DatasetSpec(NamedTuple):
    load: Loader
    shape: tuple[int, int, int] | None  # (H, W, C) when known without reading the data
    train_size: int | None


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, load: Loader, *, shape: tuple[int, int, int] | None = None,
                     train_size: int | None = None, replace: bool = False) -> None:
    """Make `Config(dataset=name)` train on `load(data_dir, mnist_dir)`, an `aejax.data.Source` (see
    `aejax.data.array_source`); `shape`, where known, lets a config resolve without reading the data."""
    check_registration("dataset", name, name in _DATASETS, load, replace, "(data_dir, mnist_dir) -> Source")
    _DATASETS[name] = DatasetSpec(load, None if shape is None else tuple(shape), train_size)


def known_shape(name: str) -> tuple[int, int, int] | None:
    """(H, W, C) of a registered dataset; None for one known only from its data."""
    return _DATASETS[name].shape if name in _DATASETS else None


def train_size(name: str) -> int | None:
    return _DATASETS[name].train_size if name in _DATASETS else None


def source(name: str, data_dir: str | os.PathLike | None = None, mnist_dir: str | os.PathLike | None = None, *,
           channels: int | None = None, image_size: str | None = None, image_fit: str = "resize",
           log: Callable[[str], None] = print) -> Source:
    """The images of dataset `name` for a run, checked (`aejax.data.check_images`); `channels`, `image_size` and
    `image_fit` are a folder's (`folder:PATH`, `aejax.data.folder`), which
    logs a line to `log` when it prepares one."""
    if name.startswith(image_folder.PREFIX):
        return image_folder.folder(name[len(image_folder.PREFIX):], channels=channels, image_size=image_size,
                             image_fit=image_fit, data_dir=data_dir, log=log)
    if name in _DATASETS:
        loaded = _DATASETS[name].load(data_dir, mnist_dir)
    else:
        loaded = prepared_tfds(name, data_dir)
    expected = known_shape(name)
    if expected is not None and loaded.shape != expected:
        raise AejaxError(f"dataset {name} gave images of shape {list(loaded.shape)}, not the {list(expected)} it "
                         f"was registered with")
    return loaded


def _image_set(name: str) -> Loader:
    def load(data_dir: str | None, mnist_dir: str | None) -> Source:
        tfds = tfds_available()
        if tfds is None:
            return array_source(*BUILDERS[name][0]())
        from aejax.data import image_tfds

        return array_source(*image_tfds.load(name, data_dir))

    return load


def prepared_tfds(name: str, data_dir: str | os.PathLike | None) -> Source:
    """A tfds dataset prepared as ArrayRecord in `data_dir`, its `image` feature as uint8 `[N, H, W, C]`: the
    training split read on demand (a range of rows, or rows at any indices when streamed), never stacked whole;
    the test split read whole."""
    if tfds_available() is None:
        raise AejaxError(f"dataset {name!r} is not one of {', '.join(_DATASETS)} and is read through "
                         f"tensorflow-datasets, which cannot be imported here")
    from aejax.data import image_tfds

    train, test = (image_tfds.prepared_split(name, split, data_dir) for split in ("train", "test"))
    test_images = test.rows(range(len(test)))
    check_images(test_images, "test images")
    first = train.take(np.arange(1))
    if first.shape[1:] != test_images.shape[1:]:
        raise AejaxError(f"dataset {name!r}: its training images are {list(first.shape[1:])}, its test images "
                         f"{list(test_images.shape[1:])}; give both one shape")
    return Source(len(train), train.rows, test_images, train.take)


register_dataset("mnist", lambda data_dir, mnist_dir: mnist_source(data_dir, mnist_dir), shape=MNIST_SHAPE,
                 train_size=MNIST_TRAIN_SIZE)
for _name, (_, _shape, _) in BUILDERS.items():
    register_dataset(_name, _image_set(_name), shape=_shape)
