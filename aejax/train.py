"""Training: a pure train step, one compiled `lax.scan` per epoch, evaluation, and the run loop.

The epoch function is written once for one model; `run` lifts it with `jax.vmap` over a stack of K train
states, K PRNG keys and K sets of swept hyper-parameters (K seeds, or sweep members x seeds; shared data), so
one compiled program trains every seed of a study or every member of a sweep. The loss is a function from
`aejax.losses`. The command line is `aejax.cli` (`python -m aejax.train` runs it); reloading a finished run is
`rundir.load_model`.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from aejax import checkpoint, corruption, losses, metrics, models, parallel, sweeps
from aejax.config import IMAGE_PIXELS, IMAGE_SHAPE, MNIST_TRAIN_SIZE, Config
from aejax.errors import AejaxError
from aejax.rundir import EventLog, RunDir, result_row

Array = jax.Array
PyTree = Any


class TrainState(NamedTuple):
    """Everything that changes during training, as a plain pytree."""

    step: Array  # [] int32, optimizer steps taken
    params: PyTree
    opt_state: PyTree


class Trainer(NamedTuple):
    """The static (non-array) pieces a step needs; hashable, so it can be a static jit argument."""

    model: nn.Module
    tx: optax.GradientTransformation
    loss: losses.Loss  # (model, params, inputs, targets, key) -> (scalar, aux dict); see aejax.losses
    batch_size: int
    mesh: Mesh | None = None  # data parallel over this mesh's "data" axis; None: one device
    noise: str = "none"  # input corruption for denoising (aejax.corruption); targets stay clean
    noise_level: float = 0.0
    precision: str = "default"  # float32 matmul precision of training (Config.matmul_precision)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Full batches per epoch over `n_train` images; the last partial batch is dropped (none for 60,000 images
    at batch 25)."""
    return n_train // batch_size


def default_train_size(config: Config) -> int:
    """The number of MNIST training images `config` trains on."""
    return config.train_examples or MNIST_TRAIN_SIZE


def make_schedule(config: Config, n_train: int, peak: float | Array | None = None) -> optax.Schedule:
    """The learning rate per optimizer step, for `config.epochs` epochs over `n_train` images, peaking at `peak`
    (default `config.lr`; in a sweep a traced value, which scales the schedule's shape at peak 1)."""
    peak = config.lr if peak is None else peak
    if isinstance(peak, jax.Array):
        shape = make_schedule(config, n_train, 1.0)
        return lambda count: peak * shape(count)
    steps = steps_per_epoch(n_train, config.batch_size)
    total = config.epochs * steps
    if config.schedule == "constant":
        return optax.constant_schedule(peak)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, total)
    warmup = int(config.warmup_epochs * steps)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total)


def _optimizer(config: Config, n_train: int, learning_rate: float | Array,
               weight_decay: float | Array) -> optax.GradientTransformation:
    schedule = make_schedule(config, n_train, learning_rate)
    if config.optimizer == "adam":
        return optax.adam(schedule)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=weight_decay)
    return optax.sgd(schedule, momentum=0.9)


def make_optimizer(config: Config, n_train: int, swept: Sequence[str] = ()) -> optax.GradientTransformation:
    """The optimizer of `config`. When `swept` names `lr` or `weight_decay`, they are `inject_hyperparams` state
    (`opt_state.hyperparams`), set per sweep member by `init_state`; the schedule scales its peak by them."""
    if not set(swept) & set(sweeps.OPTIMIZER_HPARAMS):
        return _optimizer(config, n_train, config.lr, config.weight_decay)
    return optax.inject_hyperparams(functools.partial(_optimizer, config, n_train))(
        learning_rate=config.lr, weight_decay=config.weight_decay)


def make_trainer(config: Config, n_train: int | None = None, swept: Sequence[str] = ()) -> Trainer:
    """The static pieces of training `config` on `n_train` images (default: the MNIST count `config` names;
    pass the size of the array actually trained on, which sets the schedule's length); `swept` names the
    hyper-parameters a sweep varies (`aejax.sweeps`)."""
    n_train = default_train_size(config) if n_train is None else n_train
    mesh = parallel.make_mesh(config.batch_size) if config.data_parallel else None
    model = models.build(config)
    return Trainer(model, make_optimizer(config, n_train, swept), losses.get_loss(config.loss, model),
                   config.batch_size, mesh, config.noise, config.noise_level, config.matmul_precision)


