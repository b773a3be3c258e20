"""aejax: autoencoders in JAX/Flax (MNIST and any image set), as a functional research codebase.

The public surface: `Config`, `run` (train into a run directory, `aejax.training.loop`), `load_model`
(`aejax.training.restore`), `register_model` / `register_loss` / `register_optimizer` / `register_dataset` (bring your
own), and `encode` / `decode` / `reconstruct` (a trained model on images, uint8 or float, with or without a
batch axis; they trace under jit, grad and vmap). docs/library.md shows each.
"""

from typing import Any

from aejax.config import Config
from aejax.data.datasets import register_dataset
from aejax.errors import AejaxError
from aejax.models import register_model  # importing aejax.models registers every built-in model
from aejax.models.inference import decode, encode, reconstruct
from aejax.training.losses import register_loss
from aejax.training.optimizers import register_optimizer

__all__ = ["AejaxError", "Config", "decode", "encode", "load_model", "reconstruct", "register_dataset",
           "register_loss", "register_model", "register_optimizer", "run"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # training and checkpoint imports (orbax) only when used
    if name == "run":
        from aejax.training.loop import run

        return run
    if name == "load_model":
        from aejax.training.restore import load_model

        return load_model
    raise AttributeError(f"module 'aejax' has no attribute {name!r}")
