"""Autoencoders as pure `flax.linen` modules, chosen by name from one registry (`register_model`).

The model contract (what `aejax.train`, `aejax.losses`, `aejax.metrics` and `aejax.inference` rely on):

- `encode(x)`: float images `[B, H, W, C]` in [0, 1] -> codes `[B, *code]` (deterministic: a VAE's mean).
- `decode_logits(z)`: codes -> pre-sigmoid images `[B, H, W, C]` (what `bce` and `elbo` score, from logits).
- `decode(z)`: codes -> images in [0, 1], `sigmoid(decode_logits(z))`.
- `__call__(x)`: `decode(encode(x))`, the reconstruction the metrics score. None of these takes a PRNG key.
  Subclassing `Autoencoder` gives `decode` and `__call__` from the other two.
- Optional: `encode_stats(x) -> (mean, log_var)`, each `[B, d]`, for a Gaussian encoder (read by the `elbo`
  loss, which samples the code with the train step's key); loss weights as module attributes (`l1_weight`,
  `kl_weight`), read by the losses and sweepable (`train.run(sweep=...)` clones the module with a traced value).
- Optional, for models with dropout or BatchNorm: a boolean attribute `train` (default False, inference), which
  the train step sets to True (with a `dropout` PRNG stream and every non-`params` collection, such as
  `batch_stats`, mutable); evaluation and the inference functions use the model as built.

The image shape (H, W, C) comes from the data: a builder reads `config.image_shape` (set by `resolve` from the
dataset, or by a run from its arrays), and the built-in models take it as their `image_shape` attribute.

Call them with `model.apply(variables, x, method="encode")` (`variables` is `{"params": params}` plus any
other collections). The modules take float input only and
reject uint8 with an error naming `aejax.encode` / `aejax.reconstruct`, which take uint8 or float, with or
without a batch axis, and apply the model chunk by chunk. A model is registered with a builder
`Config -> nn.Module`; its own settings come from `Config.model_kwargs` (merged over the registered defaults, so
`config.json` holds them all and `aejax.restore.load_model` rebuilds the same module); `resolve` checks a
`Config` against the registries.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax import datasets, losses, ops, optimizers
from aejax.config import (
    CONV_ORIGINAL_CODE,
    CONV_ORIGINAL_FEATURES,
    MNIST_SHAPE,
    MODEL_FIELDS,
    Config,
    check_model_kwargs,
    check_read,
)
from aejax.errors import AejaxError, check_registration

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


class LinearAutoencoder(Autoencoder):
    """Fully connected autoencoder; with `hidden=()` the original: Dense(P->d), Dense(d->P), sigmoid, for
    P = H * W * C input values (784 on MNIST).

    `hidden` adds mirrored layers: P -> h1 -> ... -> d (linear code) -> ... -> h1 -> P, with `activation`
    (a name in `ACTIVATIONS`; ReLU by default, `sigmoid` the logistic units of Hinton & Salakhutdinov 2006).
    """

    latent_dim: int
    hidden: Sequence[int] = ()
    dtype: jnp.dtype = jnp.float32
    activation: str = "relu"
    image_shape: tuple[int, int, int] = MNIST_SHAPE

    def setup(self) -> None:
        self.encoder_layers = [nn.Dense(h, dtype=self.dtype) for h in self.hidden] + [
            nn.Dense(self.latent_dim, dtype=self.dtype)]
        self.decoder_layers = [nn.Dense(h, dtype=self.dtype) for h in reversed(self.hidden)] + [
            nn.Dense(pixels(self.image_shape), dtype=self.dtype)]

    def encode(self, x: Array) -> Array:  # [B, H, W, C] -> [B, d]
        check_float_input(x)
        h = x.reshape(x.shape[0], pixels(self.image_shape))
        for layer in self.encoder_layers[:-1]:
            h = ACTIVATIONS[self.activation](layer(h))
        return self.encoder_layers[-1](h)

    def decode_logits(self, z: Array) -> Array:  # [B, d] -> [B, H, W, C]
        h = z
        for layer in self.decoder_layers[:-1]:
            h = ACTIVATIONS[self.activation](layer(h))
        return self.decoder_layers[-1](h).reshape(z.shape[0], *self.image_shape)


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
    """The parameters every conv layer here declares (and those of `aejax.rd_models`): a `[size, size, C,
    features]` kernel (LeCun normal) and a zero bias, with `x` and both cast to the layer's compute dtype."""
    kernel = layer.param("kernel", nn.initializers.lecun_normal(), (size, size, x.shape[-1], layer.features))
    bias = layer.param("bias", nn.initializers.zeros_init(), (layer.features,))
    return x.astype(layer.dtype), kernel.astype(layer.dtype), bias.astype(layer.dtype)


