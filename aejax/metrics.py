"""Reconstruction metrics (MSE, PSNR, SSIM) and the PCA baseline, all in JAX on images in [0, 1].

Every model and PCA is scored by the same `reconstruction_metrics`, so their rows compare exactly:
- `mse`: mean squared error over all test pixels;
- `psnr_db`: 10 log10(1 / mse), from the test-set MSE (data range 1);
- `ssim`: mean SSIM over images (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1, valid region:
  the usual definition of Wang et al. 2004).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def to_float(images: Array) -> Array:
    """uint8 `[..., 28, 28, 1]` -> float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def psnr_db(mse: Array) -> Array:
    return 10.0 * jnp.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).astype(np.float32)


def _blur(x: Array, window: Array) -> Array:  # [B, H, W, 1] -> [B, H-10, W-10, 1], separable Gaussian
    k = window.shape[0]
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, window.reshape(k, 1, 1, 1), (1, 1), "VALID", dimension_numbers=dn)
    return jax.lax.conv_general_dilated(x, window.reshape(1, k, 1, 1), (1, 1), "VALID", dimension_numbers=dn)


def ssim(x: Array, y: Array) -> Array:
    """Per-image SSIM of `[B, 28, 28, 1]` images in [0, 1] -> `[B]`."""
    window = jnp.asarray(_gaussian_window())
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    sxx = _blur(x * x, window) - mu_x ** 2
    syy = _blur(y * y, window) - mu_y ** 2
    sxy = _blur(x * y, window) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean(axis=(1, 2, 3))


class Totals(NamedTuple):
    """Sums over a dataset, so metrics can be accumulated chunk by chunk."""

    squared_error: Array  # sum over pixels
    ssim: Array  # sum over images
    count: Array  # images


def chunk_totals(images: Array, recon: Array) -> Totals:
    """`images` uint8 or float `[B, 28, 28, 1]`, `recon` float in [0, 1] of the same shape."""
    x = to_float(images) if images.dtype == jnp.uint8 else images
    recon = recon.astype(jnp.float32)
    return Totals(jnp.sum((recon - x) ** 2), jnp.sum(ssim(x, recon)), jnp.asarray(x.shape[0], jnp.float32))


def finalize(totals: Totals) -> dict[str, float]:
    mse = totals.squared_error / (totals.count * 28 * 28)
    return {"mse": float(mse), "psnr_db": float(psnr_db(mse)), "ssim": float(totals.ssim / totals.count)}


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk"))
def _totals(apply_fn: Callable, variables, images: Array, chunk: int) -> Totals:
    batches = images.reshape(-1, chunk, *images.shape[1:])  # [n_chunks, chunk, 28, 28, 1]

    def step(acc: Totals, batch: Array) -> tuple[Totals, None]:
        t = chunk_totals(batch, apply_fn(variables, to_float(batch)))
        return jax.tree_util.tree_map(jnp.add, acc, t), None

    zero = Totals(jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))
    return jax.lax.scan(step, zero, batches)[0]


def reconstruction_metrics(apply_fn: Callable[[object, Array], Array], variables, images: Array,
                           chunk: int = 1000) -> dict[str, float]:
    """Score `apply_fn(variables, x)` (float `[B, 28, 28, 1]` -> same) on uint8 `images`, `chunk` at a time.

    `apply_fn` must be hashable and stable across calls (e.g. `model.apply`, `Pca.reconstruct`) so the
    compiled scan is reused. A remainder smaller than `chunk` is scored in one more call: no image is dropped.
    """
    n = images.shape[0]
    chunk = min(chunk, n)
    body = (n // chunk) * chunk
    totals = _totals(apply_fn, variables, images[:body], chunk)
    if n > body:
        rest = _totals(apply_fn, variables, images[body:], n - body)
        totals = jax.tree_util.tree_map(jnp.add, totals, rest)
    return finalize(totals)


class Pca(NamedTuple):
    """A rank-k linear code: z = (x - mean) @ components.T; x_hat = z @ components + mean."""

    mean: Array  # [784]
    components: Array  # [k, 784], orthonormal rows, by decreasing variance

    def encode(self, x: Array) -> Array:  # [B, 28, 28, 1] -> [B, k]
        return (x.reshape(x.shape[0], -1) - self.mean) @ self.components.T

    def decode(self, z: Array) -> Array:  # [B, k] -> [B, 28, 28, 1]
        return (z @ self.components + self.mean).reshape(z.shape[0], 28, 28, 1)

    def reconstruct(self, x: Array) -> Array:
        return self.decode(self.encode(x))


@jax.jit
def _pca_basis(images: Array) -> tuple[Array, Array]:
    x = to_float(images).reshape(images.shape[0], -1)  # [N, 784]
    mean = x.mean(axis=0)
    xc = x - mean
    cov = (xc.T @ xc) / x.shape[0]  # [784, 784]
    _, vecs = jnp.linalg.eigh(cov)  # ascending eigenvalues
    return mean, vecs[:, ::-1].T  # [784], [784, 784] rows by decreasing variance


def fit_pca(images: Array, ks: list[int] | tuple[int, ...]) -> dict[int, Pca]:
    """PCA fitted once on uint8 `images` `[N, 28, 28, 1]`, truncated to each k in `ks`."""
    mean, basis = _pca_basis(images)
    return {k: Pca(mean, basis[:k]) for k in ks}


@jax.jit
def _pair_totals(images: Array, recon: Array) -> Totals:
    return chunk_totals(images, recon)


def score(images: Array, recon: Array, chunk: int = 1000) -> dict[str, float]:
    """The same metrics for precomputed reconstructions: uint8 `images` against float `recon` in [0, 1]."""
    parts = [_pair_totals(jnp.asarray(images[i:i + chunk]), jnp.asarray(recon[i:i + chunk], jnp.float32))
             for i in range(0, len(images), chunk)]
    return finalize(functools.reduce(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b), parts))


@jax.jit
def _nearest_other(queries: Array, offset: Array, points: Array) -> Array:
    """Index of each query's nearest point `[q]`, excluding itself (query i is point offset + i)."""
    d2 = (jnp.sum(queries**2, 1)[:, None] - 2 * queries @ points.T + jnp.sum(points**2, 1)[None, :])  # [q, N]
    own = offset + jnp.arange(queries.shape[0])
    d2 = d2.at[jnp.arange(queries.shape[0]), own].set(jnp.inf)
    return jnp.argmin(d2, axis=1)


def nearest_neighbour_accuracy(codes: Array, labels: Array, chunk: int = 1000) -> float:
    """Leave-one-out 1-nearest-neighbour label accuracy of `codes` `[N, d]` (Euclidean): how well the code space
    keeps digits of one class together, with no classifier trained."""
    points = jnp.asarray(codes, jnp.float32).reshape(len(codes), -1)
    nearest = jnp.concatenate([_nearest_other(points[i:i + chunk], jnp.int32(i), points)
                               for i in range(0, len(points), chunk)])
    return float(jnp.mean(jnp.asarray(labels)[nearest] == jnp.asarray(labels)))
