"""Convolution, max-pool and 2x2 transpose-convolution primitives for the conv autoencoders, with
hand-written gradients that keep XLA's CPU backend on fast paths.

Why: on CPU, XLA lowers the kernel gradient of a convolution to a convolution with the batch as feature
dimension (~30x slower than the forward here), the gradient of a reshape-max pool to a multi-pass select, and a
convolution vmapped over models (seeds) to a grouped convolution (~25x slower than one model's). Each function
below computes the same values as `lax.conv_general_dilated` / `nn.max_pool` / `lax.conv_transpose` (tested in
`tests/test_ops.py`) from matmuls, which `vmap` batches well, and chooses its own backward pass:

- `conv3x3`: forward, input gradient and kernel gradient are each one matmul, over shifted copies of whichever
  side has fewer channels (for the forward: the input's taps, or the per-tap products summed with shifts).
- `max_pool2`: the gradient goes to the first maximum of each 2x2 window (PyTorch's and XLA's rule).
- `conv3x3_max_pool2`: for inputs with few channels (the first layer), the convolution is computed directly
  in a window-major layout `[B, H/2, W/2, 4, F]`, so the pool is a max over one axis and only the argmax
  (int8) is kept for the backward pass instead of the full-resolution activation.
- `upsample2x2` / `unblock`: stride-2 2x2 transpose convolutions chained in a block layout, interleaved into
  an image once at the end (the interleaving transpose is paid on the smallest tensor).

Measured on this project's 2-core CPU: the original conv AE trains more than 2x faster than with autodiff
through XLA's own operations (`experiments/benchmark.py`, `experiments/profile_conv.py`, README "Performance").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

def _taps(x: Array, sign: int) -> Array:
    """The 9 shifted copies of `x` [B, H, W, C] as [B, H, W, 9C], tap (i, j) holding x[h + s(i-1), w + s(j-1)]
    with s = `sign` (zero outside the image)."""
    _, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    o = lambda i: 1 + sign * (i - 1)  # noqa: E731
    return jnp.concatenate([xp[:, o(i):o(i) + h, o(j):o(j) + w, :] for i in range(3) for j in range(3)], axis=-1)


def _shift_sum(z: Array, sign: int) -> Array:
    """sum over taps (i, j) of z[h + s(i-1), w + s(j-1), i, j] for z [B, H, W, 3, 3, F] (zero outside)."""
    _, h, w = z.shape[:3]
    zp = jnp.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
    o = lambda i: 1 + sign * (i - 1)  # noqa: E731
    return sum(zp[:, o(i):o(i) + h, o(j):o(j) + w, i, j] for i in range(3) for j in range(3))


def _correlate(x: Array, taps: Array, sign: int) -> Array:
    """sum over (i, j) of x[h + s(i-1), w + s(j-1)] @ taps[i, j] for x [B, H, W, C], taps [3, 3, C, F], as one
    matmul on the side with fewer channels: shifted copies of the input (C <= F) or of the per-tap products."""
    b, h, w, c = x.shape
    f = taps.shape[-1]
    if c <= f:
        return _taps(x, sign) @ taps.reshape(9 * c, f)
    z = x @ taps.transpose(2, 0, 1, 3).reshape(c, 9 * f)  # [B, H, W, 9F]: every tap's product at every pixel
    return _shift_sum(z.reshape(b, h, w, 3, 3, f), sign)


@jax.custom_vjp
def conv3x3(x: Array, kernel: Array) -> Array:
    """3x3 convolution, stride 1, SAME zero padding: [B, H, W, C] x [3, 3, C, F] -> [B, H, W, F]."""
    return _correlate(x, kernel, 1)


def _conv3x3_fwd(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
    return conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(res: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    x, kernel = res
    c, f = kernel.shape[2:]
    dx = _correlate(dy, kernel.transpose(0, 1, 3, 2), -1)  # [B, H, W, C]
    if 9 * c <= 4 * f:  # few input channels: [9C, B*H*W] @ [B*H*W, F]
        dk = (_taps(x, 1).reshape(-1, 9 * c).T @ dy.reshape(-1, f)).reshape(3, 3, c, f)
    else:  # few output channels: [C, B*H*W] @ [B*H*W, 9F]
        dk = (x.reshape(-1, c).T @ _taps(dy, -1).reshape(-1, 9 * f)).reshape(c, 3, 3, f).transpose(1, 2, 0, 3)
    return dx, dk.astype(kernel.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def _windows(x: Array) -> Array:
    """[B, H, W, C] -> [B, H/2, W/2, 4, C]: the four members of each 2x2 window, row-major."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4, c)


def _unwindows(y: Array) -> Array:
    """Inverse of `_windows`."""
    b, h2, w2, _, c = y.shape
    return y.reshape(b, h2, w2, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h2, 2 * w2, c)


