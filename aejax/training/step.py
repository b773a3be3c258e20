"""Training: the state, a pure train step, one compiled `lax.scan` per epoch, evaluation, and the compiled
program over K models.

The epoch function is written once for one model; `compile_program` lifts it with `jax.vmap` over a stack of K
train states, K PRNG keys and K sets of swept hyper-parameters (K seeds, or sweep members x seeds; shared
data), so one compiled program trains every seed of a study or every member of a sweep. The loss is a
function from `aejax.training.losses`. The run loop around the program (data placement, resume, per-epoch actions,
signals, run files) is `aejax.training.loop.run`; `python -m aejax.train` is the command line (`aejax.cli`); reloading
a finished run is `aejax.training.restore.load_model`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from aejax import models
from aejax.config import BUILT_IN_SCHEDULES, MNIST_SHAPE, Config
from aejax.data import corruption, datasets
from aejax.errors import AejaxError
from aejax.evaluation import chunks, metrics
from aejax.training import losses, optimizers, parallel, schedules, sweeps

Array = jax.Array
PyTree = Any


class TrainState(NamedTuple):
    """Everything that changes during training, as a plain pytree."""

    step: Array  # [] int32, optimizer steps taken
    params: PyTree
    opt_state: PyTree
    model_state: PyTree = {}  # the model's other collections (e.g. BatchNorm's batch_stats); {} for most


def variables(state: TrainState) -> dict[str, PyTree]:
    """What `model.apply` takes: `{"params": ..., **model_state}`."""
    return {"params": state.params, **state.model_state}


class Trainer(NamedTuple):
    """The static (non-array) pieces a step needs; hashable, so it can be a static jit argument."""

    model: nn.Module
    tx: optax.GradientTransformation
    loss: losses.Loss  # (model, params, inputs, targets, key) -> (scalar, aux dict); see aejax.training.losses
    batch_size: int
    mesh: Mesh | None = None  # data parallel over this mesh's "data" axis; None: one device
    noise: str = "none"  # input corruption for denoising (aejax.data.corruption); targets stay clean
    noise_level: float = 0.0
    precision: str = "default"  # float32 matmul precision of training (Config.matmul_precision)
    image_shape: tuple[int, ...] = MNIST_SHAPE  # (H, W, C) of one image
    accumulate: int = 1  # steps whose gradients one optimizer update averages (tx is then optax.MultiSteps)
    log_every: int = 0  # > 0: each step also returns its gradient's global norm (aux GRAD_NORM)


GRAD_NORM = "grad_norm"  # the aux key of a step's gradient norm (with log_every; not a loss term)


def step_learning_rates(config: Config, n_train: int, lanes: Sequence[tuple[dict[str, float], int]],
                        epoch: int) -> np.ndarray:
    """The learning rate of every step of 1-based `epoch`, per model `[K, steps]`: the schedule at each step's
    optimizer count, scaled to each model's rate (its sweep member's lr, else `config.lr`); `lanes` as a run's
    plan lays them out, (member, seed)."""
    lane_lrs = [member.get("lr", config.lr) for member, _ in lanes]
    steps = steps_per_epoch(n_train, config.batch_size)
    counts = ((epoch - 1) * steps + np.arange(steps)) // config.accumulate
    shape = make_schedule(config, n_train)
    rates = np.asarray(shape(jnp.asarray(counts)), np.float64) / config.lr
    return np.asarray(lane_lrs, np.float64)[:, None] * rates[None, :]


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Full batches per epoch over `n_train` images; the last partial batch is dropped (none for 60,000 images
    at batch 25)."""
    return n_train // batch_size


def default_train_size(config: Config) -> int:
    """The number of training images `config` trains on, where it says or its dataset knows; otherwise one
    batch (the schedule's length then is a placeholder: the state's layout, all a reload needs, is the same)."""
    return config.train_examples or datasets.train_size(config.dataset) or config.batch_size


