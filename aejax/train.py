"""Training: a pure train step, one compiled `lax.scan` per epoch, evaluation, and the run loop.

The epoch function is written once for one model; `run` lifts it with `jax.vmap` over a stack of K train
states and K PRNG keys (K seeds, shared data), so one compiled program trains every seed of a study.

    python -m aejax.train --model linear --latent-dim 32 --epochs 5 --out runs/linear_d32
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from aejax import checkpoint, corruption, metrics, models, parallel
from aejax.config import CONV_ORIGINAL_CODE, MNIST_TRAIN_SIZE, Config
from aejax.errors import AejaxError
from aejax.rundir import RunDir

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
    loss: str
    batch_size: int
    mesh: Mesh | None = None  # data parallel over this mesh's "data" axis; None: one device
    noise: str = "none"  # input corruption for denoising (aejax.corruption); targets stay clean
    noise_level: float = 0.0


def steps_per_epoch(config: Config) -> int:
    """Full batches per epoch; the last partial batch is dropped (none for 60,000 images at batch 25)."""
    return (config.train_examples or MNIST_TRAIN_SIZE) // config.batch_size


def make_schedule(config: Config) -> optax.Schedule:
    total = config.epochs * steps_per_epoch(config)
    if config.schedule == "constant":
        return optax.constant_schedule(config.lr)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.lr, total)
    warmup = int(config.warmup_epochs * steps_per_epoch(config))
    return optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, total)


def make_optimizer(config: Config) -> optax.GradientTransformation:
    schedule = make_schedule(config)
    if config.optimizer == "adam":
        return optax.adam(schedule)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay)
    return optax.sgd(schedule, momentum=0.9)


def make_trainer(config: Config) -> Trainer:
    mesh = parallel.make_mesh(config.batch_size) if config.data_parallel else None
    return Trainer(models.build(config), make_optimizer(config), config.loss, config.batch_size, mesh,
                   config.noise, config.noise_level)


def init_state(trainer: Trainer, key: Array) -> TrainState:
    params = trainer.model.init(key, jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, trainer.tx.init(params))


def loss_fn(trainer: Trainer, params: PyTree, inputs: Array, batch: Array) -> Array:
    """Mean reconstruction loss of `batch` (float `[B, 28, 28, 1]` in [0, 1]) from `inputs` (the batch, or a
    corrupted copy of it)."""
    recon = trainer.model.apply({"params": params}, inputs).astype(jnp.float32)
    if trainer.loss == "mse":
        return jnp.mean((recon - batch) ** 2)
    eps = 1e-7
    recon = jnp.clip(recon, eps, 1 - eps)
    return -jnp.mean(batch * jnp.log(recon) + (1 - batch) * jnp.log(1 - recon))


def train_step(trainer: Trainer, state: TrainState, batch: Array,
               key: Array | None = None) -> tuple[TrainState, Array]:
    """One optimizer step on a float batch `[B, 28, 28, 1]`; returns the new state and the batch loss.

    `key` draws the input corruption of a denoising trainer (unused otherwise).
    """
    inputs = batch if trainer.noise == "none" else corruption.corrupt(key, batch, trainer.noise, trainer.noise_level)
    loss, grads = jax.value_and_grad(loss_fn, argnums=1)(trainer, state.params, inputs, batch)
    updates, opt_state = trainer.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), loss


def epoch_batches(key: Array, n: int, batch_size: int) -> Array:
    """A permutation of `n` indices cut into full batches: `[n // batch_size, batch_size]` int32."""
    steps = n // batch_size
    return jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)


def train_epoch(trainer: Trainer, state: TrainState, images: Array, key: Array) -> tuple[TrainState, Array]:
    """One epoch as one `lax.scan` over shuffled device-resident batches.

    `images` is uint8 `[N, 28, 28, 1]` already on the device; `key` decides this epoch's order.
    Returns the new state and the per-step losses `[N // batch_size]`.
    """
    batches = epoch_batches(key, images.shape[0], trainer.batch_size)
    step_keys = jax.random.split(jax.random.fold_in(key, 1), batches.shape[0])  # corruption, one per step
    rows = images.reshape(images.shape[0], -1)  # [N, 784]: XLA's CPU gather of whole rows is ~8x faster

    def body(state: TrainState, xs: tuple[Array, Array]) -> tuple[TrainState, Array]:
        idx, step_key = xs
        batch = metrics.to_float(rows[idx]).reshape(idx.shape[0], *images.shape[1:])  # [B, 28, 28, 1]
        if trainer.mesh is not None:  # each device gathers and trains on its slice of the batch
            batch = jax.lax.with_sharding_constraint(batch, parallel.batch_sharded(trainer.mesh))
        return train_step(trainer, state, batch, step_key)

    return jax.lax.scan(body, state, (batches, step_keys))


def epoch_key(seed_key: Array, epoch: int) -> Array:
    """The data-order key of a 0-based `epoch`, derived (not carried), so a resumed run sees the same order."""
    return jax.random.fold_in(seed_key, epoch)


def seed_keys(seed: int) -> tuple[Array, Array]:
    """(init key, data key) of one integer seed."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    return init_key, data_key


