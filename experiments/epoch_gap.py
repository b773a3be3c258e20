"""Host time between epochs: how long the device sits idle between two epochs of `aejax.run`, waiting for the
host to read back losses and metrics, checkpoint and write logs before it hands over the next epoch.

    python -m experiments.epoch_gap --out benchmarks/epoch_gap_cpu.json [--model linear --latent-dim 32]
        [--epochs 6] [--seeds 0,1,2]

Trains one run with `aejax.run` into a temporary directory, with its compiled epoch and evaluation functions
wrapped: each call is timestamped when it returns (the work is then queued on the device), and a watcher
thread timestamps when its outputs are ready (the device finished it). The idle time before epoch e is the
time epoch e was queued minus the time the device finished all earlier work (epoch e-1 and its evaluation);
negative means epoch e was queued ahead, so the device never waited. Epoch 1 (compilation) has no gap. It wraps
only `train.compile_program`, so it measures any version of `aejax.run`.
"""

import statistics
import tempfile
import threading
import time
from pathlib import Path

import jax

from aejax import cli
from aejax.config import Config
from aejax.data import load_mnist
from aejax.environment import environment
from aejax.files import refuse_overwrite, write_json
from aejax.training import loop
from aejax.training import step as train


class Timeline:
    """When each epoch / evaluation call was queued and when its outputs were ready (perf_counter seconds)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, list[float]]] = []  # (kind, queued at, [ready at])
        self.threads: list[threading.Thread] = []

    def wrap(self, kind: str, fn, outputs):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            ready: list[float] = []
            self.calls.append((kind, time.perf_counter(), ready))
            watched = outputs(out)  # not the donated state: the watcher must not hold what the next call donates

            def watch() -> None:
                jax.block_until_ready(watched)
                ready.append(time.perf_counter())

            self.threads.append(threading.Thread(target=watch, daemon=True))
            self.threads[-1].start()
            return out

        return wrapped

    def idle_before_epochs(self) -> list[float]:
        for t in self.threads:
            t.join()
        gaps, finished = [], None  # finished: when the device completed every call queued so far
        for kind, queued, ready in self.calls:
            if kind == "epoch" and finished is not None:
                gaps.append(queued - finished)
            finished = ready[0] if finished is None else max(finished, ready[0])
        return gaps


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.epoch_gap", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--model", default="linear", help="model to time (a Config model name)")
    p.add_argument("--latent-dim", type=cli.positive_int, default=32, help="code size")
    p.add_argument("--epochs", type=cli.positive_int, default=6, help="epochs of the run (at least 2)")
    p.add_argument("--seeds", default="0,1,2", help="seeds trained together, comma-separated")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file if it exists")
    args = p.parse_args()

    def body() -> None:
        refuse_overwrite([args.out], args.overwrite)
        config = Config(model=args.model, latent_dim=args.latent_dim, epochs=max(2, args.epochs))
        seeds = list(cli.parse_ints(args.seeds, "--seeds"))
        data = (load_mnist("train", data_dir=args.data_dir).images, load_mnist("test", data_dir=args.data_dir).images)
        timeline, compile_program = Timeline(), train.compile_program

        def timed_program(trainer):
            program = compile_program(trainer)
            return program._replace(epoch=timeline.wrap("epoch", program.epoch, lambda out: out[1]),
                                    evaluate=timeline.wrap("evaluate", program.evaluate, lambda out: out))

        train.compile_program = timed_program
        try:
            with tempfile.TemporaryDirectory() as tmp:
                result = loop.run(config, Path(tmp) / "run", seeds=seeds, data=data, log=lambda line: None)
                history = train.RunDir(Path(tmp) / "run").read_metrics()
        finally:
            train.compile_program = compile_program
        gaps = timeline.idle_before_epochs()
        row = {"config": config.to_dict(), "seeds": seeds, "idle_before_epoch_seconds": gaps,
               "median_idle_seconds": statistics.median(gaps),
               "median_epoch_seconds": statistics.median(h["epoch_seconds"] for h in history[1:]),
               "test_mse": [r["test_mse"] for r in result.rows], "environment": environment()}
        print(f"device idle before each epoch: median {row['median_idle_seconds'] * 1e3:.0f} ms (epochs take "
              f"{row['median_epoch_seconds']:.2f} s; negative: queued ahead); epochs 2..{config.epochs}: "
              + ", ".join(f"{g * 1e3:.0f}" for g in gaps) + " ms")
        write_json(Path(args.out), row)

    cli.cli(body)


if __name__ == "__main__":
    main()
