"""The run loop: train one model per seed (and sweep member) into a run directory, around the compiled program
of `aejax.training.step`.

`run` places the data on the device once (or streams it, `aejax.data.stream`), claims the run directory, resumes
from the newest checkpoint that has its metrics line, then keeps the device busy: epoch e+1 and its evaluation
(of the validation split, else the test set) are dispatched before epoch e is read back. Reading an epoch back
is a list of explicit per-epoch actions, each a function of one `EpochEnd`:

    check_finite     a non-finite loss stops the run, keeping the last good checkpoint
    checkpoint       an asynchronous orbax save of the state (every `checkpoint_every` epochs, and the last)
    tensorboard      the epoch's scalars, and every `log_every` steps' (`aejax.training.events`)
    metrics_line     waits for the checkpoint, then writes the `metrics.jsonl` line (a resume starts from the
                     newest checkpoint that has its line, and drops the lines after it)
    log_line         one line through `log`

`run(..., actions=[...])` appends actions of your own (another logger, early stopping, a probe of the state): one
that returns True stops the run after the epoch in flight, which is finished, read back and checkpointed, and
the run ends with its results; a SIGTERM or SIGINT does the same and ends with `Interrupted`.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aejax import models
from aejax.config import Config
from aejax.data import Source
from aejax.errors import AejaxError
from aejax.evaluation import metrics
from aejax.training import checkpoint, parallel, sweeps
from aejax.training import step as train
from aejax.training.events import EventLog
from aejax.training.plan import Plan, prepare
from aejax.training.restore import warm_start
from aejax.training.results import result_row
from aejax.training.rundir import RunDir
from aejax.training.select import BEST_DIR, BestModels
from aejax.training.signals import Interrupted, stop_requests
from aejax.training.step import EVAL_TAG, Trainer, TrainState, epoch_key, make_trainer, seed_keys, unstack
from aejax.training.streamed import stream_epoch

PyTree = Any


class RunResult(NamedTuple):
    """What `run` trained: one results row per model (as in results.json), the model and each one's variables.

    Models are the seeds, or with a sweep each member times each seed (member-major, as the rows)."""

    rows: list[dict[str, Any]]
    model: nn.Module
    epochs_trained: int  # epochs trained by this call (0: the run was already finished and only reloaded)
    variables: list[PyTree]  # each model's `{"params": ..., **model_state}`, in the order of the rows


class EpochEnd(NamedTuple):
    """One epoch read back, as every per-epoch action sees it (while the next epoch runs on the device)."""

    epoch: int  # 1-based: epochs completed
    epochs: int  # the epochs the config asks for
    losses: np.ndarray  # [K, steps], each step's training loss
    entry: dict[str, Any]  # its metrics.jsonl line: train_loss, test_mse (per model), seconds, images/s, train_aux
    state: TrainState  # a copy of the state after the epoch, every leaf [K, ...]
    names: list[str]  # the K models, e.g. "seed 0" or "lr=0.003 seed 0"
    first: bool  # the first epoch of this call (its seconds include compilation)
    step_aux: dict[str, np.ndarray] = {}  # [K, steps] per aux term, the gradient norm with log_every


Action = Callable[[EpochEnd], bool | None]  # True: stop after the epoch in flight


def _scores(totals: metrics.Totals, k: int) -> list[dict[str, float]]:
    return [metrics.finalize(unstack(totals, i)) for i in range(k)]


def _test_mse(totals: metrics.Totals) -> list[float]:
    """Each model's test MSE from `[K]` totals copied to the host, by the float32 division `metrics.finalize`
    makes: while the next epoch runs, device operations (indexing, dividing) would queue behind it."""
    totals = jax.device_get(totals)
    mse = totals.squared_error.astype(np.float32) / totals.values.astype(np.float32)
    return [float(m) for m in mse]


class InFlight(NamedTuple):
    """An epoch dispatched to the device and not yet read back: `run` reads epoch e while epoch e+1 runs."""

    epoch: int  # 1-based: epochs completed once it finishes
    state: TrainState  # a copy of the state after it (the live one is donated to the next epoch), to checkpoint
    losses: jax.Array  # [K, steps]
    aux: dict[str, jax.Array]
    totals: metrics.Totals  # test-set totals of its parameters, [K] leaves
    dispatched_at: float  # time.perf_counter() when dispatched


_copy = jax.jit(lambda tree: jax.tree_util.tree_map(jnp.copy, tree))  # fresh buffers, not aliases


def check_finite(end: EpochEnd, mngr) -> None:
    """Stop at the first non-finite loss, naming epoch, step and model; the last good checkpoint is kept."""
    bad = ~np.isfinite(end.losses)
    if bad.any():
        k, step = np.argwhere(bad)[0]
        kept = mngr.latest_step()
        where = f"the last good checkpoint (epoch {kept}) is kept" if kept else "no checkpoint was written"
        message = (f"non-finite loss at epoch {end.epoch}, step {step + 1} ({end.names[k]}); training stopped and "
                   f"{where}; try a smaller")
        raise AejaxError(f"{message} lr", cli=f"{message} --lr")


def log_line(end: EpochEnd, log: Callable[[str], None]) -> None:
    """`epoch 3/5  train_loss ...  test_mse (or val_mse) ...  N img/s  S s`, averaged over the models."""
    entry = end.entry
    watch = "val_mse" if "val_mse" in entry else "test_mse"
    log(f"epoch {end.epoch}/{end.epochs}  train_loss {end.losses.mean():.5f}  "
        f"{watch} {np.mean(entry[watch]):.5f}  "
        f"{entry['images_per_second']:,.0f} img/s  {entry['epoch_seconds']:.1f}s"
        + ("  (includes compilation)" if end.first else ""))


def run(config: Config, out_dir: str | Path, *, seeds: Sequence[int] | None = None,
        sweep: dict[str, Sequence[float]] | None = None, data_dir: str | None = None, mnist_dir: str | None = None,
        resume: bool = False, overwrite: bool = False, data: tuple[np.ndarray, np.ndarray] | Source | None = None,
        variant: str | None = None, log: Callable[[str], None] = print,
        actions: Sequence[Action] = ()) -> RunResult:
    """Train one model per seed (vmapped, shared data), evaluate, checkpoint, and write the run directory.

    `seeds` defaults to `[config.seed]`. `sweep` (setting -> values, e.g. `{"lr": [1e-3, 3e-3]}`; see
    `aejax.training.sweeps`) trains every member of its grid times every seed in the same one program, one row
    each. The images are `config.dataset`'s (`aejax.data.datasets`), or `data`: `(train_images, test_images)`
    arrays (host or device) of any shape `[N, H, W, C]`, uint8 or float in [0, 1] (checked first; test_images
    None: a tenth held out), or a `Source` (`aejax.data.folder`). Either way `config.image_shape` is set from
    the images (a config that names another shape is an error) and every model builds for it. `variant` labels
    the rows (default: the model name). With `resume`, a run of the same config continues from its latest
    checkpoint (a finished one is reloaded, not retrained). `actions` run after the built-in per-epoch actions
    (module docstring). Returns the rows (also in results.json) and the trained variables.
    """
    # 1. The config, resolved once against the registries and the data; the lanes (sweep members x seeds).
    plan = prepare(config, seeds, sweep, data, data_dir, mnist_dir, log)
    config, source = plan.config, plan.source
    log(plan.placement.describe(plan.n_train))
    trainer = make_trainer(config, plan.n_train, swept=list(plan.grid[0]))
    sweeps.check_model(trainer.model, plan.grid)
    # 2. The state (from another run's parameters with init_from), then the run directory and the data.
    program = train.compile_program(trainer)  # looked up here, so a benchmark can wrap it
    keys = [seed_keys(s) for _, s in plan.lanes]
    data_keys = jnp.stack([k[1] for k in keys])
    hparams = sweeps.lane_hparams(plan.grid, len(plan.seeds))  # {} outside a sweep
    state = warm_start(config, program.init(jnp.stack([k[0] for k in keys]), hparams), log)
    with checkpoint.stop_when_full(Path(out_dir), config.keep_checkpoints):  # config.json may not fit either
        run_dir = RunDir.open(out_dir, config, plan.seeds, resume=resume, overwrite=overwrite,
                              sweep=plan.grid if sweep else None)
    # The directory stays locked until the run ends or fails; a full disk stops it in one line, keeping every
    # complete checkpoint (`resume` continues once there is room).
    with contextlib.closing(run_dir), checkpoint.stop_when_full(run_dir.path, config.keep_checkpoints):
        state, hparams, train_images, test_images, watched = place(trainer, plan, state, hparams)
        mngr = checkpoint.manager(run_dir.path / "checkpoints", config.keep_checkpoints)
        with contextlib.closing(mngr), contextlib.closing(EventLog(run_dir.path, plan.folders, plan.hparams)) as events:
            # 3. Resume from the newest checkpoint that has its metrics line.
            state, history = restore(run_dir, mngr, state, log) if resume else (state, [])
            start_epoch = len(history)
            meta = {"seeds": plan.seeds, "config": config.to_dict(), **({"sweep": plan.grid} if sweep else {})}
            best = None
            if config.select == "best":
                best = BestModels(checkpoint.manager(run_dir.path / BEST_DIR, 2), meta)
                best.restore(state, start_epoch, log)
            # 4. The epochs, each read back and acted on while the next one runs.
            context = EpochContext(config, plan, trainer, run_dir, mngr, best, events, tuple(actions), log,
                                   start_epoch, meta)
            state, final = train_epochs(context, program, state, train_images, watched, data_keys, hparams,
                                        history)
            if best is not None:  # the results score, and load_model reloads, each model's best epoch
                state = state if best.state is None else best.state
                best.mngr.close()
            # 5. The results: test scores, rows, results.json and the reconstruction figure.
            if final is None:  # validated, a finished run reloaded, or one stopped early: the test set now
                final = _scores(program.evaluate(True, train.variables(state), test_images), len(plan.lanes))
            test_aux = {}
            if "train_aux" in history[-1]:  # a loss with terms of its own: score them on the test set too
                eval_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(data_keys, EVAL_TAG)
                test_aux = {k: np.asarray(v).tolist()
                            for k, v in program.eval_loss(train.variables(state), test_images, eval_keys,
                                                          hparams).items()}
            model_variables = [unstack(train.variables(state), i) for i in range(len(plan.lanes))]
            baseline = metrics.mean_image_mse(source.rows, plan.n_train, source.test)
            rows = result_rows(context, history, final, test_aux, model_variables, baseline, variant, bool(sweep))
            run_dir.write_results(rows)
            run_dir.write_reconstructions(trainer.model, model_variables[0], np.asarray(test_images[:10]),
                                          f"{config.model}, code {config.latent_dim}, {plan.names[0]}: "
                                          f"test MSE {rows[0]['test_mse']:.5f}", events, history[-1]["epoch"])
        return RunResult(rows, trainer.model, history[-1]["epoch"] - start_epoch, model_variables)


def place(trainer: Trainer, plan: Plan, state: TrainState, hparams: dict[str, jax.Array],
          ) -> tuple[TrainState, dict[str, jax.Array], jax.Array | None, jax.Array, jax.Array]:
    """The state, the sweep's values and the uint8 images on the device (one device, or the trainer's mesh:
    replicated, with the training rows split over the devices under `shard_data`): the training images (none
    where they are streamed), the test images, and the images scored every epoch (the validation split, else
    the test images)."""
    config, source, n_train = plan.config, plan.source, plan.n_train
    streamed = plan.placement.where == "stream"
    if trainer.mesh is None:
        train_images = None if streamed else jax.device_put(source.rows(range(n_train)))
        test_images = jax.device_put(source.test)
        watched = test_images if plan.validation is None else jax.device_put(plan.validation)
        return state, hparams, train_images, test_images, watched
    test_images, state, hparams = parallel.replicate((source.test, state, hparams), trainer.mesh)
    watched = test_images if plan.validation is None else parallel.replicate(plan.validation, trainer.mesh)
    train_images = (None if streamed else parallel.shard_rows(source.rows, n_train, trainer.mesh)
                    if config.shard_data else parallel.replicate(source.rows(range(n_train)), trainer.mesh))
    return state, hparams, train_images, test_images, watched


def restore(run_dir: RunDir, mngr, state: TrainState,
            log: Callable[[str], None]) -> tuple[TrainState, list[dict[str, Any]]]:
    """The state of the newest checkpoint whose epoch has its metrics line (the line is written after the save)
    and the metrics lines up to it; the fresh state and no history where none has."""
    history = run_dir.read_metrics()
    if not [s for s in mngr.all_steps() if s <= len(history)]:
        return state, []
    state, meta = checkpoint.restore(mngr, state, log=log, max_step=len(history))
    log(f"resumed from {run_dir.path / 'checkpoints'} at epoch {int(meta['epoch'])}")
    return state, history[: int(meta["epoch"])]


class EpochContext(NamedTuple):
    """What every epoch's read-back needs and does not change."""

    config: Config
    plan: Plan
    trainer: Trainer
    run_dir: RunDir
    mngr: Any  # the orbax CheckpointManager
    best: BestModels | None  # with select best: each model's best state so far
    events: EventLog
    actions: tuple[Action, ...]
    log: Callable[[str], None]
    start_epoch: int  # epochs done before this call
    checkpoint_meta: dict[str, Any]  # the seeds, config and sweep, saved with every checkpoint


