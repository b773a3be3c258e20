"""Convolution, max-pool and 2x2 transpose-convolution primitives for the conv autoencoders, with
hand-written derivative rules that keep XLA's CPU backend on fast paths.

Why: on CPU, XLA lowers the kernel gradient of a convolution to a convolution with the batch as feature
dimension (~30x slower than the forward here), the gradient of a reshape-max pool to a multi-pass select, and a
convolution vmapped over models (seeds) to a grouped convolution (~25x slower than one model's). Each function
below computes the same values as `lax.conv_general_dilated` / `nn.max_pool` / `lax.conv_transpose` (tested in
`tests/test_ops.py`) from matmuls, which `vmap` batches well, and chooses its own derivative.

The rules are forward-mode rules (`jax.custom_jvp`), not backward ones: each tangent is a linear map written in
the matmul form whose transpose, which JAX derives for reverse mode, is the fast backward pass. So `jax.grad`
runs the same matmuls as hand-written backward passes would, and `jax.jvp`, `jacfwd`, `hessian` and
forward-over-reverse products work too (a `custom_vjp` would refuse forward mode). Zero tangents stay symbolic,
so the image input's tangent costs nothing when only parameters are differentiated.

- `conv3x3`: forward, input gradient and kernel gradient are each one matmul, over shifted copies of whichever
  side has fewer channels (for the forward: the input's taps, or the per-tap products summed with shifts; the
  kernel tangent uses the form whose transpose materialises the smaller set of shifted copies).
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

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from aejax import numerics

Array = jax.Array


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


def _sum(terms: list[Array], like: Array) -> Array:
    """The sum of a rule's nonzero tangent terms (zeros shaped like `like` when there are none)."""
    return functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(like)


def _taps(x: Array, sign: int) -> Array:
    """The 9 shifted copies of `x` [B, H, W, C] as [B, H, W, 9C], tap (i, j) holding x[h + s(i-1), w + s(j-1)]
    with s = `sign` (zero outside the image)."""
    _, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    o = lambda i: 1 + sign * (i - 1)  # noqa: E731
    return jnp.concatenate([xp[:, o(i):o(i) + h, o(j):o(j) + w, :] for i in range(3) for j in range(3)], axis=-1)


def _shift_sum(z: Array, sign: int) -> Array:
    """sum over taps (i, j) of z[h + s(i-1), w + s(j-1), i, j] for z [B, H, W, 3, 3, F] (zero outside).

    The taps are split apart first and each is shifted on its own: transposed (for reverse mode), a split is
    one concatenation, whereas indexing a tap out of the padded 6-D tensor would pad every tap's cotangent to
    the full [B, H+2, W+2, 3, 3, F] (measured 2x slower training)."""
    b, h, w = z.shape[:3]
    pieces = jnp.split(z.reshape(b, h, w, 9, z.shape[-1]), 9, axis=3)  # 9 x [B, H, W, 1, F]
    o = lambda i: 1 + sign * (i - 1)  # noqa: E731

    def shifted(piece: Array, i: int, j: int) -> Array:
        p = jnp.pad(piece[:, :, :, 0], ((0, 0), (1, 1), (1, 1), (0, 0)))
        return p[:, o(i):o(i) + h, o(j):o(j) + w]

    return sum(shifted(pieces[3 * i + j], i, j) for i in range(3) for j in range(3))


def _correlate(x: Array, taps: Array, sign: int, input_taps: bool | None = None, linear_in_taps: bool = False
               ) -> Array:
    """sum over (i, j) of x[h + s(i-1), w + s(j-1)] @ taps[i, j] for x [B, H, W, C], taps [3, 3, C, F], as one
    matmul over shifted copies of the input (`input_taps`; default when C <= F) or of the per-tap products."""
    b, h, w, c = x.shape
    f = taps.shape[-1]
    matmul = _weight_matmul if linear_in_taps else _matmul
    if c <= f if input_taps is None else input_taps:
        return matmul(_taps(x, sign), taps.reshape(9 * c, f))
    z = matmul(x, taps.transpose(2, 0, 1, 3).reshape(c, 9 * f))  # [B, H, W, 9F]: each tap's product, each pixel
    return _shift_sum(z.reshape(b, h, w, 3, 3, f), sign)


