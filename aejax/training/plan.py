"""What a run trains, decided before anything is written: its seeds, its images' source, its config resolved
once against the registries and the data, its validation split, its sweep's members and lanes, and where its
training images live."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from aejax import models
from aejax.config import Config
from aejax.data import Source, array_source, check_images, datasets, stream
from aejax.errors import AejaxError
from aejax.training import sweeps


def check_seeds(config: Config, seeds: Sequence[int] | None) -> list[int]:
    """The seeds a run trains: `seeds` when given (then `config.seed` must be its default or one of them),
    else `[config.seed]`."""
    if seeds is None:
        return [config.seed]
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(type(s) is not int or s < 0 for s in seeds):
        raise AejaxError(f"seeds must be distinct non-negative integers, got {seeds!r}")
    if config.seed != Config.seed and config.seed not in seeds:
        raise AejaxError(f"config.seed={config.seed} is not among seeds={seeds}: seeds replaces config.seed, "
                         f"so give one or the other")
    return seeds


class Plan(NamedTuple):
    """What a run trains, decided before anything is written: the resolved config, its images, and its lanes."""

    config: Config  # resolved, image_shape from the data
    source: Source
    seeds: list[int]
    grid: list[dict[str, float]]  # sweep members ([{}] without a sweep)
    n_train: int
    lanes: list[tuple[dict[str, float], int]]  # (member, seed) per trained model, member-major
    placement: stream.Placement  # where the training images are: on the device, or streamed from the source
    validation: np.ndarray | None = None  # images held out of the training set, scored every epoch

    @property
    def watch(self) -> str:
        """The metrics line's key of the images scored every epoch."""
        return "test_mse" if self.validation is None else "val_mse"

    @property
    def names(self) -> list[str]:
        """'seed 0' or 'lr=0.003 seed 0', one per lane."""
        return [f"{sweeps.label(m) + ' ' if m else ''}seed {s}" for m, s in self.lanes]

    @property
    def hparams(self) -> list[dict[str, bool | int | float | str]]:
        """Each lane's hyper-parameters for TensorBoard: the config's settings (lists and mappings as JSON), its
        sweep member's values and its seed."""
        flat = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
                for k, v in self.config.to_dict().items() if v is not None}
        return [{**flat, **member, "seed": seed} for member, seed in self.lanes]

    @property
    def folders(self) -> list[str]:
        """Each lane's TensorBoard folder: 'seed_0' or 'lr=0.003_seed_0'."""
        return [(sweeps.label(m) + "_" if m else "") + f"seed_{s}" for m, s in self.lanes]


def prepare(config: Config, seeds: Sequence[int] | None, sweep: dict[str, Sequence[float]] | None,
            data: tuple[np.ndarray, np.ndarray] | Source | None, data_dir: str | None, mnist_dir: str | None,
            log: Callable[[str], None] = print) -> Plan:
    """Check the seeds, read the images' source, resolve the config once (its image shape from the images) and
    lay out the lanes. A config whose shape is known without data is checked before any data is read."""
    seeds = check_seeds(config, seeds)
    if data is None and (config.image_shape or datasets.known_shape(config.dataset)):
        config = models.resolve(config)
        sweeps.members(config, sweep)  # the config's own errors before any data is read
    if data is None:
        source = datasets.source(config.dataset, data_dir, mnist_dir, channels=config.channels,
                                 image_size=config.image_size, image_fit=config.image_fit, log=log)
    elif isinstance(data, Source):
        source = data
    else:
        source = array_source(*data) if data[1] is not None else held_out_test(config, data[0])
    if source.note:
        log(source.note)
    config = models.resolve(with_data_shape(config, source))
    grid = sweeps.members(config, sweep)
    n_train = source.n_train if config.train_examples is None else min(source.n_train, config.train_examples)
    source, validation = hold_out(config, source, n_train)
    n_train -= 0 if validation is None else len(validation)
    if n_train < config.batch_size:
        raise AejaxError(f"batch_size {config.batch_size} is larger than the {n_train} training images")
    where = stream.placement(config.data_placement, n_train, source.shape)
    if where.where == "stream" and config.shard_data:
        raise AejaxError("shard_data splits a device-resident training set's rows over the devices; a streamed "
                         "set is already read a batch at a time, each process its devices' part: drop shard_data "
                         "or use data_placement device")
    if where.where == "stream" and jax.process_count() > 1 and not config.data_parallel:
        raise AejaxError("several processes stream their parts of each batch under data_parallel; turn it on")
    lanes = [(member, seed) for member in grid for seed in seeds]
    return Plan(config, source, seeds, grid, n_train, lanes, where, validation)


