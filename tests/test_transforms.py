"""Every JAX transform through every registered model: forward mode (`jvp`, `jacfwd`), reverse mode (`jacrev`),
`hessian` and forward-over-reverse Hessian-vector products of `encode`, `decode` and the loss.

The conv models compute with `aejax.models.ops` (matmul forms with their own derivative rules); each transform of
them is checked against the same model computing with lax's own convolution and `nn.max_pool` (`conv_impl
xla`, same parameters) to 1e-5. The other models are flax layers throughout; for them forward and reverse mode
must agree with each other. Full Jacobians and Hessians are taken with respect to a 6x6 patch of the image (and
of the reconstruction) to keep the test fast; the functions still run through every layer.

The image is a real digit plus a little noise: on exact ties (a blank background gives many) max-pooling is not
differentiable, and two correct implementations may pick different members of a tied window.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import models
from aejax.config import Config
from aejax.evaluation import metrics
from aejax.training import step as train


@pytest.fixture(autouse=True)
def _highest_precision():
    """Every test here compares derivatives, not matmul passes: highest precision inside the test only."""
    with jax.default_matmul_precision("highest"):
        yield

MODELS = ("linear", "conv", "conv_original", "conv_strided", "vae", "sparse")
SETTINGS = {"conv_original": {"latent_dim": 392},  # conv_strided with every optional layer (refine: a 3x3 conv)
            "conv_strided": {"conv_features": (8, 16), "model_kwargs": {"hidden": 24, "refine": True,
                                                                             "linear": True}}}


def _close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


PATCH = (slice(None), slice(11, 17), slice(11, 17), 0)  # [1, 6, 6] of a [1, 28, 28, 1] image


def _setup(name: str, impl: str = "ops"):
    config = models.resolve(Config(model=name, **{"latent_dim": 32, **SETTINGS.get(name, {})}))
    if config.model_kwargs.get("impl") == "auto" and config.model_kwargs.get("encoder") != "linear":
        config = config.replace(conv_impl=impl)
    trainer = train.make_trainer(config)
    return trainer, train.init_state(trainer, jax.random.key(0)).params


def _transforms(trainer, params, x) -> dict:
    """Each transform's result, computed in one compiled program (eager dispatch of every op is slower)."""
    return jax.jit(functools.partial(_transforms_eager, trainer))(params, x)


def _transforms_eager(trainer, params, x) -> dict:
    model = trainer.model
    z = model.apply({"params": params}, x, method="encode")

    def encode(patch):  # [1, 6, 6] of the image -> code
        return model.apply({"params": params}, x.at[PATCH].set(patch), method="encode")

    def decode(z):  # code -> [1, 6, 6] of the reconstruction
        return model.apply({"params": params}, z, method="decode")[PATCH]

    def loss(p):
        return trainer.loss(model, p, x, x, jax.random.key(1))[0]

    def patch_loss(patch):
        xp = x.at[PATCH].set(patch)
        return trainer.loss(model, params, xp, xp, jax.random.key(1))[0]

    patch = x[PATCH]
    dx = jax.random.normal(jax.random.key(2), patch.shape)
    dz = jax.random.normal(jax.random.key(3), z.shape)
    dp = jax.tree_util.tree_map(lambda v: jax.random.normal(jax.random.key(4), v.shape), params)
    return {
        "encode_jvp": jax.jvp(encode, (patch,), (dx,)),
        "encode_jacfwd": jax.jacfwd(encode)(patch),
        "encode_jacrev": jax.jacrev(encode)(patch),
        "decode_jvp": jax.jvp(decode, (z,), (dz,)),
        "decode_jacfwd": jax.jacfwd(decode)(z),
        "decode_jacrev": jax.jacrev(decode)(z),
        "loss_hvp": jax.jvp(jax.grad(loss), (params,), (dp,))[1],  # forward over reverse
        "loss_hessian": jax.hessian(patch_loss)(patch),
        "loss_jacrev_jacfwd": jax.jacrev(jax.jacfwd(patch_loss))(patch),  # reverse over forward
    }


# The conv models, 25-40 s each here, run with the slow tests (CI runs both); the default suite checks the
# derivative rules of each conv primitive directly, forward and reverse (`tests/test_ops.py`).
SLOW_MODELS = ("conv", "conv_original", "conv_strided")


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_MODELS else m for m in MODELS])
def test_every_transform_runs_and_matches_the_reference(name, mnist_test_images):
    noise = jax.random.uniform(jax.random.key(5), (1, 28, 28, 1), maxval=0.01)
    x = metrics.to_float(jnp.asarray(mnist_test_images[:1])) * 0.98 + noise  # no tied pooling windows
    impls = ("ops", "xla") if name.startswith("conv") else ("ops",)
    results = {impl: _transforms(*_setup(name, impl), x) for impl in impls}
    for r in results.values():  # forward and reverse mode agree within each implementation
        _close(r["encode_jacfwd"], r["encode_jacrev"])
        _close(r["decode_jacfwd"], r["decode_jacrev"])
        _close(r["loss_hessian"], r["loss_jacrev_jacfwd"])
        assert np.abs(np.asarray(r["loss_hessian"])).max() > 0
    if "xla" in results:
        _close(results["ops"], results["xla"])


@pytest.mark.slow  # the conv layers are covered by the conv models above; this adds the ReLU code
def test_sparse_conv_encoder_transforms(mnist_test_images):
    x = metrics.to_float(jnp.asarray(mnist_test_images[:1])) * 0.98 + 0.01
    config = Config(model="sparse", model_kwargs={"encoder": "conv"}, conv_features=(8, 8))
    got = [_transforms(train.make_trainer(config.replace(conv_impl=impl)),
                       train.init_state(train.make_trainer(config), jax.random.key(0)).params, x)
           for impl in ("ops", "xla")]
    _close(*got)
