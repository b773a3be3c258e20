"""Orbax checkpoints of a run: one per epoch, the last few kept, each with its epoch and config.

A checkpoint holds the (possibly seed-stacked) train state as a pytree and a JSON item with the epoch, the
seeds, the config and the state's sha256 (`state_digest`), checked whenever the step is restored: a step whose
files were altered after its save is set aside like an unreadable one. Orbax writes each step into a temporary
directory and renames it when complete, so a crash mid-save never leaves a step that `latest_step` would return.
Saves are asynchronous: `save` copies the arrays to the host and returns while a background thread writes them;
`mngr.wait_until_finished()` (or
`mngr.close()`) waits for the write.

A full disk during a run (`stop_when_full`) becomes one line naming the path, the space free there and the space
the run's checkpoints need; the partial step is removed, every complete one kept, so `--resume` continues once
there is room. A new manager removes partial steps a crash left (`cleanup_tmp_directories`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from aejax import numerics
from aejax.errors import AejaxError
from aejax.files import NoSpace, describe_bytes, free_bytes, is_full

PARTIAL = ".orbax-checkpoint-tmp"  # in the name of a step orbax is still writing


def manager(directory: str | Path, max_to_keep: int, *, read_only: bool = False) -> ocp.CheckpointManager:
    """The run's manager of `directory`; `read_only` (reloading a model) creates and cleans up nothing."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                           enable_async_checkpointing=not read_only,
                                           cleanup_tmp_directories=not read_only)
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_handlers=handlers)


def save(mngr: ocp.CheckpointManager, epoch: int, state: Any, meta: dict[str, Any], *, wait: bool = True) -> None:
    """Save `state` as step `epoch` (1-based: the number of completed epochs); with `wait=False` return once the
    arrays are copied to the host, the write going on in the background (orbax waits for it before the next
    save; `mngr.wait_until_finished()` waits for it explicitly). The meta item records the state's checksum
    (`state_digest`), which `restore` verifies."""
    quiet_closed_loop()
    _check_room(mngr, epoch, state)
    digest = state_digest(state)
    meta = {**meta, STATE_SHA256: digest} if digest is not None else meta
    mngr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)))
    if wait:
        mngr.wait_until_finished()


STATE_SHA256 = "state_sha256"  # the meta item's key of the state's checksum


def state_digest(state: Any) -> str | None:
    """sha256 of every leaf's path, dtype, shape and bytes (in 32-bit dtypes), in path order: what a step's
    arrays must still be when restored, with `JAX_ENABLE_X64` on or off. None where a leaf is not fully
    addressable here (several processes), which is then not checked."""
    leaves = jax.tree_util.tree_leaves_with_path(state)
    if any(isinstance(leaf, jax.Array) and not leaf.is_fully_addressable for _, leaf in leaves):
        return None
    digest = hashlib.sha256()
    for name, leaf in sorted(zip(_flat_shapes(state), jax.device_get([leaf for _, leaf in leaves]), strict=True)):
        array = np.ascontiguousarray(numerics.x32(leaf))  # the same digest with JAX_ENABLE_X64 on or off
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _check_room(mngr: ocp.CheckpointManager, epoch: int, state: Any) -> None:
    """`NoSpace` before a save that cannot fit: it needs what the newest complete step takes on disk (else the
    state's raw bytes), plus a tenth; the previous save has finished (`metrics_line` waits for it), so the free
    space is what is really free. (A save that still fills the disk fails inside orbax, then `stop_when_full`.)"""
    directory = Path(mngr.directory)
    steps = [s for s in mngr.all_steps() if (directory / str(s)).is_dir()]
    size = (_tree_bytes(directory / str(max(steps))) if steps
            else sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(state)))
    needed = size + size // 10 + 65536  # and room for orbax's metadata files
    if free_bytes(directory) < needed:
        raise NoSpace(directory / str(epoch), needed)


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


def shape_mismatches(saved: Any, target: Any) -> list[str]:
    """What differs between the leaf shapes of two pytrees, by path (missing, extra, other shapes)."""
    saved_shapes, target_shapes = _flat_shapes(saved), _flat_shapes(target)
    problems = [f"{key} missing from checkpoint" for key in target_shapes if key not in saved_shapes]
    problems += [f"{key} is {saved_shapes[key]} in the checkpoint but {shape} in this model"
                 for key, shape in target_shapes.items() if key in saved_shapes and saved_shapes[key] != shape]
    problems += [f"{key} in the checkpoint is not in this model" for key in saved_shapes if key not in target_shapes]
    return problems