class ConvPool3x3(nn.Module):
    """3x3 convolution (stride 1, SAME) followed by a 2x2 max-pool, with bias: [B, H, W, C] -> [B, H/2, W/2, F].

    `impl="ops"`: `aejax.ops.conv3x3_max_pool2` (fast on CPU); `"xla"`: the convolution and `nn.max_pool` that
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

    `impl="ops"` works in block layout (see `aejax.ops.upsample2x2`): [B, H, W, *blocks, C] ->
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
    with SAME zero padding. `impl="ops"`: `aejax.ops.downsample2x2` (one matmul) or `ops.conv3x3`; `"xla"`: the
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


class ConvAutoencoder(Autoencoder):
    """Conv + max-pool encoder, transpose-conv decoder.

    With `latent_dim=None` it is the original (on 28x28x1 images): Conv(1->64, 3x3, same), ReLU, pool 2;
    Conv(64->8, 3x3, same), ReLU, pool 2 -> code [B, 7, 7, 8] (392 values); ConvT(8->64, 2x2, stride 2), ReLU;
    ConvT(64->1, 2x2, stride 2), sigmoid. With an integer `latent_dim` a linear Dense bottleneck maps the
    7x7xF feature map to exactly `latent_dim` values and a Dense + ReLU maps it back, so the code matches a
    linear model's depth. Any `image_shape` (H, W, C): the first conv reads C channels and the last transpose
    conv writes C; an image whose sides 4 does not divide is zero-padded at the bottom and right to the next
    multiples of 4 (25x25 -> 28x28, feature map 7x7) and the output cropped back to H x W.
    `features` sets the two conv widths; the decoder mirrors them. (ReLU and max-pool commute; pooling first
    is cheaper.) `impl` chooses how the layers compute, not what: `ops` (`aejax.ops`, whose derivative rules
    make this model fast on CPU) or `xla` (lax convolutions, for GPUs and TPUs); the parameters are the same.
    """

    latent_dim: int | None = None
    features: Sequence[int] = (64, 8)
    dtype: jnp.dtype = jnp.float32
    impl: str = "ops"
    image_shape: tuple[int, int, int] = MNIST_SHAPE

    def setup(self) -> None:
        f1, f2 = self.features
        self.conv1 = ConvPool3x3(f1, dtype=self.dtype, impl=self.impl)
        self.conv2 = ConvPool3x3(f2, dtype=self.dtype, impl=self.impl)
        if self.latent_dim is not None:
            self.to_code = nn.Dense(self.latent_dim, dtype=self.dtype)
            self.from_code = nn.Dense(pixels(pooled_shape(self.image_shape)) * f2, dtype=self.dtype)
        self.deconv1 = Upsample2x2(f1, dtype=self.dtype, impl=self.impl)
        self.deconv2 = Upsample2x2(self.image_shape[2], dtype=self.dtype, impl=self.impl)

    def encode(self, x: Array) -> Array:  # [B, H, W, C] -> [B, d] or [B, H/4, W/4, f2] (MNIST: 28 -> 7)
        check_float_input(x)
        h = nn.relu(self.conv1(pad_to_4(x)))  # [B, H/2, W/2, f1]
        h = nn.relu(self.conv2(h))  # [B, H/4, W/4, f2]
        if self.latent_dim is None:
            return h
        return self.to_code(h.reshape(h.shape[0], -1))

    def decode_logits(self, z: Array) -> Array:  # code -> [B, H, W, C]
        if self.latent_dim is None:
            h = z
        else:
            h = nn.relu(self.from_code(z)).reshape(z.shape[0], *pooled_shape(self.image_shape), self.features[1])
        h = nn.relu(self.deconv1(h))  # [B, 7, 7, 2, 2, f1]: a 14x14 map in block layout (xla: [B, 14, 14, f1])
        out = self.deconv2(h)  # ops: [B, 7, 7, 2, 2, 2, 2, C] in block layout; xla: [B, 28, 28, C]
        return crop_to(ops.unblock(out) if self.impl == "ops" else out, self.image_shape)


class StridedConvAutoencoder(Autoencoder):
    """Conv + max-pool, then learned (strided) down-sampling, a Dense code, and a transpose-conv decoder.

    Encoder (shapes for MNIST): Conv 3x3 (C -> f1), ReLU, max-pool 2 -> [B, 14, 14, f1] (with `pool=False`
    instead a Conv 2x2 stride 2, ReLU: learned down-sampling throughout); Conv 2x2 stride 2 (f1 -> f2), ReLU ->
    [B, 7, 7, f2]; flatten; optionally Dense `hidden`, ReLU; Dense -> d (linear: the code). Decoder, mirrored:
    optionally Dense `hidden`, ReLU; Dense -> 7x7xf2, ReLU; transpose conv 2x2 stride 2 (f2 -> f1), ReLU;
    optionally (`refine`) Conv 3x3 (f1 -> f1), ReLU; transpose conv 2x2 stride 2 (f1 -> C), sigmoid.
    With `linear=True` the code also reads the pixels (the last Dense sees the conv features and the H*W*C
    input values, i.e. a linear encoder is added to the code) and a Dense d -> H*W*C is added to the output
    logits: a linear autoencoder inside the conv one, through the same d-value code (no path from encoder to
    decoder bypasses it). Any `image_shape`: padded and cropped as in `ConvAutoencoder` (sides not divisible by
    4 are zero-padded at the bottom and right to the next multiple of 4, the output cut back).
    The strided convolution replaces the second max-pool, which keeps one value of four and so loses the detail
    a code of 128 or 256 values could hold.
    """

    latent_dim: int
    features: Sequence[int] = (32, 64)
    hidden: int = 0
    refine: bool = False
    pool: bool = True
    linear: bool = False
    dtype: jnp.dtype = jnp.float32
    impl: str = "ops"
    image_shape: tuple[int, int, int] = MNIST_SHAPE

    def setup(self) -> None:
        f1, f2 = self.features
        if self.linear:
            self.to_pixels = nn.Dense(pixels(self.image_shape), dtype=self.dtype)
        self.conv1 = (ConvPool3x3(f1, dtype=self.dtype, impl=self.impl) if self.pool
                      else Conv(f1, 2, dtype=self.dtype, impl=self.impl))
        self.down = Conv(f2, 2, dtype=self.dtype, impl=self.impl)
        dense = functools.partial(nn.Dense, dtype=self.dtype)
        self.encoder_dense = ([dense(self.hidden)] if self.hidden else []) + [dense(self.latent_dim)]
        self.decoder_dense = ([dense(self.hidden)] if self.hidden else []) + [
            dense(pixels(pooled_shape(self.image_shape)) * f2)]
        self.deconv1 = Upsample2x2(f1, dtype=self.dtype, impl=self.impl)
        if self.refine:
            self.conv_refine = Conv(f1, 3, dtype=self.dtype, impl=self.impl)
        self.deconv2 = Upsample2x2(self.image_shape[2], dtype=self.dtype, impl=self.impl)

    def encode(self, x: Array) -> Array:  # [B, H, W, C] -> [B, d]
        check_float_input(x)
        h = nn.relu(self.conv1(pad_to_4(x)))  # [B, 14, 14, f1]
        h = nn.relu(self.down(h))  # [B, 7, 7, f2]
        h = h.reshape(h.shape[0], -1)
        for layer in self.encoder_dense[:-1]:
            h = nn.relu(layer(h))
        if self.linear:
            h = jnp.concatenate([h, x.reshape(x.shape[0], -1).astype(h.dtype)], axis=-1)
        return self.encoder_dense[-1](h)

    def decode_logits(self, z: Array) -> Array:  # [B, d] -> [B, H, W, C]
        h = z
        for layer in self.decoder_dense:
            h = nn.relu(layer(h))
        h = h.reshape(z.shape[0], *pooled_shape(self.image_shape), self.features[1])
        h = nn.relu(self.deconv1(h))  # ops: [B, 7, 7, 2, 2, f1] (block layout); xla: [B, 14, 14, f1]
        if self.refine:
            h = nn.relu(self.conv_refine(ops.unblock(h) if self.impl == "ops" else h))  # [B, 14, 14, f1]
        out = self.deconv2(h)
        out = crop_to(ops.unblock(out) if self.impl == "ops" else out, self.image_shape)
        if self.linear:
            out = out + self.to_pixels(z).reshape(out.shape)
        return out


def compute_dtype(config: Config) -> jnp.dtype:
    """The dtype a model computes in (`config.dtype`); parameters stay float32."""
    return jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32


def conv_impl(config: Config) -> str:
    """`config.conv_impl`, with `auto` resolved for this process's backend: `ops` on CPU, `xla` elsewhere."""
    if config.conv_impl != "auto":
        return config.conv_impl
    return "ops" if jax.default_backend() == "cpu" else "xla"