def _first_max_mask(windows: Array, axis: int) -> Array:
    """One-hot (along `axis`, of size 4) of the first maximum of each window."""
    idx = jnp.argmax(windows, axis=axis)
    return jnp.expand_dims(idx, axis) == jnp.arange(4).reshape((4,) + (1,) * (windows.ndim - axis - 1))


@jax.custom_vjp
def max_pool2(x: Array) -> Array:
    """2x2 max-pool, stride 2: [B, H, W, C] -> [B, H/2, W/2, C] (H, W even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _max_pool2_fwd(x: Array) -> tuple[Array, Array]:
    return max_pool2(x), x


def _max_pool2_bwd(x: Array, g: Array) -> tuple[Array]:
    windows = _windows(x)  # [B, H/2, W/2, 4, C]
    return (_unwindows(jnp.where(_first_max_mask(windows, 3), g[:, :, :, None, :], 0).astype(x.dtype)),)


max_pool2.defvjp(_max_pool2_fwd, _max_pool2_bwd)


def _window_taps(x: Array) -> Array:
    """[B, H, W, C] -> [B, H/2, W/2, 4, 9C]: for each member of each 2x2 window, its 3x3 neighbourhood
    (SAME zero padding), in the order of a [3, 3, C] kernel."""
    _, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifted = {(u, v): xp[:, u:u + h:2, v:v + w:2, :] for u in range(4) for v in range(4)}  # [B, H/2, W/2, C]
    return jnp.stack([jnp.concatenate([shifted[a + i, e + j] for i in range(3) for j in range(3)], axis=-1)
                      for a in range(2) for e in range(2)], axis=3)


@jax.custom_vjp
def _window_conv_max(taps: Array, kernel: Array) -> Array:
    return (taps @ kernel).max(axis=3)  # [B, H/2, W/2, 4, 9C] @ [9C, F] -> max over the window


def _window_conv_max_fwd(taps: Array, kernel: Array) -> tuple[Array, tuple[Array, Array, Array]]:
    y = taps @ kernel  # [B, H/2, W/2, 4, F]
    return y.max(axis=3), (taps, kernel, jnp.argmax(y, axis=3).astype(jnp.int8))


def _window_conv_max_bwd(res: tuple[Array, Array, Array], g: Array) -> tuple[Array, Array]:
    taps, kernel, idx = res
    dy = jnp.where(idx[:, :, :, None, :] == jnp.arange(4, dtype=jnp.int8)[:, None], g[:, :, :, None, :], 0)
    dy = dy.astype(taps.dtype)  # [B, H/2, W/2, 4, F], nonzero only at each window's first maximum
    dk = taps.reshape(-1, taps.shape[-1]).T @ dy.reshape(-1, dy.shape[-1])
    return dy @ kernel.T, dk.astype(kernel.dtype)


_window_conv_max.defvjp(_window_conv_max_fwd, _window_conv_max_bwd)


def conv3x3_max_pool2(x: Array, kernel: Array) -> Array:
    """`max_pool2(conv3x3(x, kernel))`: [B, H, W, C] x [3, 3, C, F] -> [B, H/2, W/2, F].

    With few input channels (9C <= F, e.g. the first layer on 1-channel images) the convolution is computed
    in window-major layout and only the argmax is stored for the backward pass; otherwise it is the
    composition. Add a bias after pooling: max(y) + b == max(y + b).
    """
    c, f = kernel.shape[2:]
    if 9 * c <= f:
        return _window_conv_max(_window_taps(x), kernel.reshape(9 * c, f))
    return max_pool2(conv3x3(x, kernel))


def upsample2x2(x: Array, kernel: Array) -> Array:
    """Transpose convolution with a 2x2 kernel and stride 2 in block layout: [B, H, W, *blocks, C] x
    [2, 2, C, F] -> [B, H, W, *blocks, 2, 2, F]. Each input pixel writes its own 2x2 output patch, so no
    interleaving is needed until `unblock`."""
    return jnp.einsum("...c,ijcf->...ijf", x, kernel)


def unblock(y: Array) -> Array:
    """[B, H, W, (2, 2) * L, F] -> [B, H * 2^L, W * 2^L, F]: interleave L levels of 2x2 blocks into an image,
    the first level outermost."""
    b, h, w, f = y.shape[0], y.shape[1], y.shape[2], y.shape[-1]
    levels = (y.ndim - 4) // 2
    rows = [1] + [3 + 2 * i for i in range(levels)]
    cols = [2] + [4 + 2 * i for i in range(levels)]
    return y.transpose(0, *rows, *cols, y.ndim - 1).reshape(b, h * 2 ** levels, w * 2 ** levels, f)