def _matmul(x: Array, w: Array) -> Array:
    """x [..., K] @ w [K, N] as a 2-D matmul: its transpose for the weight is then [K, M] @ [M, N], which XLA's
    CPU backend runs ~25% faster than the same contraction over several batch axes."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def _weight_matmul(x: Array, w: Array) -> Array:
    """`_matmul(x, w)` for a tangent `w`. Under portable CPU numerics (`aejax.numerics`) it is written so that
    its transpose, the weight gradient x^T @ g summed over all B*H*W rows, is a sum of fixed-size chunks:
    [c, K, m] @ [c, m, N] products, then a sum over the c chunks in a fixed order.

    Why: on CPU a single [K, M] @ [M, N] product with a long M is split across threads, and its rounding then
    depends on how many cores the machine has; each chunk here is too small to split, so the gradient is the
    same bits on one core or many (`tests/test_numerics.py`). Otherwise the one 2-D matmul, which is faster."""
    if not numerics.portable_cpu():
        return _matmul(x, w)
    rows = x.reshape(-1, w.shape[0])  # [M, K]
    chunks = numerics.row_chunks(rows)  # [c, m, K]
    y = jnp.einsum("cmk,ckn->cmn", chunks, jnp.broadcast_to(w, (len(chunks), *w.shape)))  # transposed: summed over c
    return y.reshape(-1, w.shape[1])[:rows.shape[0]].reshape(*x.shape[:-1], w.shape[1])


@jax.custom_jvp
def conv3x3(x: Array, kernel: Array) -> Array:
    """3x3 convolution, stride 1, SAME zero padding: [B, H, W, C] x [3, 3, C, F] -> [B, H, W, F]."""
    return _correlate(x, kernel, 1)


@functools.partial(conv3x3.defjvp, symbolic_zeros=True)
def _conv3x3_jvp(primals: tuple[Array, Array], tangents: tuple) -> tuple[Array, Array]:
    x, kernel = primals
    dx, dk = tangents
    c, f = kernel.shape[2:]
    terms = []
    if not _is_zero(dx):  # transposed: the input gradient, over shifted copies of the side with fewer channels
        terms.append(_correlate(dx, kernel, 1, input_taps=c < f))
    if not _is_zero(dk):  # transposed: [9C, B*H*W] @ [B*H*W, F] with few input channels, else [C, .] @ [., 9F]
        terms.append(_correlate(x, dk.astype(x.dtype), 1, input_taps=9 * c <= 4 * f, linear_in_taps=True))
    y = conv3x3(x, kernel)
    return y, _sum(terms, y)


def _windows(x: Array) -> Array:
    """[B, H, W, C] -> [B, H/2, W/2, 4, C]: the four members of each 2x2 window, row-major."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4, c)


def _first_max_mask(windows: Array, axis: int) -> Array:
    """One-hot (along `axis`, of size 4) of the first maximum of each window."""
    idx = jnp.argmax(windows, axis=axis)
    return jnp.expand_dims(idx, axis) == jnp.arange(4).reshape((4,) + (1,) * (windows.ndim - axis - 1))


@jax.custom_jvp
def max_pool2(x: Array) -> Array:
    """2x2 max-pool, stride 2: [B, H, W, C] -> [B, H/2, W/2, C] (H, W even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@max_pool2.defjvp
def _max_pool2_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    """The tangent of each window's first maximum (transposed: the gradient goes there alone)."""
    (x,), (dx,) = primals, tangents
    mask = _first_max_mask(_windows(x), 3)  # [B, H/2, W/2, 4, C]
    return max_pool2(x), jnp.sum(jnp.where(mask, _windows(dx), 0), axis=3).astype(dx.dtype)


def _window_taps(x: Array) -> Array:
    """[B, H, W, C] -> [B, H/2, W/2, 4, 9C]: for each member of each 2x2 window, its 3x3 neighbourhood
    (SAME zero padding), in the order of a [3, 3, C] kernel."""
    _, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifted = {(u, v): xp[:, u:u + h:2, v:v + w:2, :] for u in range(4) for v in range(4)}  # [B, H/2, W/2, C]
    return jnp.stack([jnp.concatenate([shifted[a + i, e + j] for i in range(3) for j in range(3)], axis=-1)
                      for a in range(2) for e in range(2)], axis=3)


@jax.custom_jvp
def _window_conv_max(taps: Array, kernel: Array) -> Array:
    return (taps @ kernel).max(axis=3)  # [B, H/2, W/2, 4, 9C] @ [9C, F] -> max over the window