def make_schedule(config: Config, n_train: int, peak: float | Array | None = None) -> optax.Schedule:
    """The learning rate per optimizer step, for `config.epochs` epochs over `n_train` images, peaking at `peak`
    (default `config.lr`; in a sweep a traced value, which scales the schedule's shape at peak 1)."""
    peak = config.lr if peak is None else peak
    if isinstance(peak, jax.Array):
        shape = make_schedule(config, n_train, 1.0)
        return lambda count: peak * shape(count)
    steps = steps_per_epoch(n_train, config.batch_size) // config.accumulate  # optimizer steps
    total = config.epochs * steps
    if config.schedule not in BUILT_IN_SCHEDULES:
        return schedules.build(config, peak, total)
    if config.schedule == "constant":
        return optax.constant_schedule(peak)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, total)
    warmup = int(config.warmup_epochs * steps)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total)


def _optimizer(config: Config, n_train: int, learning_rate: float | Array,
               weight_decay: float | Array) -> optax.GradientTransformation:
    return optimizers.build(config, make_schedule(config, n_train, learning_rate), weight_decay)


def make_optimizer(config: Config, n_train: int, swept: Sequence[str] = ()) -> optax.GradientTransformation:
    """The optimizer of `config` (`aejax.training.optimizers`: any optax optimizer by name, or a registered one), its
    learning rate the schedule. When `swept` names `lr` or `weight_decay`, they are `inject_hyperparams` state
    (`opt_state.hyperparams`), set per sweep member by `init_state`; the schedule scales its peak by them."""
    optimizers.check(config, tuple(swept))
    if not set(swept) & set(sweeps.OPTIMIZER_HPARAMS):
        tx = _optimizer(config, n_train, config.lr, config.weight_decay)
    else:
        tx = optax.inject_hyperparams(functools.partial(_optimizer, config, n_train))(
            learning_rate=config.lr, weight_decay=config.weight_decay)
    if config.accumulate == 1:
        return tx
    return optax.MultiSteps(tx, every_k_schedule=config.accumulate).gradient_transformation()


def make_trainer(config: Config, n_train: int | None = None, swept: Sequence[str] = ()) -> Trainer:
    """The static pieces of training `config` (resolved against the registries here, `models.resolve`) on
    `n_train` images (default: the MNIST count `config` names; pass the size of the array actually trained on,
    which sets the schedule's length); `swept` names the hyper-parameters a sweep varies (`aejax.training.sweeps`)."""
    config = models.resolve(config)
    n_train = default_train_size(config) if n_train is None else n_train
    steps = steps_per_epoch(n_train, config.batch_size)
    if steps < config.accumulate:
        raise AejaxError(f"accumulate {config.accumulate} is more than the {steps} steps of an epoch (batch_size "
                         f"{config.batch_size}, {n_train} images): no update would end one")
    mesh = parallel.make_mesh(config.batch_size) if config.data_parallel else None
    model = models.build(config)
    trainer = Trainer(model, make_optimizer(config, n_train, swept), losses.get_loss(config.loss, model),
                      config.batch_size, mesh, config.noise, config.noise_level, config.matmul_precision,
                      tuple(config.image_shape), config.accumulate, config.log_every)
    _check_sweep_traces(trainer, [k for k in swept if k not in sweeps.CONFIG_HPARAMS and hasattr(model, k)])
    return trainer


