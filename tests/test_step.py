import json
import math
import re
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import models
from aejax.config import Config
from aejax.errors import AejaxError
from aejax.evaluation import metrics
from aejax.training import loop
from aejax.training import step as train
from aejax.training.restore import load_model


def _state(config: Config, seed: int = 0):
    trainer = train.make_trainer(config)
    return trainer, train.init_state(trainer, train.seed_keys(seed)[0])


@pytest.mark.parametrize("config", [Config(latent_dim=32, lr=3e-3),
                                    pytest.param(Config(model="conv", latent_dim=32, lr=3e-3), marks=pytest.mark.slow),
                                    Config(latent_dim=32, lr=3e-3, loss="bce")])
def test_train_step_drives_loss_on_a_fixed_batch_down_10x(config, mnist_test_images):
    trainer, state = _state(config)
    batch = metrics.to_float(jnp.asarray(mnist_test_images[:25]))
    step = jax.jit(train.train_step, static_argnums=0)
    def mse(p):
        return float(jnp.mean((trainer.model.apply({"params": p}, batch) - batch) ** 2))

    first = mse(state.params)
    for _ in range(300):
        state, _ = step(trainer, state, batch)
    assert mse(state.params) < first / 10
    assert int(state.step) == 300


def _epochs(config: Config, images: np.ndarray, seed: int, epochs: int = 2, trainer: train.Trainer | None = None):
    """`epochs` epochs of one seed through the single-model jitted epoch (`trainer`: reuse its compilation)."""
    trainer = trainer or train.make_trainer(config)
    state = train.init_state(trainer, train.seed_keys(seed)[0])
    fn = jax.jit(train.train_epoch, static_argnums=0)
    data_key = train.seed_keys(seed)[1]
    for e in range(epochs):
        state, (losses, _) = fn(trainer, state, jnp.asarray(images), train.epoch_key(data_key, e))
    return fn, state, losses


def test_same_seed_is_bit_identical_and_seeds_differ(mnist_test_images):
    config = Config(latent_dim=16, batch_size=50)
    _, a, _ = _epochs(config, mnist_test_images, 0)
    _, b, _ = _epochs(config, mnist_test_images, 0)
    _, c, _ = _epochs(config, mnist_test_images, 1)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.params["encoder_layers_0"]["kernel"], c.params["encoder_layers_0"]["kernel"])


