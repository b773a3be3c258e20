"""`--model rd_factorized` and `--model rd_hyperprior`: autoencoders trained for compression, rate + lambda * D.

The two models of end-to-end optimised image compression (Ballé, Laparra & Simoncelli 2017; Ballé et al. 2018),
as CompressAI builds them (`bmshj2018-factorized`, `bmshj2018-hyperprior`), added through aejax's public surface
(`register_model`, `register_loss`, the model contract of `aejax.models`) from the conv layers' building blocks:

- analysis `g_a`: four 5x5 convolutions at stride 2 (SAME padding), GDN between them: `[B, H, W, C]` ->
  `[B, H/16, W/16, M]` (M = `latent_dim`, N = `model_kwargs["channels"]` in between); synthesis `g_s`: four 5x5
  transpose convolutions at stride 2 with inverse GDN between them. Images whose sides 16 does not divide are
  zero-padded at the bottom and right and the output is cropped back (28x28 MNIST: a 2x2xM code).
- the code is quantised by rounding (training: additive uniform noise in [-1/2, 1/2), its differentiable proxy,
  drawn from the `dropout` stream the train step provides to models with a `train` attribute), and its rate is
  the negative log2-likelihood under an entropy model:
  - `rd_factorized`: a learned non-parametric density per code channel (`FactorizedDensity`);
  - `rd_hyperprior`: a zero-mean Gaussian per code value whose scale comes from a second, hyper code
    z = h_a(|y|) (itself under a factorized density): h_a = 3x3 conv, two 5x5 convs at stride 2 (ReLU between),
    h_s = two 5x5 transpose convs at stride 2 and a 3x3 conv (ReLU), cropped to the code's shape.

Quantised codes are clipped to [-SYMBOL_BOUND, SYMBOL_BOUND], the range the entropy coder (`aejax.codec`) codes;
`decode(quantize(encode(x)))` is the model's quantised reconstruction (what `__call__` returns outside training,
what the metrics score and the codec's decoder reproduces). The `rate_distortion` loss is
bits per pixel + `lmbda` * 255^2 * MSE (CompressAI's convention); `lmbda` is a module attribute, so one program
trains a sweep of rate points (`sweep={"lmbda": [...]}`).

`--model rd_variable` (and `rd_variable_hyperprior`) is one model for every rate (gain units, Cui et al. 2021,
"Asymmetric gained deep image compression with continuous rate adaptation"): `model_kwargs["lmbdas"]` lists L
rate points; a learned gain per level and code channel scales the analysis output before quantisation and an
inverse gain scales the quantised code before the synthesis, so the entropy model and the transforms are shared.
Training draws a level per image and weighs its distortion by that level's lambda (`rate_distortion_variable`);
a *quality* q in [0, L - 1] interpolates the gains geometrically between neighbouring levels, so a codec picks any
rate in between per image. The gains start at sqrt(lambda / lambda_mid) (a quantiser step ~ 1/sqrt(lambda)).
Without a quality the model works at its highest level (what `encode`/`decode` and the metrics use).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aejax.config import MNIST_SHAPE, Config
from aejax.errors import AejaxError
from aejax.models import ops
from aejax.models.layers import CONV_DIMS, Conv, conv_params, pad_to_multiple
from aejax.models.registry import compute_dtype, conv_impl, image_shape, register_model
from aejax.training.losses import register_loss

Array = jax.Array
SYMBOL_BOUND = 255  # quantised code values are clipped to [-SYMBOL_BOUND, SYMBOL_BOUND]
LIKELIHOOD_FLOOR = 1e-9  # no code value costs more than -log2(1e-9) ~ 30 bits in the rate estimate
SCALE_FLOOR = 0.11  # the Gaussian scales' lower bound (CompressAI's)
SCALE_TABLE = np.exp(np.linspace(np.log(SCALE_FLOOR), np.log(256.0), 64))  # scales the coder quantises to


def quantize(y: Array) -> Array:
    """Rounded and clipped code values (still float): the symbols the coder writes."""
    return jnp.clip(jnp.round(y), -SYMBOL_BOUND, SYMBOL_BOUND)


def _positive(x: Array, floor: float) -> Array:
    """CompressAI's non-negative reparametrisation: a stored `v` means max(v, sqrt(floor + p))^2 - p."""
    pedestal = 2.0 ** -36
    return jnp.maximum(x, math.sqrt(floor + pedestal)) ** 2 - pedestal