def init_state(trainer: Trainer, key: Array, hparams: dict[str, Array] | None = None) -> TrainState:
    """A fresh state from `key`; `hparams` (a sweep member's values) sets the optimizer's injected ones."""
    params = trainer.model.init(key, jnp.zeros((1, *IMAGE_SHAPE), jnp.float32))["params"]
    opt_state = trainer.tx.init(params)
    injected = {sweeps.OPTIMIZER_HPARAMS[k]: v for k, v in (hparams or {}).items() if k in sweeps.OPTIMIZER_HPARAMS}
    if injected:
        old = opt_state.hyperparams
        opt_state = opt_state._replace(hyperparams={**old, **{k: jnp.asarray(v, old[k].dtype)
                                                               for k, v in injected.items()}})
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state)


def train_step(trainer: Trainer, state: TrainState, batch: Array, key: Array | None = None,
               hparams: dict[str, Array] | None = None) -> tuple[TrainState, tuple[Array, dict[str, Array]]]:
    """One optimizer step on a float batch `[B, 28, 28, 1]`; returns the new state and (loss, aux).

    `key` draws the input corruption of a denoising trainer and, folded, the loss's own randomness (a VAE's
    code sample). `hparams` holds a sweep member's values of loss-side settings (`noise_level`, model weights).
    """
    hparams = hparams or {}
    level = hparams.get("noise_level", trainer.noise_level)
    inputs = batch if trainer.noise == "none" else corruption.corrupt(key, batch, trainer.noise, level)
    model = sweeps.with_model_hparams(trainer.model, hparams)
    loss_key = None if key is None else jax.random.fold_in(key, 1)
    (loss, aux), grads = jax.value_and_grad(trainer.loss, argnums=1, has_aux=True)(
        model, state.params, inputs, batch, loss_key)
    updates, opt_state = trainer.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), (loss, aux)


def epoch_batches(key: Array, n: int, batch_size: int) -> Array:
    """A permutation of `n` indices cut into full batches: `[n // batch_size, batch_size]` int32."""
    steps = n // batch_size
    return jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)


def train_epoch(trainer: Trainer, state: TrainState, images: Array, key: Array,
                hparams: dict[str, Array] | None = None) -> tuple[TrainState, tuple[Array, dict[str, Array]]]:
    """One epoch as one `lax.scan` over shuffled device-resident batches.

    `images` is uint8 `[N, 28, 28, 1]` already on the device; `key` decides this epoch's order (and the
    steps' corruption and loss keys). Returns the new state and the per-step (losses, aux), each `[N // B]`.
    """
    batches = epoch_batches(key, images.shape[0], trainer.batch_size)
    step_keys = jax.random.split(jax.random.fold_in(key, 1), batches.shape[0])  # corruption, one per step
    rows = images.reshape(images.shape[0], -1)  # [N, 784]: XLA's CPU gather of whole rows is ~8x faster

    def body(state: TrainState, xs: tuple[Array, Array]) -> tuple[TrainState, Array]:
        idx, step_key = xs
        batch = metrics.to_float(rows[idx]).reshape(idx.shape[0], *images.shape[1:])  # [B, 28, 28, 1]
        if trainer.mesh is not None:  # each device gathers and trains on its slice of the batch
            batch = jax.lax.with_sharding_constraint(batch, parallel.batch_sharded(trainer.mesh))
        return train_step(trainer, state, batch, step_key, hparams)

    return jax.lax.scan(body, state, (batches, step_keys))


def epoch_key(seed_key: Array, epoch: int) -> Array:
    """The data-order key of a 0-based `epoch`, derived (not carried), so a resumed run sees the same order."""
    return jax.random.fold_in(seed_key, epoch)


