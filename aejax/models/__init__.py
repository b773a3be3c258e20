"""Autoencoders as pure `flax.linen` modules, chosen by name from one registry (`aejax.models.registry`).

The model contract (what `aejax.training`, `aejax.evaluation` and `aejax.models.inference` rely on):

- `encode(x)`: float images `[B, H, W, C]` in [0, 1] -> codes `[B, *code]` (deterministic: a VAE's mean).
- `decode_logits(z)`: codes -> pre-sigmoid images `[B, H, W, C]` (what `bce` and `elbo` score, from logits).
- `decode(z)`: codes -> images in [0, 1], `sigmoid(decode_logits(z))`.
- `__call__(x)`: `decode(encode(x))`, the reconstruction the metrics score. None of these takes a PRNG key.
  Subclassing `Autoencoder` gives `decode` and `__call__` from the other two.
- Optional: `encode_stats(x) -> (mean, log_var)`, each `[B, d]`, for a Gaussian encoder (read by the `elbo`
  loss, which samples the code with the train step's key); loss weights as module attributes (`l1_weight`,
  `kl_weight`), read by the losses and sweepable (`aejax.run(sweep=...)` clones the module with a traced value).
- Optional, for models with dropout or BatchNorm: a boolean attribute `train` (default False, inference), which
  the train step sets to True (with a `dropout` PRNG stream and every non-`params` collection, such as
  `batch_stats`, mutable); evaluation and the inference functions use the model as built. Or, as the Flax
  examples write it, a `train: bool = False` argument of the methods (`__call__(self, x, train=False)`, with
  `nn.BatchNorm(use_running_average=not train)`, `nn.Dropout(deterministic=not train)`), which the train step
  passes as True and everything else leaves False.

The image shape (H, W, C) comes from the data: a builder reads `config.image_shape` (set by `resolve` from the
dataset, or by a run from its arrays), and the built-in models take it as their `image_shape` attribute.

Call them with `model.apply(variables, x, method="encode")` (`variables` is `{"params": params}` plus any
other collections). The modules take float input only and
reject uint8 with an error naming `aejax.encode` / `aejax.reconstruct`, which take uint8 or float, with or
without a batch axis, and apply the model chunk by chunk. A model is registered with a builder
`Config -> nn.Module`; its own settings come from `Config.model_kwargs` (merged over the registered defaults, so
`config.json` holds them all and `aejax.training.restore.load_model` rebuilds the same module); `resolve` checks a
`Config` against the registries.
"""

from aejax.models import conv, linear, rate_distortion, sparse, vae  # noqa: F401 - each registers its models
from aejax.models.conv import ConvAutoencoder, StridedConvAutoencoder
from aejax.models.layers import Autoencoder, check_float_input
from aejax.models.linear import LinearAutoencoder
from aejax.models.registry import (
    ModelSpec,
    build,
    model_spec,
    param_count,
    register_model,
    resolve,
    train_methods,
)

__all__ = ["Autoencoder", "ConvAutoencoder", "LinearAutoencoder", "ModelSpec", "StridedConvAutoencoder", "build",
           "check_float_input", "model_spec", "param_count", "register_model", "resolve", "train_methods"]
