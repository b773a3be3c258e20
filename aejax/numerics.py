"""Portable CPU numerics: the settings under which a seeded CPU run gives the same bits whatever the machine's
core count, at some speed (docs/training.md, "Reproducibility").

By default XLA:CPU's float results depend on the machine: its YNNPACK reductions split a sum across however
many threads the machine has; a matmul with a long inner dimension (a convolution's kernel gradient, summed over
every pixel of a batch; PCA's covariance) is split across threads too, as is LAPACK's eigendecomposition
(OpenBLAS); and code generated for AVX-512 rounds differently from AVX2 code. Portable numerics leaves reductions
to XLA's generated code, writes the long matmuls as fixed-size chunks summed in a fixed order
(`sum_of_outer_products`, `aejax.models.ops`), runs OpenBLAS on one thread, and caps XLA's generated code at AVX2.

What it does not fix: XLA:CPU runs most matmuls through YNNPACK, which picks its kernels by the CPU's own
instruction set and is not capped by `--xla_cpu_max_isa`, so a CPU with AVX-512 and one without still differ in
the last bits.

`XLA_FLAGS` is read once, when JAX's backend starts (and `OPENBLAS_NUM_THREADS` when LAPACK is first used), so
`use_portable_cpu` must run before any computation; the command lines call it first. Whether a process runs
under it is read back from `XLA_FLAGS` and recorded in every run's config.json (`environment.portable_cpu`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

UNAVAILABLE = ("warning: portable CPU numerics unavailable (not an x86-64 CPU, XLA_FLAGS already sets those options, "
               "or this XLA does not know them): the results match only this kind of machine")
PORTABLE_XLA_FLAGS = ("--xla_cpu_max_isa=AVX2", "--xla_cpu_experimental_ynn_fusion_type=-reduce")


def _options(flags: str) -> dict[str, str]:
    """`--name=value` flags of an XLA_FLAGS string as {name: value}."""
    return dict((f.split("=", 1) + [""])[:2] for f in flags.split() if f.startswith("--"))


def portable_cpu() -> bool:
    """Whether this process's `XLA_FLAGS` hold the portable settings (the ops kernel gradients then chunk)."""
    present = _options(os.environ.get("XLA_FLAGS", ""))
    return all(present.get(name) == value for name, value in (f.split("=", 1) for f in PORTABLE_XLA_FLAGS))


def _known_to_xla(flags: list[str]) -> bool:
    """Whether the installed XLA accepts `flags` (it aborts the process on a flag it does not know, so ask a
    short-lived one)."""
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
                           env={**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"},
                           capture_output=True)
    return probe.returncode == 0


def use_portable_cpu() -> bool:
    """Add the portable settings to `XLA_FLAGS`, before JAX's backend starts; returns whether they are in effect.

    Nothing is added on a CPU that is not x86-64, where an `XLA_FLAGS` option of the same name is already set
    (the user's choice stands), or where the installed XLA does not know the flags (asked once, in a
    subprocess); the run then records `portable_cpu: false`."""
    if portable_cpu():
        return True
    present = os.environ.get("XLA_FLAGS", "").split()
    names = {f.split("=", 1)[0] for f in present}
    if platform.machine().lower() not in ("x86_64", "amd64") or any(
            f.split("=", 1)[0] in names for f in PORTABLE_XLA_FLAGS):
        return False
    flags = [*present, *PORTABLE_XLA_FLAGS]
    if not _known_to_xla(flags):
        return False
    os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # eigh's (PCA's) rounding depends on OpenBLAS's threads
    return True


CHUNK_ROWS = 256  # shorter than any x86 CPU's inner block in XLA's CPU matmul, and never split across threads


def row_chunks(rows: jax.Array) -> jax.Array:
    """[M, K] -> [c, CHUNK_ROWS, K], zero rows appended to fill the last chunk."""
    c = -(-rows.shape[0] // CHUNK_ROWS)
    return jnp.pad(rows, ((0, c * CHUNK_ROWS - rows.shape[0]), (0, 0))).reshape(c, CHUNK_ROWS, rows.shape[1])


def sum_of_outer_products(x: jax.Array, y: jax.Array, precision: jax.lax.Precision | None = None) -> jax.Array:
    """x^T @ y for x [M, K] and y [M, N] (a covariance, a weight gradient): under portable numerics as products of
    `CHUNK_ROWS` rows summed in a fixed order, so the bits do not depend on the core count; otherwise one matmul."""
    if not portable_cpu():
        return jnp.matmul(x.T, y, precision=precision)
    return jnp.einsum("cmk,cmn->ckn", row_chunks(x), row_chunks(y), precision=precision).sum(0)


_X32 = {np.dtype(np.float64): np.float32, np.dtype(np.int64): np.int32, np.dtype(np.uint64): np.uint32,
        np.dtype(np.complex128): np.complex64}


def x32(array) -> np.ndarray:
    """`array` as a NumPy array in the dtype JAX gives it without `JAX_ENABLE_X64` (float64 -> float32, int64 ->
    int32, ...): what checksums and model hashes are computed over, so they do not depend on that setting (a
    float32 parameter restored into a float64 target keeps its value exactly)."""
    array = np.asarray(array)
    return array.astype(_X32[array.dtype]) if array.dtype in _X32 else array
