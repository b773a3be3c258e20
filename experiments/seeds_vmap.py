"""Wall time of K seeds trained together (one jit(vmap(epoch)) program) against K runs one after another; with
`--lrs`, of a learning-rate sweep in one program (`aejax.training.sweeps`) against one run per learning rate.

    python -m experiments.seeds_vmap --out benchmarks/seeds_vmap_cpu.json [--model linear --latent-dim 64]
        [--ks 1,4,8] [--epochs 1] [--train-examples 60000]
    python -m experiments.seeds_vmap --out benchmarks/sweep_lr_cpu.json --lrs 3e-4,1e-3,3e-3,1e-2 --latent-dim 32

Times include compilation (each K compiles once), as a user pays them; train steps only (no evaluation or
checkpoints). An untimed warm-up run first absorbs the process's one-time set-up. Add
XLA_FLAGS=--xla_force_host_platform_device_count=8 and --data-parallel to time the sharded path on simulated
devices.
"""

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aejax import cli
from aejax.config import Config
from aejax.data import load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.files import refuse_overwrite, write_json
from aejax.training import parallel, sweeps
from aejax.training import step as train


def train_seeds(config: Config, seeds: list[int], images: np.ndarray, lrs: list[float] | None = None) -> float:
    """Seconds to build, compile and run `config.epochs` epochs of `seeds` (times each of `lrs`, a sweep) as one
    vmapped program."""
    t0 = time.perf_counter()
    grid = sweeps.members(config, {"lr": lrs} if lrs else None)
    trainer = train.make_trainer(config, swept=list(grid[0]))
    program = train.compile_program(trainer)
    keys = [train.seed_keys(s) for _ in grid for s in seeds]
    hparams = sweeps.lane_hparams(grid, len(seeds))
    state = program.init(jnp.stack([k[0] for k in keys]), hparams)
    data = jax.device_put(images)
    if trainer.mesh is not None:
        data, state = parallel.replicate((images, state), trainer.mesh)
    data_keys = jnp.stack([k[1] for k in keys])
    for epoch in range(config.epochs):
        epoch_keys = jax.vmap(train.epoch_key, in_axes=(0, None))(data_keys, epoch)
        state, losses = program.epoch(state, data, epoch_keys, hparams)
    jax.block_until_ready(losses)
    return time.perf_counter() - t0


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.seeds_vmap", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--model", default="linear", help="model to time (a Config model name)")
    p.add_argument("--latent-dim", type=int, default=64, help="code size")
    p.add_argument("--batch-size", type=int, default=25, help="images per step")
    p.add_argument("--ks", default="1,4,8", help="numbers of seeds to time, comma-separated")
    p.add_argument("--lrs", default=None, help="time these learning rates as one sweep (one seed) instead of --ks")
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    p.add_argument("--train-examples", type=int, default=60_000, help="training images per epoch")
    p.add_argument("--data-parallel", action="store_true", help="shard each batch over all devices")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file(s) if they exist")
    args = p.parse_args()
    cli.cli(lambda: measure(args))


def measure(args: argparse.Namespace) -> None:
    """Validate every flag, then time each K and write the JSON."""
    refuse_overwrite([args.out], args.overwrite)
    ks = cli.parse_ints(args.ks, "--ks")
    if not ks or min(ks) < 1:
        raise AejaxError(f"--ks must be positive integers, got {args.ks!r}")
    config = Config(model=args.model, latent_dim=args.latent_dim, batch_size=args.batch_size, epochs=args.epochs,
                    train_examples=args.train_examples, data_parallel=args.data_parallel)
    images = load_mnist("train", data_dir=args.data_dir, examples=args.train_examples).images
    train_seeds(config, [0], images[: 20 * args.batch_size])  # untimed: the process's first run pays set-up
    if args.lrs:
        try:
            lrs = [float(v) for v in args.lrs.split(",") if v.strip()]
        except ValueError:
            raise AejaxError(f"--lrs must be comma-separated numbers, got {args.lrs!r}") from None
        together = train_seeds(config, [0], images, lrs)
        apart = sum(train_seeds(config.replace(lr=lr), [0], images) for lr in lrs)
        row = {"lrs": lrs, "swept_seconds": together, "sequential_seconds": apart, "speedup": apart / together}
        print(f"{len(lrs)} learning rates: one program {together:.1f}s, one after another {apart:.1f}s, "
              f"speedup {apart / together:.2f}x", flush=True)
        write_json(Path(args.out), {"config": config.to_dict(), "sweep": row, "environment": environment()})
        return
    rows = []
    for k in ks:
        together = train_seeds(config, list(range(k)), images)
        apart = sum(train_seeds(config, [s], images) for s in range(k))
        rows.append({"k": k, "vmapped_seconds": together, "sequential_seconds": apart,
                     "speedup": apart / together,
                     "vmapped_images_per_second": k * config.epochs * args.train_examples / together})
        print(f"K={k}: vmapped {together:.1f}s, one after another {apart:.1f}s, speedup {apart / together:.2f}x",
              flush=True)
    result = {"config": config.to_dict(), "rows": rows, "environment": environment()}
    write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