class ModelSpec(NamedTuple):
    """How a registered model is built and which settings it reads."""

    builder: Callable[[Config], nn.Module]
    kwargs: Mapping[str, Any]  # the model_kwargs it accepts, with their defaults (JSON values)
    reads: Callable[[Config], Collection[str]]  # which of Config's model-specific fields it reads
    loss: str  # its default loss
    latent_dim: int | None  # a fixed code size, or None for any


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[[Config], nn.Module], *, kwargs: Mapping[str, Any] | None = None,
                   reads: Collection[str] | Callable[[Config], Collection[str]] = (), loss: str = "mse",
                   latent_dim: int | None = None, replace: bool = False) -> None:
    """Make `Config(model=name)` build `builder(config)`, a flax module that keeps the contract above.

    `kwargs`: the settings `Config.model_kwargs` may give it, with defaults (numbers, strings, booleans or lists
    of them); `reads`: which of `hidden` / `conv_features` / `conv_impl` it reads (others must stay at their
    defaults), or a function of the config saying so; `loss`: the loss a config of this model gets unless it names one;
    `latent_dim`: a fixed code size. Registering a taken name is an error unless `replace`.
    """
    check_registration("model", name, name in _MODELS, builder, replace, "its builder: Config -> flax module")
    reads_fn = reads if callable(reads) else (lambda config, fields=tuple(reads): fields)
    unknown = set(reads) - set(MODEL_FIELDS) if not callable(reads) else set()
    if unknown:
        raise AejaxError(f"reads may name {', '.join(MODEL_FIELDS)}, got {sorted(unknown)}")
    _MODELS[name] = ModelSpec(builder, dict(kwargs or {}), reads_fn, loss, latent_dim)


