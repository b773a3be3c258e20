"""The training command line, `python -m aejax.train` (or `aejax-train`), and the argparse pieces the codec's
command line and the experiment scripts share.

Every `Config` field gets a flag generated from the dataclass (`--latent-dim`, `--weight-decay`, ...), typed
from its annotation and described by its `help` metadata, so a new field cannot be left without one. Errors a
user can cause print one line on stderr and exit with status 2.

    python -m aejax.train --model linear --latent-dim 32 --epochs 5 --out runs/linear_d32
    python -m aejax.train --model conv --latent-dim 64 --seeds 0,1,2 --out runs/conv_d64
    python -m aejax.train --sweep lr=1e-3,3e-3,1e-2 --out runs/lr_sweep
    python -m aejax.train --plugin my_models --model my_model --out runs/mine
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import sys
import typing
from collections.abc import Callable
from typing import Any

from aejax import models, numerics
from aejax.config import MOVED_TO_MODEL_KWARGS, Config
from aejax.data import datasets
from aejax.errors import AejaxError
from aejax.training import loop, parallel
from aejax.training import step as train


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit status 2."""

    def error(self, message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    """An argparse `type` for counts: '12' -> 12; '0', '-3' or 'x' give a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'32,64' -> (32, 64), with a one-line error for anything else."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise AejaxError(f"{what} must be comma-separated integers, got {text!r}") from None


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def json_object(text: str) -> dict[str, Any]:
    """An argparse `type` for a JSON object: '{"l1_weight": 0.01}' -> {'l1_weight': 0.01}."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r} ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def parse_sweep(items: list[str] | None) -> dict[str, list[float]] | None:
    """['lr=1e-3,3e-3', 'l1_weight=0,1e-4'] -> {'lr': [0.001, 0.003], 'l1_weight': [0.0, 0.0001]}."""
    if not items:
        return None
    sweep = {}
    for item in items:
        name, sep, values = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            sweep[name.strip().replace("-", "_")] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise AejaxError(f"--sweep takes NAME=V1,V2,..., got {item!r}") from None
    return sweep


def import_plugins(modules: list[str] | None) -> None:
    """Import each module named by --plugin, which registers its models and losses."""
    for name in modules or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise AejaxError(f"--plugin {name}: cannot import it ({e}); is it on PYTHONPATH?") from None


def _argparse_kwargs(field: dataclasses.Field, annotation: Any) -> dict[str, Any]:
    """How one `Config` field reads from the command line (its value is checked by `Config` itself)."""
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    shown = ("none" if not default else ",".join(map(str, default))) if isinstance(default, tuple) else default
    help_text = f"{field.metadata['help']} (default: {'all' if shown is None else shown})"
    if typing.get_origin(annotation) is dict:
        return {"type": json_object, "metavar": "JSON", "help": f"{field.metadata['help']}"}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction, "help": help_text}
    if typing.get_origin(annotation) is tuple:
        return {"metavar": "N,N", "help": help_text + "; comma-separated"}
    kinds = [t for t in typing.get_args(annotation) if t is not type(None)] or [annotation]
    if len(kinds) != 1 or kinds[0] not in (int, float, str):
        raise TypeError(f"Config.{field.name}: no command-line form for {annotation!r}")
    return {"type": kinds[0], "metavar": field.name.upper(), "help": help_text}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `Config` field. Unset flags stay None, so the config's own defaults apply."""
    hints = typing.get_type_hints(Config)
    group = parser.add_argument_group("model and training (every Config field)")
    for field in dataclasses.fields(Config):
        group.add_argument(flag(field.name), dest=field.name, default=None,
                           **_argparse_kwargs(field, hints[field.name]))
    for (name, (key, _)), help_text in zip(MOVED_TO_MODEL_KWARGS.items(), MODEL_SHORTHANDS, strict=True):
        group.add_argument(flag(name), dest=name, default=None, metavar="N,N" if key != "impl" else "IMPL",
                           help=f"{help_text} (model_kwargs {key})")


MODEL_SHORTHANDS = (  # the help of the flags that set a model_kwargs entry, in MOVED_TO_MODEL_KWARGS's order
    "hidden widths of the linear model (and vae, sparse), mirrored in the decoder, e.g. 512",
    "the two conv widths of the conv, conv_strided and sparse conv models, e.g. 32,64",
    "how conv layers compute: ops (aejax.models.ops, fast on CPU), xla (lax convolutions, for GPU/TPU) or auto "
    "(ops on CPU, else xla); the parameters are the same, so a checkpoint reloads under either")


