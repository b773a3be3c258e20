"""The fully connected autoencoder (`--model linear`): the original study's Dense(P->d), Dense(d->P), and its
deeper mirrored variants (`hidden`)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from aejax.config import MNIST_SHAPE, Config
from aejax.errors import AejaxError
from aejax.models.layers import ACTIVATIONS, Array, Autoencoder, check_float_input, pixels
from aejax.models.registry import compute_dtype, image_shape, register_model, widths


class LinearAutoencoder(Autoencoder):
    """Fully connected autoencoder; with `hidden=()` the original: Dense(P->d), Dense(d->P), sigmoid, for
    P = H * W * C input values (784 on MNIST).

    `hidden` adds mirrored layers: P -> h1 -> ... -> d (linear code) -> ... -> h1 -> P, with `activation`
    (a name in `ACTIVATIONS`; ReLU by default, `sigmoid` the logistic units of Hinton & Salakhutdinov 2006).
    """

    latent_dim: int
    hidden: Sequence[int] = ()
    dtype: jnp.dtype = jnp.float32
    activation: str = "relu"
    image_shape: tuple[int, int, int] = MNIST_SHAPE

    def setup(self) -> None:
        self.encoder_layers = [nn.Dense(h, dtype=self.dtype) for h in self.hidden] + [
            nn.Dense(self.latent_dim, dtype=self.dtype)]
        self.decoder_layers = [nn.Dense(h, dtype=self.dtype) for h in reversed(self.hidden)] + [
            nn.Dense(pixels(self.image_shape), dtype=self.dtype)]

    def encode(self, x: Array) -> Array:  # [B, H, W, C] -> [B, d]
        check_float_input(x)
        h = x.reshape(x.shape[0], pixels(self.image_shape))
        for layer in self.encoder_layers[:-1]:
            h = ACTIVATIONS[self.activation](layer(h))
        return self.encoder_layers[-1](h)

    def decode_logits(self, z: Array) -> Array:  # [B, d] -> [B, H, W, C]
        h = z
        for layer in self.decoder_layers[:-1]:
            h = ACTIVATIONS[self.activation](layer(h))
        return self.decoder_layers[-1](h).reshape(z.shape[0], *self.image_shape)




def _linear(config: Config) -> LinearAutoencoder:
    activation = config.model_kwargs["activation"]
    if activation not in ACTIVATIONS:
        raise AejaxError(f"model_kwargs activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    hidden = widths(config, "hidden")
    if activation != "relu" and not hidden:
        raise AejaxError(f"model_kwargs activation {activation!r} needs hidden layers (hidden=...)",
                         cli=f"model_kwargs activation {activation!r} needs hidden layers (--hidden)")
    return LinearAutoencoder(config.latent_dim, hidden, dtype=compute_dtype(config), activation=activation,
                             image_shape=image_shape(config))


register_model("linear", _linear, kwargs={"activation": "relu", "hidden": []})
