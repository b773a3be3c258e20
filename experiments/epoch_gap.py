"""Host time between epochs: how much longer each epoch of `train.run` takes than the same compiled calls run
back to back, i.e. the time a device sits idle while the host reads back losses and metrics, checkpoints and
writes logs.

    python -m experiments.epoch_gap --out benchmarks/epoch_gap_cpu.json [--model linear --latent-dim 32]
        [--epochs 6] [--seeds 0,1,2]

Trains one run with `train.run` into a temporary directory and timestamps each epoch's log line; the interval
between two lines is one epoch of the run as the host sees it (the first, with compilation, and the last, with
SSIM, are left out). Then it calls the run's own compiled epoch and test-evaluation functions back to back with
nothing in between, blocking only at the end: their time per epoch is what a device needs. The gap is the
median interval minus that. It uses only `train.make_trainer` / `train.compile_program`, so it measures any
version of `train.run`.
"""

import statistics
import tempfile
import time
from pathlib import Path

import jax

from aejax import cli, train
from aejax.config import Config
from aejax.data import load_mnist
from aejax.rundir import environment, refuse_overwrite, write_json


def back_to_back_seconds(config: Config, seeds: list[int], train_images, test_images, epochs: int) -> float:
    """Seconds per epoch of `epochs` compiled epoch + evaluation calls dispatched with no host work between."""
    trainer = train.make_trainer(config, len(train_images))
    program = train.compile_program(trainer)
    keys = [train.seed_keys(s) for s in seeds]
    data_keys = jax.numpy.stack([k[1] for k in keys])
    state = program.init(jax.numpy.stack([k[0] for k in keys]), {})
    train_images, test_images = jax.device_put(train_images), jax.device_put(test_images)

    def epoch(state, e):
        ekeys = jax.vmap(train.epoch_key, in_axes=(0, None))(data_keys, e)
        state, out = program.epoch(state, train_images, ekeys, {})
        return state, (out, program.evaluate(False, state.params, test_images))

    state, out = epoch(state, 0)  # compile
    jax.block_until_ready(out)
    start = time.perf_counter()
    for e in range(1, epochs + 1):
        state, out = epoch(state, e)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / epochs


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.epoch_gap", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--model", default="linear", help="model to time (a Config model name)")
    p.add_argument("--latent-dim", type=cli.positive_int, default=32, help="code size")
    p.add_argument("--epochs", type=cli.positive_int, default=6, help="epochs of the run (at least 3: the first, "
                                                                       "with compilation, and the last are left out)")
    p.add_argument("--seeds", default="0,1,2", help="seeds trained together, comma-separated")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file if it exists")
    args = p.parse_args()

    def body() -> None:
        refuse_overwrite([args.out], args.overwrite)
        config = Config(model=args.model, latent_dim=args.latent_dim, epochs=max(3, args.epochs))
        seeds = list(cli.parse_ints(args.seeds, "--seeds"))
        data = (load_mnist("train", data_dir=args.data_dir).images, load_mnist("test", data_dir=args.data_dir).images)
        stamps: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            result = train.run(config, Path(tmp) / "run", seeds=seeds, data=data,
                               log=lambda line: stamps.append(time.perf_counter()))
        lines = stamps[:config.epochs]
        intervals = [lines[e] - lines[e - 1] for e in range(1, config.epochs - 1)]  # epochs 2 .. E-1
        device = back_to_back_seconds(config, seeds, *data, len(intervals))
        gaps = [i - device for i in intervals]
        row = {"config": config.to_dict(), "seeds": seeds, "run_epoch_seconds": intervals,
               "back_to_back_epoch_seconds": device, "gap_seconds": gaps, "median_gap_seconds": statistics.median(gaps),
               "test_mse": [r["test_mse"] for r in result.rows], "environment": environment()}
        print(f"host gap between epochs: median {row['median_gap_seconds'] * 1e3:.0f} ms (an epoch takes "
              f"{device:.2f} s back to back); per epoch: " + ", ".join(f"{g * 1e3:.0f}" for g in gaps) + " ms")
        write_json(Path(args.out), row)

    cli.cli(body)


if __name__ == "__main__":
    main()
