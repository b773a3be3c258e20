"""Hyper-parameter sweeps trained in one compiled program: a grid of members, each a `Config` of its own.

`aejax.run(config, out, sweep={"lr": [1e-3, 3e-3]})` trains every member times every seed as one vmapped
program: the swept values are arrays with a leading member axis, not constants compiled in. What can vary so:

- `lr`, `weight_decay`: optimizer hyper-parameters, held in `optax.inject_hyperparams` state (a schedule keeps
  its shape and scales its peak); `weight_decay` only for an optimizer that takes one;
- `noise_level`: the denoising corruption's strength;
- a model's numeric `model_kwargs` that are module attributes of the same name (`l1_weight`, `kl_weight`): the
  train step clones the module with the member's value.

Everything that sets a shape or the program itself (epochs, batch size, code size, the model) cannot be swept
in one program; run those separately.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aejax import models
from aejax.config import Config
from aejax.errors import AejaxError
from aejax.training import optimizers

Array = jax.Array
OPTIMIZER_HPARAMS = {"lr": "learning_rate", "weight_decay": "weight_decay"}  # setting -> inject_hyperparams name
CONFIG_HPARAMS = (*OPTIMIZER_HPARAMS, "noise_level")


def sweepable(config: Config) -> tuple[str, ...]:
    """The settings of `config` a sweep may vary."""
    config = models.resolve(config)
    numeric = [k for k, v in config.model_kwargs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return (*CONFIG_HPARAMS, *numeric)


def members(config: Config, sweep: Mapping[str, Sequence[float]] | None) -> list[dict[str, float]]:
    """The grid of `sweep` (setting -> values), one dict per member in row-major order; `[{}]` for no sweep.

    Each member must make a valid `Config` (`member_config`), so a bad value fails before any training.
    """
    if not sweep:
        return [{}]
    if not isinstance(sweep, Mapping):
        raise AejaxError(f"sweep must map setting names to lists of values, got {sweep!r}")
    allowed = sweepable(config)
    if "weight_decay" in sweep:
        optimizers.check(models.resolve(config), swept=("weight_decay",))
    for name, values in sweep.items():
        if name not in allowed:
            raise AejaxError(f"cannot sweep {name!r} in one program; sweepable for this config: {', '.join(allowed)}")
        if (isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise AejaxError(f"sweep {name} must be a non-empty list of numbers, got {values!r}")
        if len(set(values)) != len(values):
            raise AejaxError(f"sweep {name} repeats a value: {list(values)}")
    names = list(sweep)
    grid = [dict(zip(names, (float(v) for v in combo), strict=True))
            for combo in itertools.product(*(sweep[n] for n in names))]
    for member in grid:
        member_config(config, member)
    return grid


def member_config(config: Config, member: Mapping[str, float]) -> Config:
    """The config one sweep member trains with: `config` with the member's values (validated)."""
    config = models.resolve(config)
    if not member:
        return config
    fields = {k: v for k, v in member.items() if k in CONFIG_HPARAMS}
    kwargs = {k: v for k, v in member.items() if k not in CONFIG_HPARAMS}
    if kwargs:
        fields["model_kwargs"] = {**config.model_kwargs, **kwargs}
    return models.resolve(config.replace(**fields))


def lane_hparams(grid: list[dict[str, float]], n_seeds: int) -> dict[str, Array]:
    """Per-model values for a stack of len(grid) x n_seeds models (member-major): name -> float32 `[K]`."""
    return {name: jnp.asarray(np.repeat([m[name] for m in grid], n_seeds), jnp.float32) for name in grid[0]}


def check_model(model: nn.Module, grid: list[dict[str, float]]) -> None:
    """Swept model settings must be attributes of the module, or the sweep would not reach the model."""
    missing = [k for k in grid[0] if k not in CONFIG_HPARAMS and not hasattr(model, k)]
    if missing:
        raise AejaxError(f"cannot sweep {', '.join(missing)}: {type(model).__name__} has no attribute of that "
                         f"name for the train step to set")


def with_model_hparams(model: nn.Module, hparams: Mapping[str, Any]) -> nn.Module:
    """`model` with the swept module attributes among `hparams` set to their (traced) values."""
    values = {k: v for k, v in hparams.items() if k not in CONFIG_HPARAMS}
    return model.clone(**values) if values else model


def label(member: Mapping[str, float]) -> str:
    """'lr=0.003,l1_weight=0.0001': a member as text (for logs, rows and TensorBoard folders)."""
    return ",".join(f"{k}={v:g}" for k, v in member.items())
