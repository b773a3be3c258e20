"""The model registry: `register_model` (a name -> a builder `Config -> flax module`, with the settings it
reads), `resolve` (a `Config` completed and checked against every registry, once, at the boundary) and `build`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax.config import MNIST_SHAPE, MODEL_FIELDS, Config, check_model_kwargs, check_read
from aejax.data import datasets
from aejax.errors import AejaxError, check_registration
from aejax.training import losses, optimizers


def compute_dtype(config: Config) -> jnp.dtype:
    """The dtype a model computes in (`config.dtype`); parameters stay float32."""
    return jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32


def conv_impl(config: Config) -> str:
    """`config.conv_impl`, with `auto` resolved for this process's backend: `ops` on CPU, `xla` elsewhere."""
    if config.conv_impl != "auto":
        return config.conv_impl
    return "ops" if jax.default_backend() == "cpu" else "xla"


class ModelSpec(NamedTuple):
    """How a registered model is built and which settings it reads."""

    builder: Callable[[Config], nn.Module]
    kwargs: Mapping[str, Any]  # the model_kwargs it accepts, with their defaults (JSON values)
    reads: Callable[[Config], Collection[str]]  # which of Config's model-specific fields it reads
    loss: str  # its default loss
    latent_dim: int | None  # a fixed code size, or None for any


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[[Config], nn.Module], *, kwargs: Mapping[str, Any] | None = None,
                   reads: Collection[str] | Callable[[Config], Collection[str]] = (), loss: str = "mse",
                   latent_dim: int | None = None, replace: bool = False) -> None:
    """Make `Config(model=name)` build `builder(config)`, a flax module that keeps the contract above.

    `kwargs`: the settings `Config.model_kwargs` may give it, with defaults (numbers, strings, booleans or lists
    of them); `reads`: which of `hidden` / `conv_features` / `conv_impl` it reads (others must stay at their
    defaults), or a function of the config saying so; `loss`: the loss a config of this model gets unless it names one;
    `latent_dim`: a fixed code size. Registering a taken name is an error unless `replace`.
    """
    check_registration("model", name, name in _MODELS, builder, replace, "its builder: Config -> flax module")
    reads_fn = reads if callable(reads) else (lambda config, fields=tuple(reads): fields)
    unknown = set(reads) - set(MODEL_FIELDS) if not callable(reads) else set()
    if unknown:
        raise AejaxError(f"reads may name {', '.join(MODEL_FIELDS)}, got {sorted(unknown)}")
    _MODELS[name] = ModelSpec(builder, dict(kwargs or {}), reads_fn, loss, latent_dim)


def model_spec(name: str) -> ModelSpec:
    if name not in _MODELS:
        raise AejaxError(f"unknown model {name!r}; choose one of {', '.join(_MODELS)} (or register_model it)")
    return _MODELS[name]


def resolve(config: Config) -> Config:
    """`config` completed and checked against the registries: the model's default loss when none is named, its
    `model_kwargs` defaults under the given ones, the image shape (the dataset's, unless set), a code no larger
    than an image, a fixed code size, settings the model would not read, the optimizer and the loss's needs.
    Raises `AejaxError` (one line) for the first problem. Builds the module to check it, which touches no JAX
    backend. Idempotent: what `config.json` holds is a resolved config.

    A config this returns is marked resolved (`is_resolved`), so passing it down (to `make_trainer`, `build`,
    the sweeps) resolves nothing again; a changed copy (`config.replace(...)`) is a new, unresolved config."""
    if is_resolved(config):
        return config
    resolved = _resolve(config)
    object.__setattr__(resolved, _RESOLVED, True)  # not a field: not compared, not in config.json
    return resolved


_RESOLVED = "_resolved"


def is_resolved(config: Config) -> bool:
    """Whether `config` came from `resolve` (and so needs no second check)."""
    return getattr(config, _RESOLVED, False)


def _resolve(config: Config) -> Config:
    spec = model_spec(config.model)
    if not isinstance(config.model_kwargs, dict):
        raise AejaxError(f"model_kwargs must be a mapping of names to values, got {config.model_kwargs!r}")
    check_model_kwargs(config, spec.kwargs)
    shape = config.image_shape or datasets.known_shape(config.dataset)
    if shape is None:
        raise AejaxError(f"the image shape of dataset {config.dataset!r} is known only from its data: train it with "
                         f"aejax.run (which sets image_shape from the data) or set image_shape H,W,C")
    resolved = dataclasses.replace(config, loss=config.loss if config.loss is not None else spec.loss,
                                   model_kwargs={**spec.kwargs, **config.model_kwargs}, image_shape=tuple(shape))
    if resolved.latent_dim > resolved.pixels:
        raise AejaxError(f"latent_dim must be in 1..{resolved.pixels} (the values of one "
                         f"{'x'.join(map(str, shape))} image), got {config.latent_dim}")
    optimizers.check(resolved)
    if spec.latent_dim is not None and resolved.latent_dim != spec.latent_dim:
        raise AejaxError(f"{config.model} has a fixed code of {spec.latent_dim} values; "
                         f"latent_dim must be {spec.latent_dim}, got {config.latent_dim}")
    check_read(resolved, set(spec.reads(resolved)))
    probe = resolved if resolved.conv_impl != "auto" else resolved.replace(conv_impl="ops")  # no backend query
    losses.get_loss(resolved.loss, _construct(probe))
    return resolved


def build(config: Config) -> nn.Module:
    """The model a config names, resolved first (parameters stay fp32; `dtype` sets the compute precision;
    `conv_impl` `auto` is decided for this process's backend)."""
    return _construct(resolve(config))


def _construct(config: Config) -> nn.Module:
    model = model_spec(config.model).builder(config)
    if not isinstance(model, nn.Module):
        raise AejaxError(f"the builder of model {config.model!r} returned {type(model).__name__}, not a flax module")
    return model


def param_count(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def image_shape(config: Config) -> tuple[int, int, int]:
    """The (H, W, C) a built-in model is built for: `config.image_shape` (a resolved config has it)."""
    return tuple(config.image_shape) if config.image_shape else MNIST_SHAPE


