"""Host time between epochs: wall time per epoch outside the compiled epoch call (evaluation dispatch and
read-back, checkpoint, metrics and TensorBoard writes), the time a device would sit idle.

    python -m experiments.epoch_gap --out benchmarks/epoch_gap_cpu.json [--model linear --latent-dim 32]
        [--epochs 5] [--seeds 0,1,2]

Trains one run with `train.run` into a temporary directory and timestamps each epoch's log line: the gap of
epoch e is the time from the end of epoch e-1's line to the end of epoch e's, minus epoch e's own
`epoch_seconds` (the compiled call and the wait for its losses). The first epoch (compilation) is left out.
"""

import statistics
import tempfile
import time
from pathlib import Path

from aejax import cli, train
from aejax.config import Config
from aejax.data import load_mnist
from aejax.rundir import environment, refuse_overwrite, write_json


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.epoch_gap", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--model", default="linear", help="model to time (a Config model name)")
    p.add_argument("--latent-dim", type=cli.positive_int, default=32, help="code size")
    p.add_argument("--epochs", type=cli.positive_int, default=5, help="epochs (the first, with compilation, is "
                                                                       "left out)")
    p.add_argument("--seeds", default="0,1,2", help="seeds trained together, comma-separated")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file if it exists")
    args = p.parse_args()

    def body() -> None:
        refuse_overwrite([args.out], args.overwrite)
        config = Config(model=args.model, latent_dim=args.latent_dim, epochs=max(2, args.epochs))
        seeds = list(cli.parse_ints(args.seeds, "--seeds"))
        data = (load_mnist("train", data_dir=args.data_dir).images, load_mnist("test", data_dir=args.data_dir).images)
        stamps: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = train.run(config, Path(tmp) / "run", seeds=seeds, data=data,
                               log=lambda line: stamps.append(time.perf_counter()))
            history = train.RunDir(Path(tmp) / "run").read_metrics()
        ends = [start] + stamps[:config.epochs]
        gaps = [ends[e + 1] - ends[e] - history[e]["epoch_seconds"] for e in range(1, config.epochs)]
        row = {"config": config.to_dict(), "seeds": seeds, "gap_seconds": gaps,
               "median_gap_seconds": statistics.median(gaps),
               "median_epoch_seconds": statistics.median(h["epoch_seconds"] for h in history[1:]),
               "test_mse": [r["test_mse"] for r in result.rows], "environment": environment()}
        print(f"host gap between epochs: median {row['median_gap_seconds'] * 1e3:.0f} ms "
              f"(epochs take {row['median_epoch_seconds']:.2f} s); per epoch: "
              + ", ".join(f"{g * 1e3:.0f}" for g in gaps) + " ms")
        write_json(Path(args.out), row)

    cli.cli(body)


if __name__ == "__main__":
    main()
