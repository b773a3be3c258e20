"""Reconstruction metrics (MSE, PSNR, SSIM) and the PCA baseline, all in JAX on images in [0, 1].

Every model, PCA and every precomputed reconstruction is scored by one function, `totals`, so their rows
compare exactly:
- `mse`: mean squared error over all test pixels;
- `psnr_db`: 10 log10(1 / mse), from the test-set MSE (data range 1);
- `ssim`: mean SSIM over images (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1, valid region:
  the usual definition of Wang et al. 2004, and scikit-image's `structural_similarity` with
  `gaussian_weights=True, use_sample_covariance=False`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aejax import numerics
from aejax.evaluation.chunks import sum_over_chunks

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST  # metrics and baselines never depend on a backend's fast matmul passes
ApplyFn = Callable[[object, Array], Array]  # (variables, float images [B, H, W, C]) -> same shape


def to_float(images: Array) -> Array:
    """uint8 images (0..255) -> float32 in [0, 1]; float images (already in [0, 1]) -> float32."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def psnr_db(mse: Array) -> Array:
    return 10.0 * jnp.log10(1.0 / mse)


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps `[size]`, float32 (computed in float64)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).astype(np.float32)


def _band(n: int, window: Array) -> Array:
    """`[n - k + 1, n]` matrix whose row i holds the k taps of `window` at columns i..i+k-1."""
    k = window.shape[0]
    return sum(jnp.eye(n - k + 1, n, i, dtype=window.dtype) * window[i] for i in range(k))


def separable_blur(x: Array, window: Array) -> Array:
    """Filter `[B, H, W, C]` with `window` `[k]` along W, then H, each channel alone ('valid'):
    `[B, H-k+1, W-k+1, C]`.

    Computed as two matmuls with banded matrices, at highest precision: XLA's CPU convolution of one channel
    with an 11-tap filter is ~30x slower, and on GPUs and TPUs a default-precision matmul would round to
    TF32/bf16.
    """
    bh, bw = _band(x.shape[1], window), _band(x.shape[2], window)
    x = jnp.einsum("jw,bhwc->bhjc", bw, x, precision=HIGHEST)
    return jnp.einsum("ih,bhwc->biwc", bh, x, precision=HIGHEST)


def ssim(x: Array, y: Array) -> Array:
    """Per-image SSIM of `[B, H, W, C]` images in [0, 1] -> `[B]`: the mean over pixels and channels of the
    SSIM map, each channel filtered alone (scikit-image's `structural_similarity(..., channel_axis=-1)`).
    The Gaussian window is 11 taps (sigma 1.5); images with a side under 11 use the largest odd window that
    fits."""
    side = min(x.shape[1], x.shape[2])
    window = jnp.asarray(gaussian_window(min(11, side - (1 - side % 2)), 1.5))
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = separable_blur(x, window), separable_blur(y, window)
    sxx = separable_blur(x * x, window) - mu_x ** 2
    syy = separable_blur(y * y, window) - mu_y ** 2
    sxy = separable_blur(x * y, window) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean(axis=(1, 2, 3))


class Totals(NamedTuple):
    """Sums over a dataset, so metrics can be accumulated chunk by chunk (and vmapped over models)."""

    squared_error: Array  # sum over pixels
    ssim: Array | None  # sum over images; None when not computed
    count: Array  # images
    values: Array  # pixel values (images x H x W x C): the MSE's denominator


def chunk_totals(images: Array, recon: Array, with_ssim: bool = True) -> Totals:
    """`images` uint8 or float `[B, H, W, C]`, `recon` float in [0, 1] of the same shape."""
    x = to_float(images)
    recon = recon.astype(jnp.float32)
    return Totals(jnp.sum((recon - x) ** 2), jnp.sum(ssim(x, recon)) if with_ssim else None,
                  jnp.asarray(x.shape[0], jnp.float32), jnp.asarray(x.size, jnp.float32))


def finalize(totals: Totals) -> dict[str, float]:
    """`mse`, `psnr_db` and (when summed) `ssim` of one model's totals."""
    mse = totals.squared_error / totals.values
    out = {"mse": float(mse), "psnr_db": float(psnr_db(mse))}
    if totals.ssim is not None:
        out["ssim"] = float(totals.ssim / totals.count)
    return out


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk", "with_ssim"))
def totals(apply_fn: ApplyFn | None, variables, images: Array, *, recon: Array | None = None, chunk: int = 1000,
           with_ssim: bool = True) -> Totals:
    """The one evaluation path: sums of squared error (and SSIM) of reconstructions of uint8 `images`.

    The reconstructions are `apply_fn(variables, x)` for float chunks `x`, or the given `recon` (float, same
    shape as `images`). `chunk` images at a time; a remainder is scored in one more call, so no image is
    dropped. `apply_fn` must be hashable and stable across calls (e.g. `model.apply`, `Pca.reconstruct`) so the
    compiled scan is reused. Pure and traceable: `jax.vmap` it over stacked `variables` to score many models.
    """
    def part_totals(part: tuple[Array, Array | None], i: Array) -> Totals:
        batch, given = part  # [chunk, H, W, C] each
        r = apply_fn(variables, to_float(batch)) if given is None else given
        return chunk_totals(batch, r, with_ssim)

    return sum_over_chunks(part_totals, (images, recon), chunk)


def reconstruction_metrics(apply_fn: ApplyFn, variables, images: Array, chunk: int = 1000) -> dict[str, float]:
    """MSE, PSNR and SSIM of `apply_fn(variables, x)` on uint8 `images` (see `totals`)."""
    return finalize(totals(apply_fn, variables, images, chunk=chunk))


