import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import models
from aejax.config import Config


def _init(config: Config):
    """The model and its initial variables (compiled: op-by-op dispatch of the conv layers is slower)."""
    model = models.build(config)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
    return model, variables


def _apply(model: nn.Module, variables, x, method: str | None = None) -> jax.Array:
    return jax.jit(model.apply, static_argnames="method")(variables, x, method=method)


@pytest.mark.parametrize("config, code_shape, params", [
    (Config(model="linear", latent_dim=32), (3, 32), 784 * 32 + 32 + 32 * 784 + 784),
    (Config(model="linear", latent_dim=256), (3, 256), 784 * 256 + 256 + 256 * 784 + 784),
    (Config(model="linear", latent_dim=64, hidden=(256,)), (3, 64),
     (784 * 256 + 256) + (256 * 64 + 64) + (64 * 256 + 256) + (256 * 784 + 784)),
    # The original conv model: 640 + 4,616 + 2,112 + 257 parameters (PyTorch's count for the same layers).
    (Config(model="conv_original", latent_dim=392), (3, 7, 7, 8), 7625),
    (Config(model="conv", latent_dim=32, conv_features=(64, 8)), (3, 32), 7625 + (392 * 32 + 32) + (32 * 392 + 392)),
    # conv 3x3 1->32, conv 2x2 stride 2 32->64, Dense 3136->d, Dense d->3136, convT 64->32, convT 32->1
    (Config(model="conv_strided", latent_dim=32, conv_features=(32, 64)), (3, 32),
     320 + 8256 + (3136 * 32 + 32) + (32 * 3136 + 3136) + 8224 + 129),
    (Config(model="conv_strided", latent_dim=32, conv_features=(32, 64), model_kwargs={"linear": True}), (3, 32),
     320 + 8256 + (3136 * 32 + 32) + (32 * 3136 + 3136) + 8224 + 129 + 784 * 32 + (32 * 784 + 784)),
    (Config(model="conv_strided", latent_dim=16, conv_features=(8, 16), model_kwargs={"hidden": 24, "refine": True}),
     (3, 16), 80 + 528 + (784 * 24 + 24) + (24 * 16 + 16) + (16 * 24 + 24) + (24 * 784 + 784) + 520 + 584 + 33),
])
def test_shapes_and_parameter_counts(config, code_shape, params):
    model = models.build(config)  # shapes only: traced, not compiled
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
    x = jax.ShapeDtypeStruct((3, 28, 28, 1), jnp.float32)
    assert jax.eval_shape(model.apply, variables, x).shape == (3, 28, 28, 1)
    assert jax.eval_shape(lambda v, x: model.apply(v, x, method="encode"), variables, x).shape == code_shape
    assert models.param_count(variables["params"]) == params


@pytest.mark.parametrize("hidden, activation", [((), "relu"), ((16,), "relu"), ((24, 16), "relu"),
                                                ((24, 16), "sigmoid"), ((16,), "tanh")])