def restore(mngr: ocp.CheckpointManager, target: Any, step: int | None = None,
            log: Callable[[str], None] = print, max_step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restore `step` (default: the latest readable one, at most `max_step`) into the structure, shapes and
    dtypes of `target`.

    Raises `AejaxError` when there is no checkpoint or when its shapes differ from `target`'s (naming them).
    A corrupt or truncated latest step, or one whose arrays differ from the checksum its save recorded, is moved
    to `corrupt_checkpoints/` beside the checkpoint directory (kept, never deleted) and the previous step is
    tried, saying so through `log`.
    """
    quiet_closed_loop()
    directory = Path(mngr.directory)
    steps = [step] if step is not None else sorted((s for s in mngr.all_steps() if max_step is None or s <= max_step),
                                                   reverse=True)
    if not steps:
        raise AejaxError(f"no checkpoint found in {directory}")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    for s in steps:
        try:
            saved = mngr.item_metadata(s)["state"]
            if saved is None:  # orbax found the item but not its metadata (state/_METADATA missing or unreadable)
                raise AejaxError("its state's metadata cannot be read")
            problems = shape_mismatches(saved, abstract)
        except Exception as e:  # orbax and tensorstore raise many types for unreadable files
            _set_aside(mngr, s, e, log)
            continue
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise AejaxError(f"checkpoint {directory}/{s} does not fit this model: {shown}")
        try:
            restored = mngr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                               meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - see above
            _set_aside(mngr, s, e, log)
            continue
        recorded = restored["meta"].get(STATE_SHA256) if isinstance(restored["meta"], dict) else None
        if recorded is not None and state_digest(restored["state"]) not in (recorded, None):
            _set_aside(mngr, s, AejaxError("its arrays differ from the checksum recorded when it was saved"), log)
            continue
        if s != steps[0]:
            log(f"restored the previous good checkpoint, step {s}")
        return restored["state"], restored["meta"]
    raise AejaxError(f"no readable checkpoint in {directory}: step(s) {', '.join(map(str, steps))} are corrupt "
                     f"(moved to {directory.parent / 'corrupt_checkpoints'})")


def _closed_loop(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def quiet_closed_loop() -> None:
    """Drop `RuntimeError: Event loop is closed` raised where no caller can catch it: after a step fails to read
    or write, tensorstore's pending callbacks may still land in orbax's event loop once it is closed, and Python
    prints each as a traceback (up to nine) around the one line aejax prints. The steps on disk are not affected.
    Every other error reaches the hooks that were there before. Installed once per process, by `restore` and
    `save`."""
    if getattr(sys.excepthook, "_aejax_quiet", False):
        return
    previous_except, previous_unraisable, previous_thread = sys.excepthook, sys.unraisablehook, threading.excepthook

    def excepthook(kind, error, tb):
        if not _closed_loop(error):
            previous_except(kind, error, tb)

    def unraisablehook(unraisable):
        if not _closed_loop(unraisable.exc_value):
            previous_unraisable(unraisable)

    def thread_excepthook(args):
        if not _closed_loop(args.exc_value):
            previous_thread(args)

    excepthook._aejax_quiet = True
    sys.excepthook, sys.unraisablehook, threading.excepthook = excepthook, unraisablehook, thread_excepthook


def _set_aside(mngr: ocp.CheckpointManager, step: int, error: Exception, log: Callable[[str], None]) -> None:
    """Move a corrupt step aside (process 0 only; every process then skips it; a collective would be needed for
    the others to see the move before their next restore, and none restores again)."""
    directory = Path(mngr.directory)
    aside = directory.parent / "corrupt_checkpoints"
    target = aside / f"{step}"
    n = 1
    while target.exists():
        target, n = aside / f"{step}.{n}", n + 1
    if jax.process_index() == 0:
        aside.mkdir(exist_ok=True)
        shutil.move(str(directory / str(step)), str(target))
    mngr.reload()
    reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    log(f"checkpoint step {step} in {directory} is corrupt ({reason}); moved it to {target}")


@contextlib.contextmanager
def stop_when_full(run_path: Path, keep: int) -> Iterator[None]:
    """Turn a full disk in the block (an orbax save, a results file, a figure) into one `AejaxError`: the path,
    the bytes free there, what a checkpoint of this run takes; partial steps removed, complete ones kept."""
    # Orbax logs each failed background write, traceback and all, from its threads, some after the save has
    # raised: a filter on the "absl" logger drops those records (full-disk ones only) until the outermost block
    # ends, by when the checkpoint manager inside it has been closed and its threads have finished.
    absl = logging.getLogger("absl")
    if not _filtering:
        absl.addFilter(_not_a_full_disk)
    _filtering.append(run_path)
    try:
        yield
    except Exception as e:
        if not is_full(e):
            raise
        raise _out_of_space(e, Path(run_path), keep) from None
    finally:
        _filtering.pop()
        if not _filtering:
            absl.removeFilter(_not_a_full_disk)


_filtering: list[Path] = []  # the `stop_when_full` blocks open now, outermost first


def _not_a_full_disk(record: logging.LogRecord) -> bool:
    """Drop orbax's log records of a write that found the disk full (`stop_when_full` reports it in one line),
    and of its threads' writes into the partial step that `stop_when_full` then removed."""
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
        return True
    removed = isinstance(error, FileNotFoundError) and PARTIAL in os.fsdecode(error.filename or "")
    return not (is_full(error) or removed)


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _failed_write(error: BaseException, fallback: Path) -> tuple[Path, int | None]:
    """The path whose write filled the disk (and the bytes it needed, where known)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, NoSpace):
            return seen.path, seen.needed
        if isinstance(seen, OSError) and seen.filename:
            return Path(os.fsdecode(seen.filename)), None
        quoted = [part for part in str(seen).split('"')[1::2] if part.startswith("/")]  # tensorstore's message
        if quoted:
            return Path(quoted[0]), None
        seen = seen.__cause__ or seen.__context__
    return fallback, None


def _remove_settled(directory: Path, partial: list[Path], settle: float = 0.2, limit: float = 3.0) -> None:
    """Remove the partial steps, again until none has reappeared for `settle` seconds (at most `limit`): after a
    failed save, tensorstore's writes still in flight can recreate files in them."""
    quiet_since, deadline = time.monotonic(), time.monotonic() + limit
    while partial or time.monotonic() - quiet_since < settle:
        if partial:
            for p in partial:
                shutil.rmtree(p, ignore_errors=True)
            quiet_since = time.monotonic()
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)
        partial = [p for p in directory.iterdir() if PARTIAL in p.name] if directory.is_dir() else []


