"""Data parallelism with `jax.sharding`: one `Mesh` over all devices, the batch axis sharded over "data",
parameters, optimizer state and the (small) MNIST arrays replicated. No `pmap`: the same jitted epoch runs on
one device, eight GPUs or a TPU slice; XLA inserts the gradient all-reduce.

Multi-host: `maybe_initialize_distributed()` calls `jax.distributed.initialize()` when the environment asks
for it (`JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, or `AEJAX_DISTRIBUTED=1`
where JAX detects the cluster itself, as on TPU pods and SLURM). Arrays are then built with
`make_array_from_callback`, each process supplying the shards its own devices hold. With `shard_data` the
training images are split by rows over the "data" axis (`shard_rows`): each process loads only the rows its devices
hold, and the batch gather inside the jitted epoch reaches across devices (XLA inserts the collective).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aejax.errors import AejaxError

DATA_AXIS = "data"


def maybe_initialize_distributed() -> bool:
    """Start JAX's multi-process runtime if the environment describes a cluster; True if it did."""
    if not (os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("AEJAX_DISTRIBUTED") == "1"):
        return False
    kwargs = {}
    try:  # JAX reads the coordinator address itself, but not these two
        if "JAX_NUM_PROCESSES" in os.environ:
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in os.environ:
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    except ValueError:
        raise AejaxError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers") from None
    jax.distributed.initialize(**kwargs)
    return True


def make_mesh(batch_size: int) -> Mesh:
    """A 1-D mesh over every device; the global batch must split evenly across them (an error names the
    nearest batch sizes that do, rather than padding or dropping images silently)."""
    devices = jax.devices()
    n = len(devices)
    if batch_size % n:
        below, above = batch_size // n * n, (batch_size // n + 1) * n
        nearest = f"{below} or {above}" if below else f"{above}"
        raise AejaxError(f"batch_size {batch_size} is not divisible by the {n} devices of data-parallel training; "
                         f"the nearest batch sizes that are: {nearest}")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any (a tiny all-gather); `flag` itself with one process.

    Used after each epoch so that a stop signal reaching one host stops all of them after the same checkpoint,
    instead of that host leaving while the others wait in the next collective."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of `tree` (host or device arrays, identical on every process) on all devices."""
    sharding = replicated(mesh)

    def place(x: Any) -> jax.Array:
        x = np.asarray(x) if not isinstance(x, jax.Array) or x.is_fully_addressable else x
        if isinstance(x, jax.Array):
            return jax.device_put(x, sharding)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(place, tree)


def process_rows(n: int, mesh: Mesh) -> range:
    """The rows of an `[n, ...]` array split by rows over `mesh` that this process's devices hold (contiguous:
    the mesh lists each process's devices together)."""
    size = len(mesh.devices.flat)
    if n % size:
        raise AejaxError(f"{n} training examples cannot be split evenly over {size} devices for shard_data; "
                         f"choose train_examples divisible by {size}")
    per = n // size
    mine = sorted(i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index())
    if mine != list(range(mine[0], mine[-1] + 1)):
        raise AejaxError("this process's devices are not contiguous in the mesh")
    return range(mine[0] * per, (mine[-1] + 1) * per)


def shard_rows(load_rows: Callable[[range], np.ndarray], n: int, mesh: Mesh) -> jax.Array:
    """A global `[n, ...]` array split by rows over the mesh's "data" axis, built from `load_rows(rows)`, called
    once with only the rows this process's devices hold."""
    rows = process_rows(n, mesh)
    local = np.asarray(load_rows(rows))
    if len(local) != len(rows):
        raise AejaxError(f"loaded {len(local)} rows for rows {rows.start}..{rows.stop - 1}")
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def shard(index: tuple[slice, ...]) -> np.ndarray:
        start, stop, _ = index[0].indices(n)
        return local[start - rows.start:stop - rows.start]

    return jax.make_array_from_callback((n, *local.shape[1:]), sharding, shard)


def is_writer() -> bool:
    """True on the one process that writes run files and figures (process 0; the only one outside a cluster)."""
    return jax.process_index() == 0