def test_linear_autoencoder_equals_a_numpy_forward_pass(hidden, activation):
    """Encoder: flatten, Dense + activation per hidden width, a linear Dense to the code; decoder: the mirror
    image, ending in a sigmoid. Written out in float64 NumPy from the same parameters."""
    model, variables = _init(Config(model="linear", latent_dim=8, hidden=hidden,
                                    model_kwargs={"activation": activation}))
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
    x = np.asarray(jax.random.uniform(jax.random.key(1), (3, 28, 28, 1)), np.float64)
    dense = lambda h, layer: h @ layer["kernel"] + layer["bias"]  # noqa: E731
    act = {"relu": lambda a: np.maximum(a, 0), "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "tanh": np.tanh}[activation]
    h = x.reshape(3, 784)
    for i in range(len(hidden)):
        h = act(dense(h, p[f"encoder_layers_{i}"]))
    code = dense(h, p[f"encoder_layers_{len(hidden)}"])
    h = code
    for i in range(len(hidden)):
        h = act(dense(h, p[f"decoder_layers_{i}"]))
    recon = (1 / (1 + np.exp(-dense(h, p[f"decoder_layers_{len(hidden)}"])))).reshape(3, 28, 28, 1)
    np.testing.assert_allclose(_apply(model, variables, x, "encode"), code, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_apply(model, variables, x), recon, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("config", [pytest.param(Config(model="conv_original", latent_dim=392), marks=pytest.mark.slow),
                                    Config(model="conv", latent_dim=20, conv_features=(16, 8))])
def test_conv_autoencoder_equals_flax_reference_layers_values_and_gradients(config):
    """The fast layers give the model flax's reference layers would (nn.Conv, nn.max_pool, nn.Dense,
    nn.ConvTranspose)."""
    model, variables = _init(config)
    p = variables["params"]
    f1, f2 = p["conv1"]["kernel"].shape[-1], p["conv2"]["kernel"].shape[-1]

    def reference(params, x):
        h = nn.relu(nn.max_pool(nn.Conv(f1, (3, 3), padding="SAME").apply({"params": params["conv1"]}, x),
                                (2, 2), (2, 2)))
        h = nn.relu(nn.max_pool(nn.Conv(f2, (3, 3), padding="SAME").apply({"params": params["conv2"]}, h),
                                (2, 2), (2, 2)))
        if "to_code" in params:  # the depth-matched model's Dense bottleneck
            code = nn.Dense(20).apply({"params": params["to_code"]}, h.reshape(h.shape[0], -1))
            h = nn.relu(nn.Dense(7 * 7 * f2).apply({"params": params["from_code"]}, code)).reshape(h.shape)
        for name, act in (("deconv1", nn.relu), ("deconv2", nn.sigmoid)):
            kernel = params[name]["kernel"][::-1, ::-1]  # lax's transpose-conv convention flips the taps
            h = act(jax.lax.conv_transpose(h, kernel, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                    + params[name]["bias"])
        return h

    x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
    np.testing.assert_allclose(_apply(model, variables, x), jax.jit(reference)(p, x), rtol=1e-5, atol=1e-6)
    loss = lambda f: lambda params: jnp.mean((f(params, x) - x) ** 2)  # noqa: E731
    got = jax.jit(jax.grad(loss(lambda params, x: model.apply({"params": params}, x))))(p)
    want = jax.jit(jax.grad(loss(reference)))(p)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7, err_msg=jax.tree_util.keystr(path))


def test_bfloat16_compute_keeps_float32_params():
    model = models.build(Config(model="conv", latent_dim=32, dtype="bfloat16"))
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
    assert jax.eval_shape(model.apply, variables, jnp.zeros((1, 28, 28, 1))).dtype == jnp.bfloat16


@pytest.mark.parametrize("kwargs", [pytest.param({"hidden": 0, "refine": False, "pool": True, "linear": False},
                                                 marks=pytest.mark.slow),  # the other's layers, fewer of them
                                    {"hidden": 24, "refine": True, "pool": False, "linear": True}])
def test_strided_conv_autoencoder_equals_flax_reference_layers(kwargs):
    """conv_strided is nn.Conv 3x3 + max-pool, nn.Conv 2x2 stride 2, Dense layers, nn.ConvTranspose layers (and
    the refining nn.Conv 3x3), written with flax's own layers from the same parameters."""
    model, variables = _init(Config(model="conv_strided", latent_dim=12, conv_features=(8, 16), model_kwargs=kwargs))
    p = variables["params"]

    def reference(params, x):
        conv = lambda name, k, s, pad, h: nn.Conv(params[name]["kernel"].shape[-1], (k, k), (s, s), padding=pad).apply(
            {"params": params[name]}, h)  # noqa: E731
        dense = lambda name, h: nn.Dense(params[name]["kernel"].shape[-1]).apply(  # noqa: E731
            {"params": params[name]}, h)
        if kwargs["pool"]:
            h = nn.relu(nn.max_pool(conv("conv1", 3, 1, "SAME", x), (2, 2), (2, 2)))
        else:
            h = nn.relu(conv("conv1", 2, 2, "VALID", x))
        h = nn.relu(conv("down", 2, 2, "VALID", h)).reshape(x.shape[0], -1)
        names = ["encoder_dense_0", "encoder_dense_1"] if kwargs["hidden"] else ["encoder_dense_0"]
        for name in names[:-1]:
            h = nn.relu(dense(name, h))
        if kwargs["linear"]:  # the code also reads the pixels
            h = jnp.concatenate([h, x.reshape(x.shape[0], 784)], axis=-1)
        code = h = dense(names[-1], h)
        for name in ["decoder_dense_0", "decoder_dense_1"][: len(names)]:
            h = nn.relu(dense(name, h))
        h = h.reshape(x.shape[0], 7, 7, 16)
        for name, act in (("deconv1", nn.relu), ("conv_refine", nn.relu), ("deconv2", nn.sigmoid)):
            if name == "conv_refine":
                h = nn.relu(conv(name, 3, 1, "SAME", h)) if kwargs["refine"] else h
                continue
            kernel = params[name]["kernel"][::-1, ::-1]  # lax's transpose-conv convention flips the taps
            h = jax.lax.conv_transpose(h, kernel, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = h + params[name]["bias"]
            if name == "deconv2" and kwargs["linear"]:  # plus a Dense code -> pixels path
                h = h + dense("to_pixels", code).reshape(h.shape)
            h = act(h)
        return h

    x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
    with jax.default_matmul_precision("highest"):
        want = jax.jit(reference)(p, x)
        np.testing.assert_allclose(_apply(model, variables, x), want, rtol=1e-5, atol=1e-6)


def test_docs_list_every_models_settings_with_their_defaults():
    """docs/models.md's table of model_kwargs names every registered built-in model and each of its settings."""
    from aejax.models import registry
    from tests.helpers import REPO

    text = (REPO / "docs" / "models.md").read_text()
    for name, spec in registry._MODELS.items():
        if not spec.builder.__module__.startswith("aejax."):  # a plug-in registered by another test
            continue
        row = next(line for line in text.splitlines() if line.startswith("| ") and f"`{name}`" in line.split("|")[1])
        for key, default in spec.kwargs.items():
            assert f"`{key}` {json.dumps(default)}" in row, (name, key, row)
