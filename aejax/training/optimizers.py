"""Optimizers by name: any optax optimizer, or one registered with `register_optimizer` (a chain, say).

An optimizer is a function `(learning_rate, **kwargs) -> optax.GradientTransformation`, as optax's own are
(`optax.adam`, `optax.lion`, `optax.sgd`, `optax.adafactor`, ...). `Config.optimizer` names it; a registered
name is looked up first, then `optax.<name>`. The learning rate is always the config's schedule (`lr`,
`schedule`, `warmup_epochs`); `Config.weight_decay` is passed to an optimizer that takes a `weight_decay`
argument (to one taking `**kwargs`, only when it is set or swept), and is an error for one that does not,
unless 0; `Config.optimizer_kwargs` are its other arguments,
checked against its signature. `config.json` holds the name and the arguments, so a reloaded run rebuilds the
same optimizer (a registered one needs its module imported first, like a plug-in model).

    aejax.register_optimizer("clipped_lion", lambda learning_rate, clip=1.0, **kw: optax.chain(
        optax.clip_by_global_norm(clip), optax.lion(learning_rate, **kw)))
    aejax.run(Config(optimizer="clipped_lion", optimizer_kwargs={"b1": 0.95}, lr=1e-4), "runs/lion")
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import optax

from aejax.config import Config
from aejax.errors import AejaxError, check_registration

Builder = Callable[..., optax.GradientTransformation]  # (learning_rate, **kwargs) -> transformation

_OPTIMIZERS: dict[str, Builder] = {}
_JSON = (int, float, str, bool, type(None), list)


def register_optimizer(name: str, builder: Builder, *, replace: bool = False) -> None:
    """Make `Config(optimizer=name)` train with `builder(learning_rate, **optimizer_kwargs)` (plus
    `weight_decay=` when its signature has that argument). A registered name hides optax's of the same name."""
    check_registration("optimizer", name, name in _OPTIMIZERS, builder, replace,
                       "(learning_rate, **kwargs) -> optax.GradientTransformation")
    _OPTIMIZERS[name] = builder


def builder(name: str) -> Builder:
    """The optimizer function `name` stands for: a registered one, else optax's."""
    if name in _OPTIMIZERS:
        return _OPTIMIZERS[name]
    fn = getattr(optax, name, None) if not name.startswith("_") else None
    if fn is None or not callable(fn) or "learning_rate" not in _parameters(fn):
        raise AejaxError(f"unknown optimizer {name!r}: neither registered (aejax.register_optimizer) nor an optax "
                         f"optimizer taking a learning_rate (e.g. adam, adamw, sgd, lion, adafactor)")
    return fn


def _parameters(fn: Callable) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def takes(name: str, argument: str) -> bool:
    """Whether optimizer `name` has an argument called `argument` (or takes any keyword)."""
    params = _parameters(builder(name))
    return argument in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check(config: Config, swept: tuple[str, ...] | list[str] = ()) -> None:
    """One-line errors for an optimizer that cannot be built as `config` asks: an unknown name, an argument it
    does not take (or one that `lr` / `weight_decay` set), a weight decay (set or swept) it has no argument for,
    or arguments optax itself refuses."""
    fn = builder(config.optimizer)
    params = _parameters(fn)
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in config.optimizer_kwargs.items():
        if key in ("learning_rate", "weight_decay"):
            flag = "lr and schedule" if key == "learning_rate" else "weight_decay"
            raise AejaxError(f"optimizer_kwargs {key}: set it with {flag}, not in optimizer_kwargs")
        if key not in params and not open_kwargs:
            accepted = [p for p in params if p not in ("learning_rate", "weight_decay")]
            raise AejaxError(f"optimizer {config.optimizer} takes no argument {key!r}; it takes "
                             f"{', '.join(accepted) or 'none besides learning_rate'}")
        if not isinstance(value, _JSON):
            raise AejaxError(f"optimizer_kwargs {key} must be a JSON value (number, string, boolean, list or "
                             f"null), got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise AejaxError(f"optimizer_kwargs {key} must be a finite number, got {value!r}")
        if key in params and _numeric(params[key]) and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise AejaxError(f"optimizer_kwargs {key} must be a number, got {value!r}")
    wants_decay = config.weight_decay != 0 or "weight_decay" in swept
    if wants_decay and not takes(config.optimizer, "weight_decay"):
        raise AejaxError(f"optimizer {config.optimizer} takes no weight_decay; leave weight_decay at 0 (and do not "
                         f"sweep it), or choose one that does (adamw, lion, ...)")
    try:
        build(config, config.lr, config.weight_decay)
    except AejaxError:
        raise
    except Exception as e:  # optax's own checks of its arguments
        raise AejaxError(f"optimizer {config.optimizer} with {config.optimizer_kwargs}: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else 'refused'}") from None
    if config.optimizer in _OPTIMIZERS and _ignores_learning_rate(config):
        raise AejaxError(f"optimizer {config.optimizer} ignores the learning_rate it is given (its first updates "
                         f"are the same at two rates), so lr, schedule and a sweep of lr would change nothing and "
                         f"config.json would record a rate that did not train; pass learning_rate on to the optax "
                         f"optimizer, or choose its schedule with --schedule")


def _ignores_learning_rate(config: Config, steps: int = 3) -> bool:
    """Whether a registered builder's first `steps` updates of a small probe are the same, and not all zero, at
    `config.lr` and at 3x it (a builder with a schedule of its own). False where the probe cannot tell: a builder
    that needs its own parameter structure, or updates still zero (a warmup from 0)."""
    import jax.numpy as jnp
    import numpy as np

    params, grads = {"w": jnp.asarray([1.0, -0.5, 0.25])}, {"w": jnp.asarray([0.3, -1.0, 2.0])}
    runs = []
    try:
        for lr in (config.lr, 3 * config.lr):
            tx = build(config, lr, config.weight_decay)
            state, updates = tx.init(params), []
            for _ in range(steps):
                update, state = tx.update(grads, state, params)
                updates.append(np.asarray(update["w"]))
            runs.append(np.stack(updates))
    except Exception:  # noqa: BLE001 - a builder the probe does not fit: nothing to say
        return False
    return bool(np.any(runs[0])) and np.array_equal(runs[0], runs[1])


def _numeric(parameter: inspect.Parameter) -> bool:
    """Whether an optimizer argument takes a number: a numeric default, or optax's array-like annotation."""
    default, annotation = parameter.default, repr(parameter.annotation)
    return (isinstance(default, (int, float)) and not isinstance(default, bool)) or (
        "ndarray" in annotation and "str" not in annotation)


def build(config: Config, learning_rate: Any, weight_decay: Any) -> optax.GradientTransformation:
    """`config`'s optimizer at `learning_rate` (a number, a schedule, or a traced value) and `weight_decay`
    (passed only where the optimizer takes it)."""
    fn, kwargs = builder(config.optimizer), dict(config.optimizer_kwargs)
    unset = isinstance(weight_decay, (int, float)) and weight_decay == 0
    if "weight_decay" in _parameters(fn) or (takes(config.optimizer, "weight_decay") and not unset):
        kwargs["weight_decay"] = weight_decay  # a builder taking **kwargs gets it only when it is set or swept
    return fn(learning_rate, **kwargs)