def registered_models() -> tuple[str, ...]:
    return tuple(_MODELS)


def model_spec(name: str) -> ModelSpec:
    if name not in _MODELS:
        raise AejaxError(f"unknown model {name!r}; choose one of {', '.join(_MODELS)} (or register_model it)")
    return _MODELS[name]


def resolve(config: Config) -> Config:
    """`config` completed and checked against the registries: the model's default loss when none is named, its
    `model_kwargs` defaults under the given ones, the image shape (the dataset's, unless set), a code no larger
    than an image, a fixed code size, settings the model would not read, the optimizer and the loss's needs.
    Raises `AejaxError` (one line) for the first problem. Builds the module to check it, which touches no JAX
    backend. Idempotent: what `config.json` holds is a resolved config."""
    spec = model_spec(config.model)
    if not isinstance(config.model_kwargs, dict):
        raise AejaxError(f"model_kwargs must be a mapping of names to values, got {config.model_kwargs!r}")
    check_model_kwargs(config, spec.kwargs)
    shape = config.image_shape or datasets.known_shape(config.dataset)
    if shape is None:
        raise AejaxError(f"the image shape of dataset {config.dataset!r} is known only from its data: train it with "
                         f"aejax.run (which sets image_shape from the data) or set image_shape H,W,C")
    resolved = dataclasses.replace(config, loss=config.loss if config.loss is not None else spec.loss,
                                   model_kwargs={**spec.kwargs, **config.model_kwargs}, image_shape=tuple(shape))
    if resolved.latent_dim > resolved.pixels:
        raise AejaxError(f"latent_dim must be in 1..{resolved.pixels} (the values of one "
                         f"{'x'.join(map(str, shape))} image), got {config.latent_dim}")
    optimizers.check(resolved)
    if spec.latent_dim is not None and resolved.latent_dim != spec.latent_dim:
        raise AejaxError(f"{config.model} has a fixed code of {spec.latent_dim} values; "
                         f"latent_dim must be {spec.latent_dim}, got {config.latent_dim}")
    check_read(resolved, set(spec.reads(resolved)))
    probe = resolved if resolved.conv_impl != "auto" else resolved.replace(conv_impl="ops")  # no backend query
    losses.get_loss(resolved.loss, _construct(probe))
    return resolved