def test_epoch_is_compiled_once(mnist_test_images):
    program = train.compile_program(train.make_trainer(Config(latent_dim=16, batch_size=50)))
    keys = train.seed_keys(0)
    state = program.init(keys[0][None], {})
    images = jnp.asarray(mnist_test_images)
    for e in range(3):
        state, (losses, _) = program.epoch(state, images, train.epoch_key(keys[1], e)[None], {})
    assert program.epoch._cache_size() == 1  # three epochs, one compilation
    assert losses.shape == (1, 2000 // 50)


# An instruction that calls back into Python or moves data between host and device: `%x = TYPE opcode(...)`.
HOST_OP = re.compile(r"=\s*\S.*?\s(infeed|outfeed|send|recv|send-done|recv-done)\(|custom_call_target=\"[^\"]*callback")


def _host_ops(hlo: str) -> list[str]:
    """The instructions of compiled HLO that call back into Python or move data between host and device."""
    return [line.strip() for line in hlo.splitlines() if HOST_OP.search(line)]


def test_the_host_op_check_sees_a_callback():
    hlo = jax.jit(lambda x: jax.debug.print("{}", x) or x + 1).lower(jnp.ones(3)).compile().as_text()
    assert _host_ops(hlo)


@pytest.mark.parametrize("model", ["linear", "conv", "vae"])
def test_the_compiled_epoch_holds_no_host_callbacks_or_transfers(model, mnist_test_images):
    # A callback or transfer inside the scan would stall an accelerator once per step; on CPU it only costs a
    # little, so it is checked here, in the program XLA compiled.
    program = train.compile_program(train.make_trainer(Config(model=model, latent_dim=16, batch_size=50,
                                                              train_examples=500)))
    keys = train.seed_keys(0)
    state = program.init(keys[0][None], {})
    hlo = program.epoch.lower(state, jnp.asarray(mnist_test_images[:500]), train.epoch_key(keys[1], 0)[None],
                              {}).compile().as_text()
    assert "while" in hlo and not _host_ops(hlo), _host_ops(hlo)


def test_partial_last_batch_is_dropped():
    assert train.epoch_batches(jax.random.key(0), 103, 25).shape == (4, 25)
    assert train.steps_per_epoch(60_000, 25) == 2400
    assert train.steps_per_epoch(60_000, 128) == 468


@pytest.mark.parametrize("config, seeds", [(Config(latent_dim=16, batch_size=50), [0, 1, 2]),
                                           pytest.param(Config(model="conv", latent_dim=8, conv_features=(4, 4),
                                                               batch_size=50), [0, 1],
                                                        marks=pytest.mark.slow)])  # ~14 s here; CI runs it
def test_vmapped_seeds_equal_seeds_trained_alone(config, seeds, mnist_test_images):
    trainer = train.make_trainer(config)
    program = train.compile_program(trainer)
    keys = [train.seed_keys(s) for s in seeds]
    state = program.init(jnp.stack([k[0] for k in keys]), {})
    ekeys = jnp.stack([train.epoch_key(k[1], 0) for k in keys])
    images = mnist_test_images[:500]
    state, _ = program.epoch(state, jnp.asarray(images), ekeys, {})
    for i, seed in enumerate(seeds):
        _, alone, _ = _epochs(config, images, seed, epochs=1, trainer=trainer)
        for x, y in zip(jax.tree_util.tree_leaves(train.unstack(state, i)), jax.tree_util.tree_leaves(alone)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_run_writes_the_run_directory(tmp_path, mnist_test_images):
    config = Config(latent_dim=8, epochs=2, batch_size=20, train_examples=1000, lr=2e-2)
    images = mnist_test_images
    result = loop.run(config, tmp_path / "run", seeds=[0, 1], data=(images, images[:500]), log=lambda *_: None)
    rows = result.rows
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"config.json", "metrics.jsonl", "results.json", "recon.png",
                                               "checkpoints", "tensorboard"}
    saved = json.loads((out / "config.json").read_text())
    assert Config.from_dict(saved["config"]) == models.resolve(config) and saved["seeds"] == [0, 1]
    assert saved["environment"]["versions"]["jax"] == jax.__version__
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert json.loads((out / "results.json").read_text()) == rows
    assert history[-1]["test_mse"] == [r["test_mse"] for r in rows]  # the last epoch's scores are the results
    # TensorBoard: one folder per seed holding every metrics.jsonl scalar at step = epoch, and the figure.
    for i, seed in enumerate((0, 1)):
        scalars, figures = read_events(out / "tensorboard" / f"seed_{seed}")
        for tag in ("train_loss", "test_mse"):
            np.testing.assert_allclose(scalars[tag], [(h["epoch"], h[tag][i]) for h in history], rtol=1e-6)
        for tag in ("images_per_second", "epoch_seconds"):
            np.testing.assert_allclose(scalars[tag], [(h["epoch"], h[tag]) for h in history], rtol=1e-6)
        assert figures == (["reconstructions"] if seed == 0 else [])
    # The returned parameters are the trained ones, also for a seed other than the first.
    for i, seed in enumerate((0, 1)):
        _, variables, _ = load_model(out, seed=seed)
        params = variables["params"]
        for x, y in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(result.variables[i]["params"])):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(result.variables[0]["params"]["encoder_layers_0"]["kernel"],
                              result.variables[1]["params"]["encoder_layers_0"]["kernel"])
    assert [r["seed"] for r in rows] == [0, 1] and rows[0]["test_mse"] != rows[1]["test_mse"]
    mean_image = np.asarray(images[:1000], np.float64).mean(axis=0) / 255  # the training set's mean image
    baseline = np.mean((np.asarray(images[:500], np.float64) / 255 - mean_image) ** 2)
    assert all(abs(r["mean_image_test_mse"] - baseline) < 1e-6 and r["warnings"] == [] for r in rows)
    assert all(0 < r["test_mse"] < baseline and r["params"] == 784 * 8 + 8 + 8 * 784 + 784 for r in rows)