def _out_of_space(error: BaseException, run_path: Path, keep: int) -> AejaxError:
    directory = run_path / "checkpoints"
    entries = list(directory.iterdir()) if directory.is_dir() else []
    partial = [p for p in entries if PARTIAL in p.name]
    partial_bytes = max((_tree_bytes(p) for p in partial), default=0)
    _remove_settled(directory, partial)
    steps = sorted(int(p.name) for p in entries if p.name.isdigit())
    each = _tree_bytes(directory / str(steps[-1])) if steps else partial_bytes
    writing = directory / partial[0].name.split(".")[0] if partial else directory  # the step being saved
    path, needed = _failed_write(error, writing)
    needs = f"it needs {describe_bytes(needed)}, " if needed else ""
    message = f"no space left on the device for {path} ({needs}{describe_bytes(free_bytes(run_path))} free there)"
    if each:
        message += (f"; a checkpoint of this run takes {'' if steps else 'more than '}{describe_bytes(each)}, and "
                    f"up to {keep + 1} are on disk at once (the {keep} kept and the next being written: "
                    f"{describe_bytes(each * (keep + 1))})")
    kept = (f"the checkpoint{'s' if len(steps) > 1 else ''} of epoch{'s' if len(steps) > 1 else ''} "
            f"{', '.join(map(str, steps))} {'are' if len(steps) > 1 else 'is'} complete and kept") if steps else (
        "no checkpoint is complete yet")
    message += f"; {kept}; free space, then continue with"
    return AejaxError(f"{message} resume=True", cli=f"{message} --resume")
