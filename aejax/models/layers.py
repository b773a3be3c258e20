"""The pieces every built-in model is made of: the `Autoencoder` base class (the model contract's derived
methods), float-input checking, activations, padding and cropping to the conv models' multiple of 4, and the
conv layers (`ConvPool3x3`, `Upsample2x2`, `Conv`), each computing through `aejax.models.ops` (fast on CPU) or
XLA's convolutions (GPU, TPU) with one parameter layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax.errors import AejaxError
from aejax.models import ops

Array = jax.Array


def check_float_input(x: Array) -> None:
    """The modules compute on float images in [0, 1]; uint8 (0..255) input would be scaled 255x silently."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise AejaxError(f"the model got {x.dtype} images; its methods take float images in [0, 1]. Use "
                         f"aejax.encode / aejax.reconstruct, which accept uint8 (0..255) or float images")


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": jnp.tanh, "gelu": nn.gelu, "elu": nn.elu}


class Autoencoder(nn.Module):
    """The contract's derived methods, written once: `decode` is `sigmoid(decode_logits)` and `__call__` is
    `decode(encode(x))`. A subclass defines `encode` and `decode_logits`."""

    def decode(self, z: Array) -> Array:  # code -> images in [0, 1]
        return nn.sigmoid(self.decode_logits(z))

    def __call__(self, x: Array) -> Array:
        return self.decode(self.encode(x))


def pixels(image_shape: Sequence[int]) -> int:
    """Values per image: H * W * C."""
    return math.prod(image_shape)



def pooled_shape(image_shape: Sequence[int]) -> tuple[int, int]:
    """The conv models' feature-map side after two halvings: (ceil(H / 4), ceil(W / 4)); 7x7 on MNIST."""
    return -(-image_shape[0] // 4), -(-image_shape[1] // 4)


def pad_to_multiple(x: Array, multiple: int) -> Array:
    """`[B, H, W, C]` zero-padded at the bottom and right to multiples of `multiple` (unchanged when it divides
    both)."""
    ph, pw = -x.shape[1] % multiple, -x.shape[2] % multiple
    return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0))) if ph or pw else x


def pad_to_4(x: Array) -> Array:
    """`[B, H, W, C]` zero-padded at the bottom and right to multiples of 4 (the conv models' two halvings)."""
    return pad_to_multiple(x, 4)


def crop_to(y: Array, image_shape: Sequence[int]) -> Array:
    """`[B, H', W', C]` cut back to the top-left `[B, H, W, C]` of `image_shape` (the inverse of `pad_to_4`)."""
    h, w = image_shape[:2]
    return y if y.shape[1:3] == (h, w) else y[:, :h, :w]


CONV_DIMS = ("NHWC", "HWIO", "NHWC")  # lax's names for channels-last images and [h, w, in, out] kernels


def conv_params(layer: nn.Module, x: Array, size: int) -> tuple[Array, Array, Array]:
    """The parameters every conv layer here declares (and those of `aejax.models.rate_distortion`): a `[size, size, C,
    features]` kernel (LeCun normal) and a zero bias, with `x` and both cast to the layer's compute dtype."""
    kernel = layer.param("kernel", nn.initializers.lecun_normal(), (size, size, x.shape[-1], layer.features))
    bias = layer.param("bias", nn.initializers.zeros_init(), (layer.features,))
    return x.astype(layer.dtype), kernel.astype(layer.dtype), bias.astype(layer.dtype)


class ConvPool3x3(nn.Module):
    """3x3 convolution (stride 1, SAME) followed by a 2x2 max-pool, with bias: [B, H, W, C] -> [B, H/2, W/2, F].

    `impl="ops"`: `aejax.models.ops.conv3x3_max_pool2` (fast on CPU); `"xla"`: the convolution and `nn.max_pool` that
    `nn.Conv(features, (3, 3), padding="SAME")` then `nn.max_pool(., (2, 2), (2, 2))` compute (cuDNN, TPU
    convolution units). Same parameters, same values.
    """

    features: int
    dtype: jnp.dtype = jnp.float32
    impl: str = "ops"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x, kernel, bias = conv_params(self, x, 3)
        if self.impl == "ops":
            y = ops.conv3x3_max_pool2(x, kernel)
        else:
            y = nn.max_pool(jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=CONV_DIMS),
                            (2, 2), strides=(2, 2))
        return y + bias


class Upsample2x2(nn.Module):
    """Transpose convolution, 2x2 kernel, stride 2: each input pixel writes its own 2x2 output patch,
    out[2i+a, 2j+b] = x[i, j] @ kernel[a, b] + bias.

    `impl="ops"` works in block layout (see `aejax.models.ops.upsample2x2`): [B, H, W, *blocks, C] ->
    [B, H, W, *blocks, 2, 2, F], and `ops.unblock` turns the result into an image. `impl="xla"` maps images
    [B, H, W, C] -> [B, 2H, 2W, F] with `lax.conv_transpose`, the layer `nn.ConvTranspose(features, (2, 2),
    strides=(2, 2))` computes, whose kernel is this one flipped in both spatial axes: the flip is made here, so
    both implementations share one parameter layout and a checkpoint of either reloads into the other.
    """

    features: int
    dtype: jnp.dtype = jnp.float32
    impl: str = "ops"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x, kernel, bias = conv_params(self, x, 2)
        if self.impl == "ops":
            y = ops.upsample2x2(x, kernel)
        else:
            y = jax.lax.conv_transpose(x, kernel[::-1, ::-1], (2, 2), "VALID", dimension_numbers=CONV_DIMS)
        return y + bias


class Conv(nn.Module):
    """Convolution with bias, [B, H, W, C] -> [B, H', W', F], in one of two forms: `size=2`, a 2x2 kernel at
    stride 2 without padding (learned down-sampling to [B, H/2, W/2, F], the mirror of `Upsample2x2`:
    out[i, j] = sum over (a, b) of x[2i+a, 2j+b] @ kernel[a, b] + bias), or `size=3`, a 3x3 kernel at stride 1
    with SAME zero padding. `impl="ops"`: `aejax.models.ops.downsample2x2` (one matmul) or `ops.conv3x3`; `"xla"`: the
    lax convolution `nn.Conv(features, (size, size), strides=...)` computes. Same parameters, same values.
    """

    features: int
    size: int
    dtype: jnp.dtype = jnp.float32
    impl: str = "ops"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        op, stride, padding = {2: (ops.downsample2x2, 2, "VALID"), 3: (ops.conv3x3, 1, "SAME")}[self.size]
        x, kernel, bias = conv_params(self, x, self.size)
        if self.impl == "ops":
            y = op(x, kernel)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=CONV_DIMS)
        return y + bias