def read_events(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    """The scalars `{tag: [(step, value)]}` and image tags of a folder's TensorBoard event files, read from
    their TFRecord framing (length, crc, event proto, crc) as TensorBoard reads them."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    images = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for value in event.summary.value:
                if value.HasField("image"):
                    images.append(value.tag)
                else:
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars, images


def test_a_run_that_learned_nothing_says_so(tmp_path, mnist_test_images):
    messages = []
    config = Config(latent_dim=8, epochs=1, batch_size=50, lr=1000.0, train_examples=1000)
    rows = loop.run(config, tmp_path / "run", data=(mnist_test_images, mnist_test_images[:500]),
                     log=messages.append).rows
    assert rows[0]["test_mse"] > rows[0]["mean_image_test_mse"]
    warning = [m for m in messages if m.startswith("warning:")]
    assert len(warning) == 1 and "learned nothing" in warning[0] and f"{rows[0]['test_mse']:.5f}" in warning[0]
    assert f"{rows[0]['mean_image_test_mse']:.5f}" in warning[0]
    assert json.loads((tmp_path / "run" / "results.json").read_text())[0]["warnings"] == [warning[0][9:]]


def test_throughput_and_schedule_follow_the_array_trained_on(tmp_path, mnist_test_images):
    """A 1,000-image array (not the 60,000 that Config alone would imply) sets the steps and the images/s."""
    config = Config(latent_dim=8, epochs=2, batch_size=30)
    loop.run(config, tmp_path / "run", data=(mnist_test_images[:1000], mnist_test_images[:200]),
              log=lambda *_: None)
    for h in (json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()):
        assert h["images_per_second"] * h["epoch_seconds"] == pytest.approx(33 * 30)  # 1000 // 30 full batches
    _, state, _ = _epochs(config, mnist_test_images[:1000], 0, epochs=1)
    assert int(state.step) == 33


def _lr_closed_form(schedule: str, step: int, peak: float, total: int, warmup: int) -> float:
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (min(step, total) - warmup) / (total - warmup)))


@pytest.mark.parametrize("schedule, warmup_epochs", [("constant", 0.0), ("cosine", 0.0), ("warmup_cosine", 0.5)])
def test_optimizer_steps_follow_the_schedule(schedule, warmup_epochs):
    """With a constant gradient, Adam's step k moves each parameter by lr(k) (its m/sqrt(v) is 1): the update
    sizes trace the schedule, whose length comes from the images trained on (100 images, batch 10, 2 epochs)."""
    config = Config(lr=0.01, epochs=2, batch_size=10, schedule=schedule, warmup_epochs=warmup_epochs)
    tx = train.make_optimizer(config, n_train=100)
    params = jnp.zeros(3)
    grads = jnp.full(3, 2.0)
    state = tx.init(params)
    sizes = []
    for _ in range(22):  # past the 20 scheduled steps
        updates, state = tx.update(grads, state, params)
        sizes.append(-float(updates[0]))
    want = [_lr_closed_form(schedule, k, 0.01, total=20, warmup=5) for k in range(22)]
    np.testing.assert_allclose(sizes, want, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_loss_values_by_hand(loss, mnist_test_images):
    """A linear model with zero weights outputs sigmoid(decoder bias) everywhere: the loss is known in closed
    form (bce computed from the logits). The tolerance is float32 summation's over these 3,920 pixels: XLA's CPU
    reduction order differs between instruction sets (2e-5 relative on an AVX-512 host), while a wrong formula
    (a missing mean, sigmoid applied twice, logits taken as probabilities) moves the value by far more."""
    trainer = train.make_trainer(Config(latent_dim=4, loss=loss))
    params = jax.tree_util.tree_map(jnp.zeros_like, train.init_state(trainer, jax.random.key(0)).params)
    params["decoder_layers_0"]["bias"] = jnp.full(784, math.log(0.3 / 0.7))  # sigmoid -> 0.3
    x = np.asarray(mnist_test_images[:5], np.float64) / 255
    batch = jnp.asarray(x, jnp.float32)
    want = (np.mean((0.3 - x) ** 2) if loss == "mse"
            else -np.mean(x * math.log(0.3) + (1 - x) * math.log(0.7)))
    value, aux = trainer.loss(trainer.model, params, batch, batch, None)
    assert float(value) == pytest.approx(want, rel=1e-4) and aux == {}


def test_seeds_replace_config_seed_without_contradiction(tmp_path, mnist_test_images):
    data = (mnist_test_images[:200], mnist_test_images[:100])
    with pytest.raises(AejaxError, match=r"config.seed=5 is not among seeds=\[0, 1\]"):
        loop.run(Config(latent_dim=8, epochs=1, seed=5), tmp_path / "a", seeds=[0, 1], data=data)
    assert not (tmp_path / "a").exists()
    rows = loop.run(Config(latent_dim=8, epochs=1, seed=1), tmp_path / "b", seeds=[0, 1], data=data,
                     log=lambda *_: None).rows
    assert [r["seed"] for r in rows] == [0, 1]


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path, mnist_test_images, monkeypatch):
    # These sigmoid-output models saturate rather than overflow even at lr 1e3, so a NaN is injected:
    # the loss of every step from the 4th step of epoch 2 on (1000 images / batch 50 = 20 steps an epoch).
    real_step = train.train_step

    def step_with_nan(trainer, state, batch, key=None, hparams=None):
        new_state, (loss, aux) = real_step(trainer, state, batch, key, hparams)
        return new_state, (jnp.where(state.step >= 20 + 3, jnp.nan, loss), aux)

    monkeypatch.setattr(train, "train_step", step_with_nan)
    config = Config(latent_dim=8, epochs=3, batch_size=50, train_examples=1000)
    with pytest.raises(AejaxError, match=r"non-finite loss at epoch 2, step 4 \(seed 0\); training stopped and "
                                         r"the last good checkpoint \(epoch 1\) is kept"):
        loop.run(config, tmp_path / "run", data=(mnist_test_images, mnist_test_images[:500]), log=lambda *_: None)
    assert not (tmp_path / "run" / "results.json").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["1"]


def test_epoch_e_is_read_back_while_epoch_e_plus_1_is_dispatched(tmp_path, mnist_test_images, monkeypatch):
    # No per-epoch stall: when epoch e's line is logged (its losses read, checkpoint written), epoch e+1 has
    # already been handed to the device, so the host work overlaps it.
    dispatched = []
    real_compile = train.compile_program

    def counting(trainer):
        program = real_compile(trainer)

        def epoch(*args):
            dispatched.append(len(dispatched) + 1)
            return program.epoch(*args)

        return program._replace(epoch=epoch)

    monkeypatch.setattr(train, "compile_program", counting)
    logged = []
    config = Config(latent_dim=8, epochs=3, batch_size=50, train_examples=1000)
    loop.run(config, tmp_path / "run", data=(mnist_test_images, mnist_test_images[:500]),
              log=lambda line: line.startswith("epoch") and logged.append((line.split()[1], len(dispatched))))
    assert logged[:3] == [("1/3", 2), ("2/3", 3), ("3/3", 3)]
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_accumulated_gradients_update_as_one_larger_batch(tmp_path, mnist_test_images):
    """Two steps of 10 images accumulated (optax.MultiSteps) update as one step of the same 20: an epoch's
    batches are consecutive slices of one permutation, and the mean of two means of 10 is the mean of 20."""
    data = (mnist_test_images[:200], mnist_test_images[200:300])
    runs = {}
    for batch, accumulate in ((10, 2), (20, 1)):
        config = Config(latent_dim=8, epochs=2, batch_size=batch, accumulate=accumulate, schedule="cosine")
        runs[accumulate] = loop.run(config, tmp_path / f"acc{accumulate}", data=data, log=lambda line: None)
    for a, b in zip(jax.tree_util.tree_leaves(runs[2].variables[0]), jax.tree_util.tree_leaves(runs[1].variables[0]),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    swept = loop.run(Config(latent_dim=8, epochs=1, batch_size=10, accumulate=2), tmp_path / "swept", data=data,
                     sweep={"lr": [1e-3, 3e-3]}, log=lambda line: None)
    assert swept.rows[0]["test_mse"] != swept.rows[1]["test_mse"]  # each member's rate reaches the inner optimizer
    with pytest.raises(AejaxError, match="accumulate 30 is more than the 20 steps of an epoch"):
        loop.run(Config(batch_size=10, accumulate=30), tmp_path / "too_many", data=data, log=lambda line: None)


def test_log_every_writes_each_steps_loss_rate_and_gradient_norm(tmp_path, mnist_test_images):
    """Per-step scalars come from the compiled epoch's own outputs: the step losses it returns, the gradient norm
    it adds to its aux, and the schedule at each step; the epoch's metrics are as without them."""
    config = Config(latent_dim=8, epochs=2, batch_size=50, schedule="cosine", log_every=4)
    data = (mnist_test_images[:1000], mnist_test_images[1000:1200])
    loop.run(config, tmp_path / "run", data=data, seeds=[0, 1], sweep={"lr": [1e-3, 2e-3]}, log=lambda _: None)
    plain = loop.run(config.replace(log_every=0), tmp_path / "plain", data=data, seeds=[0, 1],
                     sweep={"lr": [1e-3, 2e-3]}, log=lambda _: None)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "train_aux" not in history[0]  # the norm is a step scalar, not a loss term
    logged = json.loads((tmp_path / "run" / "results.json").read_text())
    np.testing.assert_allclose([r["test_mse"] for r in logged], [r["test_mse"] for r in plain.rows], rtol=1e-6)
    scalars, _ = read_events(tmp_path / "run" / "tensorboard" / "lr=0.002_seed_1")
    assert [s for s, _ in scalars["step/loss"]] == list(range(0, 40, 4))  # 2 epochs x 20 steps, every 4th
    schedule = train.make_schedule(config.replace(lr=2e-3), 1000)
    np.testing.assert_allclose([v for _, v in scalars["step/learning_rate"]],
                               [float(schedule(s)) for s in range(0, 40, 4)], rtol=1e-5)
    norms = [v for _, v in scalars["step/grad_norm"]]
    assert len(norms) == 10 and all(np.isfinite(norms)) and min(norms) > 0
    assert scalars["step/loss"][0][1] > scalars["step/loss"][-1][1]
    hparams, _ = read_events(tmp_path / "run" / "tensorboard" / "lr=0.002_seed_1" / "hparams")  # the HParams tab
    assert hparams["hparam/test_mse"] == [(2, pytest.approx(logged[3]["test_mse"], rel=1e-6))]
    assert "_hparams_/session_start_info" in hparams
