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
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_handlers=handlers)


def save(mngr: ocp.CheckpointManager, epoch: int, state: Any, meta: dict[str, Any]) -> None:
    """Save `state` as step `epoch` (1-based: the number of completed epochs)."""
    mngr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)))
    mngr.wait_until_finished()


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """Leaf shapes keyed by a plain path ('params/encoder_layers_0/kernel'), whatever the container types.

    Orbax stores NamedTuples as dicts; normalising keys lets a checkpoint be compared with a live pytree.
    """
    def name(k: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    return {"/".join(name(k) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _shape_mismatches(saved: Any, target: Any) -> list[str]:
    saved_shapes, target_shapes = _flat_shapes(saved), _flat_shapes(target)
    problems = [f"{key} missing from checkpoint" for key in target_shapes if key not in saved_shapes]
    problems += [f"{key} is {saved_shapes[key]} in the checkpoint but {shape} in this model"
                 for key, shape in target_shapes.items() if key in saved_shapes and saved_shapes[key] != shape]
    problems += [f"{key} in the checkpoint is not in this model" for key in saved_shapes if key not in target_shapes]
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
    problems = _shape_mismatches(saved, abstract)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise AejaxError(f"checkpoint {mngr.directory}/{step} does not fit this model: {shown}")
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                          meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]
