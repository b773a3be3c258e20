"""Classical denoisers to compare learned ones against, in JAX, on float images `[B, 28, 28, 1]` in [0, 1]."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aejax.evaluation import metrics

Array = jax.Array


def median3x3(x: Array) -> Array:
    """3x3 median filter (edges replicated)."""
    b, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    stack = jnp.stack([xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=0)  # [9, B, H, W, C]
    return jnp.median(stack, axis=0)


def gaussian_blur(x: Array, sigma: float = 1.0, radius: int = 2) -> Array:
    """Separable Gaussian filter, same size output (edges replicated)."""
    xp = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    return metrics.separable_blur(xp, jnp.asarray(metrics.gaussian_window(2 * radius + 1, sigma)))
