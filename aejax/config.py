"""The run configuration: one frozen dataclass holding every setting that determines a result.

A `Config` is plain data: it checks its own types and ranges on construction and imports nothing but
`aejax.errors`, so building or reading one never depends on what is registered and never touches a JAX
backend. What depends on the registries (the model's default loss and `model_kwargs`, a fixed code size,
settings the model would not read) is checked by `aejax.models.resolve`, which `aejax.training.step.make_trainer` and
`aejax.training.loop.run` call; `config.json` holds the resolved config, so a run directory alone says how it was
produced. Each field carries a one-line `help` in its metadata, from which `aejax.cli` generates the command
line: a new field gets its flag without further edits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from aejax.errors import AejaxError

MNIST_SHAPE = (28, 28, 1)  # one MNIST image, channels last: the default dataset's
MNIST_PIXELS = 28 * 28
MNIST_TRAIN_SIZE = 60_000
CONV_ORIGINAL_FEATURES = (64, 8)
CONV_ORIGINAL_CODE = 7 * 7 * CONV_ORIGINAL_FEATURES[1]  # the original conv model's 7x7x8 code on 28x28 images

BUILT_IN_SCHEDULES = ("constant", "cosine", "warmup_cosine")
PLACEMENTS = ("auto", "device", "stream")
DTYPES = ("float32", "bfloat16")
NOISES = ("none", "gaussian", "salt_pepper", "mask")
PRECISIONS = ("default", "high", "highest")
CONV_IMPLS = ("auto", "ops", "xla")
# Settings that were Config fields before they became model_kwargs: (the model_kwargs name, the old default). A
# config built with them, or read from an older config.json, moves a value other than that default into
# model_kwargs, so both still load, and train the same models.
MOVED_TO_MODEL_KWARGS = {"hidden": ("hidden", ()), "conv_features": ("features", (32, 32)),
                         "conv_impl": ("impl", "auto")}


def _field(default: Any, help: str) -> Any:  # noqa: A002 - argparse's name for it
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of one training run (each field's `help` metadata says what it does).

    `dataset` names the images (`aejax.data.datasets`) and `image_shape` is their (H, W, C): empty until a run or
    `models.resolve` sets it from the data or the dataset, so `config.json` records it and every model builds
    from it. `latent_dim` is the code size (the study's "encoding depth"); `conv_original` is the original
    study's conv model, fixed at widths (64, 8) and a 7x7x8 = 392 code on 28x28x1 images. `optimizer` is any
    optax optimizer by name (or one registered with `aejax.register_optimizer`), with `optimizer_kwargs` its own
    arguments; `aejax.training.optimizers` builds it. `data_parallel` shards each batch over all devices (see
    `aejax.training.parallel`); `shard_data` also splits the training images' rows over the devices instead of copying
    them to each. The last partial batch of each epoch is dropped: 60,000 is divisible by the original batch
    size 25. A setting that only one model, schedule or optimizer reads is an error elsewhere rather than
    silently ignored.
    """

    dataset: str = _field("mnist", "the images: mnist, lfw_faces, photo_patches, folder:PATH (a folder of image "
                                   "files), or a tfds dataset prepared in --data-dir (aejax.data.datasets)")
    image_shape: tuple[int, ...] = _field((), "the images' H,W,C; unset: the dataset's, set by a run from its data "
                                              "(config.json records it)")
    channels: int | None = _field(None, "a folder's channels: 1 (grey) or 3 (RGB); unset: 3 if any file has "
                                        "colour, else 1")
    image_size: str | None = _field(None, "bring a folder's images to HxW (e.g. 64x64) by image_fit; unset: its "
                                          "images must share one size")
    image_fit: str = _field("resize", "how a folder's images reach image_size: resize (scale to cover it, then "
                                      "centre-crop the rest) or crop (centre-crop, no scaling)")

    model: str = _field("linear", "architecture: linear, conv, conv_original, vae, sparse, or one added with "
                                  "aejax.register_model")
    latent_dim: int = _field(32, f"code size (encoding depth), at most the pixels H*W*C; conv_original fixes it at "
                                 f"{CONV_ORIGINAL_CODE}")
    epochs: int = _field(5, "passes over the training set")
    batch_size: int = _field(25, "images per step (the global batch under data_parallel)")
    accumulate: int = _field(1, "steps whose gradients each optimizer update averages (optax.MultiSteps): an "
                                "effective batch of batch_size x accumulate; schedules count optimizer updates")
    lr: float = _field(1e-3, "learning rate (the peak rate of a schedule)")
    schedule: str = _field("constant", f"learning-rate schedule: {', '.join(BUILT_IN_SCHEDULES)}, any optax "
                                       f"schedule by name (exponential_decay, linear_schedule, ...) with "
                                       f"schedule_kwargs, or one added with aejax.register_schedule")
    schedule_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict, metadata={
        "help": "a named schedule's own arguments as a JSON object, steps in optimizer steps, e.g. "
                "'{\"transition_steps\": 2400, \"decay_rate\": 0.5}' (lr is its peak or initial value)"})
    warmup_epochs: float = _field(0.0, "linear warmup from 0 to lr, in epochs (warmup_cosine only)")
    optimizer: str = _field("adam", "any optax optimizer by name (adam, adamw, sgd, lion, adafactor, ...) or one "
                                    "added with aejax.register_optimizer; lr and schedule give its learning rate")
    optimizer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict, metadata={
        "help": "the optimizer's own arguments as a JSON object, e.g. '{\"momentum\": 0.9}' for sgd; unset ones "
                "take optax's defaults"})
    weight_decay: float = _field(0.0, "weight decay, for an optimizer that takes one (adamw, lion, ...): "
                                      "this value, not optax's default")
    loss: str | None = _field(None, "training loss: mse, bce, mse_l1, elbo, or one added with aejax.register_loss "
                                    "(unset: the model's own, mse for the autoencoders)")
    dtype: str = _field("float32", f"compute dtype, {', '.join(DTYPES)}; parameters stay float32")
    matmul_precision: str = _field("default", "float32 matmul precision in training: default (the backend's: "
                                              "full fp32 on CPU, TF32 on recent GPUs, one bf16 pass on TPU), high "
                                              "or highest (full fp32 everywhere); evaluation is always highest")
    seed: int = _field(0, "the one integer that fixes initialisation, data order and noise")
    train_examples: int | None = _field(None, "train on the first N training images only")
    validation_examples: float = _field(0, "training images held out to score every epoch, chosen with --seed: "
                                           "a count (5000) or a fraction of the training set (0.1); 0: none. The "
                                           "test set is then scored once, at the end")
    early_stopping: int = _field(0, "stop once no model's validation MSE has improved for this many epochs "
                                    "(0: never); needs validation_examples")
    select: str = _field("last", "which epoch's models the results score and load_model reloads: last, or best "
                                 "(each model's epoch of lowest validation MSE; needs validation_examples)")
    data_placement: str = _field("auto", "where the training images are: device (on the device, an epoch one "
                                         "compiled scan), stream (read from their source in chunks of steps, for "
                                         "sets larger than memory), or auto (stream when the uint8 set exceeds "
                                         "the device's budget; the choice is printed)")
    init_from: str | None = _field(None, "a run directory whose trained parameters (and model state) start this "
                                         "run, with a fresh optimizer: one model copied to every lane, or as many "
                                         "as this run trains")
    log_every: int = _field(0, "TensorBoard scalars every N steps: the step's loss, learning rate and gradient "
                               "norm (gathered inside the compiled epoch); 0: per epoch only")
    keep_checkpoints: int = _field(3, "how many of the latest per-epoch checkpoints to keep")
    checkpoint_every: int = _field(1, "save a checkpoint every N epochs (and after the last, or where a run stops)")
    data_parallel: bool = _field(False, "shard each batch over all devices (jax.sharding mesh)")
    shard_data: bool = _field(False, "with data_parallel: split the training images over the devices")
    noise: str = _field("none", f"denoising: corrupt the inputs with {', '.join(NOISES)}; targets stay clean")
    noise_level: float = _field(0.0, "gaussian noise std, or the salt_pepper / mask rate")
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict, metadata={
        "help": "the model's own settings as a JSON object, e.g. '{\"l1_weight\": 0.001}' or '{\"hidden\": "
                "[512]}'; unset keys take the model's defaults (docs/models.md lists each model's)"})
    # Not fields: arguments that set model_kwargs entries (`MOVED_TO_MODEL_KWARGS`), as `--hidden` and the like do.
    hidden: dataclasses.InitVar[Any] = None
    conv_features: dataclasses.InitVar[Any] = None
    conv_impl: dataclasses.InitVar[Any] = None

    def __post_init__(self, hidden: Any, conv_features: Any, conv_impl: Any) -> None:
        if isinstance(self.image_shape, list):
            object.__setattr__(self, "image_shape", tuple(self.image_shape))
        moved = {}  # each one given, other than its old default, sets its model_kwargs entry
        for old, value in (("hidden", hidden), ("conv_features", conv_features), ("conv_impl", conv_impl)):
            name, default = MOVED_TO_MODEL_KWARGS[old]
            value = list(value) if isinstance(value, (list, tuple)) else value
            if value is not None and value != (list(default) if isinstance(default, tuple) else default):
                moved[name] = value
        if moved and isinstance(self.model_kwargs, dict):
            object.__setattr__(self, "model_kwargs", {**self.model_kwargs, **moved})
        validate(self)

    @property
    def pixels(self) -> int:
        """Values per image, H * W * C: of `image_shape`, or MNIST's 784 for an unresolved MNIST config (another
        dataset's shape is known once `models.resolve` or a run sets it)."""
        shape = self.image_shape or (MNIST_SHAPE if self.dataset == "mnist" else ())
        if not shape:
            raise AejaxError(f"the image shape of dataset {self.dataset!r} is not set yet (models.resolve sets it)")
        return math.prod(shape)

    @property
    def compression_ratio(self) -> float:
        """Input values per code value (H * W * C / code size; 784 / code size on MNIST)."""
        return self.pixels / self.latent_dim

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes`. A new `model` (`optimizer`) starts from its own `model_kwargs`
        (`optimizer_kwargs`) defaults unless they are given too: the old one's settings are not the new one's. For
        the same model, given `model_kwargs` update the present ones (its widths stay unless changed)."""
        if changes.get("model", self.model) != self.model:
            changes.setdefault("model_kwargs", {})
        elif "model_kwargs" in changes and isinstance(changes["model_kwargs"], dict):
            changes["model_kwargs"] = {**self.model_kwargs, **changes["model_kwargs"]}
        if changes.get("optimizer", self.optimizer) != self.optimizer and "optimizer_kwargs" not in changes:
            changes["optimizer_kwargs"] = {}
        return dataclasses.replace(self, **changes)

    def with_epochs(self, epochs: int) -> Config:
        """This config trained for `epochs` epochs with the same schedule shape: the warmup is scaled by the same
        factor (a 1-epoch warmup of 20 epochs becomes 0.05 epochs of 1)."""
        return self.replace(epochs=epochs, warmup_epochs=self.warmup_epochs * epochs / self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)} | set(MOVED_TO_MODEL_KWARGS)
        unknown = sorted(set(values) - known)
        if unknown:
            raise AejaxError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AejaxError(message)


def validate(config: Config) -> None:
    """Raise `AejaxError` with a one-line message for the first setting of the wrong type or out of range
    (names of models and losses are checked against the registries by `aejax.models.resolve`)."""
    _check(isinstance(config.model, str) and config.model.isidentifier(),
           f"model must be a registered model's name, got {config.model!r}")
    _check(config.loss is None or (isinstance(config.loss, str) and config.loss.isidentifier()),
           f"loss must be a registered loss's name or unset, got {config.loss!r}")
    _check(isinstance(config.optimizer, str) and config.optimizer.isidentifier(),
           f"optimizer must be an optax optimizer's or a registered optimizer's name, got {config.optimizer!r}")
    folder = isinstance(config.dataset, str) and config.dataset.startswith("folder:")
    _check(isinstance(config.dataset, str) and bool(config.dataset) and (
        folder or not any(c.isspace() for c in config.dataset)),
        f"dataset must be a dataset's name or folder:PATH, got {config.dataset!r}")
    _check(not folder or len(config.dataset) > len("folder:"), "dataset folder: needs a path, e.g. folder:images/")
    _check(config.channels in (None, 1, 3), f"channels must be 1 (grey) or 3 (RGB), got {config.channels!r}")
    _check(config.image_fit in ("resize", "crop"), f"image_fit must be resize or crop, got {config.image_fit!r}")
    _check(config.image_size is None or (isinstance(config.image_size, str) and re.fullmatch(
        r"[1-9][0-9]*x[1-9][0-9]*", config.image_size) is not None),
        f"image_size must be HxW with positive integers (e.g. 64x64), got {config.image_size!r}")
    _check(folder or (config.channels is None and config.image_size is None and config.image_fit == "resize"),
           f"channels, image_size and image_fit apply to a folder of images (dataset folder:PATH), not to "
           f"{config.dataset!r}")
    _check(isinstance(config.schedule, str) and config.schedule.isidentifier(),
           f"schedule must be a schedule's name ({', '.join(BUILT_IN_SCHEDULES)}, an optax schedule or a registered "
           f"one), got {config.schedule!r}")
    _check(config.noise in NOISES, f"unknown noise {config.noise!r}; choose one of {', '.join(NOISES)}")
    _check(config.data_placement in PLACEMENTS,
           f"unknown data_placement {config.data_placement!r}; choose one of {', '.join(PLACEMENTS)}")
    _check(config.dtype in DTYPES, f"unknown dtype {config.dtype!r}; choose one of {', '.join(DTYPES)}")
    _check(config.matmul_precision in PRECISIONS,
           f"unknown matmul_precision {config.matmul_precision!r}; choose one of {', '.join(PRECISIONS)}")
    for name in ("latent_dim", "epochs", "batch_size", "seed", "keep_checkpoints", "checkpoint_every",
                 "early_stopping", "accumulate", "log_every"):
        _check(_is_int(getattr(config, name)), f"{name} must be an integer, got {getattr(config, name)!r}")
    _check(isinstance(config.image_shape, tuple) and (
        config.image_shape == () or (len(config.image_shape) == 3 and all(_is_int(v) and v > 0
                                                                          for v in config.image_shape))),
        f"image_shape must be three positive integers H,W,C or unset, got {_jsonable(config.image_shape)!r}")
    shape = config.image_shape or (MNIST_SHAPE if config.dataset == "mnist" else ())
    pixels = math.prod(shape) if shape else None
    _check(config.latent_dim >= 1 and (pixels is None or config.latent_dim <= pixels),
           f"latent_dim must be in 1..{pixels or 'H*W*C'} (the values of one image), got {config.latent_dim}")
    _check(config.epochs >= 1, f"epochs must be >= 1, got {config.epochs}")
    _check(config.log_every >= 0, f"log_every must be >= 0 steps (0: per epoch only), got {config.log_every}")
    _check(config.accumulate >= 1, f"accumulate must be >= 1 (steps per optimizer update), got {config.accumulate}")
    _check(0 <= config.seed < 2 ** 63, f"seed must be in 0..2**63-1 (a PRNG key's range), got {config.seed}")
    _check(isinstance(config.data_parallel, bool), f"data_parallel must be true or false, got {config.data_parallel!r}")
    _check(isinstance(config.shard_data, bool), f"shard_data must be true or false, got {config.shard_data!r}")
    _check(config.data_parallel or not config.shard_data, "shard_data needs data_parallel")
    _check(config.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
    _check(config.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {config.checkpoint_every}")
    train_size = MNIST_TRAIN_SIZE if config.dataset == "mnist" else None  # others: checked against their data
    if config.train_examples is not None:
        _check(_is_int(config.train_examples) and 1 <= config.train_examples <= (train_size or math.inf),
               f"train_examples must be an integer in 1..{train_size or 'the training set size'}, "
               f"got {config.train_examples!r}")
        train_size = config.train_examples
    _check(1 <= config.batch_size <= (train_size or math.inf),
           f"batch_size must be in 1..{train_size or 'the training set size'} (the training set size), "
           f"got {config.batch_size}")
    for name in ("lr", "weight_decay", "warmup_epochs", "noise_level"):
        value = getattr(config, name)
        _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
               f"{name} must be a finite number, got {value!r}")
    _check(config.lr > 0, f"lr must be > 0, got {config.lr}")
    held = config.validation_examples
    _check(isinstance(held, (int, float)) and not isinstance(held, bool) and math.isfinite(held) and held >= 0
           and (held < 1 or float(held).is_integer()),
           f"validation_examples must be a count of images or a fraction in (0, 1), got {held!r}")
    _check(config.early_stopping >= 0, f"early_stopping must be >= 0 epochs, got {config.early_stopping}")
    _check(config.select in ("last", "best"), f"select must be last or best, got {config.select!r}")
    _check(config.select == "last" or held > 0, "select best needs validation_examples: it picks each model's "
                                                "epoch of lowest validation MSE")
    _check(not config.early_stopping or held > 0, "early_stopping needs validation_examples: it watches the "
                                                  "validation MSE (the test set never steers a run)")
    _check(config.noise_level >= 0, f"noise_level must be >= 0, got {config.noise_level}")
    if config.noise in ("salt_pepper", "mask"):
        _check(config.noise_level <= 1,
               f"noise_level is a rate for {config.noise}: in [0, 1], got {config.noise_level}")
    _check(config.weight_decay >= 0, f"weight_decay must be >= 0, got {config.weight_decay}")
    _check(0 <= config.warmup_epochs < config.epochs,
           f"warmup_epochs must be in [0, epochs), got {config.warmup_epochs}")
    _check(config.schedule not in BUILT_IN_SCHEDULES or not config.schedule_kwargs,
           f"schedule_kwargs are the arguments of a named schedule; {config.schedule} takes none (its length comes "
           f"from epochs and warmup_epochs)")
    _check(config.init_from is None or (isinstance(config.init_from, str) and bool(config.init_from)),
           f"init_from must be a run directory, got {config.init_from!r}")
    for name in ("model_kwargs", "optimizer_kwargs", "schedule_kwargs"):
        value = getattr(config, name)
        _check(isinstance(value, dict) and all(isinstance(k, str) for k in value),
               f"{name} must be a mapping of names to values, got {value!r}")
    check_read(config)  # the schedule's and noise's settings (the optimizer's and the model's at resolve)


def check_model_kwargs(config: Config, allowed: dict[str, Any]) -> None:
    """Each of `config.model_kwargs` must be one the model registered (`allowed`, with defaults), of its type."""
    kwargs = config.model_kwargs
    unknown = sorted(set(kwargs) - set(allowed))
    _check(not unknown, f"model {config.model} takes no model_kwargs {', '.join(unknown)}"
                        + (f"; it takes {', '.join(allowed)}" if allowed else ""))
    for name, value in kwargs.items():
        default = allowed[name]
        if _is_number(default):
            _check(_is_number(value) and math.isfinite(value),
                   f"model_kwargs {name} must be a finite number, got {value!r}")
        else:
            _check(type(value) is type(default) or (isinstance(default, (list, tuple)) and
                                                   isinstance(value, (list, tuple))),
                   f"model_kwargs {name} must be a {type(default).__name__}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(Config) if f.name == name)


def check_read(config: Config) -> None:
    """A setting that the chosen schedule or noise would not read is an error, not ignored (the optimizer's are
    checked by `aejax.training.optimizers`, the model's `model_kwargs` by `aejax.models.resolve`)."""
    readers = {  # setting -> (the field that decides whether it is read, the values that read it)
        "warmup_epochs": ("schedule", ("warmup_cosine",)),
        "noise_level": ("noise", tuple(n for n in NOISES if n != "none")),
    }
    for name, (owner, values) in readers.items():
        value, chosen = getattr(config, name), getattr(config, owner)
        read = f"is read only with {owner} {' or '.join(values)}, not" if values else "is not read by"
        _check(chosen in values or value == _default(name),
               f"{name}={_jsonable(value)!r} {read} {owner} {chosen}; leave it at its default "
               f"{_jsonable(_default(name))!r}")