def train_epochs(context: EpochContext, program: train.Program, state: TrainState, train_images: jax.Array | None,
                 watched: jax.Array, data_keys: jax.Array, hparams: dict[str, jax.Array],
                 history: list[dict[str, Any]]) -> tuple[TrainState, list[dict[str, float]] | None]:
    """Train the epochs left, dispatching epoch e+1 (and its test evaluation) before epoch e is read back (a
    streamed epoch, whose host work overlaps its own steps, is read back at once); `history` gets each epoch's
    metrics line. Returns the state and, when the last epoch was trained by this call, its full test scores
    (SSIM included: they are the results). A signal or an action stops after the epoch in flight, which is
    finished and checkpointed; a signal then raises `Interrupted`."""
    config = context.config
    final, pending, done_at = None, None, time.perf_counter()  # pending: dispatched, not yet read back
    with stop_requests() as received:
        for epoch in range(context.start_epoch, config.epochs):
            dispatched_at = time.perf_counter()
            ekeys = jax.vmap(epoch_key, in_axes=(0, None))(data_keys, epoch)
            if train_images is None:  # streamed: the same batches, read from the source chunk by chunk
                state, (losses, aux) = stream_epoch(program, context.trainer, state, context.plan.source,
                                                    context.plan.n_train, ekeys, hparams)
            else:
                state, (losses, aux) = program.epoch(state, train_images, ekeys, hparams)
            totals = program.evaluate(epoch + 1 == config.epochs, train.variables(state), watched)
            flight = InFlight(epoch + 1, _copy(state), losses, aux, totals, dispatched_at)  # state is donated next
            if train_images is None:  # streamed: the epoch ran while its chunks were handed over; read it now
                end, done_at = read_back(context, flight, done_at)
                last = epoch + 1 == config.epochs
                stop = finish_epoch(context, end, history, last=last)
                final = _final_scores(context, flight)
                if parallel.any_process(bool(received)) or stop:
                    if not last:
                        save_if_skipped(context, end)  # nothing is in flight: this epoch is the one kept
                    break
                continue
            if pending is not None:  # the device runs `flight` while the host finishes `pending`
                end, done_at = read_back(context, pending, done_at)
                stop = finish_epoch(context, end, history, last=False)
                if parallel.any_process(bool(received)) or stop:  # every host stops after the same epoch
                    pending = None
                    end, done_at = read_back(context, flight, done_at)
                    finish_epoch(context, end, history, last=True)  # finished and checkpointed, not lost
                    final = _final_scores(context, flight)
                    break
            pending = flight
        if pending is not None:
            end, done_at = read_back(context, pending, done_at)
            finish_epoch(context, end, history, last=True)
            final = _final_scores(context, pending)
    if parallel.any_process(bool(received)):
        raise interrupted(context, received, history[-1]["epoch"])
    return state, final


