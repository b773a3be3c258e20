"""The convolutional autoencoders: `conv_original` (the original study's 7x7x8 code), `conv` (the same layers
with a Dense code of any size) and `conv_strided` (a strided down-sampling conv, a Dense code and an optional
linear path)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from aejax.config import CONV_ORIGINAL_CODE, CONV_ORIGINAL_FEATURES, MNIST_SHAPE, Config
from aejax.errors import AejaxError
from aejax.models import ops
from aejax.models.layers import (
    Array,
    Autoencoder,
    Conv,
    ConvPool3x3,
    Upsample2x2,
    check_float_input,
    crop_to,
    pad_to_4,
    pixels,
    pooled_shape,
)
from aejax.models.registry import compute_dtype, conv_impl, image_shape, register_model, widths


class ConvAutoencoder(Autoencoder):
    """Conv + max-pool encoder, transpose-conv decoder.

    With `latent_dim=None` it is the original (on 28x28x1 images): Conv(1->64, 3x3, same), ReLU, pool 2;
    Conv(64->8, 3x3, same), ReLU, pool 2 -> code [B, 7, 7, 8] (392 values); ConvT(8->64, 2x2, stride 2), ReLU;
    ConvT(64->1, 2x2, stride 2), sigmoid. With an integer `latent_dim` a linear Dense bottleneck maps the
    7x7xF feature map to exactly `latent_dim` values and a Dense + ReLU maps it back, so the code matches a
    linear model's depth. Any `image_shape` (H, W, C): the first conv reads C channels and the last transpose
    conv writes C; an image whose sides 4 does not divide is zero-padded at the bottom and right to the next
    multiples of 4 (25x25 -> 28x28, feature map 7x7) and the output cropped back to H x W.
    `features` sets the two conv widths; the decoder mirrors them. (ReLU and max-pool commute; pooling first
    is cheaper.) `impl` chooses how the layers compute, not what: `ops` (`aejax.models.ops`, whose derivative rules
    make this model fast on CPU) or `xla` (lax convolutions, for GPUs and TPUs); the parameters are the same.
    """

    latent_dim: int | None = None
    features: Sequence[int] = (64, 8)
    dtype: jnp.dtype = jnp.float32
    impl: str = "ops"
    image_shape: tuple[int, int, int] = MNIST_SHAPE

    def setup(self) -> None:
        f1, f2 = self.features
        self.conv1 = ConvPool3x3(f1, dtype=self.dtype, impl=self.impl)
        self.conv2 = ConvPool3x3(f2, dtype=self.dtype, impl=self.impl)
        if self.latent_dim is not None:
            self.to_code = nn.Dense(self.latent_dim, dtype=self.dtype)
            self.from_code = nn.Dense(pixels(pooled_shape(self.image_shape)) * f2, dtype=self.dtype)
        self.deconv1 = Upsample2x2(f1, dtype=self.dtype, impl=self.impl)
        self.deconv2 = Upsample2x2(self.image_shape[2], dtype=self.dtype, impl=self.impl)

    def encode(self, x: Array) -> Array:  # [B, H, W, C] -> [B, d] or [B, H/4, W/4, f2] (MNIST: 28 -> 7)
        check_float_input(x)
        h = nn.relu(self.conv1(pad_to_4(x)))  # [B, H/2, W/2, f1]
        h = nn.relu(self.conv2(h))  # [B, H/4, W/4, f2]
        if self.latent_dim is None:
            return h
        return self.to_code(h.reshape(h.shape[0], -1))

    def decode_logits(self, z: Array) -> Array:  # code -> [B, H, W, C]
        if self.latent_dim is None:
            h = z
        else:
            h = nn.relu(self.from_code(z)).reshape(z.shape[0], *pooled_shape(self.image_shape), self.features[1])
        h = nn.relu(self.deconv1(h))  # [B, 7, 7, 2, 2, f1]: a 14x14 map in block layout (xla: [B, 14, 14, f1])
        out = self.deconv2(h)  # ops: [B, 7, 7, 2, 2, 2, 2, C] in block layout; xla: [B, 28, 28, C]
        return crop_to(ops.unblock(out) if self.impl == "ops" else out, self.image_shape)


class StridedConvAutoencoder(Autoencoder):
    """Conv + max-pool, then learned (strided) down-sampling, a Dense code, and a transpose-conv decoder.

    Encoder (shapes for MNIST): Conv 3x3 (C -> f1), ReLU, max-pool 2 -> [B, 14, 14, f1] (with `pool=False`
    instead a Conv 2x2 stride 2, ReLU: learned down-sampling throughout); Conv 2x2 stride 2 (f1 -> f2), ReLU ->
    [B, 7, 7, f2]; flatten; optionally Dense `hidden`, ReLU; Dense -> d (linear: the code). Decoder, mirrored:
    optionally Dense `hidden`, ReLU; Dense -> 7x7xf2, ReLU; transpose conv 2x2 stride 2 (f2 -> f1), ReLU;
    optionally (`refine`) Conv 3x3 (f1 -> f1), ReLU; transpose conv 2x2 stride 2 (f1 -> C), sigmoid.
    With `linear=True` the code also reads the pixels (the last Dense sees the conv features and the H*W*C
    input values, i.e. a linear encoder is added to the code) and a Dense d -> H*W*C is added to the output
    logits: a linear autoencoder inside the conv one, through the same d-value code (no path from encoder to
    decoder bypasses it). Any `image_shape`: padded and cropped as in `ConvAutoencoder` (sides not divisible by
    4 are zero-padded at the bottom and right to the next multiple of 4, the output cut back).
    The strided convolution replaces the second max-pool, which keeps one value of four and so loses the detail
    a code of 128 or 256 values could hold.
    """

    latent_dim: int
    features: Sequence[int] = (32, 64)
    hidden: int = 0
    refine: bool = False
    pool: bool = True
    linear: bool = False
    dtype: jnp.dtype = jnp.float32
    impl: str = "ops"
    image_shape: tuple[int, int, int] = MNIST_SHAPE

    def setup(self) -> None:
        f1, f2 = self.features
        if self.linear:
            self.to_pixels = nn.Dense(pixels(self.image_shape), dtype=self.dtype)
        self.conv1 = (ConvPool3x3(f1, dtype=self.dtype, impl=self.impl) if self.pool
                      else Conv(f1, 2, dtype=self.dtype, impl=self.impl))
        self.down = Conv(f2, 2, dtype=self.dtype, impl=self.impl)
        dense = functools.partial(nn.Dense, dtype=self.dtype)
        self.encoder_dense = ([dense(self.hidden)] if self.hidden else []) + [dense(self.latent_dim)]
        self.decoder_dense = ([dense(self.hidden)] if self.hidden else []) + [
            dense(pixels(pooled_shape(self.image_shape)) * f2)]
        self.deconv1 = Upsample2x2(f1, dtype=self.dtype, impl=self.impl)
        if self.refine:
            self.conv_refine = Conv(f1, 3, dtype=self.dtype, impl=self.impl)
        self.deconv2 = Upsample2x2(self.image_shape[2], dtype=self.dtype, impl=self.impl)

    def encode(self, x: Array) -> Array:  # [B, H, W, C] -> [B, d]
        check_float_input(x)
        h = nn.relu(self.conv1(pad_to_4(x)))  # [B, 14, 14, f1]
        h = nn.relu(self.down(h))  # [B, 7, 7, f2]
        h = h.reshape(h.shape[0], -1)
        for layer in self.encoder_dense[:-1]:
            h = nn.relu(layer(h))
        if self.linear:
            h = jnp.concatenate([h, x.reshape(x.shape[0], -1).astype(h.dtype)], axis=-1)
        return self.encoder_dense[-1](h)

    def decode_logits(self, z: Array) -> Array:  # [B, d] -> [B, H, W, C]
        h = z
        for layer in self.decoder_dense:
            h = nn.relu(layer(h))
        h = h.reshape(z.shape[0], *pooled_shape(self.image_shape), self.features[1])
        h = nn.relu(self.deconv1(h))  # ops: [B, 7, 7, 2, 2, f1] (block layout); xla: [B, 14, 14, f1]
        if self.refine:
            h = nn.relu(self.conv_refine(ops.unblock(h) if self.impl == "ops" else h))  # [B, 14, 14, f1]
        out = self.deconv2(h)
        out = crop_to(ops.unblock(out) if self.impl == "ops" else out, self.image_shape)
        if self.linear:
            out = out + self.to_pixels(z).reshape(out.shape)
        return out




def _conv_original(config: Config) -> ConvAutoencoder:
    if image_shape(config) != MNIST_SHAPE:
        raise AejaxError(f"conv_original is the original study's model for 28x28x1 images (a 7x7x8 code of 392); "
                         f"these images are {'x'.join(map(str, config.image_shape))}: use model conv")
    return ConvAutoencoder(None, CONV_ORIGINAL_FEATURES, dtype=compute_dtype(config), impl=conv_impl(config))




register_model("conv", lambda c: ConvAutoencoder(c.latent_dim, widths(c, "features", 2), dtype=compute_dtype(c),
                                                 impl=conv_impl(c), image_shape=image_shape(c)),
               kwargs={"features": [32, 32], "impl": "auto"})
register_model("conv_original", _conv_original, kwargs={"impl": "auto"}, latent_dim=CONV_ORIGINAL_CODE)
register_model("conv_strided", lambda c: StridedConvAutoencoder(
    c.latent_dim, widths(c, "features", 2), c.model_kwargs["hidden"], c.model_kwargs["refine"],
    c.model_kwargs["pool"], c.model_kwargs["linear"], dtype=compute_dtype(c), impl=conv_impl(c),
    image_shape=image_shape(c)),
    kwargs={"features": [32, 32], "hidden": 0, "refine": False, "pool": True, "linear": False, "impl": "auto"})
