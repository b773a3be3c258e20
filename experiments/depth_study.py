"""The depth study: train each arm at each depth (seeds vmapped), add PCA, write the table and the figures.
`study.py`, `linear_depths.py` and `conv_depths.py` beside it are its command lines (`study_main`).

Each (arm, depth) trains in its own run directory under `OUT/runs/` and is resumed, not redone, when the
study is run again with the same settings; `OUT/results.json` and the figures are rewritten from the runs.
While it trains, the study prints `arm d=N (i/total)` and an estimate of the training time left: seconds per run
modelled as a + b * FLOPs (XLA's count for the run's training steps), fitted to the runs trained so far, so
that the fixed cost of a small run (compilation, evaluation) is not extrapolated to the large ones.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aejax import cli, models, numerics
from aejax.config import MNIST_PIXELS, MNIST_SHAPE, Config
from aejax.configs.study import ARMS, DEPTHS, Arm, parse_arms
from aejax.data import mnist_source
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.evaluation import metrics, plots
from aejax.files import make_output_dir, write_atomic, write_json
from aejax.models import inference
from aejax.training import loop
from aejax.training import step as train
from aejax.training.results import result_row
from aejax.training.rundir import RunDir
from aejax.training.signals import Interrupted

GRID_DIGITS = 10  # the first ten test images: 7 2 1 0 4 1 4 9 5 9


def arm_depths(arm: Arm, depths: Sequence[int]) -> tuple[int, ...]:
    return arm.depths if arm.depths is not None else tuple(depths)


def pca_rows(train_images: jax.Array, test_images: jax.Array, depths: Sequence[int]) -> tuple[list[dict], dict]:
    """PCA fitted on the training images, scored by the same metric code as the models."""
    t0 = time.perf_counter()
    pcas = metrics.fit_pca(train_images, depths)
    jax.block_until_ready(pcas)
    fit_seconds = time.perf_counter() - t0
    rows = [result_row(model="pca", variant="pca", latent_dim=k, epochs=0, seed=None,
                       scores=metrics.reconstruction_metrics(metrics.Pca.reconstruct, pca, test_images),
                       params=k * MNIST_PIXELS + MNIST_PIXELS, train_seconds=fit_seconds)
            for k, pca in pcas.items()]
    return rows, pcas


def run_study(arms: Sequence[Arm], out_dir: str | Path, *, depths: Sequence[int] = DEPTHS,
              seeds: Sequence[int] = (0, 1, 2), epochs: int | None = None, train_examples: int | None = None,
              data_dir: str | None = None, mnist_dir: str | None = None, log=print) -> list[dict[str, Any]]:
    """Train every arm at every depth for every seed; write results.json and the figures into `out_dir`."""
    out_dir = Path(out_dir)
    settings = {"arms": {a.label: {"description": a.description, "config": models.resolve(a.config).to_dict(),
                                   "depths": list(arm_depths(a, depths))} for a in arms},
                "depths": list(depths), "seeds": list(seeds), "epochs": epochs, "train_examples": train_examples}
    configs = {(arm.label, depth): _arm_config(arm, depth, epochs, train_examples)  # validated before any work
               for arm in arms for depth in arm_depths(arm, depths)}
    _claim(out_dir, settings)
    t_start = time.perf_counter()
    source = mnist_source(data_dir, mnist_dir)
    train_np = source.rows(range(min(source.n_train, train_examples or source.n_train)))
    test_np = source.test
    train_images, test_images = jax.device_put(train_np), jax.device_put(test_np)  # once, shared by all runs

    rows: list[dict[str, Any]] = []
    curves: dict[str, list[float]] = {}
    recons: dict[tuple[str, int], np.ndarray] = {}  # (arm, depth) -> grid digits' reconstructions
    work = {key: _train_flops(config) * len(seeds) for key, config in configs.items()}
    trained: list[tuple[float, float]] = []  # (FLOPs, seconds) of each run trained by this invocation
    for i, ((label, depth), config) in enumerate(configs.items(), start=1):
        run_dir = study_run_dir(out_dir, label, depth)
        log(f"== {label} d={depth} ({i}/{len(configs)}): {len(seeds)} seed(s), {config.epochs} epochs -> {run_dir}"
            + _time_left(trained, [work[k] for k in list(configs)[i - 1:]]))
        t0 = time.perf_counter()
        result = loop.run(config, run_dir, seeds=list(seeds), data=(train_images, test_images), resume=True,
                           variant=label, log=log)
        if result.epochs_trained:
            trained.append((work[label, depth] * result.epochs_trained / config.epochs, time.perf_counter() - t0))
        rows += result.rows
        history = RunDir(run_dir).read_metrics()
        curves[f"{label} d{depth}"] = [float(np.mean(h["train_loss"])) for h in history]
        recons[label, depth] = np.asarray(inference.reconstruct(result.model, result.variables[0],
                                                                test_images[:GRID_DIGITS]), np.float32)
        plots.reconstructions(out_dir / f"recon_{label}_d{depth}.png", test_np[:GRID_DIGITS], recons[label, depth],
                              title=f"{label}, code {depth} (compression {MNIST_PIXELS / depth:.1f}x), "
                                    f"seed {seeds[0]}")

    all_depths = sorted({d for arm in arms for d in arm_depths(arm, depths)})
    p_rows, pcas = pca_rows(train_images, test_images, all_depths)
    rows += p_rows
    wall = time.perf_counter() - t_start
    write_json(out_dir / "results.json", rows)
    write_json(out_dir / "study.json", {
        **settings, "wall_seconds_this_invocation": wall,
        "train_seconds_sum": sum(r.get("train_seconds_total", 0.0) for r in rows if r["seed"] == seeds[0]),
        "environment": environment()})
    write_atomic(out_dir / "results.md", markdown_table(rows))
    plots.depth_vs_error(out_dir / "depth_vs_error.png", rows)
    plots.loss_curves(out_dir / "loss_curves.png", curves)
    _recon_grid(out_dir, recons, pcas, test_images)
    log(f"study done in {wall:.1f}s (runs already trained are reloaded, not retrained): "
        f"{out_dir / 'results.json'}")
    return rows


def _arm_config(arm: Arm, depth: int, epochs: int | None, train_examples: int | None) -> Config:
    """The arm's config at code size `depth`, with the study's epochs (when given) and training-set size."""
    changes = {"latent_dim": depth, "train_examples": train_examples}
    if epochs is not None:
        changes["epochs"] = epochs
    return models.resolve(arm.config.replace(**changes))


def _claim(out_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse an output directory holding a study of other settings (its table would be replaced)."""
    previous = out_dir / "study.json"
    if previous.exists():
        try:
            saved = json.loads(previous.read_text())
            for arm in saved["arms"].values():  # through Config: settings added later compare equal
                arm["config"] = models.resolve(Config.from_dict(arm["config"])).to_dict()
            same = all(saved.get(key) == value for key, value in settings.items())
        except (ValueError, KeyError, TypeError, AttributeError, AejaxError):
            same = False
        if not same:
            raise AejaxError(f"{out_dir} holds a study with other settings (see its study.json); "
                             f"choose another --out")
    make_output_dir(out_dir)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Mean ± std over seeds per (variant, code size), as a Markdown table."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("variant") or r["model"], r["latent_dim"]), []).append(r)

    def stat(values: list[float], fmt: str) -> str:
        if len(values) == 1:
            return format(values[0], fmt)
        return f"{format(np.mean(values), fmt)} ± {format(np.std(values), fmt)}"

    lines = ["| variant | code size | compression | epochs | seeds | test MSE | PSNR (dB) | SSIM | params | "
             "train s / seed |", "|" + "---|" * 10]
    for (variant, depth), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        get = lambda key, group=group: [float(g[key]) for g in group]
        lines.append(f"| {variant} | {depth} | {MNIST_PIXELS / depth:.1f}x | {group[0]['epochs']} | {len(group)} | "
                     f"{stat(get('test_mse'), '.5f')} | {stat(get('test_psnr_db'), '.2f')} | "
                     f"{stat(get('test_ssim'), '.4f')} | {group[0]['params']:,} | "
                     f"{np.mean(get('train_seconds')):.1f} |")
    return "\n".join(lines) + "\n"


