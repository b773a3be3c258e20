"""The run configuration: one frozen dataclass holding every setting that determines a result.

A `Config` is validated on construction, written to `config.json` by every run and read back from it, so a
run directory alone says how it was produced.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from aejax.errors import AejaxError

IMAGE_PIXELS = 28 * 28
MNIST_TRAIN_SIZE = 60_000
CONV_ORIGINAL_FEATURES = (64, 8)
CONV_ORIGINAL_CODE = 7 * 7 * 8

MODELS = ("linear", "conv", "conv_original")
LOSSES = ("mse", "bce")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
DTYPES = ("float32", "bfloat16")
NOISES = ("none", "gaussian", "salt_pepper", "mask")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of one training run.

    `latent_dim` is the code size (the study's "encoding depth"); `conv_original` is the original study's conv
    model, fixed at widths (64, 8) and a 7x7x8 = 392 code. `conv_features` sets the two conv widths of the
    depth-matched `conv` model; `hidden` the hidden widths of `linear`.
    `train_examples` trains on the first N training images (None: all 60,000), for quick tests.
    `data_parallel` shards each batch over all devices (see `aejax.parallel`); `shard_data` also splits the
    training images' rows over the devices instead of copying them to each, and each host then loads only its own
    rows (for data that outgrows one device; MNIST does not need it).
    `noise` and `noise_level` train a denoising autoencoder: inputs are corrupted (`aejax.corruption`:
    gaussian sigma, salt_pepper rate, mask rate), targets stay clean.
    The last partial batch of each epoch is dropped: 60,000 is divisible by the original batch size 25.
    """

    model: str = "linear"
    latent_dim: int = 32
    hidden: tuple[int, ...] = ()
    conv_features: tuple[int, ...] = (32, 32)
    epochs: int = 5
    batch_size: int = 25
    lr: float = 1e-3
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    loss: str = "mse"
    dtype: str = "float32"
    seed: int = 0
    train_examples: int | None = None
    keep_checkpoints: int = 3
    data_parallel: bool = False
    shard_data: bool = False
    noise: str = "none"
    noise_level: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hidden", "conv_features"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        validate(self)

    @property
    def compression_ratio(self) -> float:
        """Input pixels per code value (784 / code size)."""
        return IMAGE_PIXELS / self.latent_dim

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AejaxError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AejaxError(message)


def validate(config: Config) -> None:
    """Raise `AejaxError` with a one-line message for the first invalid setting."""
    _check(config.model in MODELS, f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}")
    _check(config.loss in LOSSES, f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    _check(config.optimizer in OPTIMIZERS,
           f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    _check(config.schedule in SCHEDULES,
           f"unknown schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    _check(config.noise in NOISES, f"unknown noise {config.noise!r}; choose one of {', '.join(NOISES)}")
    _check(config.dtype in DTYPES, f"unknown dtype {config.dtype!r}; choose one of {', '.join(DTYPES)}")
    for name in ("latent_dim", "epochs", "batch_size", "seed", "keep_checkpoints"):
        _check(_is_int(getattr(config, name)), f"{name} must be an integer, got {getattr(config, name)!r}")
    _check(0 < config.latent_dim <= IMAGE_PIXELS,
           f"latent_dim must be in 1..{IMAGE_PIXELS}, got {config.latent_dim}")
    _check(config.epochs >= 1, f"epochs must be >= 1, got {config.epochs}")
    _check(config.seed >= 0, f"seed must be >= 0, got {config.seed}")
    _check(isinstance(config.data_parallel, bool), f"data_parallel must be true or false, got {config.data_parallel!r}")
    _check(isinstance(config.shard_data, bool), f"shard_data must be true or false, got {config.shard_data!r}")
    _check(config.data_parallel or not config.shard_data, "shard_data needs data_parallel")
    _check(config.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
    train_size = MNIST_TRAIN_SIZE
    if config.train_examples is not None:
        _check(_is_int(config.train_examples) and 1 <= config.train_examples <= MNIST_TRAIN_SIZE,
               f"train_examples must be an integer in 1..{MNIST_TRAIN_SIZE}, got {config.train_examples!r}")
        train_size = config.train_examples
    _check(1 <= config.batch_size <= train_size,
           f"batch_size must be in 1..{train_size} (the training set size), got {config.batch_size}")
    for name in ("lr", "weight_decay", "warmup_epochs", "noise_level"):
        value = getattr(config, name)
        _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
               f"{name} must be a finite number, got {value!r}")
    _check(config.lr > 0, f"lr must be > 0, got {config.lr}")
    _check(config.noise_level >= 0, f"noise_level must be >= 0, got {config.noise_level}")
    if config.noise in ("salt_pepper", "mask"):
        _check(config.noise_level <= 1,
               f"noise_level is a rate for {config.noise}: in [0, 1], got {config.noise_level}")
    _check(config.weight_decay >= 0, f"weight_decay must be >= 0, got {config.weight_decay}")
    _check(0 <= config.warmup_epochs < config.epochs,
           f"warmup_epochs must be in [0, epochs), got {config.warmup_epochs}")
    for name in ("hidden", "conv_features"):
        values = getattr(config, name)
        _check(isinstance(values, tuple) and all(_is_int(v) and v > 0 for v in values),
               f"{name} must be a list of positive integers, got {values!r}")
    _check(len(config.conv_features) == 2,
           f"conv_features must have 2 entries (the two conv layers' channels), got {config.conv_features!r}")
    if config.model == "conv_original":
        _check(config.latent_dim == CONV_ORIGINAL_CODE,
               f"conv_original has a fixed 7x7x8 = {CONV_ORIGINAL_CODE} code; "
               f"latent_dim must be {CONV_ORIGINAL_CODE}, got {config.latent_dim}")
