"""aejax: autoencoders in JAX/Flax (MNIST and any image set), as a functional research codebase.

The public surface: `Config`, `run` (train into a run directory, `aejax.training.loop`), `load_model`
(`aejax.training.restore`), `register_model` / `register_loss` / `register_optimizer` / `register_schedule` /
`register_dataset` (bring your own), and `encode` / `decode` / `reconstruct` (a trained model on images, uint8 or
float, with or without a batch axis; they trace under jit, grad and vmap). docs/library.md shows each.
"""

import importlib
from typing import Any

__all__ = ["AejaxError", "Config", "decode", "encode", "load_model", "reconstruct", "register_dataset",
           "register_loss", "register_model", "register_optimizer", "register_schedule", "run"]
__version__ = "0.1.0"

# Each name is imported where it is first used, so that `import aejax` (and `python -m aejax.train`, which
# imports this package first) starts at once; `aejax.models` registers every built-in model when imported.
_HOMES = {"AejaxError": "aejax.errors", "Config": "aejax.config", "register_dataset": "aejax.data.datasets",
          "register_model": "aejax.models", "encode": "aejax.models.inference", "decode": "aejax.models.inference",
          "reconstruct": "aejax.models.inference", "register_loss": "aejax.training.losses",
          "register_optimizer": "aejax.training.optimizers", "register_schedule": "aejax.training.schedules",
          "run": "aejax.training.loop",
          "load_model": "aejax.training.restore"}
_PACKAGES = ("cli", "codec", "config", "configs", "data", "environment", "errors", "evaluation", "files", "models",
             "training")


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    elif name in _PACKAGES:
        value = importlib.import_module(f"aejax.{name}")
    else:
        raise AttributeError(f"module 'aejax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES, *_PACKAGES])
