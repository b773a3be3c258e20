"""A run's plan (`aejax.training.plan`): the validation split held out of the training set, scored every epoch
while the test set is scored once at the end, and early stopping on it."""

import json

import numpy as np
import pytest

from aejax.config import Config
from aejax.data import array_source
from aejax.errors import AejaxError
from aejax.training import loop
from aejax.training.plan import held_out_test, hold_out


def test_the_validation_split_is_held_out_by_the_seed_and_disjoint_from_training():
    ids = np.arange(1000)
    images = np.stack([ids // 256, ids % 256], axis=-1).astype(np.uint8)[:, None, None, :]  # each image its id
    source = array_source(images, images[:10])

    def identities(x: np.ndarray) -> set[int]:
        return set((x[:, 0, 0, 0].astype(int) * 256 + x[:, 0, 0, 1]).tolist())

    train, held = hold_out(Config(validation_examples=0.1), source, 1000)
    assert len(held) == 100 and train.n_train == 900
    assert identities(held).isdisjoint(identities(train.rows(range(900))))
    assert identities(held) | identities(train.take(ids[:900])) == set(range(1000))
    again = hold_out(Config(validation_examples=100), source, 1000)[1]
    other = hold_out(Config(validation_examples=100, seed=1), source, 1000)[1]
    np.testing.assert_array_equal(held, again)
    assert not np.array_equal(held, other)
    with pytest.raises(AejaxError, match="holds out 1000 of the 1000 training images"):
        hold_out(Config(validation_examples=1000), source, 1000)
    with pytest.raises(AejaxError, match="early_stopping needs validation_examples"):
        Config(early_stopping=2)
    with pytest.raises(AejaxError, match="validation_examples must be a count of images or a fraction"):
        Config(validation_examples=2.5)


def test_training_images_without_a_test_set_hold_a_tenth_out_as_one(tmp_path):
    ids = np.arange(1000)
    images = np.stack([ids // 256, ids % 256], axis=-1).astype(np.uint8)[:, None, None, :]  # each image its id

    def identities(x: np.ndarray) -> set[int]:
        return set((x[:, 0, 0, 0].astype(int) * 256 + x[:, 0, 0, 1]).tolist())

    source = held_out_test(Config(), images)
    assert (source.n_train, len(source.test)) == (900, 100) and "100 of the 1,000 training images" in source.note
    assert identities(source.test).isdisjoint(identities(source.rows(range(900))))
    np.testing.assert_array_equal(held_out_test(Config(), images).test, source.test)
    assert not np.array_equal(held_out_test(Config(seed=1), images).test, source.test)
    lines = []
    result = loop.run(Config(latent_dim=2, epochs=1, batch_size=100), tmp_path / "run", data=(images, None),
                      log=lines.append)
    assert any("held out as the test set" in line for line in lines) and np.isfinite(result.rows[0]["test_mse"])
    with pytest.raises(AejaxError, match="1 training images and no test images"):
        held_out_test(Config(), images[:1])


def test_validation_is_scored_every_epoch_the_test_set_once_and_early_stopping_stops(tmp_path, mnist_test_images):
    """At a learning rate too small to move anything, no validation MSE improves after epoch 1: patience 1 stops
    the 10-epoch run after epoch 2 (and the epoch in flight); the metrics lines carry val_mse only, and the test
    set is scored once, into the results."""
    config = Config(latent_dim=8, epochs=10, batch_size=50, lr=1e-12, validation_examples=200, early_stopping=1)
    lines = []
    result = loop.run(config, tmp_path / "run", data=(mnist_test_images[:1200], mnist_test_images[1200:1400]),
                      log=lines.append)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all("val_mse" in h and "test_mse" not in h for h in history)
    assert any(line.startswith("early stopping: no validation MSE improved in the last 1 epochs") for line in lines)
    row = result.rows[0]
    assert row["epochs"] == 3 and row["best_val_epoch"] == 1 and row["val_mse"] == history[-1]["val_mse"][0]
    assert 0 < row["test_mse"] != row["val_mse"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["validation_examples"] == 200


def test_best_models_keep_each_models_own_best_epoch(tmp_path):
    """Two models whose validation MSE is lowest at epochs 2 and 3: the kept stack takes each from its own epoch,
    saves it when one improves, and a resume restores what was saved up to its epoch."""
    import jax.numpy as jnp

    from aejax.training import checkpoint
    from aejax.training.select import BestModels

    best = BestModels(checkpoint.manager(tmp_path / "best", 2), {"note": "test"})
    history, scores = [], [[0.5, 0.4], [0.3, 0.6], [0.35, 0.2]]
    for epoch, val in enumerate(scores, start=1):
        history.append({"epoch": epoch, "val_mse": val})
        best.update({"w": jnp.full((2, 3), float(epoch))}, epoch, history)
    np.testing.assert_array_equal(best.state["w"], [[2, 2, 2], [3, 3, 3]])
    resumed = BestModels(checkpoint.manager(tmp_path / "best", 2), {})
    resumed.restore({"w": jnp.zeros((2, 3))}, 2, print)  # a resume at epoch 2 takes what epoch 2 saved
    np.testing.assert_array_equal(resumed.state["w"], [[2, 2, 2], [1, 1, 1]])


def test_select_best_scores_and_reloads_the_kept_models(tmp_path, mnist_test_images):
    """The results score the kept models and load_model reloads them, from best_checkpoints/."""
    import jax

    from aejax.training.restore import load_model

    config = Config(latent_dim=8, epochs=3, batch_size=50, lr=0.1, validation_examples=200, select="best")
    data = (mnist_test_images[:1200], mnist_test_images[1200:1400])
    result = loop.run(config, tmp_path / "best", seeds=[0, 1], data=data, log=lambda _: None)
    history = [json.loads(line) for line in (tmp_path / "best" / "metrics.jsonl").read_text().splitlines()]
    best = (np.asarray([h["val_mse"] for h in history]).argmin(axis=0) + 1).tolist()
    assert [r["best_val_epoch"] for r in result.rows] == best and (tmp_path / "best" / "best_checkpoints").is_dir()
    for seed, variables in zip((0, 1), result.variables, strict=True):
        _, reloaded, _ = load_model(tmp_path / "best", seed=seed)
        for a, b in zip(jax.tree_util.tree_leaves(reloaded), jax.tree_util.tree_leaves(variables), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(AejaxError, match="select best needs validation_examples"):
        Config(select="best")
