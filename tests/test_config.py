import json

import pytest

from aejax import models
from aejax.config import Config
from aejax.errors import AejaxError


@pytest.mark.parametrize("changes, message", [
    ({"latent_dim": 0}, "latent_dim must be in 1..784"),
    ({"latent_dim": 785}, "latent_dim must be in 1..784"),
    ({"latent_dim": 3.5}, "latent_dim must be an integer"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"batch_size": 0}, "batch_size must be in 1..60000"),
    ({"batch_size": 60_001}, "batch_size must be in 1..60000"),
    ({"batch_size": 11, "train_examples": 10}, "batch_size must be in 1..10"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr": float("inf")}, "lr must be a finite number"),
    ({"model": "mlp"}, "unknown model 'mlp'"),
    ({"loss": "l1"}, "unknown loss 'l1'"),
    ({"optimizer": "nosuch"}, "unknown optimizer 'nosuch'"),
    ({"optimizer": "chain"}, "unknown optimizer 'chain'"),
    ({"optimizer": "sgd", "optimizer_kwargs": {"momentun": 0.9}}, "optimizer sgd takes no argument 'momentun'; "
                                                                   "it takes momentum, nesterov"),
    ({"optimizer": "lion", "optimizer_kwargs": {"weight_decay": 0.1}}, "set it with weight_decay"),
    ({"optimizer": "sgd", "optimizer_kwargs": {"momentum": {"a": 1}}}, "optimizer_kwargs momentum must be a JSON"),
    ({"optimizer_kwargs": [1]}, "optimizer_kwargs must be a mapping"),
    ({"dataset": "two words"}, "dataset must be a dataset's name"),
    ({"image_shape": (28, 28)}, "image_shape must be three positive integers"),
    ({"image_shape": (5, 5, 1), "latent_dim": 26}, "latent_dim must be in 1..25"),
    ({"dataset": "lfw_faces", "latent_dim": 626}, "latent_dim must be in 1..625"),
    ({"dataset": "lfw_faces", "model": "conv_original", "latent_dim": 392}, "conv_original is the original study's"),
    ({"schedule": "step"}, "unknown schedule 'step'"),
    ({"hidden": (128, -1)}, "hidden must be a list of positive integers"),
    ({"model": "conv_original", "latent_dim": 32}, "conv_original has a fixed code of 392 values"),
    ({"seed": -1}, "seed must be in 0..2\\*\\*63-1"),
    ({"seed": 99999999999999999999}, "seed must be in 0..2\\*\\*63-1"),
    ({"matmul_precision": "tf32"}, "unknown matmul_precision 'tf32'; choose one of default, high, highest"),
    ({"model": "conv", "conv_impl": "cudnn"}, "model_kwargs impl must be one of auto, ops, xla, got 'cudnn'"),
    ({"conv_impl": "xla"}, "model linear takes no model_kwargs impl"),
    ({"shard_data": True}, "shard_data needs data_parallel"),
    ({"data_parallel": 1}, "data_parallel must be true or false"),
    # Settings the rest of the config would not read are errors, not silently ignored.
    ({"model": "conv", "hidden": (64,)}, "model conv takes no model_kwargs hidden"),
    ({"conv_features": (8, 8)}, "model linear takes no model_kwargs features"),
    ({"model": "conv", "conv_features": (8, 8, 8)}, "model_kwargs features must be 2 positive integers"),
    ({"model": "sparse", "model_kwargs": {"encoder": "conv"}, "hidden": (64,)},
     "model_kwargs hidden not read by the conv encoder of model sparse"),
    # model_kwargs are checked against what the model registered, and the loss against the model.
    ({"model": "sparse", "model_kwargs": {"l1_wieght": 0.1}}, "model sparse takes no model_kwargs l1_wieght; "
                                                              "it takes l1_weight, encoder"),
    ({"model": "sparse", "model_kwargs": {"l1_weight": "big"}}, "model_kwargs l1_weight must be a finite number"),
    ({"model": "sparse", "model_kwargs": {"encoder": "rnn"}}, "encoder must be one of linear, conv"),
    ({"hidden": (64,), "model_kwargs": {"activation": "swish"}}, "activation must be one of relu, sigmoid, tanh"),
    ({"model_kwargs": {"activation": "tanh"}}, "activation 'tanh' needs hidden layers"),
    ({"model_kwargs": {"kl_weight": 1.0}}, "model linear takes no model_kwargs kl_weight"),
    ({"model": "vae", "loss": "mse_l1"}, "loss 'mse_l1' needs a model with l1_weight; VAE has none"),
    ({"loss": "elbo"}, "loss 'elbo' needs a model with encode_stats, kl_weight"),
    ({"model": "conv_original", "latent_dim": 392, "conv_features": (8, 8)},
     "model conv_original takes no model_kwargs features"),
    ({"schedule": "cosine", "warmup_epochs": 0.5}, "warmup_epochs=0.5 is read only with schedule warmup_cosine"),
    ({"weight_decay": 1e-4}, "optimizer adam takes no weight_decay"),
    ({"noise_level": 0.3}, "noise_level=0.3 is read only with noise gaussian or salt_pepper or mask, not noise none"),
])
def test_invalid_values_raise_one_line(changes, message):
    """Types and ranges fail when the Config is built; names and model-specific settings when it is resolved
    against the registries (as every trainer and run does first)."""
    with pytest.raises(AejaxError, match=message) as info:
        models.resolve(Config(**changes))
    assert "\n" not in str(info.value)


