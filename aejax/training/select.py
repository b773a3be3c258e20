"""`--select best`: each model's epoch of lowest validation MSE, kept while the run trains and saved to the run
directory's `best_checkpoints/` whenever a model improves, so that the results score it, `load_model` reloads
it and a resumed run carries it on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aejax.training import checkpoint

BEST_DIR = "best_checkpoints"


@jax.jit
def _pick(improved: jax.Array, new: Any, old: Any) -> Any:
    """`new` where a model (leading axis) improved, else `old`."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(improved.reshape(-1, *[1] * (a.ndim - 1)), a, b), new, old)


class BestModels:
    """The stack of every model's best state so far (`state`), its checkpoints and what they are saved with."""

    def __init__(self, mngr: Any, meta: dict[str, Any]):
        self.mngr, self.meta, self.state = mngr, meta, None

    def restore(self, target: Any, epochs: int, log: Callable[[str], None]) -> None:
        """The best states saved up to epoch `epochs` (where a resumed run's history ends)."""
        if [s for s in self.mngr.all_steps() if s <= epochs]:
            self.state = checkpoint.restore(self.mngr, target, log=log, max_step=epochs)[0]

    def update(self, state: Any, epoch: int, history: list[dict[str, Any]]) -> None:
        """Take each model whose validation MSE at `epoch` (the last of `history`) is its lowest yet."""
        scores = np.asarray([h["val_mse"] for h in history])  # [epochs, K]
        before = scores[:-1].min(axis=0) if len(scores) > 1 else np.full(scores.shape[1], np.inf)
        improved = scores[-1] < before
        if not improved.any():
            return
        self.state = state if self.state is None else _pick(jnp.asarray(improved), state, self.state)
        checkpoint.save(self.mngr, epoch, self.state, {"epoch": epoch, **self.meta})
