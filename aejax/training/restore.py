"""Reloading a trained model from its run directory alone (`load_model`): the config from `config.json`, the
parameters from the latest readable checkpoint; and starting a run from another's parameters (`warm_start`).
It sits above training (it rebuilds the trainer to know the state's layout).

The checkpoint layout (orbax, `checkpoints/<epoch>/`): item `state`, a `TrainState` (`step`, `params`,
`opt_state`, `model_state`: the model's other collections, `{}` for most) whose every leaf has a leading axis of
K models, seeds in the order of `config.json`'s `seeds`,
or sweep members x seeds (member-major); item `meta`, JSON with the epoch, the seeds, the config and the sweep.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax import models
from aejax.config import Config
from aejax.errors import AejaxError
from aejax.training import checkpoint, sweeps
from aejax.training import step as train
from aejax.training.select import BEST_DIR


def load_model(run_dir: str | Path, seed: int | None = None,
               member: int | dict[str, float] | None = None) -> tuple[nn.Module, dict, Config]:
    """Reload a trained model from a run directory's latest checkpoint: `(model, variables, config)`, where
    `variables` is what `model.apply` and `aejax.encode` / `decode` / `reconstruct` take: `{"params": ...}` plus
    the model's other collections (BatchNorm statistics), if any.

    `seed` picks one of the run's seeds (default: its first); in a sweep, `member` picks a member by index or by
    its values (default: the first), and the config returned is that member's. No training, no data needed. A
    run of a plug-in model needs the module that registers it imported first.
    """
    run_dir = Path(run_dir)
    config, seeds, grid = _read_run(run_dir)
    if seed is not None and seed not in seeds:
        raise AejaxError(f"{run_dir} has seeds {seeds}, not {seed}")
    if member is None:
        m = 0
    elif isinstance(member, dict) and member in grid:
        m = grid.index(member)
    elif isinstance(member, int) and not isinstance(member, bool) and 0 <= member < len(grid):
        m = member
    else:
        raise AejaxError(f"{run_dir} has sweep members {grid}; member must be one of them or an index, "
                         f"got {member!r}")
    config, state = _trained_state(run_dir, config, seeds, grid)
    lane = m * len(seeds) + (seeds.index(seed) if seed is not None else 0)
    member_config = sweeps.member_config(config, grid[m])
    return models.build(member_config), train.unstack(train.variables(state), lane), member_config


def load_models(run_dir: str | Path) -> list[tuple[int, dict[str, float], nn.Module, dict, Config]]:
    """Every model a run trained, from one restore: `(seed, member values, model, variables, member config)` for
    each sweep member and seed, in the run's order (what `load_model` returns for one of them)."""
    run_dir = Path(run_dir)
    config, seeds, grid = _read_run(run_dir)
    config, state = _trained_state(run_dir, config, seeds, grid)
    variables = train.variables(state)
    out = []
    for m, values in enumerate(grid):
        member_config = sweeps.member_config(config, values)
        model = models.build(member_config)
        out += [(seed, values, model, train.unstack(variables, m * len(seeds) + i), member_config)
                for i, seed in enumerate(seeds)]
    return out


def _read_run(run_dir: Path) -> tuple[Config, list, list]:
    """(config, seeds, sweep members) from a run directory's config.json, or a one-line error."""
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        return Config.from_dict(saved["config"]), list(saved["seeds"]), saved.get("sweep") or [{}]
    except FileNotFoundError:
        raise AejaxError(f"{run_dir} holds no aejax run (no config.json)") from None
    except NotADirectoryError:
        raise AejaxError(f"{run_dir} is a file; load_model takes a run directory") from None
    except (ValueError, KeyError, TypeError) as e:
        raise AejaxError(f"{run_dir / 'config.json'} is not a valid run config ({e})") from None


def _trained_state(run_dir: Path, config: Config, seeds: list, grid: list) -> tuple[Config, train.TrainState]:
    """The resolved config and the stacked state (every lane) of the models a run's results score: its best
    epoch's with select best, else its latest readable checkpoint."""
    config = models.resolve(config)  # once: the trainer and the member's model take it as it is
    trainer = train.make_trainer(config, swept=list(grid[0]))
    target = _abstract_state(trainer, len(grid) * len(seeds))
    directory = run_dir / (BEST_DIR if config.select == "best" else "checkpoints")
    return config, checkpoint.restore(checkpoint.manager(directory, config.keep_checkpoints, read_only=True),
                                      target)[0]


def warm_start(config: Config, state: train.TrainState, log: Callable[[str], None]) -> train.TrainState:
    """`state` (K freshly initialised lanes) with the parameters and model state of the run `config.init_from`
    (one model, copied to every lane, or K models, lane for lane), its optimizer state and step left fresh."""
    if config.init_from is None:
        return state
    source = Path(config.init_from)
    try:
        saved = json.loads((source / "config.json").read_text())
        other, seeds, grid = Config.from_dict(saved["config"]), list(saved["seeds"]), saved.get("sweep") or [{}]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AejaxError(f"init_from {source}: not a readable aejax run ({type(e).__name__})",
                         cli=f"--init-from {source}: not a readable aejax run ({type(e).__name__})") from None
    _, trained = _trained_state(source, other, seeds, grid)
    k, theirs = len(jax.tree_util.tree_leaves(state.params)[0]), len(seeds) * len(grid)
    if theirs not in (1, k):
        message = f"{source} holds {theirs} models; this run trains {k}: start from a run of one model (copied " \
                  f"to every one) or of as many"
        raise AejaxError(f"init_from {message}", cli=f"--init-from {message}")
    wanted = {"params": state.params, "model_state": state.model_state}
    given = {"params": trained.params, "model_state": trained.model_state}
    problems = checkpoint.shape_mismatches(jax.tree_util.tree_map(lambda x: x[0], given),
                                           jax.tree_util.tree_map(lambda x: x[0], wanted))
    if problems:
        message = f"{source} does not fit this model: {'; '.join(problems[:3])}"
        raise AejaxError(f"init_from {message}", cli=f"--init-from {message}")
    copied = jax.tree_util.tree_map(lambda mine, its: jnp.broadcast_to(its, mine.shape).astype(mine.dtype),
                                    wanted, given)
    log(f"initialised from {source}: {'its model, in every lane' if theirs == 1 else 'its models, lane for lane'}; "
        f"a fresh optimizer")
    return state._replace(params=copied["params"], model_state=copied["model_state"])


def _abstract_state(trainer: train.Trainer, k: int) -> train.TrainState:
    """Shapes and dtypes of a stack of `k` train states, placed on this process's first device (whatever
    devices wrote the checkpoint)."""
    keys = jax.random.split(jax.random.key(0), k)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                  jax.eval_shape(jax.vmap(functools.partial(train.init_state, trainer)), keys))