def score(images: Array, recon: Array, chunk: int = 1000) -> dict[str, float]:
    """The same metrics for precomputed reconstructions: uint8 `images` against float `recon` in [0, 1]."""
    return finalize(totals(None, None, jnp.asarray(images), recon=jnp.asarray(recon, jnp.float32), chunk=chunk))


def mean_image_mse(train_rows: Callable[[range], Any], n_train: int, test_images: Any, chunk: int = 4096,
                   chunk_bytes: int = 32 << 20) -> float:
    """Test MSE of predicting the training set's mean image for every test image: what a model that learned
    nothing about individual images scores. `train_rows(range)` loads a range of the `n_train` training images
    (uint8 or float in [0, 1]); both sets are read a chunk at a time (`chunk` images, fewer where their float64
    copy would pass `chunk_bytes`), the mean from exact integer sums of uint8 values (float64 sums of float
    ones), so memory stays that of a chunk whatever the sets' sizes."""
    chunk = max(1, min(chunk, chunk_bytes // (8 * int(np.prod(test_images.shape[1:])))))
    total = None
    for start in range(0, n_train, chunk):
        part = np.asarray(train_rows(range(start, min(n_train, start + chunk))))
        sums = part.sum(axis=0, dtype=np.int64 if part.dtype == np.uint8 else np.float64)
        total = sums if total is None else total + sums
    mean = total / (255.0 if part.dtype == np.uint8 else 1.0) / n_train  # float64 [H, W, C]
    squared = 0.0
    for start in range(0, len(test_images), chunk):
        part = np.asarray(test_images[start:start + chunk])
        part = part / 255.0 if part.dtype == np.uint8 else part.astype(np.float64)
        squared += float(np.sum((part - mean) ** 2))
    return squared / (len(test_images) * mean.size)


class Pca(NamedTuple):
    """A rank-k linear code of flattened inputs: z = (x - mean) @ components.T; x_hat = z @ components + mean."""

    mean: Array  # [D]
    components: Array  # [k, D], orthonormal rows, by decreasing variance
    variance: Array  # [k], the variance along each component

    def encode(self, x: Array) -> Array:  # [B, ...] with D values per row -> [B, k]
        return jnp.matmul(x.reshape(x.shape[0], -1) - self.mean, self.components.T, precision=HIGHEST)

    def decode(self, z: Array) -> Array:  # [B, k] -> [B, D]
        return jnp.matmul(z, self.components, precision=HIGHEST) + self.mean

    def reconstruct(self, x: Array) -> Array:  # [B, ...] -> same shape
        return self.decode(self.encode(x)).reshape(x.shape)


@jax.jit
def _pca_basis(x: Array) -> tuple[Array, Array, Array]:
    x = to_float(x).reshape(x.shape[0], -1)  # [N, D]
    mean = x.mean(axis=0)
    xc = x - mean
    cov = numerics.sum_of_outer_products(xc, xc, precision=HIGHEST) / x.shape[0]  # [D, D]
    values, vecs = jnp.linalg.eigh(cov)  # ascending eigenvalues
    return mean, vecs[:, ::-1].T, values[::-1]  # [D], [D, D] rows by decreasing variance, [D]


@jax.jit
def _components(cov: Array) -> tuple[Array, Array]:
    values, vecs = jnp.linalg.eigh(cov)  # ascending eigenvalues
    return vecs[:, ::-1].T, values[::-1]  # [D, D] rows by decreasing variance, [D]


PCA_WHOLE_BYTES = 2 ** 30  # larger uint8 sets are fitted a chunk of rows at a time, never as one float copy


def fit_pca(x: Array, ks: Sequence[int], *, whole_bytes: int = PCA_WHOLE_BYTES, chunk: int = 4096) -> dict[int, Pca]:
    """PCA fitted once on `x` (uint8 images `[N, H, W, C]`, scaled to [0, 1], or float rows `[N, D]`),
    truncated to each k in `ks`. A uint8 set whose float32 copy would exceed `whole_bytes` (a memmap, say) is
    read `chunk` rows at a time: its mean from exact integer sums, its covariance summed in float64 (the two ways
    agree to float32 rounding; the whole way is the one the study's tables were made with)."""
    if np.dtype(x.dtype) != np.uint8 or 4 * int(np.prod(x.shape)) <= whole_bytes:
        mean, basis, variance = _pca_basis(jnp.asarray(x))
    else:
        n, d = len(x), int(np.prod(x.shape[1:]))
        total = np.zeros(d, np.int64)
        for start in range(0, n, chunk):
            total += np.asarray(x[start:start + chunk]).reshape(-1, d).sum(0, dtype=np.int64)
        mean64 = total / (255.0 * n)
        cov = np.zeros((d, d), np.float64)
        for start in range(0, n, chunk):
            rows = np.asarray(x[start:start + chunk]).reshape(-1, d) / 255.0 - mean64  # [chunk, D] float64
            cov += rows.T @ rows
        mean = jnp.asarray(mean64, jnp.float32)
        basis, variance = _components(jnp.asarray(cov / n, jnp.float32))
    return {k: Pca(mean, basis[:k], variance[:k]) for k in ks}


@jax.jit
def _nearest_other(queries: Array, offset: Array, points: Array) -> Array:
    """Index of each query's nearest point `[q]`, excluding itself (query i is point offset + i)."""
    cross = jnp.matmul(queries, points.T, precision=HIGHEST)  # ||a||^2 - 2ab + ||b||^2 cancels: full fp32
    d2 = jnp.sum(queries**2, 1)[:, None] - 2 * cross + jnp.sum(points**2, 1)[None, :]  # [q, N]
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
