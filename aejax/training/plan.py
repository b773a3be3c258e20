"""What a run trains, decided before anything is written: its seeds, its images' source, its config resolved
once against the registries and the data, its validation split, its sweep's members and lanes, and where its
training images live."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from aejax import models
from aejax.config import Config
from aejax.data import Source, array_source, datasets, stream
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
    def folders(self) -> list[str]:
        """Each lane's TensorBoard folder: 'seed_0' or 'lr=0.003_seed_0'."""
        return [(sweeps.label(m) + "_" if m else "") + f"seed_{s}" for m, s in self.lanes]


def prepare(config: Config, seeds: Sequence[int] | None, sweep: dict[str, Sequence[float]] | None,
            data: tuple[np.ndarray, np.ndarray] | None, data_dir: str | None, mnist_dir: str | None) -> Plan:
    """Check the seeds, read the images' source, resolve the config once (its image shape from the images) and
    lay out the lanes. A config whose shape is known without data is checked before any data is read."""
    seeds = check_seeds(config, seeds)
    if data is None and (config.image_shape or datasets.known_shape(config.dataset)):
        config = models.resolve(config)
        sweeps.members(config, sweep)  # the config's own errors before any data is read
    source = datasets.source(config.dataset, data_dir, mnist_dir) if data is None else array_source(*data)
    config = models.resolve(with_data_shape(config, source))
    grid = sweeps.members(config, sweep)
    n_train = source.n_train if config.train_examples is None else min(source.n_train, config.train_examples)
    source, validation = hold_out(config, source, n_train)
    n_train -= 0 if validation is None else len(validation)
    if n_train < config.batch_size:
        raise AejaxError(f"batch_size {config.batch_size} is larger than the {n_train} training images")
    where = stream.placement(config.data_placement, n_train, source.shape)
    if where.where == "stream" and (config.shard_data or jax.process_count() > 1):
        raise AejaxError("a streamed training set is read whole by one process and copied to each device; "
                         "shard_data and several processes need data_placement device")
    lanes = [(member, seed) for member in grid for seed in seeds]
    return Plan(config, source, seeds, grid, n_train, lanes, where, validation)


VALIDATION_TAG = 2 ** 31 - 2  # folded into the seed's key for the validation split (never an epoch number)


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
    order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(config.seed), VALIDATION_TAG),
                                              n_train))
    held_rows, kept = np.sort(order[:count]), np.sort(order[count:])  # sorted: sequential reads of the source
    train = Source(len(kept), lambda r: source.take(kept[r.start:r.stop]), source.test,
                   lambda indices: source.take(kept[np.asarray(indices)]))
    return train, np.asarray(source.take(held_rows))


def with_data_shape(config: Config, source: Source) -> Config:
    """`config` with `image_shape` set from the images; a config that names another shape is an error."""
    if config.image_shape and tuple(config.image_shape) != source.shape:
        raise AejaxError(f"config image_shape {list(config.image_shape)} differs from the images' "
                         f"{list(source.shape)}; leave it unset to take the data's")
    return config if tuple(config.image_shape) == source.shape else config.replace(image_shape=source.shape)