def read_back(context: EpochContext, flight: InFlight, done_at: float) -> tuple[EpochEnd, float]:
    """One epoch copied to the host (waiting for it alone) as an `EpochEnd`, and the time it finished."""
    losses = np.asarray(flight.losses)  # [K, steps]
    now = time.perf_counter()
    seconds = now - max(flight.dispatched_at, done_at)
    n_steps = context.plan.n_train // context.config.batch_size
    entry = {"epoch": flight.epoch, "train_loss": losses.mean(axis=1).tolist(),
             context.plan.watch: _test_mse(flight.totals), "epoch_seconds": seconds,
             "images_per_second": len(context.plan.lanes) * n_steps * context.config.batch_size / seconds}
    aux = {k: np.asarray(v) for k, v in flight.aux.items()}
    if set(aux) - {train.GRAD_NORM}:
        entry["train_aux"] = {k: v.mean(axis=1).tolist() for k, v in aux.items() if k != train.GRAD_NORM}
    end = EpochEnd(flight.epoch, context.config.epochs, losses, entry, flight.state, context.plan.names,
                   flight.epoch == context.start_epoch + 1, aux)
    return end, now


def finish_epoch(context: EpochContext, end: EpochEnd, history: list[dict[str, Any]], *, last: bool) -> bool:
    """The per-epoch actions in order (module docstring); `last`: no epoch of this call follows, so it is
    checkpointed whatever `checkpoint_every` says. True: an action asked to stop."""
    check_finite(end, context.mngr)
    if last or end.epoch % context.config.checkpoint_every == 0:
        checkpoint.save(context.mngr, end.epoch, end.state, {"epoch": end.epoch, **context.checkpoint_meta},
                        wait=False)
    history.append(end.entry)
    if context.best is not None:
        context.best.update(end.state, end.epoch, history)
    context.events.epoch(end.entry)
    if context.config.log_every and context.events.enabled:  # per-step scalars, gathered in the compiled epoch
        context.events.steps(end, train.step_learning_rates(context.config, context.plan.n_train, context.plan.lanes,
                                                            end.epoch), context.config.log_every)
    context.mngr.wait_until_finished()  # a metrics line never precedes the checkpoint saved for its epoch
    context.run_dir.write_metrics(history)
    log_line(end, context.log)
    return any([bool(action(end)) for action in context.actions]) or early_stop(context, history)