class GDN(nn.Module):
    """Generalised divisive normalisation over channels: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
    (`inverse`: times the square root). beta starts at 1, gamma at 0.1 * I."""

    inverse: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [B, H, W, C] -> same
        c = x.shape[-1]
        pedestal = 2.0 ** -36
        beta = self.param("beta", lambda _, s: jnp.sqrt(jnp.ones(s) + pedestal), (c,))
        gamma = self.param("gamma", lambda _, s: jnp.sqrt(0.1 * jnp.eye(s[0]) + pedestal), (c, c))
        norm = jnp.einsum("...j,ij->...i", x * x, _positive(gamma, 0.0).astype(x.dtype)) + _positive(
            beta, 1e-6).astype(x.dtype)
        return x * jnp.sqrt(norm) if self.inverse else x * jax.lax.rsqrt(norm)


class FactorizedDensity(nn.Module):
    """A learned density per channel (Ballé et al. 2018, appendix 6.1): a monotone map R -> R through layers of
    `filters` units, whose sigmoid is the cumulative distribution. `likelihood(y)` is the probability mass of
    [y - 1/2, y + 1/2] (the density convolved with a unit-width uniform, as quantisation noise makes it)."""

    channels: int
    filters: Sequence[int] = (3, 3, 3)
    init_scale: float = 10.0

    def setup(self) -> None:
        dims = (1, *self.filters, 1)
        scale = self.init_scale ** (1 / (len(self.filters) + 1))
        self.matrices = [self.param(f"matrix_{i}", nn.initializers.constant(
            math.log(math.expm1(1 / scale / dims[i + 1]))), (self.channels, dims[i + 1], dims[i]))
            for i in range(len(dims) - 1)]
        self.biases = [self.param(f"bias_{i}", lambda k, s: jax.random.uniform(k, s, jnp.float32, -0.5, 0.5),
                                  (self.channels, dims[i + 1]))
                       for i in range(len(dims) - 1)]
        self.factors = [self.param(f"factor_{i}", nn.initializers.zeros_init(), (self.channels, dims[i + 1]))
                        for i in range(len(dims) - 2)]

    def logits_cumulative(self, v: Array) -> Array:  # [..., channels] -> [..., channels]
        h = v[..., None].astype(jnp.float32)  # [..., C, 1]
        for i, matrix in enumerate(self.matrices):
            h = jnp.einsum("...cj,cij->...ci", h, nn.softplus(matrix)) + self.biases[i]
            if i < len(self.factors):
                h = h + jnp.tanh(self.factors[i]) * jnp.tanh(h)
        return h[..., 0]

    def likelihood(self, y: Array) -> Array:  # [..., channels] -> [..., channels], in (0, 1]
        lower, upper = self.logits_cumulative(y - 0.5), self.logits_cumulative(y + 0.5)
        sign = jax.lax.stop_gradient(-jnp.sign(lower + upper))  # evaluate in the sigmoid's accurate tail
        return jnp.maximum(jnp.abs(nn.sigmoid(sign * upper) - nn.sigmoid(sign * lower)), LIKELIHOOD_FLOOR)

    def __call__(self, y: Array) -> Array:
        return self.likelihood(y)


def gaussian_likelihood(y: Array, scale: Array) -> Array:
    """Mass of [y - 1/2, y + 1/2] under N(0, scale^2), scale >= SCALE_FLOOR, computed on the lower tail."""
    scale = jnp.maximum(scale, SCALE_FLOOR)
    v = jnp.abs(y)
    upper = jax.scipy.stats.norm.cdf((0.5 - v) / scale)
    lower = jax.scipy.stats.norm.cdf((-0.5 - v) / scale)
    return jnp.maximum(upper - lower, LIKELIHOOD_FLOOR)


def _to_depth(x: Array) -> Array:  # [B, 2H, 2W, C] -> [B, H, W, 4C], channels ordered (row parity, col parity, C)
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)


def _from_depth(y: Array) -> Array:  # [B, H, W, 4F] -> [B, 2H, 2W, F], the inverse of `_to_depth`
    b, h, w, f4 = y.shape
    return y.reshape(b, h, w, 2, 2, f4 // 4).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, f4 // 4)


def down5x5(x: Array, kernel: Array, impl: str = "ops") -> Array:
    """5x5 convolution at stride 2 with 2 zeros of padding each side (PyTorch's `Conv2d(..., 5, 2, 2)`):
    out[i] = sum over a of x[2i + a - 2] @ kernel[a] per axis; [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), F].

    `impl="ops"`: a 3x3 convolution (`aejax.models.ops.conv3x3`, matmuls with fast derivatives on CPU) over the
    2x2 space-to-depth image, with the kernel zero-extended to 6x6 and regrouped by parity; `"xla"`: the lax
    convolution. Same values.
    """
    if impl == "xla":
        return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((2, 2), (2, 2)), dimension_numbers=CONV_DIMS)
    c, f = kernel.shape[2:]
    k6 = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0))).reshape(3, 2, 3, 2, c, f)  # [dh, rh, dw, rw, C, F]
    return ops.conv3x3(_to_depth(pad_to_multiple(x, 2)), k6.transpose(0, 2, 1, 3, 4, 5).reshape(3, 3, 4 * c, f))


