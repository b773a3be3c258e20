"""A model written with `flax.nnx`, trained by aejax through `flax.nnx.bridge`: the encoder and decoder are nnx
modules, wrapped by `bridge.ToLinen` inside a thin linen module that keeps aejax's contract (`encode`,
`decode_logits`; `Autoencoder` gives `decode` and `__call__`). Registered from outside the package:
`--plugin tests.nnx_plugin --model nnx_ae`.
"""

from __future__ import annotations

import numpy as np
from flax import nnx
from flax.nnx import bridge

import aejax
from aejax.models import Autoencoder, check_float_input


class Encoder(nnx.Module):
    def __init__(self, pixels: int, latent_dim: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(pixels, 64, rngs=rngs)
        self.code = nnx.Linear(64, latent_dim, rngs=rngs)

    def __call__(self, x):  # [B, H, W, C] -> [B, d]
        return self.code(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))


class Decoder(nnx.Module):
    def __init__(self, latent_dim: int, pixels: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(latent_dim, 64, rngs=rngs)
        self.out = nnx.Linear(64, pixels, rngs=rngs)

    def __call__(self, z):  # [B, d] -> [B, H*W*C] logits
        return self.out(nnx.relu(self.hidden(z)))


class NnxAutoencoder(Autoencoder):
    latent_dim: int
    image_shape: tuple

    def setup(self):
        pixels = int(np.prod(self.image_shape))
        self.encoder = bridge.ToLinen(Encoder, args=(pixels, self.latent_dim))
        self.decoder = bridge.ToLinen(Decoder, args=(self.latent_dim, pixels))

    def encode(self, x):
        check_float_input(x)
        return self.encoder(x)

    def decode_logits(self, z):
        return self.decoder(z).reshape(z.shape[0], *self.image_shape)


aejax.register_model("nnx_ae", lambda c: NnxAutoencoder(c.latent_dim, tuple(c.image_shape)), replace=True)