def _check_sweep_traces(trainer: Trainer, names: Sequence[str]) -> None:
    """A swept model setting varies inside one compiled program, so the model must use it as a traced value; one
    it branches on in Python (a dropout rate checked against 0, a width) is a one-line error. Traced abstractly
    (`jax.eval_shape`: nothing is computed)."""
    if not names:
        return
    state = jax.eval_shape(lambda key: init_state(trainer, key), jax.random.key(0))
    batch = jax.ShapeDtypeStruct((trainer.batch_size, *trainer.image_shape), jnp.float32)
    for name in names:
        try:
            jax.eval_shape(lambda s, b, h: train_step(trainer, s, b, jax.random.key(0), h), state, batch,
                           {name: jax.ShapeDtypeStruct((), jnp.float32)})
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
                jax.errors.TracerIntegerConversionError) as e:
            raise AejaxError(f"cannot sweep {name}: {type(trainer.model).__name__} uses its value in Python "
                             f"({type(e).__name__}: an if, or a shape), so it cannot vary inside one compiled "
                             f"program; train each value as a run of its own") from None


def init_state(trainer: Trainer, key: Array, hparams: dict[str, Array] | None = None) -> TrainState:
    """A fresh state from `key`; `hparams` (a sweep member's values) sets the optimizer's injected ones. The
    model is initialised in inference mode; its collections other than `params` become `model_state`."""
    init = dict(trainer.model.init(key, jnp.zeros((1, *trainer.image_shape), jnp.float32)))
    params = init.pop("params")
    opt_state = trainer.tx.init(params)
    injected = {sweeps.OPTIMIZER_HPARAMS[k]: v for k, v in (hparams or {}).items() if k in sweeps.OPTIMIZER_HPARAMS}
    if injected:
        inner = opt_state.inner_opt_state if trainer.accumulate > 1 else opt_state  # under optax.MultiSteps
        old = inner.hyperparams
        inner = inner._replace(hyperparams={**old, **{k: jnp.asarray(v, old[k].dtype) for k, v in injected.items()}})
        opt_state = opt_state._replace(inner_opt_state=inner) if trainer.accumulate > 1 else inner
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state, init)


def stateful(model: nn.Module, model_state: PyTree) -> bool:
    """Whether `model` is applied through `losses.StatefulModel`: it has collections besides `params`, a `train`
    attribute, or methods taking a `train` argument (dropout, BatchNorm)."""
    return bool(model_state) or hasattr(model, "train") or bool(models.train_methods(model))


def in_context(model: nn.Module, model_state: PyTree, key: Array | None, training: bool):
    """`model` as the loss sees it: itself for a parameters-only model, else a `losses.StatefulModel` (in training
    with `train=True`, as its attribute or as the argument of the methods that take one, its collections mutable
    and dropout keys drawn from `key`)."""
    if not stateful(model, model_state):
        return model
    if training and hasattr(model, "train"):
        model = model.clone(train=True)
    return losses.StatefulModel(model, model_state, key if training else None, mutable=training,
                                train_methods=models.train_methods(model) if training else frozenset())