def test_mse(trainer: Trainer, params: PyTree, images: Array) -> Array:
    """Test-set MSE of one model on uint8 `images`, in chunks (cheap enough for every epoch)."""
    chunks = images.reshape(-1, 1000, *images.shape[1:]) if images.shape[0] % 1000 == 0 else images[None]

    def body(total: Array, chunk: Array) -> tuple[Array, None]:
        x = metrics.to_float(chunk)
        recon = trainer.model.apply({"params": params}, x).astype(jnp.float32)
        return total + jnp.sum((recon - x) ** 2), None

    total, _ = jax.lax.scan(body, jnp.zeros(()), chunks)
    return total / images.size


class Program(NamedTuple):
    """The compiled functions of a run, each over a stack of K models (leading axis)."""

    init: Any  # keys [K] -> TrainState[K]
    epoch: Any  # (TrainState[K], images, keys [K]) -> (TrainState[K], losses [K, steps])
    test_mse: Any  # (params[K], images) -> [K]


def compile_program(trainer: Trainer) -> Program:
    """jit(vmap(...)) of the single-model functions; the state argument of `epoch` is donated."""
    return Program(
        init=jax.jit(jax.vmap(functools.partial(init_state, trainer))),
        epoch=jax.jit(jax.vmap(functools.partial(train_epoch, trainer), in_axes=(0, None, 0)),
                      donate_argnums=0),
        test_mse=jax.jit(jax.vmap(functools.partial(test_mse, trainer), in_axes=(0, None))),
    )


def unstack(tree: PyTree, i: int) -> PyTree:
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def final_metrics(trainer: Trainer, params: PyTree, images: Array) -> dict[str, float]:
    return metrics.reconstruction_metrics(trainer.model.apply, {"params": params}, images)


