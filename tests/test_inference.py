import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import models
from aejax.config import Config
from aejax.errors import AejaxError
from aejax.evaluation import metrics
from aejax.models import inference


def _model(config: Config):
    model = models.build(config)
    return model, model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]


@pytest.mark.parametrize("config", [Config(latent_dim=16),  # conv_original: ~14 s here, with the slow tests
                                    pytest.param(Config(model="conv_original", latent_dim=392),
                                                 marks=pytest.mark.slow)])
def test_chunks_and_input_forms_give_the_model_outputs(config, mnist_test_images):
    model, params = _model(config)
    images = mnist_test_images[:250]
    x = metrics.to_float(jnp.asarray(images))
    codes = model.apply({"params": params}, x, method=model.encode)
    recon = model.apply({"params": params}, x)
    # uint8 or float, chunks of 100 with a remainder of 50: the model's own outputs.
    for given in (images, np.asarray(x)):
        np.testing.assert_allclose(inference.encode(model, params, given, chunk=100), codes, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(inference.reconstruct(model, params, given, chunk=100), recon, rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(inference.decode(model, params, codes, chunk=100), recon, rtol=1e-5, atol=1e-6)
    # One image or one code without a batch axis, with or without the channel axis.
    assert inference.code_shape(model, params) == codes.shape[1:]
    for single in (images[3], images[3, ..., 0]):
        np.testing.assert_allclose(inference.encode(model, params, single), codes[3], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(inference.reconstruct(model, params, single), recon[3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inference.decode(model, params, codes[3]), recon[3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inference.encode(model, params, images[:5, ..., 0]), codes[:5], rtol=1e-5,
                               atol=1e-6)


def test_bad_inputs_get_one_line_errors(mnist_test_images):
    model, params = _model(Config(latent_dim=16))
    x = np.asarray(mnist_test_images[:4], np.float32)  # 0..255 as floats: the classic mistake
    with pytest.raises(AejaxError, match=r"float images must lie in \[0, 1\], got values in \[0, 255\]"):
        inference.encode(model, params, x)
    with pytest.raises(AejaxError, match=r"must lie in \[0, 1\]"):
        inference.reconstruct(model, params, np.full((28, 28), np.nan, np.float32))
    for fn in (inference.encode, inference.reconstruct):  # under jit: checked when the program runs
        with pytest.raises(Exception, match=r"float images must lie in \[0, 1\], got values in \[0, 255\]"):
            jax.block_until_ready(jax.jit(lambda im, fn=fn: fn(model, params, im))(x))
    ok = jax.jit(lambda im: inference.encode(model, params, im / 255.0))(x)
    np.testing.assert_allclose(ok, inference.encode(model, params, x / 255.0), rtol=1e-5, atol=1e-6)
    with pytest.raises(AejaxError, match=r"images must be shaped .* got \[4, 32, 32, 1\]"):
        inference.encode(model, params, np.zeros((4, 32, 32, 1), np.uint8))
    with pytest.raises(AejaxError, match=r"must be uint8 \(0..255\) or float in \[0, 1\], got dtype int32"):
        inference.encode(model, params, np.zeros((28, 28), np.int32))
    with pytest.raises(AejaxError, match=r"codes of this model are shaped \[16\] \(one code\) or \[B, 16\], "
                                         r"got \[3, 8\]"):
        inference.decode(model, params, np.zeros((3, 8), np.float32))
