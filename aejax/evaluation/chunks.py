"""Functions over a large leading axis, a chunk of rows at a time: one split into full chunks plus one remainder,
reduced by summing (`sum_over_chunks`: metrics, test losses) or by concatenating (`map_over_chunks`: codes and
reconstructions). The full chunks run as one loop inside the compiled program (`lax.scan` / `lax.map`), the
remainder as one more call, so no row is dropped and only one chunk's intermediates are in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any


def split(xs: PyTree, chunk: int) -> tuple[PyTree, PyTree | None]:
    """(`[m, chunk, ...]` full chunks, the `[n - m * chunk, ...]` remainder or None) of every leaf of `xs`, arrays
    sharing a leading axis n (None leaves allowed); `chunk` is capped at n."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    chunk = min(chunk, n)
    m = n // chunk
    head = jax.tree_util.tree_map(lambda a: a[:m * chunk].reshape(m, chunk, *a.shape[1:]), xs)
    rest = jax.tree_util.tree_map(lambda a: a[m * chunk:], xs) if n > m * chunk else None
    return head, rest


def sum_over_chunks(fn: Callable[[Any, Array], Any], xs: PyTree, chunk: int) -> Any:
    """The sum of `fn(part, i)` over the parts of `xs` cut into `chunk` rows: a `lax.scan` over the full parts
    (i = 0, 1, ...), then one call for a remainder (the next i)."""
    head, rest = split(xs, chunk)
    m = jax.tree_util.tree_leaves(head)[0].shape[0]

    def add(acc: Any, part_i: tuple[Any, Array]) -> tuple[Any, None]:
        return jax.tree_util.tree_map(jnp.add, acc, fn(*part_i)), None

    first = jax.tree_util.tree_map(lambda a: a[0], head)
    zero = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, first, jnp.int32(0)))
    out = jax.lax.scan(add, zero, (head, jnp.arange(m, dtype=jnp.int32)))[0]
    if rest is not None:
        out = jax.tree_util.tree_map(jnp.add, out, fn(rest, jnp.int32(m)))
    return out


def map_over_chunks(fn: Callable[[PyTree], Array], x: PyTree, chunk: int) -> Array:
    """`fn` applied to `x` `[n, ...]` (or a pytree of arrays sharing n) in parts of `chunk` rows (`lax.map` over the
    full parts, one call for a remainder), the outputs concatenated: `[n, ...]`."""
    head, rest = split(x, chunk)
    parts = []
    if jax.tree_util.tree_leaves(head)[0].shape[0]:
        out = jax.lax.map(fn, head)  # [m, chunk, ...]
        parts.append(out.reshape(-1, *out.shape[2:]))
    if rest is not None:
        parts.append(fn(rest))
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]