def run(config: Config, out_dir: str | Path, *, seeds: list[int] | tuple[int, ...] | None = None,
        data_dir: str | None = None, mnist_dir: str | None = None, resume: bool = False,
        overwrite: bool = False, data: tuple[np.ndarray, np.ndarray] | None = None,
        log=print) -> list[dict[str, Any]]:
    """Train one model per seed (vmapped, shared data), evaluate, checkpoint, and write the run directory.

    `seeds` defaults to `[config.seed]`. `data`, if given, is `(train_images, test_images)` uint8 arrays and
    skips loading MNIST (tests, sweeps that load once). Returns one result row per seed (also in results.json).
    """
    seeds = [config.seed] if seeds is None else list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise AejaxError(f"seeds must be distinct non-negative integers, got {seeds!r}")
    run_dir = RunDir.open(out_dir, config, seeds, resume=resume, overwrite=overwrite)
    if data is None:
        from aejax.data import load_mnist, split_size

        def load_train(rows: range) -> np.ndarray:
            return load_mnist("train", data_dir=data_dir, mnist_dir=mnist_dir, rows=rows).images

        n_train = split_size("train", data_dir=data_dir, mnist_dir=mnist_dir)
        test_np = load_mnist("test", data_dir=data_dir, mnist_dir=mnist_dir).images
    else:
        def load_train(rows: range) -> np.ndarray:
            return data[0][rows.start:rows.stop]

        n_train, test_np = len(data[0]), data[1]
    n_train = n_train if config.train_examples is None else min(n_train, config.train_examples)
    trainer = make_trainer(config)
    program = compile_program(trainer)
    keys = [seed_keys(s) for s in seeds]
    init_keys = jnp.stack([k[0] for k in keys])
    data_keys = jnp.stack([k[1] for k in keys])
    state = program.init(init_keys)
    if trainer.mesh is None:
        train_images, test_images = jax.device_put(load_train(range(n_train))), jax.device_put(test_np)  # uint8
    else:
        test_images, state = parallel.replicate((test_np, state), trainer.mesh)
        train_images = (parallel.shard_rows(load_train, n_train, trainer.mesh) if config.shard_data
                        else parallel.replicate(load_train(range(n_train)), trainer.mesh))
    mngr = checkpoint.manager(run_dir.path / "checkpoints", config.keep_checkpoints)
    start_epoch, history = 0, []
    if resume and mngr.latest_step() is not None:
        state, meta = checkpoint.restore(mngr, state, log=log)
        start_epoch, history = int(meta["epoch"]), run_dir.read_metrics()[: int(meta["epoch"])]
        log(f"resumed from {run_dir.path / 'checkpoints'} at epoch {start_epoch}")

    n_steps = steps_per_epoch(config)
    train_seconds = sum(h["epoch_seconds"] for h in history)
    with stop_requests() as received:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            ekeys = jax.vmap(epoch_key, in_axes=(0, None))(data_keys, epoch)
            state, losses = program.epoch(state, train_images, ekeys)
            losses = np.asarray(losses)  # [K, steps]; waits for the epoch
            seconds = time.perf_counter() - t0
            _check_finite(losses, epoch, seeds, mngr)
            train_seconds += seconds
            mse = np.asarray(program.test_mse(state.params, test_images))
            history.append({"epoch": epoch + 1, "train_loss": losses.mean(axis=1).tolist(),
                            "test_mse": mse.tolist(), "epoch_seconds": seconds,
                            "images_per_second": len(seeds) * n_steps * config.batch_size / seconds})
            checkpoint.save(mngr, epoch + 1, state,
                            {"epoch": epoch + 1, "seeds": seeds, "config": config.to_dict()})
            run_dir.write_metrics(history)
            log(f"epoch {epoch + 1}/{config.epochs}  train_loss {losses.mean():.5f}  test_mse {mse.mean():.5f}  "
                f"{history[-1]['images_per_second']:,.0f} img/s  {seconds:.1f}s"
                + ("  (includes compilation)" if epoch == start_epoch else ""))
            if received:
                raise Interrupted(f"stopped by {signal.Signals(received[0]).name} after epoch {epoch + 1}/"
                                  f"{config.epochs}; its checkpoint is saved in {run_dir.path / 'checkpoints'}; "
                                  f"continue with --resume", exit_code=128 + received[0])

    rows = []
    for i, seed in enumerate(seeds):
        params = unstack(state.params, i)
        m = final_metrics(trainer, params, test_images)
        rows.append({
            "model": config.model, "latent_dim": config.latent_dim,
            "compression_ratio": config.compression_ratio, "epochs": config.epochs, "seed": seed,
            "test_mse": m["mse"], "test_psnr_db": m["psnr_db"], "test_ssim": m["ssim"],
            "final_train_loss": history[-1]["train_loss"][i], "params": models.param_count(params),
            "train_seconds": train_seconds / len(seeds), "train_seconds_total": train_seconds,
            "seeds_trained_together": len(seeds),
        })
    run_dir.write_results(rows)
    from aejax import plots
    plots.reconstructions(run_dir.path / "recon.png", np.asarray(test_images[:10]),
                          np.asarray(trainer.model.apply({"params": unstack(state.params, 0)},
                                                         metrics.to_float(test_images[:10]))),
                          title=f"{config.model}, code {config.latent_dim}, seed {seeds[0]}: "
                                f"test MSE {rows[0]['test_mse']:.5f}")
    return rows


def load_model(run_dir: str | Path, seed: int | None = None) -> tuple[nn.Module, PyTree, Config]:
    """Reload a trained model from a run directory's latest checkpoint: `(model, params, config)`.

    `seed` picks one of the run's seeds (default: its first). No training, no data needed.
    """
    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        config, seeds = Config.from_dict(saved["config"]), list(saved["seeds"])
    except FileNotFoundError:
        raise AejaxError(f"{run_dir} holds no aejax run (no config.json)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise AejaxError(f"{run_dir / 'config.json'} is not a valid run config ({e})") from None
    if seed is not None and seed not in seeds:
        raise AejaxError(f"{run_dir} has seeds {seeds}, not {seed}")
    trainer = make_trainer(config)
    keys = jnp.stack([seed_keys(s)[0] for s in seeds])
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # whatever devices wrote it
    target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                    jax.eval_shape(jax.vmap(functools.partial(init_state, trainer)), keys))
    state, _ = checkpoint.restore(checkpoint.manager(run_dir / "checkpoints", config.keep_checkpoints), target)
    return trainer.model, unstack(state.params, seeds.index(seed) if seed is not None else 0), config


