"""A streamed epoch: the compiled chunk program (`aejax.training.step.train_chunk`, vmapped over the K models)
over the chunks of batches the loader (`aejax.data.stream`) gathers on the host, in the order the epoch's keys
give, with at most two chunks in flight on the device so that host memory stays bounded. With several processes
each gathers and places only its devices' part of every batch (`aejax.training.parallel.process_rows`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from aejax.data import stream
from aejax.data.source import Source
from aejax.training import parallel
from aejax.training.step import Program, Trainer, TrainState

IN_FLIGHT = 2  # chunks dispatched and not yet finished, at most


def stream_epoch(program: Program, trainer: Trainer, state: TrainState, source: Source, n_train: int,
                 epoch_keys: jax.Array, hparams: dict[str, jax.Array],
                 ) -> tuple[TrainState, tuple[jax.Array, dict[str, jax.Array]]]:
    """One epoch of every lane from `source`'s first `n_train` training rows: (state, (losses, aux) `[K, steps]`)
    as `program.epoch` returns them for device-resident images."""
    orders, step_keys = program.order(epoch_keys, n_train, trainer.batch_size)  # [K, steps, B], [K, steps]
    orders = np.asarray(orders)
    lanes, steps, _ = orders.shape
    per_chunk = stream.chunk_steps(steps, lanes, trainer.batch_size, trainer.image_shape)
    columns = None  # several processes: each reads its devices' part of every batch
    if trainer.mesh is not None and jax.process_count() > 1:
        columns = parallel.process_rows(trainer.batch_size, trainer.mesh)
    place = _placer(trainer, columns)
    losses, auxes, pending = [], [], []
    for c, chunk in enumerate(stream.epoch_chunks(source, orders, per_chunk, columns=columns)):
        if len(pending) >= IN_FLIGHT:  # the host gathers ahead, but hands over no more than this
            jax.block_until_ready(pending.pop(0))
        keys = step_keys[:, c * per_chunk:c * per_chunk + chunk.shape[0]]
        state, (loss, aux) = program.chunk(state, place(chunk), keys, hparams)
        losses.append(loss)
        auxes.append(aux)
        pending.append(loss)
    return state, (jnp.concatenate(losses, axis=1),
                   {k: jnp.concatenate([a[k] for a in auxes], axis=1) for k in auxes[0]})


def _placer(trainer: Trainer, columns: range | None) -> Callable[[np.ndarray], Any]:
    """How a chunk `[S, K, B, ...]` goes to the device: as it is, or with its batch axis split over the mesh;
    with `columns`, a process's part `[S, K, len(columns), ...]` of a global chunk split so."""
    if trainer.mesh is None:
        return jax.device_put
    sharding = NamedSharding(trainer.mesh, PartitionSpec(None, None, parallel.DATA_AXIS))
    if columns is None:
        return lambda chunk: jax.device_put(chunk, sharding)
    batch = trainer.batch_size

    def place(part: np.ndarray) -> jax.Array:
        def shard(index: tuple[slice, ...]) -> np.ndarray:
            start, stop, _ = index[2].indices(batch)
            return part[index[0], index[1], start - columns.start:stop - columns.start]

        return jax.make_array_from_callback((*part.shape[:2], batch, *part.shape[3:]), sharding, shard)

    return place
