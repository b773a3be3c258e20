"""The fast primitives equal XLA's reference operations, in value and in both derivative modes (forward: the
`custom_jvp` rules; reverse: the transposes JAX derives from them)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax.models import ops

DIMS = ("NHWC", "HWIO", "NHWC")


def reference_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DIMS)


def reference_conv_pool(x, kernel):
    return nn.max_pool(reference_conv(x, kernel), (2, 2), strides=(2, 2))


def assert_same_derivatives(f, g, x, kernel, rtol=1e-5):
    """Equal values, equal forward-mode derivatives (`jvp`, the rules `aejax.models.ops` defines) for random tangents,
    and equal gradients (`vjp`, the transposes JAX derives from them) for a random output cotangent; each side
    one compiled program."""
    cot = jax.random.normal(jax.random.key(9), jax.eval_shape(f, x, kernel).shape)
    tangents = (jax.random.normal(jax.random.key(10), x.shape), jax.random.normal(jax.random.key(11), kernel.shape))

    @functools.partial(jax.jit, static_argnums=0)
    def derivatives(fn, x, kernel):
        y, vjp = jax.vjp(fn, x, kernel)
        return y, jax.jvp(fn, (x, kernel), tangents)[1], vjp(cot)

    (yf, jvp_f, grads_f), (yg, jvp_g, grads_g) = derivatives(f, x, kernel), derivatives(g, x, kernel)
    np.testing.assert_allclose(yf, yg, rtol=rtol, atol=1e-5)
    np.testing.assert_allclose(jvp_f, jvp_g, rtol=rtol, atol=1e-4, err_msg="jvp")
    for a, b, name in zip(grads_f, grads_g, ("dx", "dkernel")):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("c, f", [(1, 16), (5, 7), (16, 3)])  # both kernel-gradient branches
def test_conv3x3_equals_xla_convolution(c, f):
    x = jax.random.normal(jax.random.key(0), (2, 14, 14, c))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, c, f))
    assert_same_derivatives(ops.conv3x3, reference_conv, x, kernel)


@pytest.mark.parametrize("c, f", [(1, 16), (4, 8)])  # window-major path (9C <= F) and the composition
def test_conv3x3_max_pool2_equals_conv_then_flax_max_pool(c, f):
    x = jax.random.normal(jax.random.key(0), (3, 12, 10, c))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, c, f))
    assert_same_derivatives(ops.conv3x3_max_pool2, reference_conv_pool, x, kernel)


def test_max_pool2_equals_flax_max_pool_and_routes_gradient_to_first_maximum():
    x = jax.random.normal(jax.random.key(0), (2, 14, 14, 3))
    np.testing.assert_array_equal(ops.max_pool2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))
    cot = jax.random.normal(jax.random.key(1), (2, 7, 7, 3))
    got = jax.vjp(ops.max_pool2, x)[1](cot)[0]
    want = jax.vjp(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), x)[1](cot)[0]
    np.testing.assert_array_equal(got, want)
    tangent = jax.random.normal(jax.random.key(2), x.shape)  # forward mode: the rule ops defines
    np.testing.assert_array_equal(jax.jvp(ops.max_pool2, (x,), (tangent,))[1],
                                  jax.jvp(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), (x,), (tangent,))[1])
    # Ties (blank MNIST background, saturated strokes): each window's gradient goes once, to its first member.
    flat = jax.vjp(ops.max_pool2, jnp.zeros((1, 4, 4, 1)))[1](jnp.ones((1, 2, 2, 1)))[0][0, :, :, 0]
    np.testing.assert_array_equal(flat, [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


def test_window_path_gives_tied_windows_one_gradient_each():
    x = jnp.zeros((1, 4, 4, 1))  # every conv output ties within its window
    kernel = jax.random.normal(jax.random.key(0), (3, 3, 1, 16))
    _, vjp = jax.vjp(lambda x, k: ops.conv3x3_max_pool2(x, k).sum(), x, kernel)
    dx, _ = vjp(1.0)
    np.testing.assert_allclose(dx, jax.vjp(lambda x: reference_conv_pool(x, kernel).sum(), x)[1](1.0)[0],
                               atol=1e-5)


def test_upsample2x2_then_unblock_is_a_stride_2_transpose_convolution():
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 4))
    k1 = jax.random.normal(jax.random.key(1), (2, 2, 4, 3))
    k2 = jax.random.normal(jax.random.key(2), (2, 2, 3, 2))

    def reference(x, kernel):  # lax's convention flips the spatial taps
        return jax.lax.conv_transpose(x, kernel[::-1, ::-1], (2, 2), "VALID", dimension_numbers=DIMS)

    np.testing.assert_allclose(ops.unblock(ops.upsample2x2(x, k1)), reference(x, k1), rtol=1e-5, atol=1e-5)
    two_levels = ops.unblock(ops.upsample2x2(ops.upsample2x2(x, k1), k2))  # [2, 28, 28, 2]
    np.testing.assert_allclose(two_levels, reference(reference(x, k1), k2), rtol=1e-5, atol=1e-5)