class Interrupted(AejaxError):
    """SIGINT or SIGTERM arrived; the epoch in flight finished and was checkpointed."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM (preemption) instead of dying mid-epoch; the loop stops after the next checkpoint.

    A second signal stops at once (the checkpoint of the last finished epoch is on disk either way).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        print(f"received {signal.Signals(signum).name}: stopping after this epoch's checkpoint", file=sys.stderr)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _check_finite(losses: np.ndarray, epoch: int, seeds: list[int], mngr) -> None:
    bad = ~np.isfinite(losses)
    if bad.any():
        k, step = np.argwhere(bad)[0]
        kept = mngr.latest_step()
        where = f"the last good checkpoint (epoch {kept}) is kept" if kept else "no checkpoint was written"
        raise AejaxError(f"non-finite loss at epoch {epoch + 1}, step {step + 1} (seed {seeds[k]}); "
                         f"training stopped and {where}; try a smaller --lr")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit status 2."""

    def error(self, message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m aejax.train", description="Train one MNIST autoencoder.")
    p.add_argument("--model", default="linear", help="linear, conv or conv_original")
    p.add_argument("--latent-dim", type=int, default=None,
                   help="code size (default 32; conv_original: 392)")
    p.add_argument("--hidden", default="", help="comma-separated hidden widths of the linear model")
    p.add_argument("--conv-features", default=",".join(map(str, Config.conv_features)),
                   help="the two conv widths of the depth-matched conv model")
    p.add_argument("--epochs", type=int, default=Config.epochs)
    p.add_argument("--batch-size", type=int, default=Config.batch_size)
    p.add_argument("--lr", type=float, default=Config.lr)
    p.add_argument("--schedule", default=Config.schedule)
    p.add_argument("--warmup-epochs", type=float, default=Config.warmup_epochs)
    p.add_argument("--optimizer", default=Config.optimizer)
    p.add_argument("--loss", default=Config.loss)
    p.add_argument("--noise", default=Config.noise, help="denoising: none, gaussian, salt_pepper or mask")
    p.add_argument("--noise-level", type=float, default=Config.noise_level, help="gaussian sigma or a rate")
    p.add_argument("--dtype", default=Config.dtype)
    p.add_argument("--seed", type=int, default=Config.seed)
    p.add_argument("--data-parallel", action="store_true",
                   help="shard each batch over all devices (jax.sharding mesh), replicate the state")
    p.add_argument("--shard-data", action="store_true",
                   help="with --data-parallel: split the training images over the devices; each host loads its rows")
    p.add_argument("--train-examples", type=int, default=None, help="train on the first N images only")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data")
    p.add_argument("--mnist-dir", default=None, help="directory with the four MNIST .gz IDX files")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in --out")
    return p.parse_args(argv)


def positive_int(text: str) -> int:
    """An argparse `type` for counts: '12' -> 12; '0', '-3' or 'x' give a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'32,64' -> (32, 64), with a one-line error for anything else."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise AejaxError(f"{what} must be comma-separated integers, got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> Config:
    latent = args.latent_dim if args.latent_dim is not None else (
        CONV_ORIGINAL_CODE if args.model == "conv_original" else Config.latent_dim)
    return Config(model=args.model, latent_dim=latent, hidden=parse_ints(args.hidden, "--hidden"),
                  conv_features=parse_ints(args.conv_features, "--conv-features"),
                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                  warmup_epochs=args.warmup_epochs, optimizer=args.optimizer, loss=args.loss,
                  dtype=args.dtype, seed=args.seed, train_examples=args.train_examples,
                  data_parallel=args.data_parallel, shard_data=args.shard_data, noise=args.noise,
                  noise_level=args.noise_level)


def cli(body) -> None:
    """Run `body()`; a user error becomes one line on stderr and exit status 2."""
    try:
        body()
    except AejaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    parallel.maybe_initialize_distributed()

    def body() -> None:
        config = config_from_args(args)
        rows = run(config, args.out, data_dir=args.data_dir, mnist_dir=args.mnist_dir,
                   resume=args.resume, overwrite=args.overwrite)
        print(json.dumps(rows[0], indent=2))

    cli(body)


if __name__ == "__main__":
    main()