def config_from_args(args: argparse.Namespace) -> Config:
    """The `Config` the flags describe, resolved (so a bad setting stops before any work) unless its image shape
    is known only from data not yet read; a model with a fixed code size (conv_original) implies it unless
    given."""
    hints = typing.get_type_hints(Config)
    values = {}
    for field in dataclasses.fields(Config):
        value = getattr(args, field.name)
        if value is None:
            continue
        if typing.get_origin(hints[field.name]) is tuple:
            value = parse_ints(value, flag(field.name))
        values[field.name] = value
    for name, (key, _) in MOVED_TO_MODEL_KWARGS.items():  # --hidden 512 sets model_kwargs hidden [512]
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value if key == "impl" else parse_ints(value, flag(name))
    if "model" in values and "latent_dim" not in values:
        with contextlib.suppress(AejaxError):  # an unknown model is reported by resolve, below
            fixed = models.model_spec(values["model"]).latent_dim
            if fixed is not None:
                values["latent_dim"] = fixed
    config = Config(**values)
    if not config.image_shape and datasets.known_shape(config.dataset) is None:
        return config  # a tfds dataset's shape is known once the run reads it; the run resolves the config
    return models.resolve(config)


def cli(body: Callable[[], None]) -> None:
    """Run `body()`; a user error becomes one line on stderr and exit status 2."""
    try:
        body()
    except AejaxError as e:
        print(f"error: {e.cli_message}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))


# XLA's GPU determinism: every op deterministic, and refuse (at compile time) the ones that cannot be, such as the
# select-and-scatter that `nn.max_pool`'s gradient lowers to. Other backends accept and ignore them.
DETERMINISTIC_XLA_FLAGS = ("--xla_gpu_deterministic_ops=true", "--xla_gpu_exclude_nondeterministic_ops=true")


def make_deterministic(config: Config) -> Config:
    """Add XLA's GPU determinism flags to `XLA_FLAGS` and choose the `ops` convolutions, whose max-pool gradient
    those flags accept, where a conv model's `impl` is `auto`. `main` calls it before anything starts JAX's
    backend, which reads `XLA_FLAGS` once, when it starts."""
    takes_impl = "impl" in models.model_spec(config.model).kwargs
    if takes_impl and config.model_kwargs.get("impl") == "xla":
        raise AejaxError("--deterministic with --conv-impl xla: the gradient of XLA's max-pool is a "
                         "select-and-scatter, which XLA's deterministic mode refuses on a GPU; use --conv-impl ops")
    present = os.environ.get("XLA_FLAGS", "").split()
    os.environ["XLA_FLAGS"] = " ".join([*present, *(f for f in DETERMINISTIC_XLA_FLAGS if f not in present)])
    return config.replace(model_kwargs={**config.model_kwargs, "impl": "ops"}) if takes_impl else config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m aejax.train",
                       description="Train an autoencoder (one per seed, trained together) into a run directory.")
    add_config_flags(p)
    run = p.add_argument_group("the run")
    run.add_argument("--out", required=True, help="run directory (config, metrics, results, checkpoints)")
    run.add_argument("--seeds", default=None, metavar="N,N",
                     help="train these seeds together in one vmapped program instead of --seed alone")
    run.add_argument("--sweep", action="append", metavar="NAME=V,V",
                     help="train every value (times every seed) in the same program: lr, weight_decay, noise_level "
                          "or a numeric model_kwargs entry; repeat for a grid")
    run.add_argument("--plugin", action="append", metavar="MODULE",
                     help="import MODULE first (it registers models or losses with aejax.register_model/_loss)")
    run.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    run.add_argument("--mnist-dir", default=None,
                     help="directory with the four MNIST .gz IDX files (default: the repository's data/mnist)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace a different run in --out")
    run.add_argument("--compile-cache", default=None, metavar="DIR",
                     help="keep compiled programs in DIR (JAX's persistent cache): a rerun loads them, compiling "
                          "nothing")
    run.add_argument("--portable-cpu", action="store_true",
                     help="portable CPU numerics (aejax.numerics): the same bits at any core count on CPUs of the "
                          "same instruction set, at some speed; recorded in config.json")
    run.add_argument("--deterministic", action="store_true",
                     help="set XLA's GPU determinism flags (XLA_FLAGS) and use the ops convolutions, whose max-pool "
                          "gradient they accept: bit-identical reruns on a GPU, at some speed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """`python -m aejax.train` (and `aejax-train`)."""
    args = parse_args(argv)

    def body() -> None:
        if args.portable_cpu and not numerics.use_portable_cpu():
            print(numerics.UNAVAILABLE, file=sys.stderr)
        import_plugins(args.plugin)
        config = config_from_args(args)
        if args.deterministic:
            config = make_deterministic(config)
        if args.compile_cache:
            train.use_compile_cache(args.compile_cache)
        parallel.maybe_initialize_distributed()  # after XLA_FLAGS are final: it starts the backend
        seeds = None if args.seeds is None else parse_ints(args.seeds, "--seeds")
        result = loop.run(config, args.out, seeds=seeds, sweep=parse_sweep(args.sweep), data_dir=args.data_dir,
                           mnist_dir=args.mnist_dir, resume=args.resume, overwrite=args.overwrite)
        print(json.dumps(result.rows, indent=2))

    cli(body)
