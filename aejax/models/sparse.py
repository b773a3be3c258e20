"""`--model sparse`: an autoencoder with a non-negative code and an L1 penalty on it (the `mse_l1` loss).

Built only on aejax's public surface (`register_model`, `Config.model_kwargs`, the model contract in
`aejax.models`). model_kwargs: `l1_weight` (the penalty's weight, sweepable) and `encoder`, `linear` (reading
`hidden`) or `conv` (reading `conv_features` and `conv_impl`). The code is ReLU(the base model's linear code), so the L1
penalty drives code values to exactly zero; `code_active` in metrics.jsonl is the fraction that are not.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from aejax.config import Config
from aejax.errors import AejaxError
from aejax.models.conv import ConvAutoencoder
from aejax.models.layers import Autoencoder
from aejax.models.linear import LinearAutoencoder
from aejax.models.registry import compute_dtype, conv_impl, image_shape, register_model, widths

Array = jax.Array
ENCODERS = ("linear", "conv")


class SparseAutoencoder(Autoencoder):
    """`base` (a linear or depth-matched conv autoencoder) with a ReLU on its code."""

    base: nn.Module
    l1_weight: float = 1e-4

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.base.image_shape

    def encode(self, x: Array) -> Array:  # [B, H, W, C] -> [B, d], non-negative
        return nn.relu(self.base.encode(x))

    def decode_logits(self, z: Array) -> Array:
        return self.base.decode_logits(z)


def _encoder(config: Config) -> str:
    encoder = config.model_kwargs["encoder"]
    if encoder not in ENCODERS:
        raise AejaxError(f"model_kwargs encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    return encoder


KWARGS = {"l1_weight": 1e-4, "encoder": "linear", "hidden": [], "features": [32, 32], "impl": "auto"}
READ_BY = {"hidden": "linear", "features": "conv", "impl": "conv"}  # the encoder each of them shapes


def build(config: Config) -> SparseAutoencoder:
    dtype, encoder = compute_dtype(config), _encoder(config)
    unread = [k for k, reader in READ_BY.items() if reader != encoder and config.model_kwargs[k] != KWARGS[k]]
    if unread:
        raise AejaxError(f"model_kwargs {', '.join(unread)} not read by the {encoder} encoder of model sparse; "
                         f"leave {'it' if len(unread) == 1 else 'them'} at the default")
    if encoder == "linear":
        base = LinearAutoencoder(config.latent_dim, widths(config, "hidden"), dtype=dtype,
                                 image_shape=image_shape(config))
    else:
        base = ConvAutoencoder(config.latent_dim, widths(config, "features", 2), dtype=dtype, impl=conv_impl(config),
                               image_shape=image_shape(config))
    return SparseAutoencoder(base, config.model_kwargs["l1_weight"])


register_model("sparse", build, kwargs=KWARGS, loss="mse_l1")
