"""Input corruptions for denoising autoencoders, applied on the device from a PRNG key.

Every function maps a float batch in [0, 1] (any shape) to a corrupted batch of the same shape, in [0, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

KINDS = ("none", "gaussian", "salt_pepper", "mask")


def gaussian(key: Array, x: Array, sigma: float) -> Array:
    """Add N(0, sigma^2) noise per pixel, clipped to [0, 1]."""
    return jnp.clip(x + sigma * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)


def salt_pepper(key: Array, x: Array, rate: float) -> Array:
    """Set each pixel with probability `rate` to 0 or 1 (equally likely)."""
    k_hit, k_salt = jax.random.split(key)
    hit = jax.random.bernoulli(k_hit, rate, x.shape)
    salt = jax.random.bernoulli(k_salt, 0.5, x.shape).astype(x.dtype)
    return jnp.where(hit, salt, x)


def mask(key: Array, x: Array, rate: float) -> Array:
    """Zero each pixel with probability `rate` (masking noise)."""
    return jnp.where(jax.random.bernoulli(key, rate, x.shape), 0.0, x).astype(x.dtype)


def corrupt(key: Array, x: Array, kind: str, level: float) -> Array:
    """Apply corruption `kind` ('none', 'gaussian' sigma, 'salt_pepper' rate, 'mask' rate) at `level`."""
    if kind == "none":
        return x
    if kind == "gaussian":
        return gaussian(key, x, level)
    if kind == "salt_pepper":
        return salt_pepper(key, x, level)
    if kind == "mask":
        return mask(key, x, level)
    raise ValueError(f"unknown corruption {kind!r}")