def _train_flops(config: Config) -> float:
    """XLA's FLOP count of training one seed of `config` (per-step cost x steps), from the lowered step alone."""
    trainer = train.make_trainer(config)
    state = jax.eval_shape(functools.partial(train.init_state, trainer), jax.random.key(0))
    batch = jax.ShapeDtypeStruct((config.batch_size, *MNIST_SHAPE), jnp.float32)
    step = jax.jit(functools.partial(train.train_step, trainer)).lower(state, batch).cost_analysis()
    steps = config.epochs * train.steps_per_epoch(train.default_train_size(config), config.batch_size)
    return float(step.get("flops", 0.0)) * steps


def _time_left(trained: Sequence[tuple[float, float]], left: Sequence[float]) -> str:
    """', about M min of training left' for runs of `left` FLOPs, from the (FLOPs, seconds) of runs trained so
    far: a + b * FLOPs by least squares once two runs differ in FLOPs, else seconds per FLOP; empty before any
    run was trained."""
    if not trained:
        return ""
    flops, seconds = np.asarray(trained, np.float64).T
    a, b = 0.0, seconds.sum() / flops.sum()
    if np.ptp(flops) > 0:
        b, a = np.polyfit(flops, seconds, 1)
        if b <= 0 or a < 0:  # noise: fall back to the plain rate
            a, b = 0.0, seconds.sum() / flops.sum()
    return f", about {sum(a + b * f for f in left) / 60:.1f} min of training left"


