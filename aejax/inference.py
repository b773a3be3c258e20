"""A trained model applied to many images: `encode`, `decode` and `reconstruct`, chunk by chunk on the device.

These are the entry points for code outside training (experiment scripts, notebooks): they take uint8 images
(0..255) or float images in [0, 1], with or without a batch axis, and return jax arrays with the same batch
convention. `model` is a flax module from `aejax.models.build` (or `rundir.load_model`), `params` its
parameters (no `{"params": ...}` wrapper).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax.chunks import map_over_chunks
from aejax.config import IMAGE_SHAPE, IMAGE_SIDE
from aejax.errors import AejaxError
from aejax.metrics import to_float

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("model", "method", "chunk"))
def _map_chunks(model: nn.Module, method: str, params, x: Array, chunk: int) -> Array:
    """`model.<method>` over `x` `[N, ...]`, `chunk` rows per call (`chunks.map_over_chunks`)."""
    def apply(batch: Array) -> Array:
        batch = to_float(batch) if batch.dtype == jnp.uint8 else batch
        return model.apply({"params": params}, batch, method=method)

    return map_over_chunks(apply, x, chunk)


def _as_image_batch(images, what: str = "images") -> tuple[Array, bool]:
    """(images as `[B, 28, 28, 1]`, uint8 or float in [0, 1]; whether the input had a batch axis)."""
    x = jnp.asarray(images)
    if x.shape in ((IMAGE_SIDE, IMAGE_SIDE), IMAGE_SHAPE):
        x, batched = x.reshape(1, *IMAGE_SHAPE), False
    elif x.ndim in (3, 4) and x.shape[1:3] == (IMAGE_SIDE, IMAGE_SIDE) and x.shape[3:] in ((), (1,)):
        x, batched = x.reshape(x.shape[0], *IMAGE_SHAPE), True
    else:
        raise AejaxError(f"{what} must be shaped [28, 28], [28, 28, 1], [B, 28, 28] or [B, 28, 28, 1], "
                         f"got {list(x.shape)}")
    if x.dtype == jnp.uint8:
        return x, batched
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise AejaxError(f"{what} must be uint8 (0..255) or float in [0, 1], got dtype {x.dtype}")
    low, high = float(jnp.min(x)), float(jnp.max(x))
    if not (0.0 <= low and high <= 1.0):  # also catches NaN
        raise AejaxError(f"float {what} must lie in [0, 1], got values in [{low:g}, {high:g}]; pass uint8 "
                         f"images as they are, or divide by 255")
    return x.astype(jnp.float32), batched


def encode(model: nn.Module, params, images, *, chunk: int = 1000) -> Array:
    """Codes of `images`: `[B, *code]` (or `[*code]` for one image without a batch axis)."""
    x, batched = _as_image_batch(images)
    codes = _map_chunks(model, "encode", params, x, min(chunk, x.shape[0]))
    return codes if batched else codes[0]


def code_shape(model: nn.Module, params) -> tuple[int, ...]:
    """The shape of one image's code under `model` (e.g. `(32,)`, or `(7, 7, 8)` for conv_original)."""
    out = jax.eval_shape(lambda p: model.apply({"params": p}, jnp.zeros((1, *IMAGE_SHAPE)), method="encode"),
                         params)
    return tuple(out.shape[1:])


def decode(model: nn.Module, params, codes, *, chunk: int = 1000) -> Array:
    """Images in [0, 1] decoded from `codes` `[B, *code]` (or one code `[*code]`): `[B, 28, 28, 1]`."""
    z = jnp.asarray(codes, jnp.float32)
    shape = code_shape(model, params)
    if z.shape == shape:
        z, batched = z[None], False
    elif z.shape[1:] == shape:
        batched = True
    else:
        batch_shape = ", ".join(map(str, ("B", *shape)))
        raise AejaxError(f"codes of this model are shaped {list(shape)} (one code) or [{batch_shape}], "
                         f"got {list(z.shape)}")
    images = _map_chunks(model, "decode", params, z, min(chunk, z.shape[0]))
    return images if batched else images[0]


def reconstruct(model: nn.Module, params, images, *, chunk: int = 1000) -> Array:
    """`decode(encode(images))` in one pass: float images in [0, 1] shaped like the batch convention of the input."""
    x, batched = _as_image_batch(images)
    out = _map_chunks(model, "__call__", params, x, min(chunk, x.shape[0]))
    return out if batched else out[0]
