import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax.config import Config
from aejax.data import corruption
from aejax.errors import AejaxError
from aejax.evaluation import baselines, metrics
from aejax.training import step as train


def test_corruptions_have_the_requested_strength():
    x = jnp.full((64, 28, 28, 1), 0.5)
    key = jax.random.key(0)
    noisy = corruption.gaussian(key, x, 0.1)
    assert abs(float(jnp.std(noisy - x)) - 0.1) < 0.005 and float(noisy.min()) >= 0 and float(noisy.max()) <= 1
    sp = corruption.salt_pepper(key, x, 0.2)
    changed = np.asarray(sp != 0.5)
    assert abs(changed.mean() - 0.2) < 0.01 and set(np.unique(np.asarray(sp)[changed])) == {0.0, 1.0}
    masked = corruption.mask(key, x, 0.3)
    assert abs(float(jnp.mean(masked == 0)) - 0.3) < 0.01
    np.testing.assert_array_equal(corruption.corrupt(key, x, "none", 0.5), x)


def test_noise_config_is_validated():
    with pytest.raises(AejaxError, match="unknown noise"):
        Config(noise="speckle")
    with pytest.raises(AejaxError, match="noise_level is a rate for mask"):
        Config(noise="mask", noise_level=1.5)


def test_denoising_training_learns_to_remove_noise(mnist_test_images):
    config = Config(model="linear", latent_dim=64, batch_size=50, lr=3e-3, noise="gaussian", noise_level=0.3)
    trainer = train.make_trainer(config)
    state = train.init_state(trainer, train.seed_keys(0)[0])
    images = jnp.asarray(mnist_test_images)
    epoch = jax.jit(train.train_epoch, static_argnums=0)
    for e in range(8):
        state, _ = epoch(trainer, state, images, jax.random.key(e))
    clean = metrics.to_float(images[:500])
    noisy = corruption.gaussian(jax.random.key(99), clean, 0.3)
    denoised = trainer.model.apply({"params": state.params}, noisy)
    assert metrics.score(images[:500], denoised)["mse"] < 0.6 * metrics.score(images[:500], noisy)["mse"]


def test_classical_filters():
    x = jnp.zeros((1, 28, 28, 1)).at[0, 10, 10, 0].set(1.0)  # one hot pixel
    assert float(baselines.median3x3(x).max()) == 0.0  # an isolated outlier is removed
    blurred = baselines.gaussian_blur(x)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5 and float(blurred.max()) < 0.2