def _recon_grid(out_dir: Path, recons: dict[tuple[str, int], np.ndarray], pcas: dict,
                test_images: jax.Array) -> None:
    x = test_images[:GRID_DIGITS]
    rows = {"original": np.asarray(x)}
    for depth in sorted(pcas):  # every code size some arm ran at
        rows[f"PCA {depth}"] = np.asarray(jnp.clip(pcas[depth].reconstruct(metrics.to_float(x)), 0, 1))
        rows.update({f"{label} {d}": r for (label, d), r in recons.items() if d == depth})
    plots.grid(out_dir / "recon_grid.png", rows, "Test digits: original, then PCA and each model per code size")


def study_run_dir(study_dir: str | Path, label: str, depth: int) -> Path:
    """Where a study keeps the run of arm `label` at code size `depth`."""
    return Path(study_dir) / "runs" / f"{label}_d{depth}"


def study_runs(study_dir: str | Path) -> dict[str, list[tuple[int, Path]]]:
    """The trained runs of a study directory: arm label -> [(depth, run directory)], by depth."""
    runs: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted((Path(study_dir) / "runs").glob("*_d*")):
        label, depth = path.name.rsplit("_d", 1)
        if depth.isdigit() and (path / "config.json").exists():
            runs.setdefault(label, []).append((int(depth), path))
    return {label: sorted(found) for label, found in runs.items()}


def study_main(default_arms: Sequence[Arm], argv: list[str] | None = None,
               prog: str = "python -m experiments.study") -> None:
    """The shared command line of the study scripts (`experiments/study.py`, `linear_depths.py`, `conv_depths.py`)."""
    p = cli.ArgumentParser(prog=prog, description="Compare autoencoders across code sizes on MNIST.")
    p.add_argument("--out", required=True, help="output directory (runs/, results.json, figures)")
    p.add_argument("--depths", default=None,
                   help=f"code sizes, comma-separated (default: {','.join(map(str, DEPTHS))}); an arm whose "
                        f"architecture fixes its size (conv_original: 392) runs at that size, which an explicit "
                        f"--depths must list")
    p.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated (trained together with vmap)")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every arm (default: each arm's, 5)")
    p.add_argument("--arms", default=",".join(a.label for a in default_arms),
                   help=f"arms to run, from: {', '.join(ARMS)}")
    p.add_argument("--train-examples", type=int, default=None, help="train on the first N images only")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data")
    p.add_argument("--mnist-dir", default=None, help="directory with the four MNIST .gz IDX files")
    p.add_argument("--compile-cache", default=None, metavar="DIR",
                   help="keep compiled programs in DIR (JAX's persistent cache): a rerun loads them")
    p.add_argument("--native-cpu", action="store_true",
                   help="XLA's fastest code for this CPU instead of portable CPU numerics (aejax.numerics), which "
                        "give the committed results' bits at any core count on CPUs with AVX-512")
    args = p.parse_args(argv)

    def body() -> None:
        if not args.native_cpu and not numerics.use_portable_cpu():
            print(numerics.UNAVAILABLE, file=sys.stderr)
        if args.compile_cache:
            train.use_compile_cache(args.compile_cache)
        depths = DEPTHS if args.depths is None else cli.parse_ints(args.depths, "--depths")
        seeds = cli.parse_ints(args.seeds, "--seeds")
        if not depths or any(not 0 < d <= MNIST_PIXELS for d in depths):
            raise AejaxError(f"--depths must be integers in 1..{MNIST_PIXELS}, got {args.depths!r}")
        arms = parse_arms(args.arms)
        unlisted = [f"{a.label} ({','.join(map(str, a.depths))})" for a in arms
                    if args.depths is not None and a.depths is not None and not set(a.depths) & set(depths)]
        if unlisted:
            raise AejaxError(f"--depths {args.depths} leaves out the fixed code size of arm(s) {', '.join(unlisted)}; "
                             f"add it to --depths or drop the arm from --arms")
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise AejaxError(f"--seeds must be distinct non-negative integers, got {args.seeds!r}")
        try:
            run_study(arms, args.out, depths=depths, seeds=seeds, epochs=args.epochs,
                      train_examples=args.train_examples, data_dir=args.data_dir, mnist_dir=args.mnist_dir)
        except Interrupted as e:  # the study resumes by being run again, not with a --resume flag
            stopped = e.cli_message.rsplit("; continue with", 1)[0]
            raise Interrupted(f"{stopped}; run the same command again to continue",
                              cli=f"{stopped}; run the same command again to continue",
                              exit_code=e.exit_code) from None

    cli.cli(body)