def train_step(trainer: Trainer, state: TrainState, batch: Array, key: Array | None = None,
               hparams: dict[str, Array] | None = None) -> tuple[TrainState, tuple[Array, dict[str, Array]]]:
    """One optimizer step on a float batch `[B, H, W, C]`; returns the new state and (loss, aux).

    `key` draws the input corruption of a denoising trainer and, folded, the loss's own randomness (a VAE's
    code sample) and a model's dropout. `hparams` holds a sweep member's values of loss-side settings
    (`noise_level`, model weights). A model with other collections (BatchNorm statistics) trains in train mode
    and its updated collections come back in the new state.
    """
    hparams = hparams or {}
    level = hparams.get("noise_level", trainer.noise_level)
    inputs = batch if trainer.noise == "none" else corruption.corrupt(key, batch, trainer.noise, level)
    model = sweeps.with_model_hparams(trainer.model, hparams)
    loss_key = None if key is None else jax.random.fold_in(key, 1)
    if not stateful(model, state.model_state):
        (loss, aux), grads = jax.value_and_grad(trainer.loss, argnums=1, has_aux=True)(
            model, state.params, inputs, batch, loss_key)
        model_state = state.model_state
    else:
        dropout_key = None if key is None else jax.random.fold_in(key, 2)

        def objective(params: PyTree) -> tuple[Array, tuple[dict[str, Array], PyTree]]:
            bound = in_context(model, state.model_state, dropout_key, training=True)
            loss, aux = trainer.loss(bound, params, inputs, batch, loss_key)
            return loss, (aux, bound.state)

        (loss, (aux, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = trainer.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if trainer.log_every:
        aux = {**aux, GRAD_NORM: optax.tree.norm(grads)}
    return TrainState(state.step + 1, params, opt_state, model_state), (loss, aux)


def epoch_batches(key: Array, n: int, batch_size: int) -> Array:
    """A permutation of `n` indices cut into full batches: `[n // batch_size, batch_size]` int32."""
    steps = n // batch_size
    return jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)


def train_epoch(trainer: Trainer, state: TrainState, images: Array, key: Array,
                hparams: dict[str, Array] | None = None) -> tuple[TrainState, tuple[Array, dict[str, Array]]]:
    """One epoch as one `lax.scan` over shuffled device-resident batches.

    `images` is uint8 (or float in [0, 1]) `[N, H, W, C]` already on the device; `key` decides this epoch's
    order (and the steps' corruption and loss keys). Returns the new state and the per-step (losses, aux), each
    `[N // B]`.
    """
    batches = epoch_batches(key, images.shape[0], trainer.batch_size)
    step_keys = jax.random.split(jax.random.fold_in(key, 1), batches.shape[0])  # corruption, one per step
    rows = images.reshape(images.shape[0], -1)  # [N, H*W*C]: XLA's CPU gather of whole rows is ~8x faster

    def body(state: TrainState, xs: tuple[Array, Array]) -> tuple[TrainState, Array]:
        idx, step_key = xs
        batch = metrics.to_float(rows[idx]).reshape(idx.shape[0], *images.shape[1:])  # [B, H, W, C]
        if trainer.mesh is not None:  # each device gathers and trains on its slice of the batch
            batch = jax.lax.with_sharding_constraint(batch, parallel.batch_sharded(trainer.mesh))
        return train_step(trainer, state, batch, step_key, hparams)

    return jax.lax.scan(body, state, (batches, step_keys))


def epoch_order(key: Array, n: int, batch_size: int) -> tuple[Array, Array]:
    """An epoch's batches of image indices `[steps, B]` and its per-step keys `[steps]`, from its key: the order
    and the corruption and loss keys `train_epoch` draws, for a loader that gathers the batches itself."""
    batches = epoch_batches(key, n, batch_size)
    return batches, jax.random.split(jax.random.fold_in(key, 1), batches.shape[0])


def train_chunk(trainer: Trainer, state: TrainState, batches: Array, step_keys: Array,
                hparams: dict[str, Array] | None = None) -> tuple[TrainState, tuple[Array, dict[str, Array]]]:
    """Consecutive steps of an epoch as one `lax.scan` over batches a loader streamed in: `batches` uint8 (or
    float in [0, 1]) `[S, B, H, W, C]`, `step_keys` `[S]` (`epoch_order`'s). The steps are `train_epoch`'s, so
    a streamed epoch trains as the device-resident one does. Returns the new state and (losses, aux), `[S]`."""

    def body(state: TrainState, xs: tuple[Array, Array]) -> tuple[TrainState, Array]:
        images, step_key = xs
        batch = metrics.to_float(images)  # [B, H, W, C]
        if trainer.mesh is not None:
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


def evaluate(trainer: Trainer, with_ssim: bool, variables: PyTree, images: Array) -> metrics.Totals:
    """Test-set totals of one model (`variables`: `{"params": ..., **model_state}`) on `images`, in inference
    mode (`metrics.totals`, the one evaluation path)."""
    return metrics.totals(trainer.model.apply, variables, images, with_ssim=with_ssim)


def eval_loss(trainer: Trainer, variables: PyTree, images: Array, key: Array,
              hparams: dict[str, Array] | None = None, chunk: int = 1000) -> dict[str, Array]:
    """The training loss and its aux on `images`, clean inputs, in inference mode, averaged per image over
    chunks: the test-set value of what the loss measures (e.g. a VAE's ELBO), `{"loss": [], **aux}`."""
    variables = dict(variables)
    params = variables.pop("params")
    model = in_context(sweeps.with_model_hparams(trainer.model, hparams or {}), variables, None, training=False)
    n = images.shape[0]
    keys = jax.random.split(key, n // min(chunk, n) + 1)  # one per part, the remainder's last

    def total(batch: Array, i: Array) -> dict[str, Array]:  # sum over the part's images
        x = metrics.to_float(batch)
        loss, aux = trainer.loss(model, params, x, x, keys[i])
        return jax.tree_util.tree_map(lambda v: v * batch.shape[0], {"loss": loss, **aux})

    sums = chunks.sum_over_chunks(total, images, chunk)
    return jax.tree_util.tree_map(lambda v: v / n, sums)


class Program(NamedTuple):
    """The compiled functions of a run, each over a stack of K models (leading axis)."""

    init: Callable  # (keys [K], hparams {name: [K]}) -> TrainState[K]
    epoch: Callable  # (TrainState[K], images, keys [K], hparams) -> (TrainState[K], (losses, aux) [K, steps])
    chunk: Callable  # (TrainState[K], batches [S, K, B, ...], step keys [K, S], hparams) -> (.., [K, S])
    order: Callable  # (keys [K], n, batch_size) -> (batches [K, steps, B], step keys [K, steps])
    evaluate: Callable  # (with_ssim, variables[K], images) -> metrics.Totals with [K] leaves
    eval_loss: Callable  # (variables[K], images, keys [K], hparams) -> {"loss": [K], **aux}


def at_precision(fn: Callable, precision: str) -> Callable:
    """`fn` traced under a default float32 matmul precision ('default' leaves the backend's own)."""
    if precision == "default":
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(precision):
            return fn(*args, **kwargs)

    return wrapped


def use_compile_cache(directory: str | os.PathLike) -> None:
    """Keep every compiled program of this process in `directory` (JAX's persistent compilation cache, any size
    and compile time), so a later process that runs the same programs loads them instead of compiling. The same
    compiled code runs either way, so results are unchanged. Call it before the first compilation."""
    jax.config.update("jax_compilation_cache_dir", os.fspath(Path(directory).absolute()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def compile_program(trainer: Trainer) -> Program:
    """jit(vmap(...)) of the single-model functions over K models (seeds, or sweep members x seeds), each
    with its own key and hyper-parameters (`{}` outside a sweep); the state argument of `epoch` is donated.
    Training runs at the trainer's matmul precision, evaluation at the highest."""
    return Program(
        init=jax.jit(jax.vmap(functools.partial(init_state, trainer))),
        epoch=jax.jit(at_precision(jax.vmap(functools.partial(train_epoch, trainer), in_axes=(0, None, 0, 0)),
                                   trainer.precision), donate_argnums=0),
        chunk=jax.jit(at_precision(jax.vmap(functools.partial(train_chunk, trainer), in_axes=(0, 1, 0, 0)),
                                   trainer.precision), donate_argnums=0),
        order=jax.jit(jax.vmap(epoch_order, in_axes=(0, None, None)), static_argnums=(1, 2)),
        evaluate=jax.jit(at_precision(lambda with_ssim, variables, images: jax.vmap(
            functools.partial(evaluate, trainer, with_ssim), in_axes=(0, None))(variables, images), "highest"),
            static_argnums=0),
        eval_loss=jax.jit(at_precision(jax.vmap(functools.partial(eval_loss, trainer), in_axes=(0, None, 0, 0)),
                                       "highest")),
    )


def unstack(tree: PyTree, i: int) -> PyTree:
    return jax.tree_util.tree_map(lambda x: x[i], tree)