def build(config: Config) -> nn.Module:
    """The model a config names, resolved first (parameters stay fp32; `dtype` sets the compute precision;
    `conv_impl` `auto` is decided for this process's backend)."""
    return _construct(resolve(config))


def _construct(config: Config) -> nn.Module:
    model = model_spec(config.model).builder(config)
    if not isinstance(model, nn.Module):
        raise AejaxError(f"the builder of model {config.model!r} returned {type(model).__name__}, not a flax module")
    return model


def param_count(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def image_shape(config: Config) -> tuple[int, int, int]:
    """The (H, W, C) a built-in model is built for: `config.image_shape` (a resolved config has it)."""
    return tuple(config.image_shape) if config.image_shape else MNIST_SHAPE


def _conv_original(config: Config) -> ConvAutoencoder:
    if image_shape(config) != MNIST_SHAPE:
        raise AejaxError(f"conv_original is the original study's model for 28x28x1 images (a 7x7x8 code of 392); "
                         f"these images are {'x'.join(map(str, config.image_shape))}: use model conv")
    return ConvAutoencoder(None, CONV_ORIGINAL_FEATURES, dtype=compute_dtype(config), impl=conv_impl(config))


def _linear(config: Config) -> LinearAutoencoder:
    activation = config.model_kwargs["activation"]
    if activation not in ACTIVATIONS:
        raise AejaxError(f"model_kwargs activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if activation != "relu" and not config.hidden:
        raise AejaxError(f"model_kwargs activation {activation!r} needs hidden layers (hidden=...)",
                         cli=f"model_kwargs activation {activation!r} needs hidden layers (--hidden)")
    return LinearAutoencoder(config.latent_dim, tuple(config.hidden), dtype=compute_dtype(config),
                             activation=activation, image_shape=image_shape(config))


register_model("linear", _linear, kwargs={"activation": "relu"}, reads=("hidden",))
register_model("conv", lambda c: ConvAutoencoder(c.latent_dim, tuple(c.conv_features), dtype=compute_dtype(c),
                                                 impl=conv_impl(c), image_shape=image_shape(c)),
               reads=("conv_features", "conv_impl"))
register_model("conv_original", _conv_original, reads=("conv_impl",), latent_dim=CONV_ORIGINAL_CODE)
register_model("conv_strided", lambda c: StridedConvAutoencoder(
    c.latent_dim, tuple(c.conv_features), c.model_kwargs["hidden"], c.model_kwargs["refine"], c.model_kwargs["pool"],
    c.model_kwargs["linear"], dtype=compute_dtype(c), impl=conv_impl(c), image_shape=image_shape(c)),
    kwargs={"hidden": 0, "refine": False, "pool": True, "linear": False},
    reads=("conv_features", "conv_impl"))