def save_if_skipped(context: EpochContext, end: EpochEnd) -> None:
    """Checkpoint an epoch that `checkpoint_every` skipped, where the run stops after it."""
    if end.epoch % context.config.checkpoint_every:
        checkpoint.save(context.mngr, end.epoch, end.state, {"epoch": end.epoch, **context.checkpoint_meta})


def _final_scores(context: EpochContext, flight: InFlight) -> list[dict[str, float]] | None:
    """The full test scores (with SSIM) of the config's last epoch; None for another, or with validation."""
    last = flight.epoch == context.config.epochs and context.plan.validation is None
    return _scores(flight.totals, len(context.plan.lanes)) if last else None


def _validation_fields(history: list[dict[str, Any]], lane: int) -> dict[str, Any]:
    """A model's last and best validation MSE, its best epoch, and the split's size."""
    scores = [h["val_mse"][lane] for h in history]
    best = int(np.argmin(scores))
    return {"val_mse": scores[-1], "best_val_mse": scores[best], "best_val_epoch": best + 1}


def early_stop(context: EpochContext, history: list[dict[str, Any]]) -> bool:
    """Whether no model's validation MSE has improved for `config.early_stopping` epochs (never when 0)."""
    patience = context.config.early_stopping
    if not patience or len(history) <= patience:
        return False
    scores = np.asarray([h["val_mse"] for h in history])  # [epochs, K]
    best = scores.argmin(axis=0) + 1  # each model's best epoch, 1-based
    stop = bool(np.all(len(history) - best >= patience))
    if stop:
        context.log(f"early stopping: no validation MSE improved in the last {patience} epochs (best epochs "
                    f"{', '.join(map(str, best))})")
    return stop


