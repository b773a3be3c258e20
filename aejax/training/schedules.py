"""Learning-rate schedules by name (`Config.schedule`): the built-ins, any optax schedule, or one registered.

- `constant`, `cosine`, `warmup_cosine`: sized by the run (`epochs`, `warmup_epochs`), built by
  `aejax.training.step.make_schedule`.
- any optax schedule function by name (`exponential_decay`, `linear_schedule`, `piecewise_constant_schedule`,
  `cosine_onecycle_schedule`, `sgdr_schedule`, ...): the run's `lr` is its `peak_value`, `init_value` or `value`
  argument (the first it has); `Config.schedule_kwargs` are its other arguments, steps counted in optimizer steps:
      --schedule exponential_decay --schedule-kwargs '{"transition_steps": 2400, "decay_rate": 0.5}'
- a schedule registered with `register_schedule(name, fn)`: `fn(learning_rate, total_steps, **schedule_kwargs)`
  returning an `optax.Schedule`, where `total_steps` is the run's number of optimizer steps.

config.json records the name and the arguments, so what trained is what it says; in an lr sweep each member's
schedule is the same shape scaled to its rate.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import optax

from aejax.config import BUILT_IN_SCHEDULES, Config
from aejax.errors import AejaxError, check_registration

PEAK_ARGUMENTS = ("peak_value", "init_value", "value")  # where an optax schedule takes the run's lr
_SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {}


def register_schedule(name: str, fn: Callable[..., optax.Schedule], *, replace: bool = False) -> None:
    """Make `Config(schedule=name)` train with `fn(learning_rate, total_steps, **schedule_kwargs)`."""
    check_registration("schedule", name, name in _SCHEDULES, fn, replace,
                       "(learning_rate, total_steps, **kwargs) -> optax.Schedule")
    if name in BUILT_IN_SCHEDULES:
        raise AejaxError(f"schedule {name!r} is built in; register yours under another name")
    _SCHEDULES[name] = fn


def registered(name: str) -> bool:
    """Whether `name` is a registered schedule (one whose length is the run's `total_steps`)."""
    return name in _SCHEDULES


def _optax_function(name: str) -> tuple[Callable[..., optax.Schedule], str]:
    """optax's schedule function `name` and the argument it takes the peak rate by."""
    fn = getattr(optax, name, None) if not name.startswith("_") else None
    parameters = _parameters(fn) if callable(fn) else {}
    peak = next((p for p in PEAK_ARGUMENTS if p in parameters), None)
    if peak is None or not (name.endswith(("_schedule", "_decay")) or "schedule" in getattr(fn, "__module__", "")):
        raise AejaxError(f"unknown schedule {name!r}: not one of {', '.join(BUILT_IN_SCHEDULES)}, not registered "
                         f"(aejax.register_schedule), and not an optax schedule taking {' or '.join(PEAK_ARGUMENTS)} "
                         f"(e.g. exponential_decay, linear_schedule, piecewise_constant_schedule)")
    return fn, peak


def _parameters(fn: Callable) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def check(config: Config) -> None:
    """One-line errors for a schedule that cannot be built as `config` asks: an unknown name, an argument it does
    not take or lacks, the peak given in schedule_kwargs, or values optax refuses."""
    if config.schedule in BUILT_IN_SCHEDULES:
        return
    kwargs = config.schedule_kwargs
    if config.schedule in _SCHEDULES:
        fn, taken = _SCHEDULES[config.schedule], ("learning_rate", "total_steps")
    else:
        fn, peak = _optax_function(config.schedule)
        taken = (peak,)
    parameters = _parameters(fn)
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in kwargs.items():
        if key in taken:
            setter = "epochs and batch_size" if key == "total_steps" else "lr"
            raise AejaxError(f"schedule_kwargs {key}: the run sets it ({setter}), not schedule_kwargs")
        if key not in parameters and not open_kwargs:
            accepted = [p for p in parameters if p not in taken]
            raise AejaxError(f"schedule {config.schedule} takes no argument {key!r}; it takes {', '.join(accepted)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise AejaxError(f"schedule_kwargs {key} must be a finite number, got {value!r}")
    missing = [name for name, p in parameters.items() if p.default is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name not in taken and name not in kwargs]
    if missing:
        raise AejaxError(f"schedule {config.schedule} needs {', '.join(missing)} in schedule_kwargs (in optimizer "
                         f"steps where it counts steps)")
    try:
        float(build(config, config.lr, 1000)(0))
    except AejaxError:
        raise
    except Exception as e:  # optax's own checks of its arguments
        raise AejaxError(f"schedule {config.schedule} with {kwargs}: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else 'refused'}") from None


def build(config: Config, peak: Any, total_steps: int) -> optax.Schedule:
    """The schedule of a config whose `schedule` is not built in, peaking at `peak`, over `total_steps`."""
    if config.schedule in _SCHEDULES:
        return _SCHEDULES[config.schedule](peak, total_steps, **config.schedule_kwargs)
    fn, peak_argument = _optax_function(config.schedule)
    return fn(**{peak_argument: peak, **config.schedule_kwargs})
