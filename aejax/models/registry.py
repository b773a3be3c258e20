"""The model registry: `register_model` (a name -> a builder `Config -> flax module`, with the settings it
reads), `resolve` (a `Config` completed and checked against every registry, once, at the boundary) and `build`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax.config import CONV_IMPLS, MNIST_SHAPE, Config, check_model_kwargs
from aejax.data import datasets
from aejax.errors import AejaxError, check_registration
from aejax.training import losses, optimizers, schedules


def compute_dtype(config: Config) -> jnp.dtype:
    """The dtype a model computes in (`config.dtype`); parameters stay float32."""
    return jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32


def conv_impl(config: Config) -> str:
    """The conv layers' `model_kwargs` `impl` (ops, xla or auto), with `auto` resolved for this process's
    backend: `ops` on CPU, `xla` elsewhere."""
    impl = config.model_kwargs.get("impl", "auto")
    if impl not in CONV_IMPLS:
        raise AejaxError(f"model_kwargs impl must be one of {', '.join(CONV_IMPLS)}, got {impl!r}",
                         cli=f"--conv-impl must be one of {', '.join(CONV_IMPLS)}, got {impl!r}")
    if impl != "auto":
        return impl
    return "ops" if _checking.get() or jax.default_backend() == "cpu" else "xla"


_checking = contextvars.ContextVar("checking", default=False)  # resolve builds a model to check it: no backend


def widths(config: Config, name: str, count: int | None = None) -> tuple[int, ...]:
    """A `model_kwargs` list of layer widths (`hidden`, `features`) as a tuple of positive integers (`count` of
    them where the architecture fixes how many)."""
    values = config.model_kwargs[name]
    if not (isinstance(values, (list, tuple)) and all(type(v) is int and v > 0 for v in values)
            and (count is None or len(values) == count)):
        flag = {"hidden": "--hidden", "features": "--conv-features"}.get(name, f"model_kwargs {name}")
        need = f"{count} positive integers" if count else "a list of positive integers"
        raise AejaxError(f"model_kwargs {name} must be {need}, got {values!r}", cli=f"{flag} must be {need}, "
                                                                                     f"got {values!r}")
    return tuple(values)


class ModelSpec(NamedTuple):
    """How a registered model is built and the settings it takes."""

    builder: Callable[[Config], nn.Module]
    kwargs: Mapping[str, Any]  # the model_kwargs it accepts, with their defaults (JSON values)
    loss: str  # its default loss
    latent_dim: int | None  # a fixed code size, or None for any


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[[Config], nn.Module], *, kwargs: Mapping[str, Any] | None = None,
                   loss: str = "mse", latent_dim: int | None = None, replace: bool = False) -> None:
    """Make `Config(model=name)` build `builder(config)`, a flax module that keeps the contract in
    `aejax.models`.

    `kwargs`: every setting of the model, which `Config.model_kwargs` may give it, with defaults (numbers,
    strings, booleans or lists of them; the built-in models take `hidden` for dense widths, `features` for conv
    widths, `impl` for how conv layers compute); the builder reads them from `config.model_kwargs`, which a
    resolved config holds complete. `loss`: the loss a config of this model gets unless it names one;
    `latent_dim`: a fixed code size. Registering a taken name is an error unless `replace`.
    """
    check_registration("model", name, name in _MODELS, builder, replace, "its builder: Config -> flax module")
    _MODELS[name] = ModelSpec(builder, dict(kwargs or {}), loss, latent_dim)


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
    schedules.check(resolved)
    if spec.latent_dim is not None and resolved.latent_dim != spec.latent_dim:
        raise AejaxError(f"{config.model} has a fixed code of {spec.latent_dim} values; "
                         f"latent_dim must be {spec.latent_dim}, got {config.latent_dim}")
    token = _checking.set(True)  # impl auto builds the same module either way: no need to start the backend
    try:
        losses.get_loss(resolved.loss, _construct(resolved))
    finally:
        _checking.reset(token)
    return resolved


def build(config: Config) -> nn.Module:
    """The model a config names, resolved first (parameters stay fp32; `dtype` sets the compute precision;
    a conv model's `impl` `auto` is decided for this process's backend)."""
    return _construct(resolve(config))


def _construct(config: Config) -> nn.Module:
    model = model_spec(config.model).builder(config)
    if not isinstance(model, nn.Module):
        raise AejaxError(f"the builder of model {config.model!r} returned {type(model).__name__}, not a flax module")
    missing = [name for name in ("encode", "decode") if not callable(getattr(model, name, None))]
    if missing:
        raise AejaxError(f"model {config.model!r} ({type(model).__name__}) has no {' or '.join(missing)} method; "
                         f"every model keeps the contract in aejax.models: encode, decode_logits, decode, __call__")
    for name in train_methods(model):
        default = inspect.signature(getattr(type(model), name)).parameters["train"].default
        if default is not False:
            raise AejaxError(f"model {config.model!r} ({type(model).__name__}): its {name} takes train without the "
                             f"default False; evaluation and inference call it without train, in inference mode")
    return model


CONTRACT_METHODS = ("__call__", "encode", "decode", "decode_logits", "encode_stats")


def train_methods(model: nn.Module) -> frozenset[str]:
    """The contract's methods of `model` that take a `train` argument (the Flax examples' convention), which the
    train step calls with `train=True`."""
    takes = set()
    for name in CONTRACT_METHODS:
        method = getattr(type(model), name, None)
        with contextlib.suppress(TypeError, ValueError):
            if callable(method) and "train" in inspect.signature(method).parameters:
                takes.add(name)
    return frozenset(takes)


def param_count(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def image_shape(config: Config) -> tuple[int, int, int]:
    """The (H, W, C) a built-in model is built for: `config.image_shape` (a resolved config has it)."""
    return tuple(config.image_shape) if config.image_shape else MNIST_SHAPE