def interrupted(context: EpochContext, received: list[int], epoch: int) -> Interrupted:
    signum = received[0] if received else signal.SIGTERM  # another host was signalled
    stopped = (f"stopped by {signal.Signals(signum).name} after epoch {epoch}/{context.config.epochs}; its "
               f"checkpoint is saved in {context.run_dir.path / 'checkpoints'}; continue with")
    return Interrupted(f"{stopped} resume=True", cli=f"{stopped} --resume", exit_code=128 + signum)


def result_rows(context: EpochContext, history: list[dict[str, Any]], final: list[dict[str, float]],
                test_aux: dict[str, list[float]], model_variables: list[PyTree], baseline: float,
                variant: str | None, swept: bool) -> list[dict[str, Any]]:
    """One results row per lane, warning (in the row and the log) where a model is worse than predicting the
    training set's mean image."""
    config, plan = context.config, context.plan
    train_seconds = sum(h["epoch_seconds"] for h in history)
    rows = []
    for i, (member, seed) in enumerate(plan.lanes):
        warnings = []
        if final[i]["mse"] > baseline:
            warnings.append(f"{plan.names[i]} learned nothing: its test MSE {final[i]['mse']:.5f} is worse than "
                            f"predicting the training set's mean image ({baseline:.5f})")
            context.log(f"warning: {warnings[-1]}")
        rows.append(result_row(
            model=config.model, variant=variant or config.model, latent_dim=config.latent_dim, pixels=config.pixels,
            epochs=history[-1]["epoch"], seed=seed, scores=final[i],
            params=models.param_count(model_variables[i]["params"]), train_seconds=train_seconds / len(plan.lanes),
            final_train_loss=history[-1]["train_loss"][i], train_seconds_total=train_seconds,
            seeds_trained_together=len(plan.lanes), mean_image_test_mse=baseline, warnings=warnings,
            **({"sweep": member} if swept else {}), **{f"test_{k}": v[i] for k, v in test_aux.items()},
            **(_validation_fields(history, i) if plan.validation is not None else {})))
    return rows
