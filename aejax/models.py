"""Autoencoders as pure `flax.linen` modules, chosen by name from one registry.

Every model maps uint8-scaled images `[B, 28, 28, 1]` in [0, 1] to reconstructions of the same shape and
exposes `encode` (image -> code), `decode` (code -> image) and `__call__`, usable through
`model.apply(variables, x, method=model.encode)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax import ops
from aejax.config import CONV_ORIGINAL_FEATURES, IMAGE_PIXELS, IMAGE_SHAPE, POOLED_SIDE, Config
from aejax.errors import AejaxError

Array = jax.Array


class LinearAutoencoder(nn.Module):
    """Fully connected autoencoder; with `hidden=()` the original: Dense(784->d), Dense(d->784), sigmoid.

    `hidden` adds mirrored ReLU layers: 784 -> h1 -> ... -> d (linear code) -> ... -> h1 -> 784.
    """

    latent_dim: int
    hidden: Sequence[int] = ()
    dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        self.encoder_layers = [nn.Dense(h, dtype=self.dtype) for h in self.hidden] + [
            nn.Dense(self.latent_dim, dtype=self.dtype)]
        self.decoder_layers = [nn.Dense(h, dtype=self.dtype) for h in reversed(self.hidden)] + [
            nn.Dense(IMAGE_PIXELS, dtype=self.dtype)]

    def encode(self, x: Array) -> Array:  # [B, 28, 28, 1] -> [B, d]
        h = x.reshape(x.shape[0], IMAGE_PIXELS)
        for layer in self.encoder_layers[:-1]:
            h = nn.relu(layer(h))
        return self.encoder_layers[-1](h)

    def decode(self, z: Array) -> Array:  # [B, d] -> [B, 28, 28, 1]
        h = z
        for layer in self.decoder_layers[:-1]:
            h = nn.relu(layer(h))
        return nn.sigmoid(self.decoder_layers[-1](h)).reshape(z.shape[0], *IMAGE_SHAPE)

    def __call__(self, x: Array) -> Array:
        return self.decode(self.encode(x))


class ConvPool3x3(nn.Module):
    """3x3 convolution (stride 1, SAME) followed by a 2x2 max-pool, with bias: [B, H, W, C] -> [B, H/2, W/2, F].

    Same parameters and values as `nn.Conv(features, (3, 3), padding="SAME")` then
    `nn.max_pool(., (2, 2), (2, 2))`; computed by `aejax.ops.conv3x3_max_pool2` for speed.
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return ops.conv3x3_max_pool2(x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)


class Upsample2x2(nn.Module):
    """Transpose convolution, 2x2 kernel, stride 2, in block layout (see `aejax.ops.upsample2x2`):
    [B, H, W, *blocks, C] -> [B, H, W, *blocks, 2, 2, F]; `ops.unblock` turns the result into an image.

    Each input pixel writes its own 2x2 output patch: out[2i+a, 2j+b] = x[i, j] @ kernel[a, b] + bias, the
    same map as `nn.ConvTranspose(features, (2, 2), strides=(2, 2))` (up to its kernel flip convention).
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return ops.upsample2x2(x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)


class ConvAutoencoder(nn.Module):
    """Conv + max-pool encoder, transpose-conv decoder.

    With `latent_dim=None` it is the original: Conv(1->64, 3x3, same), ReLU, pool 2; Conv(64->8, 3x3, same),
    ReLU, pool 2 -> code [B, 7, 7, 8] (392 values); ConvT(8->64, 2x2, stride 2), ReLU; ConvT(64->1, 2x2,
    stride 2), sigmoid. With an integer `latent_dim` a linear Dense bottleneck maps the 7x7xC feature map to
    exactly `latent_dim` values and a Dense + ReLU maps it back, so the code matches a linear model's depth.
    `features` sets the two conv widths; the decoder mirrors them. (ReLU and max-pool commute; pooling first
    is cheaper. The layers are computed by `aejax.ops`, whose hand-written gradients are what make this
    model fast on CPU.)
    """

    latent_dim: int | None = None
    features: Sequence[int] = (64, 8)
    dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        f1, f2 = self.features
        self.conv1 = ConvPool3x3(f1, dtype=self.dtype)
        self.conv2 = ConvPool3x3(f2, dtype=self.dtype)
        if self.latent_dim is not None:
            self.to_code = nn.Dense(self.latent_dim, dtype=self.dtype)
            self.from_code = nn.Dense(POOLED_SIDE * POOLED_SIDE * f2, dtype=self.dtype)
        self.deconv1 = Upsample2x2(f1, dtype=self.dtype)
        self.deconv2 = Upsample2x2(1, dtype=self.dtype)

    def encode(self, x: Array) -> Array:  # [B, 28, 28, 1] -> [B, d] or [B, 7, 7, f2]
        h = nn.relu(self.conv1(x))  # [B, 14, 14, f1]
        h = nn.relu(self.conv2(h))  # [B, 7, 7, f2]
        if self.latent_dim is None:
            return h
        return self.to_code(h.reshape(h.shape[0], -1))

    def decode(self, z: Array) -> Array:  # code -> [B, 28, 28, 1]
        if self.latent_dim is None:
            h = z
        else:
            h = nn.relu(self.from_code(z)).reshape(z.shape[0], POOLED_SIDE, POOLED_SIDE, self.features[1])
        h = nn.relu(self.deconv1(h))  # [B, 7, 7, 2, 2, f1]: a 14x14 map in block layout
        return ops.unblock(nn.sigmoid(self.deconv2(h)))  # [B, 7, 7, 2, 2, 2, 2, 1] -> [B, 28, 28, 1]

    def __call__(self, x: Array) -> Array:
        return self.decode(self.encode(x))


def _dtype(config: Config) -> jnp.dtype:
    return jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32


REGISTRY: dict[str, Callable[[Config], nn.Module]] = {
    "linear": lambda c: LinearAutoencoder(c.latent_dim, tuple(c.hidden), dtype=_dtype(c)),
    "conv": lambda c: ConvAutoencoder(c.latent_dim, tuple(c.conv_features), dtype=_dtype(c)),
    "conv_original": lambda c: ConvAutoencoder(None, CONV_ORIGINAL_FEATURES, dtype=_dtype(c)),
}


def build(config: Config) -> nn.Module:
    """The model a config names (parameters stay fp32; `dtype` sets the compute precision)."""
    if config.model not in REGISTRY:
        raise AejaxError(f"unknown model {config.model!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[config.model](config)


def param_count(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