def up5x5(x: Array, kernel: Array, impl: str = "ops") -> Array:
    """5x5 transpose convolution at stride 2 (PyTorch's `ConvTranspose2d(..., 5, 2, 2, output_padding=1)`):
    out[2i + a - 2] += x[i] @ kernel[a] per axis; [B, H, W, C] -> [B, 2H, 2W, F].

    `impl="ops"`: each of the four output phases is a 3x3 convolution of the input, computed together as one
    `aejax.models.ops.conv3x3` with 4F outputs and interleaved (depth to space); `"xla"`: the lax convolution of the
    2-dilated input with the flipped kernel. Same values.
    """
    if impl == "xla":
        return jax.lax.conv_general_dilated(x, kernel[::-1, ::-1], (1, 1), ((2, 3), (2, 3)), lhs_dilation=(2, 2),
                                            dimension_numbers=CONV_DIMS)
    c, f = kernel.shape[2:]
    order = np.array([4, 5, 2, 3, 0, 1])  # (offset d + 1, phase r) -> kernel index r + 2 - 2d (5: zero)
    k6 = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))[order][:, order].reshape(3, 2, 3, 2, c, f)
    return _from_depth(ops.conv3x3(x, k6.transpose(0, 2, 4, 1, 3, 5).reshape(3, 3, c, 4 * f)))


class Conv5x5(nn.Module):
    """`down5x5` (or `up5x5` with `up`) with a LeCun-normal `[5, 5, C, F]` kernel and a zero bias."""

    features: int
    up: bool = False
    dtype: jnp.dtype = jnp.float32
    impl: str = "ops"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x, kernel, bias = conv_params(self, x, 5)
        return (up5x5 if self.up else down5x5)(x, kernel, self.impl) + bias


def _bits(likelihood: Array) -> Array:  # [B, ...] -> [B]: -log2 of the product over each example's values
    return -jnp.sum(jnp.log2(likelihood), axis=tuple(range(1, likelihood.ndim)))


