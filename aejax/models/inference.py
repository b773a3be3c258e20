"""A trained model applied to many images: `encode`, `decode` and `reconstruct`, chunk by chunk on the device.

These are the entry points for code outside training (experiment scripts, notebooks): they take uint8 images
(0..255) or float images in [0, 1], with or without a batch axis, and return jax arrays with the same batch
convention. `model` is a flax module from `aejax.models.build` (or `aejax.load_model`); `variables` its
variables as `load_model` returns them (`{"params": ..., **other collections}`), or its bare parameters.

They trace: under `jax.jit`, `jax.grad` and `jax.vmap` they are ordinary JAX functions. Shape checks are static;
the check that float images lie in [0, 1] needs their values, so under a trace it is a `jax.debug.callback`
that raises the same `AejaxError` when the compiled program runs (JAX reports it wrapped in its runtime error).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax.errors import AejaxError
from aejax.evaluation.chunks import map_over_chunks
from aejax.evaluation.metrics import to_float

Array = jax.Array


def as_variables(variables: Any) -> dict[str, Any]:
    """`{"params": ..., ...}` as given, or bare parameters wrapped as `{"params": params}`."""
    if isinstance(variables, dict) and "params" in variables:
        return variables
    return {"params": variables}


@functools.partial(jax.jit, static_argnames=("model", "method", "chunk"))
def _map_chunks(model: nn.Module, method: str, variables, x: Array, chunk: int) -> Array:
    """`model.<method>` over `x` `[N, ...]`, `chunk` rows per call (`chunks.map_over_chunks`)."""
    def apply(batch: Array) -> Array:
        batch = to_float(batch) if batch.dtype == jnp.uint8 else batch
        return model.apply(variables, batch, method=method)

    return map_over_chunks(apply, x, chunk)


def image_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """The (H, W, C) `model` was built for, where it says (the built-in models' `image_shape`)."""
    shape = getattr(model, "image_shape", None)
    return tuple(shape) if shape is not None else None


def _as_image_batch(model: nn.Module, images, what: str = "images") -> tuple[Array, bool]:
    """(images as `[B, H, W, C]`, uint8 or float in [0, 1]; whether the input had a batch axis). A model that
    says its shape (H, W, C) also takes `[H, W]` and `[B, H, W]` for C = 1; one that does not takes
    `[B, H, W, C]` or one `[H, W, C]`."""
    x = jnp.asarray(images)
    shape = image_shape(model)
    if shape is None:
        if x.ndim not in (3, 4):
            raise AejaxError(f"{what} must be shaped [H, W, C] or [B, H, W, C], got {list(x.shape)}")
        x, batched = (x, True) if x.ndim == 4 else (x[None], False)
    else:
        h, w, c = shape
        singles = {(h, w, c)} | ({(h, w)} if c == 1 else set())
        if x.shape in singles:
            x, batched = x.reshape(1, *shape), False
        elif x.ndim >= 1 and x.shape[1:] in singles:
            x, batched = x.reshape(x.shape[0], *shape), True
        else:
            forms = [f"[{h}, {w}]", f"[{h}, {w}, {c}]", f"[B, {h}, {w}]", f"[B, {h}, {w}, {c}]"]
            forms = forms if c == 1 else forms[1::2]
            raise AejaxError(f"{what} must be shaped {', '.join(forms[:-1])} or {forms[-1]} for this model, "
                             f"got {list(x.shape)}")
    if x.dtype == jnp.uint8:
        return x, batched
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise AejaxError(f"{what} must be uint8 (0..255) or float in [0, 1], got dtype {x.dtype}")
    if isinstance(x, jax.core.Tracer):  # traced (jit, grad, vmap): checked when the program runs
        jax.debug.callback(functools.partial(_check_range, what), jnp.min(x), jnp.max(x))
    else:
        _check_range(what, jnp.min(x), jnp.max(x))
    return x.astype(jnp.float32) if x.dtype != jnp.float32 else x, batched


def _check_range(what: str, low, high) -> None:
    low, high = float(low), float(high)
    if not (0.0 <= low and high <= 1.0):  # also catches NaN
        raise AejaxError(f"float {what} must lie in [0, 1], got values in [{low:g}, {high:g}]; pass uint8 "
                         f"images as they are, or divide by 255")


def encode(model: nn.Module, variables, images, *, chunk: int = 1000) -> Array:
    """Codes of `images`: `[B, *code]` (or `[*code]` for one image without a batch axis)."""
    x, batched = _as_image_batch(model, images)
    codes = _map_chunks(model, "encode", as_variables(variables), x, min(chunk, x.shape[0]))
    return codes if batched else codes[0]


def code_shape(model: nn.Module, variables, shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The shape of one image's code under `model` (e.g. `(32,)`, or `(7, 7, 8)` for conv_original), for images
    of `shape` (default: the model's own)."""
    shape = shape or image_shape(model)
    if shape is None:
        raise AejaxError(f"{type(model).__name__} does not say its image shape (an image_shape attribute); "
                         f"pass shape=(H, W, C)")
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *shape)), method="encode"),
                         as_variables(variables))
    return tuple(out.shape[1:])


def decode(model: nn.Module, variables, codes, *, chunk: int = 1000) -> Array:
    """Images in [0, 1] decoded from `codes` `[B, *code]` (or one code `[*code]`): `[B, H, W, C]`."""
    z = jnp.asarray(codes, jnp.float32)
    variables = as_variables(variables)
    shape = code_shape(model, variables)
    if z.shape == shape:
        z, batched = z[None], False
    elif z.shape[1:] == shape:
        batched = True
    else:
        batch_shape = ", ".join(map(str, ("B", *shape)))
        raise AejaxError(f"codes of this model are shaped {list(shape)} (one code) or [{batch_shape}], "
                         f"got {list(z.shape)}")
    images = _map_chunks(model, "decode", variables, z, min(chunk, z.shape[0]))
    return images if batched else images[0]


def reconstruct(model: nn.Module, variables, images, *, chunk: int = 1000) -> Array:
    """`decode(encode(images))` in one pass: float images in [0, 1] shaped like the batch convention of the input."""
    x, batched = _as_image_batch(model, images)
    out = _map_chunks(model, "__call__", as_variables(variables), x, min(chunk, x.shape[0]))
    return out if batched else out[0]
