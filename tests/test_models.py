import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import models
from aejax.config import Config


def _init(config: Config):
    model = models.build(config)
    variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
    return model, variables


@pytest.mark.parametrize("config, code_shape, params", [
    (Config(model="linear", latent_dim=32), (3, 32), 784 * 32 + 32 + 32 * 784 + 784),
    (Config(model="linear", latent_dim=256), (3, 256), 784 * 256 + 256 + 256 * 784 + 784),
    (Config(model="linear", latent_dim=64, hidden=(256,)), (3, 64),
     (784 * 256 + 256) + (256 * 64 + 64) + (64 * 256 + 256) + (256 * 784 + 784)),
    # The original conv model: 640 + 4,616 + 2,112 + 257 parameters (PyTorch's count for the same layers).
    (Config(model="conv_original", latent_dim=392), (3, 7, 7, 8), 7625),
    (Config(model="conv", latent_dim=32, conv_features=(64, 8)), (3, 32), 7625 + (392 * 32 + 32) + (32 * 392 + 392)),
])
def test_shapes_and_parameter_counts(config, code_shape, params):
    model, variables = _init(config)
    x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    recon = model.apply(variables, x)
    code = model.apply(variables, x, method=model.encode)
    assert recon.shape == (3, 28, 28, 1)
    assert code.shape == code_shape
    assert bool(jnp.all((recon >= 0) & (recon <= 1)))
    np.testing.assert_allclose(model.apply(variables, code, method=model.decode), recon, rtol=1e-6)
    assert models.param_count(variables["params"]) == params


def test_conv3x3_equals_xla_convolution():
    x = jax.random.normal(jax.random.key(0), (2, 14, 14, 5))
    layer = models.Conv3x3(7)
    variables = layer.init(jax.random.key(1), x)
    ref = nn.Conv(7, (3, 3), padding="SAME").apply(variables, x)
    np.testing.assert_allclose(layer.apply(variables, x), ref, rtol=1e-5, atol=1e-5)


def test_max_pool2_equals_flax_max_pool():
    x = jax.random.normal(jax.random.key(0), (2, 14, 14, 3))
    np.testing.assert_array_equal(models.max_pool2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))


def test_upsample_is_a_stride_2_transpose_convolution():
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 4))
    layer = models.Upsample2x2(3)
    variables = layer.init(jax.random.key(1), x)
    kernel = variables["params"]["kernel"][::-1, ::-1]  # lax's convention flips the spatial taps
    ref = jax.lax.conv_transpose(x, kernel, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(layer.apply(variables, x), ref + variables["params"]["bias"], rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
    model, variables = _init(Config(model="conv", latent_dim=32, dtype="bfloat16"))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
    assert model.apply(variables, jnp.zeros((1, 28, 28, 1))).dtype == jnp.bfloat16
