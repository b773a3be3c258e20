"""Orbax checkpoints of a run: one per epoch, the last few kept, each with its epoch and config.

A checkpoint holds the (possibly seed-stacked) train state as a pytree and a JSON item with the epoch, the
seeds and the config. Orbax writes each step into a temporary directory and renames it when complete, so a
crash mid-save never leaves a step that `latest_step` would return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from aejax.errors import AejaxError


def manager(directory: str | Path, max_to_keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                 item_names=("state", "meta"))


def save(mngr: ocp.CheckpointManager, epoch: int, state: Any, meta: dict[str, Any]) -> None:
    """Save `state` as step `epoch` (1-based: the number of completed epochs)."""
    mngr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)))
    mngr.wait_until_finished()


def _shape_mismatches(saved: Any, target: Any) -> list[str]:
    saved_leaves = dict(jax.tree_util.tree_leaves_with_path(saved))
    target_leaves = dict(jax.tree_util.tree_leaves_with_path(target))
    problems = []
    for path, leaf in target_leaves.items():
        key = jax.tree_util.keystr(path)
        if path not in saved_leaves:
            problems.append(f"{key} missing from checkpoint")
        elif tuple(saved_leaves[path].shape) != tuple(leaf.shape):
            problems.append(f"{key}: checkpoint {tuple(saved_leaves[path].shape)} vs model {tuple(leaf.shape)}")
    return problems


def restore(mngr: ocp.CheckpointManager, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restore `step` (default: the latest) into the structure, shapes and dtypes of `target`.

    Raises `AejaxError` when there is no checkpoint or when its shapes differ from `target`'s (naming them).
    """
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise AejaxError(f"no checkpoint found in {mngr.directory}")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    saved = mngr.item_metadata(step)["state"]
    problems = _shape_mismatches(_to_plain(saved), abstract)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise AejaxError(f"checkpoint {mngr.directory}/{step} does not fit this model: {shown}")
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                          meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]


def _to_plain(tree: Any) -> Any:
    """Orbax metadata trees mirror the saved structure with dicts/lists; map them onto `target`'s keys."""
    return tree