VALIDATION_TAG = 2 ** 31 - 2  # folded into the seed's key for the validation split (never an epoch number)
TEST_TAG = 2 ** 31 - 3  # and for a test set held out of training images given without one
TEST_FRACTION = 0.1


def held_out_test(config: Config, images) -> Source:
    """Training images given without a test set as a `Source` whose test set is a tenth of them, chosen by a
    permutation of `config.seed`'s key, and whose training set is the rest (a memmap stays on disk)."""
    check_images(images, "training images")
    n = len(images)
    count = max(1, int(round(TEST_FRACTION * n)))
    if n - count < 1:
        raise AejaxError(f"{n} training images and no test images: give a test set, or more images to hold a "
                         f"tenth of them out as one")
    whole = array_source(images, images[:1])
    order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(config.seed), TEST_TAG), n))
    train, test = split_off(whole, np.sort(order[:count]), np.sort(order[count:]))
    note = (f"no test images given: {count:,} of the {n:,} training images (a tenth, chosen with the seed) are "
            f"held out as the test set")
    return train._replace(test=test, note=note)


def split_off(source: Source, held: np.ndarray, kept: np.ndarray) -> tuple[Source, np.ndarray]:
    """`source` less the rows `held` (sorted), read into memory and returned beside it; `kept` (sorted) are the
    rows the returned source keeps."""
    train = Source(len(kept), lambda r: source.take(kept[r.start:r.stop]), source.test,
                   lambda indices: source.take(kept[np.asarray(indices)]), note=source.note)
    return train, np.asarray(source.take(held))


def hold_out(config: Config, source: Source, n_train: int) -> tuple[Source, np.ndarray | None]:
    """The training source less `config.validation_examples` images of its first `n_train`, chosen by a
    permutation of `config.seed`'s key (the same for every seed trained together), and those images; `source`
    and None without validation."""
    held = config.validation_examples
    count = int(held) if held >= 1 else int(round(held * n_train))
    if not held:
        return source, None
    if not 0 < count < n_train:
        raise AejaxError(f"validation_examples {held:g} holds out {count} of the {n_train} training images; "
                         f"leave at least one batch to train on and hold out at least one image")
    if source.take is None:
        raise AejaxError("this dataset's source cannot read rows by index, so no validation split can be held "
                         "out of it; give the validation images as the test set of a run of its own")
    if source.split_hash is not None:  # rows ordered by a hash of their names: the first ones, as stable
        count = count if held >= 1 else int(np.searchsorted(source.split_hash[:n_train], held))
        if not 0 < count < n_train:
            raise AejaxError(f"validation_examples {held:g} holds out {count} of the {n_train} training images; "
                             f"leave at least one batch to train on and hold out at least one image")
        order = np.arange(n_train)
    else:
        order = np.asarray(jax.random.permutation(
            jax.random.fold_in(jax.random.key(config.seed), VALIDATION_TAG), n_train))
    return split_off(source, np.sort(order[:count]), np.sort(order[count:]))  # sorted: sequential reads


def with_data_shape(config: Config, source: Source) -> Config:
    """`config` with `image_shape` set from the images; a config that names another shape is an error."""
    if config.image_shape and tuple(config.image_shape) != source.shape:
        raise AejaxError(f"config image_shape {list(config.image_shape)} differs from the images' "
                         f"{list(source.shape)}; leave it unset to take the data's")
    return config if tuple(config.image_shape) == source.shape else config.replace(image_shape=source.shape)