@functools.partial(_window_conv_max.defjvp, symbolic_zeros=True)
def _window_conv_max_jvp(primals: tuple[Array, Array], tangents: tuple) -> tuple[Array, Array]:
    """The tangent at each window's first maximum; transposed, the kernel gradient is one
    [9C, B*H*W/4*4] @ [., F] matmul of the taps with a cotangent that is nonzero only there."""
    taps, kernel = primals
    dtaps, dk = tangents
    y = taps @ kernel  # [B, H/2, W/2, 4, F]
    first = jnp.argmax(y, axis=3).astype(jnp.int8)[:, :, :, None, :] == jnp.arange(4, dtype=jnp.int8)[:, None]
    terms = (([] if _is_zero(dtaps) else [_matmul(dtaps, kernel)])
             + ([] if _is_zero(dk) else [_weight_matmul(taps, dk.astype(taps.dtype))]))
    return y.max(axis=3), jnp.sum(jnp.where(first, _sum(terms, y), 0), axis=3)


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


def _space_to_depth(x: Array) -> Array:
    """[B, H, W, C] -> [B, H/2, W/2, 4C]: each 2x2 window's pixels side by side, row-major."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)


def _chunked_kernel_tangent(fn: Callable[[Array, Array], Array],
                            kernel_term: Callable[[Array, Array], Array]) -> Callable[[Array, Array], Array]:
    """`fn(x, kernel)`, bilinear, with a JVP rule for portable CPU numerics: the input's tangent is `fn(dx,
    kernel)` as autodiff's would be, the kernel's is `kernel_term(x, dk)`, written with `_weight_matmul`."""
    wrapped = jax.custom_jvp(fn)

    @functools.partial(wrapped.defjvp, symbolic_zeros=True)
    def rule(primals: tuple[Array, Array], tangents: tuple) -> tuple[Array, Array]:
        (x, kernel), (dx, dk) = primals, tangents
        y = fn(x, kernel)
        terms = (([] if _is_zero(dx) else [fn(dx, kernel)])
                 + ([] if _is_zero(dk) else [kernel_term(x, dk.astype(x.dtype))]))
        return y, _sum(terms, y)

    return wrapped


def downsample2x2(x: Array, kernel: Array) -> Array:
    """Convolution with a 2x2 kernel and stride 2 (no padding), the mirror of `upsample2x2`: [B, H, W, C] x
    [2, 2, C, F] -> [B, H/2, W/2, F], out[i, j] = sum over (a, b) of x[2i+a, 2j+b] @ kernel[a, b]. Each window is
    its own patch, so this is one 2-D matmul of the windows laid side by side (a space-to-depth reshape); plain
    autodiff of a matmul is already fast, and under portable CPU numerics a rule chunks the kernel gradient."""
    return (_downsample_portable if numerics.portable_cpu() else _downsample)(x, kernel)


def _downsample(x: Array, kernel: Array) -> Array:
    return _matmul(_space_to_depth(x), kernel.reshape(-1, kernel.shape[-1]))  # [B, H/2, W/2, 4C] @ [4C, F]


_downsample_portable = _chunked_kernel_tangent(
    _downsample, lambda x, dk: _weight_matmul(_space_to_depth(x), dk.reshape(-1, dk.shape[-1])))


def upsample2x2(x: Array, kernel: Array) -> Array:
    """Transpose convolution with a 2x2 kernel and stride 2 in block layout: [B, H, W, *blocks, C] x
    [2, 2, C, F] -> [B, H, W, *blocks, 2, 2, F]. Each input pixel writes its own 2x2 output patch, so no
    interleaving is needed until `unblock`. Under portable CPU numerics a rule chunks the kernel gradient."""
    return (_upsample_portable if numerics.portable_cpu() else _upsample)(x, kernel)


def _upsample(x: Array, kernel: Array) -> Array:
    return jnp.einsum("...c,ijcf->...ijf", x, kernel)


def _upsample_kernel_term(x: Array, dk: Array) -> Array:
    c, f = dk.shape[2:]
    w = dk.transpose(2, 0, 1, 3).reshape(c, 4 * f)  # [C, (i, j, F)]
    return _weight_matmul(x, w).reshape(*x.shape[:-1], 2, 2, f)


_upsample_portable = _chunked_kernel_tangent(_upsample, _upsample_kernel_term)


def unblock(y: Array) -> Array:
    """[B, H, W, (2, 2) * L, F] -> [B, H * 2^L, W * 2^L, F]: interleave L levels of 2x2 blocks into an image,
    the first level outermost."""
    b, h, w, f = y.shape[0], y.shape[1], y.shape[2], y.shape[-1]
    levels = (y.ndim - 4) // 2
    rows = [1] + [3 + 2 * i for i in range(levels)]
    cols = [2] + [4 + 2 * i for i in range(levels)]
    return y.transpose(0, *rows, *cols, y.ndim - 1).reshape(b, h * 2 ** levels, w * 2 ** levels, f)
