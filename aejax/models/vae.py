"""`--model vae`: a variational autoencoder with a Gaussian encoder, trained with the `elbo` loss.

Built only on aejax's public surface (`register_model`, `Config.model_kwargs`, the model contract in
`aejax.models`), as an outside researcher would add a model. model_kwargs: `kl_weight` (1.0: the ELBO; other
values: a beta-VAE), sweepable. The metrics score `decode(encode(x))` with the mean code.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax.config import MNIST_SHAPE, Config
from aejax.models.layers import Autoencoder, check_float_input, pixels
from aejax.models.registry import compute_dtype, image_shape, register_model, widths

Array = jax.Array


class VAE(Autoencoder):
    """H*W*C -> hidden (ReLU) -> (mean, log variance) of a `latent_dim` Gaussian code -> mirrored decoder."""

    latent_dim: int
    hidden: Sequence[int] = ()
    kl_weight: float = 1.0
    dtype: jnp.dtype = jnp.float32
    image_shape: tuple[int, int, int] = MNIST_SHAPE

    def setup(self) -> None:
        self.encoder_layers = [nn.Dense(h, dtype=self.dtype) for h in self.hidden]
        self.to_stats = nn.Dense(2 * self.latent_dim, dtype=self.dtype)
        self.decoder_layers = [nn.Dense(h, dtype=self.dtype) for h in reversed(self.hidden)] + [
            nn.Dense(pixels(self.image_shape), dtype=self.dtype)]

    def encode_stats(self, x: Array) -> tuple[Array, Array]:  # [B, H, W, C] -> ([B, d], [B, d])
        check_float_input(x)
        h = x.reshape(x.shape[0], pixels(self.image_shape))
        for layer in self.encoder_layers:
            h = nn.relu(layer(h))
        mean, log_var = jnp.split(self.to_stats(h), 2, axis=-1)
        return mean, log_var

    def encode(self, x: Array) -> Array:  # the mean code [B, d]
        return self.encode_stats(x)[0]

    def decode_logits(self, z: Array) -> Array:  # [B, d] -> [B, H, W, C]
        h = z
        for layer in self.decoder_layers[:-1]:
            h = nn.relu(layer(h))
        return self.decoder_layers[-1](h).reshape(z.shape[0], *self.image_shape)


def build(config: Config) -> VAE:
    return VAE(config.latent_dim, widths(config, "hidden"), config.model_kwargs["kl_weight"],
               dtype=compute_dtype(config), image_shape=image_shape(config))


register_model("vae", build, kwargs={"kl_weight": 1.0, "hidden": []}, loss="elbo")