class RateDistortionAutoencoder(nn.Module):
    """The factorized-prior model (`hyperprior=False`) or the scale-hyperprior model (see the module doc)."""

    latent_dim: int  # M: code channels
    features: int = 64  # N: channels of the hidden layers
    lmbda: float = 0.01
    hyperprior: bool = False
    train: bool = False
    dtype: jnp.dtype = jnp.float32
    impl: str = "ops"
    image_shape: tuple[int, int, int] = MNIST_SHAPE

    lmbdas: tuple[float, ...] = ()  # a variable-rate model's levels (empty: one rate, `lmbda`)

    def setup(self) -> None:
        conv = lambda f: Conv5x5(f, dtype=self.dtype, impl=self.impl)  # noqa: E731
        deconv = lambda f: Conv5x5(f, up=True, dtype=self.dtype, impl=self.impl)  # noqa: E731
        n, m, c = self.features, self.latent_dim, self.image_shape[-1]
        self.g_a = [conv(n), GDN(), conv(n), GDN(), conv(n), GDN(), conv(m)]
        self.g_s = [deconv(n), GDN(inverse=True), deconv(n), GDN(inverse=True), deconv(n), GDN(inverse=True),
                    deconv(c)]
        if self.hyperprior:
            self.h_a = [Conv(n, 3, self.dtype, self.impl), nn.relu, conv(n), nn.relu, conv(n)]
            self.h_s = [deconv(n), nn.relu, deconv(n), nn.relu, Conv(m, 3, self.dtype, self.impl), nn.relu]
            self.density = FactorizedDensity(n)
        else:
            self.density = FactorizedDensity(m)
        if self.lmbdas:
            start = 0.5 * (np.log(np.asarray(self.lmbdas)) - np.log(self.lmbdas[len(self.lmbdas) // 2]))
            self.log_gain = self.param("log_gain", lambda _: jnp.tile(jnp.asarray(start, jnp.float32)[:, None],
                                                                      (1, m)))  # [L, M]
            self.log_inverse_gain = self.param("log_inverse_gain", lambda _: jnp.tile(
                -jnp.asarray(start, jnp.float32)[:, None], (1, m)))  # [L, M]

    @property
    def top_quality(self) -> float:
        """The highest quality, L - 1 (0 for a one-rate model)."""
        return float(max(len(self.lmbdas) - 1, 0))

    def _gain(self, log_gain: Array, quality: Array | float | None) -> Array:
        """exp of `log_gain` [L, M] interpolated at `quality` (a scalar or one per image `[B]`) -> [B or 1, 1, 1,
        M]: between levels floor(q) and floor(q) + 1, geometrically."""
        q = jnp.clip(jnp.asarray(self.top_quality if quality is None else quality, jnp.float32), 0.0,
                     self.top_quality).reshape(-1)  # [B] or [1]
        low = jnp.minimum(jnp.floor(q), max(len(self.lmbdas) - 2, 0)).astype(jnp.int32)
        high = jnp.minimum(low + 1, len(self.lmbdas) - 1)
        a = (q - low)[:, None]
        return jnp.exp((1 - a) * log_gain[low] + a * log_gain[high])[:, None, None, :]

    def _check_quality(self, quality) -> None:
        if quality is not None and not self.lmbdas:
            raise AejaxError("a quality needs a variable-rate model (rd_variable), not a one-rate model")

    def encode(self, x: Array, quality: Array | float | None = None) -> Array:
        """[B, H, W, C] -> y [B, ceil(H/16), ceil(W/16), M], unquantised (a variable-rate model's scaled by its
        gain at `quality`, default the highest)."""
        self._check_quality(quality)
        h = pad_to_multiple(x, 16)
        for layer in self.g_a:
            h = layer(h)
        h = h.astype(jnp.float32)
        return h * self._gain(self.log_gain, quality) if self.lmbdas else h

    def synthesize(self, y: Array, quality: Array | float | None = None) -> Array:
        """code -> [B, H, W, C], unclipped (what training scores); a variable-rate model's code is first scaled
        by its inverse gain at `quality`."""
        self._check_quality(quality)
        h = y * self._gain(self.log_inverse_gain, quality) if self.lmbdas else y
        for layer in self.g_s:
            h = layer(h)
        height, width = self.image_shape[:2]
        return h[:, :height, :width].astype(jnp.float32)

    def decode(self, y: Array, quality: Array | float | None = None) -> Array:  # code -> images in [0, 1]
        return jnp.clip(self.synthesize(y, quality), 0.0, 1.0)

    def hyper_encode(self, y: Array) -> Array:  # y -> z [B, ceil(h/4), ceil(w/4), N], unquantised
        h = jnp.abs(y)
        for layer in self.h_a:
            h = layer(h)
        return h.astype(jnp.float32)

    def scales(self, z_hat: Array, code_shape: Sequence[int]) -> Array:  # z_hat -> y's Gaussian scales
        h = z_hat
        for layer in self.h_s:
            h = layer(h)
        return h[:, :code_shape[0], :code_shape[1]].astype(jnp.float32)

    def symbols(self, x: Array, quality: Array | float | None = None) -> tuple[Array, Array | None]:
        """The quantised codes the coder writes: (y_hat, z_hat) (z_hat None without a hyperprior)."""
        y = self.encode(x, quality)
        return quantize(y), quantize(self.hyper_encode(y)) if self.hyperprior else None

    def _noisy(self, v: Array) -> Array:
        return v + jax.random.uniform(self.make_rng("dropout"), v.shape, v.dtype, -0.5, 0.5)

    def rd_terms(self, x: Array, quality: Array | float | None = None) -> tuple[Array, Array]:
        """(reconstruction, bits per image `[B]`): with quantisation noise in training (`train`), else of the
        quantised codes (the decoded image and the rate the entropy model estimates for it); a variable-rate
        model's at `quality` (a scalar or one per image `[B]`; default the highest)."""
        y = self.encode(x, quality)
        q = self._noisy if self.train else quantize
        y_hat = q(y)
        if self.hyperprior:
            z_hat = q(self.hyper_encode(y))
            bits = _bits(self.density(z_hat)) + _bits(gaussian_likelihood(y_hat, self.scales(z_hat, y.shape[1:3])))
        else:
            bits = _bits(self.density(y_hat))
        return (self.synthesize(y_hat, quality) if self.train else self.decode(y_hat, quality)), bits

    def __call__(self, x: Array) -> Array:
        """The quantised reconstruction (in training, the noisy one); `init` creates every parameter."""
        if self.train or self.is_initializing():
            return self.rd_terms(x)[0]
        return self.decode(quantize(self.encode(x)))


def rate_distortion(model: nn.Module, params, inputs: Array, targets: Array, key: Array | None):
    """Bits per pixel + `model.lmbda` * 255^2 * MSE; aux: `bpp` (bits per H x W pixel), `bits_per_image` and
    `distortion_mse`, of the noisy codes in training and of the quantised ones on the test set."""
    recon, bits = model.apply({"params": params}, inputs, method="rd_terms")
    mse = jnp.mean((recon - targets) ** 2)
    bpp = jnp.mean(bits) / (targets.shape[1] * targets.shape[2])
    return bpp + model.lmbda * 255.0 ** 2 * mse, {"bpp": bpp, "bits_per_image": jnp.mean(bits),
                                                  "distortion_mse": mse}


def rate_distortion_variable(model: nn.Module, params, inputs: Array, targets: Array, key: Array | None):
    """A variable-rate model's loss: each image at a level drawn uniformly from `model.lmbdas` (`key`; without a
    key, as on the test set, image i at level i mod L); per level, the mean over its images of bits per pixel +
    its lambda * 255^2 * MSE; the loss is the mean over the levels present of the log of that mean. The log weighs
    every level alike (its gradient is the level's own divided by its loss), as training one model per lambda
    with Adam does, where the plain sum would let the highest lambda's loss, ~30 times the lowest's, decide.
    Aux as `rate_distortion`'s, over the images' levels."""
    lmbdas = jnp.asarray(model.lmbdas, jnp.float32)
    n, count = inputs.shape[0], len(model.lmbdas)
    levels = jnp.arange(n) % count if key is None else jax.random.randint(key, (n,), 0, count)
    recon, bits = model.apply({"params": params}, inputs, levels.astype(jnp.float32), method="rd_terms")
    mse = jnp.mean((recon - targets) ** 2, axis=tuple(range(1, targets.ndim)))  # [B]
    pixels = targets.shape[1] * targets.shape[2]
    per_image = bits / pixels + lmbdas[levels] * 255.0 ** 2 * mse  # [B]
    images = jax.ops.segment_sum(jnp.ones_like(per_image), levels, count)  # [L]
    per_level = jax.ops.segment_sum(per_image, levels, count) / jnp.maximum(images, 1.0)  # [L]
    present = images > 0
    loss = jnp.sum(jnp.where(present, jnp.log(jnp.where(present, per_level, 1.0)), 0.0)) / jnp.sum(present)
    return loss, {"bpp": jnp.mean(bits) / pixels, "bits_per_image": jnp.mean(bits), "distortion_mse": jnp.mean(mse)}


def _builder(hyperprior: bool, variable: bool = False):
    def build(config: Config) -> RateDistortionAutoencoder:
        kwargs = config.model_kwargs
        lmbdas = tuple(float(v) for v in kwargs["lmbdas"]) if variable else ()
        if variable and (len(lmbdas) < 2 or any(not (v > 0) for v in lmbdas) or list(lmbdas) != sorted(set(lmbdas))):
            raise AejaxError(f"model_kwargs lmbdas must be two or more increasing positive numbers, got "
                             f"{kwargs['lmbdas']!r}")
        return RateDistortionAutoencoder(config.latent_dim, int(kwargs["channels"]),
                                         lmbdas[-1] if variable else float(kwargs["lmbda"]), hyperprior,
                                         dtype=compute_dtype(config), impl=conv_impl(config),
                                         image_shape=image_shape(config), lmbdas=lmbdas)
    return build


VARIABLE_LMBDAS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
register_loss("rate_distortion", rate_distortion, requires=("rd_terms", "lmbda"))
register_loss("rate_distortion_variable", rate_distortion_variable, requires=("rd_terms", "lmbdas"))
for _name, _hyper in (("rd_factorized", False), ("rd_hyperprior", True)):
    register_model(_name, _builder(_hyper), kwargs={"channels": 64, "lmbda": 0.01, "impl": "auto"},
                   loss="rate_distortion")
for _name, _hyper in (("rd_variable", False), ("rd_variable_hyperprior", True)):
    register_model(_name, _builder(_hyper, variable=True),
                   kwargs={"channels": 64, "lmbdas": list(VARIABLE_LMBDAS), "impl": "auto"},
                   loss="rate_distortion_variable")