def seed_keys(seed: int) -> tuple[Array, Array]:
    """(init key, data key) of one integer seed."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    return init_key, data_key


EVAL_TAG = 2 ** 31 - 1  # folded into a data key for the final test-loss evaluation (never an epoch number)


def evaluate(trainer: Trainer, with_ssim: bool, params: PyTree, images: Array) -> metrics.Totals:
    """Test-set totals of one model on uint8 `images` (`metrics.totals`, the one evaluation path)."""
    return metrics.totals(trainer.model.apply, {"params": params}, images, with_ssim=with_ssim)


def eval_loss(trainer: Trainer, params: PyTree, images: Array, key: Array,
              hparams: dict[str, Array] | None = None, chunk: int = 1000) -> dict[str, Array]:
    """The training loss and its aux on uint8 `images`, clean inputs, averaged per image over chunks: the
    test-set value of what the loss measures (e.g. a VAE's ELBO), `{"loss": [], **aux}`."""
    model = sweeps.with_model_hparams(trainer.model, hparams or {})
    n = images.shape[0]
    keys = jax.random.split(key, n // min(chunk, n) + 1)  # one per part, the remainder's last

    def total(batch: Array, i: Array) -> dict[str, Array]:  # sum over the part's images
        x = metrics.to_float(batch)
        loss, aux = trainer.loss(model, params, x, x, keys[i])
        return jax.tree_util.tree_map(lambda v: v * batch.shape[0], {"loss": loss, **aux})

    sums = metrics.sum_over_chunks(total, images, chunk)
    return jax.tree_util.tree_map(lambda v: v / n, sums)


class Program(NamedTuple):
    """The compiled functions of a run, each over a stack of K models (leading axis)."""

    init: Callable  # (keys [K], hparams {name: [K]}) -> TrainState[K]
    epoch: Callable  # (TrainState[K], images, keys [K], hparams) -> (TrainState[K], (losses, aux) [K, steps])
    evaluate: Callable  # (with_ssim, params[K], images) -> metrics.Totals with [K] leaves
    eval_loss: Callable  # (params[K], images, keys [K], hparams) -> {"loss": [K], **aux}


def at_precision(fn: Callable, precision: str) -> Callable:
    """`fn` traced under a default float32 matmul precision ('default' leaves the backend's own)."""
    if precision == "default":
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(precision):
            return fn(*args, **kwargs)

    return wrapped


def compile_program(trainer: Trainer) -> Program:
    """jit(vmap(...)) of the single-model functions over K models (seeds, or sweep members x seeds), each
    with its own key and hyper-parameters (`{}` outside a sweep); the state argument of `epoch` is donated.
    Training runs at the trainer's matmul precision, evaluation at the highest."""
    return Program(
        init=jax.jit(jax.vmap(functools.partial(init_state, trainer))),
        epoch=jax.jit(at_precision(jax.vmap(functools.partial(train_epoch, trainer), in_axes=(0, None, 0, 0)),
                                   trainer.precision), donate_argnums=0),
        evaluate=jax.jit(at_precision(lambda with_ssim, params, images: jax.vmap(
            functools.partial(evaluate, trainer, with_ssim), in_axes=(0, None))(params, images), "highest"),
            static_argnums=0),
        eval_loss=jax.jit(at_precision(jax.vmap(functools.partial(eval_loss, trainer), in_axes=(0, None, 0, 0)),
                                       "highest")),
    )


def unstack(tree: PyTree, i: int) -> PyTree:
    return jax.tree_util.tree_map(lambda x: x[i], tree)


class RunResult(NamedTuple):
    """What `run` trained: one results row per model (as in results.json), the model and each one's params.

    Models are the seeds, or with a sweep each member times each seed (member-major, as the rows)."""

    rows: list[dict[str, Any]]
    model: nn.Module
    params: list[PyTree]  # one per row, in the order of the rows
    epochs_trained: int  # epochs trained by this call (0: the run was already finished and only reloaded)


def check_seeds(config: Config, seeds: Sequence[int] | None) -> list[int]:
    """The seeds a run trains: `seeds` when given (then `config.seed` must be its default or one of them),
    else `[config.seed]`."""
    if seeds is None:
        return [config.seed]
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(type(s) is not int or s < 0 for s in seeds):
        raise AejaxError(f"seeds must be distinct non-negative integers, got {seeds!r}")
    if config.seed != Config.seed and config.seed not in seeds:
        raise AejaxError(f"config.seed={config.seed} is not among seeds={seeds}: seeds replaces config.seed, "
                         f"so give one or the other")
    return seeds


def _scores(totals: metrics.Totals, k: int) -> list[dict[str, float]]:
    return [metrics.finalize(unstack(totals, i)) for i in range(k)]


def _test_mse(totals: metrics.Totals) -> list[float]:
    """Each model's test MSE from `[K]` totals copied to the host, by the float32 division `metrics.finalize`
    makes: while the next epoch runs, device operations (indexing, dividing) would queue behind it."""
    totals = jax.device_get(totals)
    mse = totals.squared_error.astype(np.float32) / (totals.count * IMAGE_PIXELS).astype(np.float32)
    return [float(m) for m in mse]


class InFlight(NamedTuple):
    """An epoch dispatched to the device and not yet read back: `run` reads epoch e while epoch e+1 runs."""

    epoch: int  # 1-based: epochs completed once it finishes
    state: TrainState  # a copy of the state after it (the live one is donated to the next epoch), to checkpoint
    losses: Array  # [K, steps]
    aux: dict[str, Array]
    totals: metrics.Totals  # test-set totals of its parameters, [K] leaves
    dispatched_at: float  # time.perf_counter() when dispatched


_copy = jax.jit(lambda tree: jax.tree_util.tree_map(jnp.copy, tree))  # fresh buffers, not aliases


def run(config: Config, out_dir: str | Path, *, seeds: Sequence[int] | None = None,
        sweep: dict[str, Sequence[float]] | None = None, data_dir: str | None = None, mnist_dir: str | None = None,
        resume: bool = False, overwrite: bool = False, data: tuple[np.ndarray, np.ndarray] | None = None,
        variant: str | None = None, log: Callable[[str], None] = print) -> RunResult:
    """Train one model per seed (vmapped, shared data), evaluate, checkpoint, and write the run directory.

    `seeds` defaults to `[config.seed]`. `sweep` (setting -> values, e.g. `{"lr": [1e-3, 3e-3]}`; see
    `aejax.sweeps`) trains every member of its grid times every seed in the same one program, one row each.
    `data`, if given, is `(train_images, test_images)` uint8 arrays (host or device) and skips loading MNIST
    (tests, studies that load once). `variant` labels the rows (default: the model name). With `resume`, a run of
    the same config continues from its latest checkpoint (a finished one is reloaded, not retrained). Returns the
    rows (also in results.json) and the trained parameters.

    The host never makes the device wait between epochs: epoch e+1 and its test evaluation are dispatched before
    epoch e is read back (losses checked, checkpoint saved asynchronously from a copy of the state, metrics line
    and log written once the checkpoint is on disk). A stop signal finishes and checkpoints the epoch in flight.
    """
    seeds = check_seeds(config, seeds)
    grid = sweeps.members(config, sweep)
    lanes = [(member, seed) for member in grid for seed in seeds]  # one trained model each, member-major
    names = [f"{sweeps.label(m) + ' ' if m else ''}seed {s}" for m, s in lanes]
    if data is None:
        from aejax.data import load_mnist, split_size

        def load_train(rows: range) -> np.ndarray:
            return load_mnist("train", data_dir=data_dir, mnist_dir=mnist_dir, rows=rows).images

        n_available = split_size("train", data_dir=data_dir, mnist_dir=mnist_dir)
        test_np = load_mnist("test", data_dir=data_dir, mnist_dir=mnist_dir).images
    else:
        def load_train(rows: range) -> np.ndarray:
            return data[0][rows.start:rows.stop]

        n_available, test_np = len(data[0]), data[1]
    n_train = n_available if config.train_examples is None else min(n_available, config.train_examples)
    if n_train < config.batch_size:
        raise AejaxError(f"batch_size {config.batch_size} is larger than the {n_train} training images")
    trainer = make_trainer(config, n_train, swept=list(grid[0]))
    sweeps.check_model(trainer.model, grid)
    run_dir = RunDir.open(out_dir, config, seeds, resume=resume, overwrite=overwrite, sweep=grid if sweep else None)
    program = compile_program(trainer)
    keys = [seed_keys(s) for _, s in lanes]
    init_keys = jnp.stack([k[0] for k in keys])
    data_keys = jnp.stack([k[1] for k in keys])
    hparams = sweeps.lane_hparams(grid, len(seeds))  # {} outside a sweep
    state = program.init(init_keys, hparams)
    if trainer.mesh is None:
        train_images, test_images = jax.device_put(load_train(range(n_train))), jax.device_put(test_np)  # uint8
    else:
        test_images, state, hparams = parallel.replicate((test_np, state, hparams), trainer.mesh)
        train_images = (parallel.shard_rows(load_train, n_train, trainer.mesh) if config.shard_data
                        else parallel.replicate(load_train(range(n_train)), trainer.mesh))
    mngr = checkpoint.manager(run_dir.path / "checkpoints", config.keep_checkpoints)
    start_epoch, history = 0, []
    if resume:  # the newest checkpoint whose epoch has its metrics line (the line is written after the save)
        history = run_dir.read_metrics()
        usable = [s for s in mngr.all_steps() if s <= len(history)]
        if usable:
            state, meta = checkpoint.restore(mngr, state, log=log, max_step=len(history))
            start_epoch, history = int(meta["epoch"]), history[: int(meta["epoch"])]
            log(f"resumed from {run_dir.path / 'checkpoints'} at epoch {start_epoch}")
        else:
            history = []

    n_steps = steps_per_epoch(n_train, config.batch_size)
    train_seconds = sum(h["epoch_seconds"] for h in history)
    final = None  # the last epoch's scores, SSIM included: they are the results
    events_dirs = [(sweeps.label(m) + "_" if m else "") + f"seed_{s}" for m, s in lanes]
    ckpt_meta = {"seeds": seeds, "config": config.to_dict(), **({"sweep": grid} if sweep else {})}
    done_at = time.perf_counter()  # when the device finished the last epoch read back

    def report(flight: InFlight) -> None:
        """Read back one epoch (while the next one runs), check it, checkpoint it, then write its metrics line."""
        nonlocal train_seconds, final, done_at
        losses = np.asarray(flight.losses)  # [K, steps]; waits for that epoch only
        now = time.perf_counter()
        seconds, done_at = now - max(flight.dispatched_at, done_at), now
        _check_finite(losses, flight.epoch - 1, names, mngr)
        checkpoint.save(mngr, flight.epoch, flight.state, {"epoch": flight.epoch, **ckpt_meta}, wait=False)
        train_seconds += seconds
        if flight.epoch == config.epochs:  # nothing runs after the last epoch: its full scores are the results
            final = _scores(flight.totals, len(lanes))
        history.append({"epoch": flight.epoch, "train_loss": losses.mean(axis=1).tolist(),
                        "test_mse": _test_mse(flight.totals), "epoch_seconds": seconds,
                        "images_per_second": len(lanes) * n_steps * config.batch_size / seconds})
        if flight.aux:
            history[-1]["train_aux"] = {k: np.asarray(v).mean(axis=1).tolist() for k, v in flight.aux.items()}
        events.epoch(history[-1])
        mngr.wait_until_finished()  # a metrics line always has its checkpoint on disk
        run_dir.write_metrics(history)
        log(f"epoch {flight.epoch}/{config.epochs}  train_loss {losses.mean():.5f}  "
            f"test_mse {np.mean(history[-1]['test_mse']):.5f}  "
            f"{history[-1]['images_per_second']:,.0f} img/s  {seconds:.1f}s"
            + ("  (includes compilation)" if flight.epoch == start_epoch + 1 else ""))

    def interrupted(epoch: int) -> Interrupted:
        signum = received[0] if received else signal.SIGTERM  # another host was signalled
        stopped = (f"stopped by {signal.Signals(signum).name} after epoch {epoch}/{config.epochs}; its "
                   f"checkpoint is saved in {run_dir.path / 'checkpoints'}; continue with")
        return Interrupted(f"{stopped} resume=True", cli=f"{stopped} --resume", exit_code=128 + signum)

    with (stop_requests() as received, contextlib.closing(EventLog(run_dir.path, events_dirs)) as events,
          contextlib.closing(mngr)):
        pending = None  # the epoch dispatched last, not yet read back
        for epoch in range(start_epoch, config.epochs):
            dispatched_at = time.perf_counter()
            ekeys = jax.vmap(epoch_key, in_axes=(0, None))(data_keys, epoch)
            state, (losses, aux) = program.epoch(state, train_images, ekeys, hparams)
            totals = program.evaluate(epoch + 1 == config.epochs, state.params, test_images)
            flight = InFlight(epoch + 1, _copy(state), losses, aux, totals, dispatched_at)  # state is donated next
            if pending is not None:  # the device runs `flight` while the host finishes `pending`
                report(pending)
                if parallel.any_process(bool(received)):  # every host stops after the same epoch
                    report(flight)  # the epoch in flight is finished and checkpointed, not lost
                    raise interrupted(flight.epoch)
            pending = flight
        if pending is not None:
            report(pending)
            if parallel.any_process(bool(received)):
                raise interrupted(pending.epoch)
        if final is None:  # every epoch was trained before: a finished run, reloaded
            final = _scores(program.evaluate(True, state.params, test_images), len(lanes))
        test_aux = {}
        if "train_aux" in history[-1]:  # a loss with terms of its own: score them on the test set too
            eval_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(data_keys, EVAL_TAG)
            test_aux = {k: np.asarray(v).tolist()
                        for k, v in program.eval_loss(state.params, test_images, eval_keys, hparams).items()}

        params = [unstack(state.params, i) for i in range(len(lanes))]
        baseline = metrics.mean_image_mse(train_images, test_images)
        rows = []
        for i, (member, seed) in enumerate(lanes):
            warnings = []
            if final[i]["mse"] > baseline:
                warnings.append(f"{names[i]} learned nothing: its test MSE {final[i]['mse']:.5f} is worse than "
                                f"predicting the training set's mean image ({baseline:.5f})")
                log(f"warning: {warnings[-1]}")
            rows.append(result_row(
                model=config.model, variant=variant or config.model, latent_dim=config.latent_dim,
                epochs=config.epochs, seed=seed, scores=final[i], params=models.param_count(params[i]),
                train_seconds=train_seconds / len(lanes), final_train_loss=history[-1]["train_loss"][i],
                train_seconds_total=train_seconds, seeds_trained_together=len(lanes),
                mean_image_test_mse=baseline, warnings=warnings,
                **({"sweep": member} if sweep else {}),
                **{f"test_{k}": v[i] for k, v in test_aux.items()}))
        run_dir.write_results(rows)
        run_dir.write_reconstructions(trainer.model, params[0], np.asarray(test_images[:10]),
                                      f"{config.model}, code {config.latent_dim}, {names[0]}: "
                                      f"test MSE {rows[0]['test_mse']:.5f}", events, config.epochs)
    return RunResult(rows, trainer.model, params, config.epochs - start_epoch)


class Interrupted(AejaxError):
    """SIGINT or SIGTERM arrived; the epoch in flight finished and was checkpointed."""

    def __init__(self, message: str, *, cli: str, exit_code: int):
        super().__init__(message, cli=cli)
        self.exit_code = exit_code


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM (preemption) instead of dying mid-epoch; `run` stops once the epoch on the device
    (the one after the epoch being reported) is finished and checkpointed.

    A second signal stops at once (the checkpoint of the last reported epoch is on disk either way).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        print(f"received {signal.Signals(signum).name}: stopping after the epoch in flight is checkpointed",
              file=sys.stderr)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _check_finite(losses: np.ndarray, epoch: int, names: list[str], mngr) -> None:
    bad = ~np.isfinite(losses)
    if bad.any():
        k, step = np.argwhere(bad)[0]
        kept = mngr.latest_step()
        where = f"the last good checkpoint (epoch {kept}) is kept" if kept else "no checkpoint was written"
        message = (f"non-finite loss at epoch {epoch + 1}, step {step + 1} ({names[k]}); training stopped and "
                   f"{where}; try a smaller")
        raise AejaxError(f"{message} lr", cli=f"{message} --lr")


if __name__ == "__main__":
    from aejax.cli import main

    main()
