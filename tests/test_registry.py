"""Models and losses registered from outside the package train, reload and run from the command line."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aejax
from aejax import Config, models
from aejax.errors import AejaxError
from aejax.training import loop, losses
from aejax.training import step as train
from tests.helpers import run_cli

PLUGIN = textwrap.dedent('''
    """A model and a loss defined outside aejax, registered when imported."""
    import flax.linen as nn
    import jax.numpy as jnp

    import aejax


    class Shallow(nn.Module):
        latent_dim: int
        gain: float = 1.0

        @nn.compact
        def encode(self, x):
            return nn.Dense(self.latent_dim, name="enc")(x.reshape(x.shape[0], -1))

        @nn.compact
        def decode_logits(self, z):
            return (self.gain * nn.Dense(784, name="dec")(z)).reshape(z.shape[0], 28, 28, 1)

        def decode(self, z):
            return nn.sigmoid(self.decode_logits(z))

        def __call__(self, x):
            return self.decode(self.encode(x))


    def huber(model, params, inputs, targets, key):
        error = model.apply({"params": params}, inputs) - targets
        return jnp.mean(jnp.where(jnp.abs(error) < 0.1, 0.5 * error ** 2, 0.1 * (jnp.abs(error) - 0.05))), {
            "abs_error": jnp.mean(jnp.abs(error))}


    aejax.register_model("shallow", lambda c: Shallow(c.latent_dim, c.model_kwargs["gain"]), kwargs={"gain": 1.0})
    aejax.register_loss("huber", huber)
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "aejax_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    return tmp_path / "plugins"


def _train_plugin_model(tmp_path, images):
    import aejax_test_plugin  # noqa: F401 - registers shallow and huber

    config = Config(model="shallow", loss="huber", latent_dim=8, epochs=1, batch_size=50,
                    model_kwargs={"gain": 2.0})
    return loop.run(config, tmp_path / "run", data=(images[:1000], images[:200]), log=lambda *_: None)


def test_plugin_model_and_loss_train_and_reload(plugin, tmp_path, mnist_test_images):
    result = _train_plugin_model(tmp_path, mnist_test_images)
    assert result.rows[0]["test_abs_error"] > 0 and "train_aux" in json.loads(
        (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    model, variables, config = aejax.load_model(tmp_path / "run")
    params = variables["params"]
    assert config.model_kwargs == {"gain": 2.0} and model.gain == 2.0
    np.testing.assert_array_equal(params["enc"]["kernel"], result.variables[0]["params"]["enc"]["kernel"])


@pytest.mark.slow  # three fresh processes, ~15 s here; CI runs it (`pytest -m slow`)
def test_plugin_reloads_in_a_fresh_process_and_runs_from_the_cli(plugin, tmp_path, mnist_test_images):
    result = _train_plugin_model(tmp_path, mnist_test_images)
    # A fresh process knows the model only after importing the plug-in, then reloads the same parameters.
    np.save(tmp_path / "want.npy", np.asarray(result.variables[0]["params"]["enc"]["kernel"]))
    script = (f"import numpy as np, aejax_test_plugin, aejax\n"
              f"model, variables, config = aejax.load_model({str(tmp_path / 'run')!r})\n"
              f"params = variables['params']\n"
              f"assert config.model_kwargs == {{'gain': 2.0}} and model.gain == 2.0\n"
              f"np.testing.assert_array_equal(params['enc']['kernel'], np.load({str(tmp_path / 'want.npy')!r}))\n")
    loaded = run_cli("aejax_test_plugin", env={"PYTHONPATH": str(plugin)})  # importable as a module
    assert loaded.returncode == 0, loaded.stderr
    fresh = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(plugin)},
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    without = subprocess.run([sys.executable, "-c", "import aejax; aejax.load_model(" + repr(str(tmp_path / "run"))
                              + ")"], capture_output=True, text=True, timeout=300)
    assert "unknown model 'shallow'" in without.stderr
    cli = run_cli("aejax.train", "--plugin", "aejax_test_plugin", "--model", "shallow", "--loss", "huber",
                  "--latent-dim", "4", "--epochs", "1", "--train-examples", "500", "--batch-size", "50",
                  "--model-kwargs", '{"gain": 0.5}', "--out", str(tmp_path / "cli"), env={"PYTHONPATH": str(plugin)})
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["config"]["model_kwargs"] == {"gain": 0.5}


def test_a_model_without_the_contracts_methods_is_refused_at_resolve():
    import flax.linen as nn

    class NoCode(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.sigmoid(nn.Dense(784)(x.reshape(x.shape[0], -1))).reshape(x.shape)

    aejax.register_model("no_code", lambda config: NoCode(), replace=True)
    with pytest.raises(AejaxError, match="model 'no_code' \\(NoCode\\) has no encode or decode method"):
        models.resolve(Config(model="no_code"))


def test_optimizer_arguments_are_checked_before_any_step():
    for kwargs, message in (({"momentum": "fast"}, "optimizer_kwargs momentum must be a number, got 'fast'"),
                            ({"momentum": float("inf")}, "optimizer_kwargs momentum must be a finite number")):
        with pytest.raises(AejaxError, match=message):
            models.resolve(Config(optimizer="sgd", optimizer_kwargs=kwargs))


def test_registering_checks_names_and_builders():
    with pytest.raises(AejaxError, match="model 'linear' is already registered"):
        aejax.register_model("linear", lambda c: None)
    with pytest.raises(AejaxError, match="loss 'mse' is already registered"):
        aejax.register_loss("mse", losses.mse)
    with pytest.raises(AejaxError, match="must be an identifier"):
        aejax.register_model("my model", lambda c: None)
    aejax.register_model("not_a_module", lambda c: "oops", replace=True)
    with pytest.raises(AejaxError, match="returned str, not a flax module"):
        models.resolve(Config(model="not_a_module"))


@pytest.mark.parametrize("name", ["linear", pytest.param("conv", marks=pytest.mark.slow),
                                  pytest.param("conv_original", marks=pytest.mark.slow), "conv_strided", "vae",
                                  "sparse"])  # conv_strided checks the conv layers' input check
def test_modules_reject_uint8_and_name_the_safe_entry_point(name):
    config = Config(model=name, latent_dim=392 if name == "conv_original" else 32)
    model = models.build(config)
    params = train.init_state(train.make_trainer(config), jax.random.key(0)).params
    with pytest.raises(AejaxError, match="Use aejax.encode / aejax.reconstruct"):
        model.apply({"params": params}, jnp.zeros((2, 28, 28, 1), jnp.uint8), method="encode")
    codes = aejax.encode(model, params, np.full((2, 28, 28), 255, np.uint8))
    np.testing.assert_allclose(codes, aejax.encode(model, params, np.ones((2, 28, 28), np.float32)), rtol=1e-6)


def test_vae_and_sparse_train_and_report_their_terms(tmp_path, mnist_test_images):
    data = (mnist_test_images[:600], mnist_test_images[1000:1200])
    vae = loop.run(Config(model="vae", latent_dim=8, epochs=2, batch_size=50), tmp_path / "vae", data=data,
                    log=lambda *_: None).rows[0]
    # The ELBO's terms, each on the test set: the bound is minus their sum, and the KL is positive.
    assert vae["test_elbo_nats"] == pytest.approx(-(vae["test_recon_nats"] + vae["test_kl_nats"]), rel=1e-5)
    history = [json.loads(line) for line in (tmp_path / "vae" / "metrics.jsonl").read_text().splitlines()]
    assert vae["test_kl_nats"] > 0 and history[1]["train_aux"]["elbo_nats"][0] > history[0]["train_aux"]["elbo_nats"][0]
    sparse = Config(model="sparse", latent_dim=16, epochs=1, batch_size=50)
    strong, weak = loop.run(sparse, tmp_path / "sparse", data=data, sweep={"l1_weight": [0.1, 0.0]},
                            log=lambda *_: None).rows
    assert strong["test_code_active"] < weak["test_code_active"]  # the penalty makes the code sparser


def test_conv_checkpoint_reloads_under_the_other_implementation(tmp_path, mnist_test_images):
    data = (mnist_test_images[:500], mnist_test_images[500:1000])
    config = Config(model="conv", latent_dim=16, conv_features=(8, 8), epochs=1, batch_size=50, conv_impl="ops")
    row = loop.run(config, tmp_path / "ops", data=data, log=lambda *_: None).rows[0]
    _, variables, saved = aejax.load_model(tmp_path / "ops")
    params = variables["params"]
    xla = models.build(saved.replace(conv_impl="xla"))
    recon = aejax.reconstruct(xla, params, data[1])
    mse = float(jnp.mean((recon - data[1].astype(np.float32) / 255) ** 2))
    assert mse == pytest.approx(row["test_mse"], rel=1e-5)


def test_python_errors_name_arguments_and_cli_errors_name_flags(tmp_path, mnist_test_images):
    config = Config(latent_dim=4, epochs=1, batch_size=50)
    data = (mnist_test_images[:200], mnist_test_images[:100])
    loop.run(config, tmp_path / "run", data=data, log=lambda *_: None)
    with pytest.raises(AejaxError) as info:
        loop.run(config, tmp_path / "run", data=data, log=lambda *_: None)
    assert "pass resume=True to continue it or overwrite=True" in str(info.value)
    assert "pass --resume to continue it or --overwrite" in info.value.cli_message
    with pytest.raises(AejaxError, match="pass overwrite=True to replace it"):
        loop.run(config.replace(latent_dim=8), tmp_path / "run", data=data, log=lambda *_: None)


@pytest.mark.slow  # ~35 s here (two CLI runs); CI runs it (`pytest -m slow`)
def test_vae_and_sparse_train_from_the_cli_and_reload(tmp_path, prepared_data_dir):
    common = ("--latent-dim", "4", "--epochs", "1", "--train-examples", "500", "--batch-size", "50",
              "--data-dir", str(prepared_data_dir))
    for name, extra in (("vae", ("--hidden", "16")), ("sparse", ("--model-kwargs", '{"encoder": "conv"}',
                                                               "--conv-features", "4,4"))):
        result = run_cli("aejax.train", "--model", name, *common, *extra, "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        row = json.loads((tmp_path / name / "results.json").read_text())[0]
        model, variables, config = aejax.load_model(tmp_path / name)
        params = variables["params"]
        assert config.model == name and models.param_count(params) == row["params"]
        assert ("test_elbo_nats" if name == "vae" else "test_code_active") in row


def test_a_run_resolves_its_config_once(tmp_path, mnist_test_images, monkeypatch):
    """`resolve` marks what it returns, so the run passes the resolved config down instead of checking it again
    at every layer (data shape, sweep, trainer, model); reloading resolves once more, from config.json."""
    from aejax.models import registry

    calls = []
    real = registry._resolve
    monkeypatch.setattr(registry, "_resolve", lambda config: calls.append(config) or real(config))
    config = Config(model="conv_strided", latent_dim=16, batch_size=50, epochs=1)
    loop.run(config, tmp_path / "run", data=(mnist_test_images[:200], mnist_test_images[200:300]), log=lambda _: None)
    assert len(calls) == 1
    resolved = models.resolve(config)
    assert registry.is_resolved(resolved) and models.resolve(resolved) is resolved
    assert not registry.is_resolved(resolved.replace(lr=0.01)) and resolved == models.resolve(config)
    calls.clear()
    aejax.load_model(tmp_path / "run")
    assert len(calls) == 1
