"""A model with BatchNorm and dropout, registered from outside the package as a researcher would (only aejax's
public surface): `--plugin tests.stateful_plugin --model conv_bn`.

Encoder: Conv 3x3 stride 2 (C -> 8), BatchNorm, ReLU, dropout, Dense -> d. Decoder: Dense, ReLU, transpose
conv 3x3 stride 2 (8 -> C), cropped to H x W. Any image shape.
"""

from __future__ import annotations

import flax.linen as nn
import jax

import aejax
from aejax.models import Autoencoder, check_float_input

Array = jax.Array


class ConvBN(Autoencoder):
    latent_dim: int
    image_shape: tuple[int, int, int]
    rate: float = 0.2
    train: bool = False  # the train step sets it; evaluation and inference use the running statistics

    def setup(self) -> None:
        h, w, c = self.image_shape
        self.half = (-(-h // 2), -(-w // 2))
        self.conv = nn.Conv(8, (3, 3), strides=(2, 2))
        self.norm = nn.BatchNorm(use_running_average=not self.train, momentum=0.9)
        self.drop = nn.Dropout(self.rate, deterministic=not self.train)
        self.to_code = nn.Dense(self.latent_dim)
        self.from_code = nn.Dense(self.half[0] * self.half[1] * 8)
        self.deconv = nn.ConvTranspose(c, (3, 3), strides=(2, 2))

    def encode(self, x: Array) -> Array:  # [B, H, W, C] -> [B, d]
        check_float_input(x)
        h = nn.relu(self.norm(self.conv(x)))  # [B, H/2, W/2, 8]
        return self.to_code(self.drop(h.reshape(h.shape[0], -1)))

    def decode_logits(self, z: Array) -> Array:  # [B, d] -> [B, H, W, C]
        h = nn.relu(self.from_code(z)).reshape(z.shape[0], *self.half, 8)
        out = self.deconv(h)  # [B, 2 * ceil(H/2), 2 * ceil(W/2), C]
        return out[:, : self.image_shape[0], : self.image_shape[1]]


aejax.register_model("conv_bn", lambda c: ConvBN(c.latent_dim, tuple(c.image_shape), c.model_kwargs["rate"]),
                     kwargs={"rate": 0.2}, replace=True)


class ConvBNArg(Autoencoder):
    """ConvBN as the Flax examples write a model: `train` an argument of the methods, not an attribute."""

    latent_dim: int
    image_shape: tuple[int, int, int]
    rate: float = 0.2

    def setup(self) -> None:
        h, w, c = self.image_shape
        self.half = (-(-h // 2), -(-w // 2))
        self.conv = nn.Conv(8, (3, 3), strides=(2, 2))
        self.norm = nn.BatchNorm(momentum=0.9)
        self.drop = nn.Dropout(self.rate)
        self.to_code = nn.Dense(self.latent_dim)
        self.from_code = nn.Dense(self.half[0] * self.half[1] * 8)
        self.deconv = nn.ConvTranspose(c, (3, 3), strides=(2, 2))

    def encode(self, x: Array, train: bool = False) -> Array:  # [B, H, W, C] -> [B, d]
        check_float_input(x)
        h = nn.relu(self.norm(self.conv(x), use_running_average=not train))  # [B, H/2, W/2, 8]
        return self.to_code(self.drop(h.reshape(h.shape[0], -1), deterministic=not train))

    def decode_logits(self, z: Array) -> Array:  # [B, d] -> [B, H, W, C]
        h = nn.relu(self.from_code(z)).reshape(z.shape[0], *self.half, 8)
        return self.deconv(h)[:, : self.image_shape[0], : self.image_shape[1]]

    def __call__(self, x: Array, train: bool = False) -> Array:
        return self.decode(self.encode(x, train))


aejax.register_model("conv_bn_arg", lambda c: ConvBNArg(c.latent_dim, tuple(c.image_shape)), replace=True)
