"""The fixed cost of a run: what a 5-epoch run that trains almost nothing spends outside its epochs.

    python -m experiments.fixed_cost --out benchmarks/fixed_cost_cpu.json

Each case trains `linear` d32 for 5 epochs on 100 images (4 steps of 25 an epoch) through `aejax.run`, in a
fresh process (as a user's run starts), and splits its wall time: tracing, lowering to MLIR and XLA compilation
(JAX's own monitoring events; a cache hit counts as its retrieval), checkpoint saves (the time the loop waits in
orbax), the reconstruction figure, and the epochs themselves (5 x the median of epochs 2-5). `outside epochs` is
the wall time less the epochs. The cases: no compilation cache; a warm persistent cache (`--compile-cache`,
filled by an untimed run of the same case first); and a warm cache with `checkpoint_every=5`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aejax import cli
from aejax.environment import environment
from aejax.files import refuse_overwrite, write_json

REPO = Path(__file__).resolve().parent.parent
CASES = {"cold": {"cache": False, "checkpoint_every": 1},
         "warm_cache": {"cache": True, "checkpoint_every": 1},
         "warm_cache_checkpoint_every_5": {"cache": True, "checkpoint_every": 5}}


def child(out: str, cache: str | None, checkpoint_every: int) -> dict:
    """One timed run in this (fresh) process; the phases in seconds."""
    import jax

    from aejax import data
    from aejax.config import Config
    from aejax.training import checkpoint, loop, rundir
    from aejax.training import step as train

    if cache:
        train.use_compile_cache(cache)
    events: dict[str, float] = {}
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: events.__setitem__(event, events.get(event, 0.0) + seconds))
    spent = {"checkpoint": 0.0, "figure": 0.0}

    def timing(name, fn):
        def wrapped(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapped

    checkpoint.save = timing("checkpoint", checkpoint.save)
    original_manager = checkpoint.manager

    def manager(*args, **kwargs):
        mngr = original_manager(*args, **kwargs)
        mngr.wait_until_finished = timing("checkpoint", mngr.wait_until_finished)
        return mngr

    checkpoint.manager = manager
    rundir.RunDir.write_reconstructions = timing("figure", rundir.RunDir.write_reconstructions)
    images = data.read_idx(data.VENDORED_DIR / data.FILES["test"][0], data.PINNED_SHA256[data.FILES["test"][0]])
    config = Config(model="linear", latent_dim=32, epochs=5, batch_size=25, train_examples=100,
                    checkpoint_every=checkpoint_every)
    t0 = time.perf_counter()
    loop.run(config, out, data=(images[:100], images[:1000]), log=lambda *_: None)
    wall = time.perf_counter() - t0
    epochs = [json.loads(line)["epoch_seconds"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    steady = 5 * statistics.median(epochs[1:])

    def event(suffix: str) -> float:
        return sum(v for k, v in events.items() if k.endswith(suffix))

    return {"wall": wall, "epochs": steady, "outside_epochs": wall - steady, "trace": event("jaxpr_trace_duration"),
            "lower": event("jaxpr_to_mlir_module_duration"), "compile": event("backend_compile_duration"),
            "cache_retrieval": event("cache_retrieval_time_sec"), "checkpoint": spent["checkpoint"],
            "figure": spent["figure"]}


def measure(case: dict, tmp: Path, name: str) -> dict:
    cache = str(tmp / f"cache_{name}") if case["cache"] else None
    script = ("import json, sys\nfrom experiments import fixed_cost\n"
              "print(json.dumps(fixed_cost.child(sys.argv[1], sys.argv[2] or None, int(sys.argv[3]))))")
    runs = [tmp / f"{name}_fill", tmp / name] if cache else [tmp / name]
    for out in runs:  # with a cache, the first run fills it and only the second is reported
        result = subprocess.run([sys.executable, "-c", script, str(out), cache or "", str(case["checkpoint_every"])],
                                cwd=REPO, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            sys.exit(f"error: case {name} failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = cli.ArgumentParser(prog="python -m experiments.fixed_cost", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the JSON file to write, e.g. benchmarks/fixed_cost_cpu.json")
    p.add_argument("--repeats", type=cli.positive_int, default=3, help="processes per case (the median is kept)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file if it exists")
    args = p.parse_args(argv)

    def body() -> None:
        refuse_overwrite([args.out], args.overwrite)
        report = {"cases": {}, "repeats": args.repeats}
        with tempfile.TemporaryDirectory() as tmp:
            for name, case in CASES.items():
                runs = [measure(case, Path(tmp) / f"r{i}", name) for i in range(args.repeats)]
                median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                report["cases"][name] = {**case, "median_seconds": median, "runs": runs}
                print(f"{name:<32} wall {median['wall']:.2f}s  outside epochs {median['outside_epochs']:.2f}s  "
                      f"(trace {median['trace']:.2f}, lower {median['lower']:.2f}, compile {median['compile']:.2f}, "
                      f"cache {median['cache_retrieval']:.2f}, checkpoint {median['checkpoint']:.2f}, "
                      f"figure {median['figure']:.2f})", flush=True)
        report["environment"] = environment()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out), report)

    cli.cli(body)


if __name__ == "__main__":
    main()
