"""Training losses as functions, chosen by name from one registry (`register_loss`).

A loss is `loss(model, params, inputs, targets, key) -> (scalar, aux)`: `inputs` are what the model sees (a
corrupted copy of the batch when denoising), `targets` the clean float batch `[B, H, W, C]` in [0, 1], `key`
a PRNG key of this step (None where a caller has none; a loss that samples must then say so), and `aux` a dict
of scalars that `aejax.run` averages per epoch into `metrics.jsonl` and evaluates on the test set into
`results.json`. Weights a loss reads from the model (`model.l1_weight`, `model.kl_weight`) are module
attributes, so a sweep can vary them inside one compiled program.

A loss calls `model.apply({"params": params}, x, method=...)`. For a model with other collections (BatchNorm's
`batch_stats`) or dropout, `model` is a `StatefulModel`: the same call adds those collections and a dropout key,
and in training collects the collections' updates, so every registered loss trains such models unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from aejax.errors import AejaxError, check_registration

Array = jax.Array
Loss = Callable[[nn.Module, Any, Array, Array, Array | None], tuple[Array, dict[str, Array]]]


class LossSpec(NamedTuple):
    fn: Loss
    requires: tuple[str, ...]  # model methods or attributes the loss calls or reads


_LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, fn: Loss, *, requires: Collection[str] = (), replace: bool = False) -> None:
    """Make `Config(loss=name)` train with `fn`; `requires` names the model methods or attributes it uses
    (checked when a trainer is built, so a mismatch is a one-line error, not a flax traceback)."""
    check_registration("loss", name, name in _LOSSES, fn, replace,
                       "(model, params, inputs, targets, key) -> (loss, aux)")
    _LOSSES[name] = LossSpec(fn, tuple(requires))


def get_loss(name: str, model: nn.Module | None = None) -> Loss:
    """The loss registered as `name`, checked against `model` when given."""
    if name not in _LOSSES:
        raise AejaxError(f"unknown loss {name!r}; choose one of {', '.join(_LOSSES)} (or register_loss it)")
    spec = _LOSSES[name]
    missing = [r for r in spec.requires if model is not None and not hasattr(model, r)]
    if missing:
        raise AejaxError(f"loss {name!r} needs a model with {', '.join(missing)}; {type(model).__name__} has none")
    return spec.fn


class StatefulModel:
    """A module as a loss sees it when the model has non-parameter collections or a `train` attribute or argument.

    `apply(variables, *args, method=...)` runs `module.apply` with `variables` plus the current `state` (every
    collection but `params`); in training (`mutable`) with those collections mutable and a `dropout` key per
    call (`key` folded with the call's number), and the updated collections become the state the next call (and
    the train step, through `state`) sees; the methods in `train_methods` are called with `train=True`. Every
    other attribute is the module's (`l1_weight`, `encode_stats`), so a loss cannot tell it from the module.
    """

    def __init__(self, module: nn.Module, state: dict[str, Any], key: Array | None, mutable: bool,
                 train_methods: frozenset[str] = frozenset()):
        self.module, self.state, self._key, self._mutable, self._calls = module, dict(state), key, mutable, 0
        self._train_methods = train_methods

    def apply(self, variables: dict[str, Any], *args, method: str | Callable = "__call__", **kwargs) -> Any:
        if isinstance(method, str) and method in self._train_methods:
            kwargs.setdefault("train", True)
        rngs = None
        if self._key is not None:
            rngs = {"dropout": jax.random.fold_in(self._key, self._calls)}
            self._calls += 1
        merged = {**self.state, **variables}
        if not (self._mutable and self.state):
            return self.module.apply(merged, *args, method=method, rngs=rngs, **kwargs)
        out, updates = self.module.apply(merged, *args, method=method, rngs=rngs, mutable=list(self.state),
                                         **kwargs)
        self.state = {**self.state, **updates}
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


def _apply(model: nn.Module, params: Any, x: Array, method: str | Callable = "__call__") -> Array:
    return model.apply({"params": params}, x, method=method)


def _logits(module: nn.Module, x: Array) -> Array:
    return module.decode_logits(module.encode(x))


def mse(model: nn.Module, params: Any, inputs: Array, targets: Array, key: Array | None):
    """Mean squared error per pixel of the reconstruction (the study's loss and metric)."""
    recon = _apply(model, params, inputs).astype(jnp.float32)
    return jnp.mean((recon - targets) ** 2), {}


def bce(model: nn.Module, params: Any, inputs: Array, targets: Array, key: Array | None):
    """Binary cross-entropy per pixel against grey-level targets, from the decoder's logits (stable for any
    logit; no clipping of sigmoid outputs)."""
    logits = _apply(model, params, inputs, _logits).astype(jnp.float32)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets)), {}


def mse_l1(model: nn.Module, params: Any, inputs: Array, targets: Array, key: Array | None):
    """MSE plus `model.l1_weight` times the mean absolute code value (a sparse code); aux: the two terms and
    the fraction of code values that are nonzero."""
    code = _apply(model, params, inputs, "encode")
    recon = _apply(model, params, code, "decode").astype(jnp.float32)
    rec = jnp.mean((recon - targets) ** 2)
    l1 = jnp.mean(jnp.abs(code.astype(jnp.float32)))
    return rec + model.l1_weight * l1, {"recon_mse": rec, "code_l1": l1,
                                         "code_active": jnp.mean((code != 0).astype(jnp.float32))}


def gaussian_kl(mean: Array, log_var: Array) -> Array:
    """KL(N(mean, exp(log_var)) || N(0, 1)) per example, in nats: `[B, d]` -> `[B]`."""
    return 0.5 * jnp.sum(jnp.exp(log_var) + mean ** 2 - 1.0 - log_var, axis=-1)


def elbo(model: nn.Module, params: Any, inputs: Array, targets: Array, key: Array | None):
    """Negative ELBO per image in nats: Bernoulli reconstruction term (cross-entropy summed over the pixels,
    784 on MNIST, from logits) plus `model.kl_weight` times the Gaussian KL, with one code sampled by
    reparameterisation.

    The model needs `encode_stats`. aux: `recon_nats`, `kl_nats` and `elbo_nats` (= -(recon + KL), the bound on
    log p(x) at kl_weight 1; higher is better).
    """
    if key is None:
        raise AejaxError("the elbo loss samples a code and needs a PRNG key")

    def sample_logits(module: nn.Module, x: Array):
        mean, log_var = module.encode_stats(x)
        eps = jax.random.normal(key, mean.shape, jnp.float32)
        z = mean + jnp.exp(0.5 * log_var) * eps.astype(mean.dtype)
        return module.decode_logits(z), mean, log_var

    logits, mean, log_var = model.apply({"params": params}, inputs, method=sample_logits)
    rec = jnp.sum(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets),
                  axis=tuple(range(1, targets.ndim)))  # [B]
    kl = gaussian_kl(mean.astype(jnp.float32), log_var.astype(jnp.float32))  # [B]
    rec, kl = jnp.mean(rec), jnp.mean(kl)
    return rec + model.kl_weight * kl, {"recon_nats": rec, "kl_nats": kl, "elbo_nats": -(rec + kl)}


register_loss("mse", mse)
register_loss("bce", bce, requires=("decode_logits",))
register_loss("mse_l1", mse_l1, requires=("l1_weight",))
register_loss("elbo", elbo, requires=("encode_stats", "decode_logits", "kl_weight"))
