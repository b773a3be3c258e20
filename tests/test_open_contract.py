"""The open contract: images of any shape (from arrays or datasets by name), any optax optimizer, models with
BatchNorm and dropout, and inference entry points that trace."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import aejax
import tests.stateful_plugin  # noqa: F401 - registers conv_bn from outside the package
from aejax import Config, models
from aejax.data import datasets, image_sets
from aejax.errors import AejaxError
from aejax.evaluation import metrics
from aejax.models import inference
from aejax.training import loop, optimizers
from aejax.training import step as train

QUIET = {"log": lambda *_: None}


@pytest.mark.parametrize("shape", [(25, 25, 1), (32, 32, 3), (6, 10, 2)])
@pytest.mark.parametrize("model, kwargs", [("linear", {}), ("conv", {"conv_features": (4, 4)}),
                                           ("conv_strided", {"conv_features": (4, 4),
                                                             "model_kwargs": {"linear": True}}),
                                           ("vae", {}), ("sparse", {"model_kwargs": {"encoder": "conv"},
                                                                    "conv_features": (4, 4)})])
def test_every_model_builds_for_the_images_shape(model, kwargs, shape):
    config = models.resolve(Config(model=model, latent_dim=8, image_shape=shape, **kwargs))
    module = models.build(config)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    assert jax.eval_shape(module.apply, variables, x).shape == (2, *shape)
    assert jax.eval_shape(lambda v, x: module.apply(v, x, method="encode"), variables, x).shape == (2, 8)


def test_padded_conv_models_compute_the_same_in_both_implementations():
    """25x25x3 images are padded to 28x28 and cropped back: the ops and xla layers agree."""
    config = models.resolve(Config(model="conv", latent_dim=8, conv_features=(4, 4), image_shape=(25, 25, 3),
                                   conv_impl="ops"))
    x = jax.random.uniform(jax.random.key(1), (3, 25, 25, 3))
    variables = models.build(config).init(jax.random.key(0), x)
    ops_out = models.build(config).apply(variables, x)
    xla_out = models.build(config.replace(conv_impl="xla")).apply(variables, x)
    assert ops_out.shape == x.shape
    np.testing.assert_allclose(ops_out, xla_out, rtol=1e-5, atol=1e-6)


def test_run_checks_its_arrays_first(tmp_path):
    good = np.zeros((20, 8, 8, 1), np.uint8)
    for data, message in [((good.astype(np.float32) + 200, good), "must lie in \\[0, 1\\]"),
                          ((good[..., 0], good[..., 0]), "add a channel axis"),
                          ((np.zeros((20, 3, 8, 8), np.uint8), good), "look channels-first.*transpose\\(0, 2, 3, 1\\)"),
                          ((good, np.zeros((5, 8, 9, 1), np.uint8)), "training and test images differ"),
                          ((good.astype(np.int32), good), "uint8 \\(0..255\\) or float"),
                          ((good, good), "config image_shape \\[28, 28, 1\\] differs")]:
        config = Config(latent_dim=4, batch_size=5, image_shape=(28, 28, 1) if "differs" in message else ())
        with pytest.raises(AejaxError, match=message) as info:
            loop.run(config, tmp_path / "run", data=data, **QUIET)
        assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


def test_a_dataset_by_name_trains_records_its_shape_and_reloads(tmp_path):
    """lfw_faces (25x25x1, which 4 does not divide) through its tfds builder; float images of another shape
    from memory; both reload with the same test MSE."""
    source = datasets.source("lfw_faces", tmp_path / "tfds")
    train_images, test_images = image_sets.lfw_faces()
    np.testing.assert_array_equal(source.test, test_images)
    np.testing.assert_array_equal(source.rows(range(source.n_train)), train_images)
    config = Config(model="conv", dataset="lfw_faces", latent_dim=16, conv_features=(8, 8), epochs=2,
                    batch_size=20, lr=3e-3)
    result = loop.run(config, tmp_path / "faces", data_dir=str(tmp_path / "tfds"), **QUIET)
    saved = json.loads((tmp_path / "faces" / "config.json").read_text())["config"]
    assert saved["dataset"] == "lfw_faces" and saved["image_shape"] == [25, 25, 1]
    assert result.rows[0]["compression_ratio"] == 625 / 16
    model, variables, loaded = aejax.load_model(tmp_path / "faces")
    assert loaded.image_shape == (25, 25, 1)
    assert metrics.reconstruction_metrics(model.apply, variables, test_images)["mse"] == result.rows[0]["test_mse"]
    rgb = np.random.default_rng(0).random((60, 12, 14, 3)).astype(np.float32)  # float in [0, 1]
    rows = loop.run(Config(latent_dim=8, epochs=1, batch_size=20), tmp_path / "rgb", data=(rgb[:40], rgb[40:]),
                    **QUIET).rows
    assert rows[0]["compression_ratio"] == 12 * 14 * 3 / 8 and 0 < rows[0]["test_mse"] < 0.2


def test_any_optax_optimizer_by_name_with_its_own_arguments(tmp_path, mnist_test_images):
    config = Config(optimizer="sgd", optimizer_kwargs={"momentum": 0.9, "nesterov": True})
    state = train.init_state(train.make_trainer(config), jax.random.key(0))
    plain = train.init_state(train.make_trainer(Config(optimizer="sgd")), jax.random.key(0))
    assert len(jax.tree_util.tree_leaves(state.opt_state)) > len(jax.tree_util.tree_leaves(plain.opt_state))
    data = (mnist_test_images[:500], mnist_test_images[500:700])
    lion = Config(latent_dim=8, epochs=2, batch_size=50, lr=1e-3, optimizer="lion", weight_decay=0.01,
                  optimizer_kwargs={"b1": 0.95})
    loop.run(lion, tmp_path / "lion", data=data, **QUIET)
    history = [json.loads(line) for line in (tmp_path / "lion" / "metrics.jsonl").read_text().splitlines()]
    assert history[1]["train_loss"][0] < history[0]["train_loss"][0]
    saved = json.loads((tmp_path / "lion" / "config.json").read_text())["config"]
    assert saved["optimizer"] == "lion" and saved["optimizer_kwargs"] == {"b1": 0.95}
    assert aejax.load_model(tmp_path / "lion")[2] == models.resolve(lion.replace(image_shape=(28, 28, 1)))


def test_a_registered_chain_trains_sweeps_and_receives_weight_decay(tmp_path, mnist_test_images):
    seen = []

    def clipped_lion(learning_rate, clip=1.0, **kwargs):
        seen.append(kwargs)
        return optax.chain(optax.clip_by_global_norm(clip), optax.lion(learning_rate, **kwargs))

    aejax.register_optimizer("clipped_lion", clipped_lion, replace=True)
    config = Config(latent_dim=8, epochs=1, batch_size=50, lr=3e-4, optimizer="clipped_lion",
                    optimizer_kwargs={"clip": 0.5}, weight_decay=1e-3)
    result = loop.run(config, tmp_path / "chain", data=(mnist_test_images[:500], mnist_test_images[500:700]),
                      sweep={"lr": [1e-4, 1e-3]}, **QUIET)
    assert [r["sweep"] for r in result.rows] == [{"lr": 1e-4}, {"lr": 1e-3}]
    assert result.rows[0]["test_mse"] != result.rows[1]["test_mse"]
    assert {"weight_decay": 1e-3} in seen
    assert optimizers.takes("clipped_lion", "weight_decay") and not optimizers.takes("adam", "weight_decay")


def test_an_optimizer_with_a_schedule_of_its_own_is_refused_one_with_a_warmup_from_zero_is_not():
    aejax.register_optimizer("own_schedule", lambda learning_rate: optax.adam(optax.exponential_decay(1e-3, 100, 0.9)),
                             replace=True)
    with pytest.raises(AejaxError, match="optimizer own_schedule ignores the learning_rate it is given"):
        models.resolve(Config(optimizer="own_schedule"))
    aejax.register_optimizer("warm", lambda learning_rate: optax.adam(optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, 10, 1000)), replace=True)
    assert models.resolve(Config(optimizer="warm")).optimizer == "warm"


def test_a_batchnorm_dropout_model_from_outside_trains_sweeps_and_reloads(tmp_path, mnist_test_images):
    crops = mnist_test_images[:, 6:18, 6:18]  # 12x12 digit centres: small programs, the same behaviour
    data = (crops[:400], crops[400:480])
    config = Config(model="conv_bn", latent_dim=16, epochs=2, batch_size=50)
    # Seeds and a sweep in one vmapped program: lanes (lr 1e-3, seed 0), (1e-3, 1), (3e-3, 0), (3e-3, 1).
    result = loop.run(config, tmp_path / "bn", data=data, seeds=[0, 1], sweep={"lr": [1e-3, 3e-3]}, **QUIET)
    assert [(row["sweep"]["lr"], row["seed"]) for row in result.rows] == [(1e-3, 0), (1e-3, 1), (3e-3, 0), (3e-3, 1)]
    stats = [v["batch_stats"]["norm"]["mean"] for v in result.variables]
    assert not np.array_equal(stats[0], np.zeros_like(stats[0])) and not np.array_equal(stats[0], stats[1])
    model, variables, _ = aejax.load_model(tmp_path / "bn", seed=1, member={"lr": 3e-3})
    np.testing.assert_array_equal(variables["batch_stats"]["norm"]["var"],
                                  result.variables[3]["batch_stats"]["norm"]["var"])
    # Evaluation is in inference mode (running statistics, no dropout): deterministic and reproduced on reload.
    assert metrics.reconstruction_metrics(model.apply, variables, data[1])["mse"] == result.rows[3]["test_mse"]
    # Training draws dropout: the same state gives different losses under different keys.
    trainer = train.make_trainer(config.replace(image_shape=(12, 12, 1)), 400)
    state = train.init_state(trainer, jax.random.key(0))
    batch = metrics.to_float(jnp.asarray(data[0][:50]))
    step = jax.jit(functools.partial(train.train_step, trainer))
    losses = [float(step(state, batch, jax.random.key(k))[1][0]) for k in (1, 2)]
    assert losses[0] != losses[1]


def test_a_model_written_as_the_flax_examples_write_one_trains_in_training_mode(tmp_path, mnist_test_images):
    crops = mnist_test_images[:, 6:18, 6:18]
    data = (crops[:400], crops[400:480])
    config = Config(model="conv_bn_arg", latent_dim=16, epochs=2, batch_size=50)
    result = loop.run(config, tmp_path / "arg", data=data, **QUIET)
    mean = result.variables[0]["batch_stats"]["norm"]["mean"]
    assert not np.array_equal(mean, np.zeros_like(mean))  # BatchNorm ran in training mode and updated its statistics
    model, variables, _ = aejax.load_model(tmp_path / "arg")
    assert metrics.reconstruction_metrics(model.apply, variables, data[1])["mse"] == result.rows[0]["test_mse"]
    trainer = train.make_trainer(models.resolve(config.replace(image_shape=(12, 12, 1))), 400)
    state = train.init_state(trainer, jax.random.key(0))
    batch = metrics.to_float(jnp.asarray(data[0][:50]))
    step = jax.jit(functools.partial(train.train_step, trainer))
    losses = [float(step(state, batch, jax.random.key(k))[1][0]) for k in (1, 2)]
    assert losses[0] != losses[1]  # dropout draws from the step's key

    class Required(tests.stateful_plugin.ConvBNArg):
        def __call__(self, x, train):
            return self.decode(self.encode(x, train))

    aejax.register_model("required_train", lambda c: Required(c.latent_dim, tuple(c.image_shape)), replace=True)
    with pytest.raises(AejaxError, match="its __call__ takes train without the default False"):
        models.build(Config(model="required_train", latent_dim=8, image_shape=(12, 12, 1)))


def test_a_model_written_with_flax_nnx_trains_through_the_bridge_and_reloads(tmp_path, mnist_test_images):
    import tests.nnx_plugin  # noqa: F401 - registers nnx_ae

    data = (mnist_test_images[:1000], mnist_test_images[1000:1200])
    result = loop.run(Config(model="nnx_ae", latent_dim=8, epochs=3, batch_size=50, lr=3e-3), tmp_path / "nnx",
                      data=data, **QUIET)
    lines = (tmp_path / "nnx" / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["train_loss"][0] for line in lines]
    assert losses[-1] < losses[0] / 2  # it learns
    model, variables, _ = aejax.load_model(tmp_path / "nnx")
    assert sorted(variables["params"]) == ["decoder", "encoder"]
    assert metrics.reconstruction_metrics(model.apply, variables, data[1])["mse"] == result.rows[0]["test_mse"]
    codes = jax.jit(lambda v, x: aejax.encode(model, v, x))(variables, data[1][:4])
    assert codes.shape == (4, 8)


def test_entry_points_trace_under_jit_grad_and_vmap(mnist_test_images):
    config = models.resolve(Config(latent_dim=8))
    model = models.build(config)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    x = metrics.to_float(jnp.asarray(mnist_test_images[:6]))
    codes = inference.encode(model, variables, x)
    np.testing.assert_allclose(jax.jit(lambda v, x: aejax.encode(model, v, x))(variables, x), codes, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda x: aejax.encode(model, variables, x))(x), codes, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda z: aejax.decode(model, variables, z))(codes),
                               inference.decode(model, variables, codes), rtol=1e-6)
    grads = jax.grad(lambda x: jnp.sum(aejax.reconstruct(model, variables, x) ** 2))(x)
    assert grads.shape == x.shape and bool(jnp.all(jnp.isfinite(grads))) and float(jnp.abs(grads).sum()) > 0
    with pytest.raises(AejaxError, match="must lie in \\[0, 1\\]"):  # concrete values are still checked
        aejax.encode(model, variables, x * 255)


@pytest.mark.slow  # a fresh process; CI runs it (`pytest -m slow`)
def test_a_batchnorm_model_reloads_in_a_fresh_process_with_the_same_test_mse(tmp_path, mnist_test_images):
    import subprocess
    import sys

    from tests.helpers import REPO

    data = (mnist_test_images[:500], mnist_test_images[500:700])
    row = loop.run(Config(model="conv_bn", latent_dim=8, epochs=1, batch_size=50), tmp_path / "bn", data=data,
                   **QUIET).rows[0]
    np.save(tmp_path / "test.npy", data[1])
    script = ("import numpy as np, tests.stateful_plugin, aejax\nfrom aejax.evaluation import metrics\n"
              f"model, variables, _ = aejax.load_model({str(tmp_path / 'bn')!r})\n"
              f"print(repr(metrics.reconstruction_metrics(model.apply, variables, "
              f"np.load({str(tmp_path / 'test.npy')!r}))['mse']))")
    fresh = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert float(fresh.stdout.strip().splitlines()[-1]) == row["test_mse"]


def test_a_tfds_dataset_prepared_in_data_dir_is_read_by_name(tmp_path, capsys):
    """Any tfds dataset prepared as ArrayRecord (here a 16x12 grey one a builder of this test writes) trains
    from the command line by name, without TensorFlow; its shape lands in config.json."""
    import tensorflow_datasets as tfds

    from aejax import cli
    from tests.helpers import run_in_process

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"image": tfds.features.Tensor(shape=(16, 12), dtype=np.uint8)}))

        def _split_generators(self, dl_manager):
            rng = np.random.default_rng(0)
            return {"train": self._generate_examples(rng, 60), "test": self._generate_examples(rng, 20)}

        def _generate_examples(self, rng, n):
            for i in range(n):
                yield i, {"image": rng.integers(0, 256, (16, 12), dtype=np.uint8)}

    TinyShapes(data_dir=str(tmp_path / "tfds"), file_format="array_record").download_and_prepare()
    code, _, stderr = run_in_process(capsys, cli.main, "--dataset", "tiny_shapes", "--data-dir",
                                     str(tmp_path / "tfds"), "--latent-dim", "8", "--epochs", "1",
                                     "--batch-size", "20", "--out", str(tmp_path / "run"))
    assert code == 0, stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["dataset"] == "tiny_shapes" and saved["image_shape"] == [16, 12, 1]
    assert aejax.load_model(tmp_path / "run")[2].image_shape == (16, 12, 1)
    with pytest.raises(AejaxError, match="dataset 'no_such_set': no prepared train split"):
        datasets.source("no_such_set", tmp_path / "tfds")
