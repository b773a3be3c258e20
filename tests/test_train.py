import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import metrics, train
from aejax.config import Config
from aejax.errors import AejaxError


def _state(config: Config, seed: int = 0):
    trainer = train.make_trainer(config)
    return trainer, train.init_state(trainer, train.seed_keys(seed)[0])


@pytest.mark.parametrize("config", [Config(latent_dim=32, lr=3e-3), Config(model="conv", latent_dim=32, lr=3e-3),
                                    Config(latent_dim=32, lr=3e-3, loss="bce")])
def test_train_step_drives_loss_on_a_fixed_batch_down_10x(config, mnist_test_images):
    trainer, state = _state(config)
    batch = metrics.to_float(jnp.asarray(mnist_test_images[:25]))
    step = jax.jit(train.train_step, static_argnums=0)
    mse = lambda p: float(jnp.mean((trainer.model.apply({"params": p}, batch) - batch) ** 2))
    first = mse(state.params)
    for _ in range(300):
        state, _ = step(trainer, state, batch)
    assert mse(state.params) < first / 10
    assert int(state.step) == 300


def _epochs(config: Config, images: np.ndarray, seed: int, epochs: int = 2):
    trainer, state = _state(config, seed)
    fn = jax.jit(train.train_epoch, static_argnums=0)
    data_key = train.seed_keys(seed)[1]
    for e in range(epochs):
        state, losses = fn(trainer, state, jnp.asarray(images), train.epoch_key(data_key, e))
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
    state = program.init(keys[0][None])
    images = jnp.asarray(mnist_test_images)
    for e in range(3):
        state, losses = program.epoch(state, images, train.epoch_key(keys[1], e)[None])
    assert program.epoch._cache_size() == 1  # three epochs, one compilation
    assert losses.shape == (1, 2000 // 50)


def test_partial_last_batch_is_dropped():
    assert train.epoch_batches(jax.random.key(0), 103, 25).shape == (4, 25)
    assert train.steps_per_epoch(Config(batch_size=25)) == 2400
    assert train.steps_per_epoch(Config(batch_size=128)) == 468


def test_vmapped_seeds_equal_seeds_trained_alone(mnist_test_images):
    config = Config(latent_dim=16, batch_size=50)
    trainer = train.make_trainer(config)
    program = train.compile_program(trainer)
    seeds = [0, 1, 2]
    keys = [train.seed_keys(s) for s in seeds]
    state = program.init(jnp.stack([k[0] for k in keys]))
    ekeys = jnp.stack([train.epoch_key(k[1], 0) for k in keys])
    state, _ = program.epoch(state, jnp.asarray(mnist_test_images), ekeys)
    for i, seed in enumerate(seeds):
        _, alone, _ = _epochs(config, mnist_test_images, seed, epochs=1)
        for x, y in zip(jax.tree_util.tree_leaves(train.unstack(state, i)), jax.tree_util.tree_leaves(alone)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_run_writes_the_run_directory(tmp_path, mnist_test_images):
    config = Config(latent_dim=8, epochs=2, batch_size=20, train_examples=1000, lr=3e-3)
    images = mnist_test_images
    rows = train.run(config, tmp_path / "run", seeds=[0, 1], data=(images, images[:500]), log=lambda *_: None)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"config.json", "metrics.jsonl", "results.json", "recon.png",
                                               "checkpoints"}
    saved = json.loads((out / "config.json").read_text())
    assert Config.from_dict(saved["config"]) == config and saved["seeds"] == [0, 1]
    assert saved["environment"]["versions"]["jax"] == jax.__version__
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert json.loads((out / "results.json").read_text()) == rows
    assert [r["seed"] for r in rows] == [0, 1] and rows[0]["test_mse"] != rows[1]["test_mse"]
    # 0.067: the test MSE of always predicting the mean image
    assert all(0 < r["test_mse"] < 0.067 and r["params"] == 784 * 8 + 8 + 8 * 784 + 784 for r in rows)


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path, mnist_test_images, monkeypatch):
    # These sigmoid-output models saturate rather than overflow even at lr 1e3, so a NaN is injected:
    # the loss of every step from the 4th step of epoch 2 on (1000 images / batch 50 = 20 steps an epoch).
    real_step = train.train_step

    def step_with_nan(trainer, state, batch, key=None):
        new_state, loss = real_step(trainer, state, batch, key)
        return new_state, jnp.where(state.step >= 20 + 3, jnp.nan, loss)

    monkeypatch.setattr(train, "train_step", step_with_nan)
    config = Config(latent_dim=8, epochs=3, batch_size=50, train_examples=1000)
    with pytest.raises(AejaxError, match=r"non-finite loss at epoch 2, step 4 \(seed 0\); training stopped and "
                                         r"the last good checkpoint \(epoch 1\) is kept"):
        train.run(config, tmp_path / "run", data=(mnist_test_images, mnist_test_images[:500]), log=lambda *_: None)
    assert not (tmp_path / "run" / "results.json").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["1"]