def test_a_config_is_plain_data_until_resolved():
    """Building or reading a Config consults no registry: an unknown (or not yet registered) model is only an
    error where a trainer is made."""
    config = Config(model="not_registered_yet", model_kwargs={"width": 3})
    assert Config.from_dict(config.to_dict()) == config
    with pytest.raises(AejaxError, match="unknown model 'not_registered_yet'"):
        models.resolve(config)
    with pytest.raises(AejaxError, match="latent_dim must be in 1..784"):
        Config(model="not_registered_yet", latent_dim=0)


def test_json_roundtrip_and_unknown_keys():
    config = Config(model="linear", latent_dim=64, hidden=(256,), lr=3e-3)
    assert Config.from_dict(json.loads(config.to_json())) == config
    with pytest.raises(AejaxError, match="unknown config key"):
        Config.from_dict({**config.to_dict(), "latnet_dim": 3})


def test_settings_that_are_read_are_accepted():
    models.resolve(Config(model="conv", conv_features=(8, 8)))
    models.resolve(Config(schedule="warmup_cosine", warmup_epochs=0.5))
    models.resolve(Config(optimizer="adamw", weight_decay=1e-4))
    models.resolve(Config(noise="gaussian", noise_level=0.3))


def test_a_model_brings_its_loss_and_its_kwargs_defaults_into_config_json():
    vae = models.resolve(Config(model="vae"))
    assert vae.loss == "elbo" and vae.model_kwargs == {"kl_weight": 1.0, "hidden": []}
    sparse = models.resolve(Config(model="sparse", model_kwargs={"l1_weight": 0.01}))
    assert sparse.loss == "mse_l1" and sparse.to_dict()["model_kwargs"] == {
        "l1_weight": 0.01, "encoder": "linear", "hidden": [], "features": [32, 32], "impl": "auto"}
    assert Config.from_dict(json.loads(sparse.to_json())) == sparse == models.resolve(sparse)
    assert models.resolve(Config()).loss == "mse" and models.resolve(Config(loss="bce")).loss == "bce"


def test_replace_gives_a_new_model_its_own_kwargs_defaults():
    """The default linear model's kwargs (activation) do not follow a switch to a model that takes none."""
    linear = models.resolve(Config())
    assert linear.model_kwargs == {"activation": "relu", "hidden": []}
    assert models.resolve(linear.replace(model="conv_original", latent_dim=392)).model_kwargs == {"impl": "auto"}
    sparse = models.resolve(Config(model="sparse", model_kwargs={"l1_weight": 0.5}))
    assert models.resolve(sparse.replace(lr=0.1)).model_kwargs == {
        "l1_weight": 0.5, "encoder": "linear", "hidden": [], "features": [32, 32], "impl": "auto"}
    assert models.resolve(sparse.replace(model="linear", loss="mse")).model_kwargs == {"activation": "relu",
                                                                                        "hidden": []}
    assert models.resolve(linear.replace(model="linear", model_kwargs={"activation": "tanh"},
                                         hidden=(8,))).model_kwargs == {"activation": "tanh", "hidden": [8]}
    wide = models.resolve(Config(model="conv_strided", conv_features=(32, 64)))
    assert wide.replace(model_kwargs={"refine": True}).model_kwargs["features"] == [32, 64]  # updated, not replaced


def test_model_settings_live_in_model_kwargs_and_old_configs_still_load():
    """hidden, conv_features and conv_impl were Config fields; given as arguments (or read from an older
    config.json) they set the model's model_kwargs entries, so old runs reload as the same model."""
    old = {**Config(model="conv_strided").to_dict(), "hidden": [], "conv_features": [32, 64], "conv_impl": "ops",
           "model_kwargs": {"hidden": 0, "refine": False, "pool": True, "linear": True}}
    config = models.resolve(Config.from_dict(old))
    assert config.model_kwargs == {"features": [32, 64], "hidden": 0, "refine": False, "pool": True,
                                   "linear": True, "impl": "ops"}
    assert not {"hidden", "conv_features", "conv_impl"} & set(config.to_dict())
    assert config == models.resolve(Config(model="conv_strided", model_kwargs={"features": [32, 64], "linear": True,
                                                                               "impl": "ops"}))
    assert Config.from_dict(json.loads(config.to_json())) == config


def test_with_epochs_keeps_the_schedule_shape():
    config = Config(epochs=20, schedule="warmup_cosine", warmup_epochs=1.0).with_epochs(1)
    assert (config.epochs, config.warmup_epochs) == (1, 0.05)
    assert Config(epochs=5).with_epochs(2) == Config(epochs=2)


def test_compression_ratio():
    assert Config(latent_dim=32).compression_ratio == 24.5
