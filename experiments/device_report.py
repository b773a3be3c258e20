"""The runbook for the first accelerator: one command that measures what aejax needs to know about a device.

    python -m experiments.device_report --out benchmarks/<device>.json

On whatever backend JAX finds (GPU, TPU or CPU), in one process, it writes one JSON with the device, versions
and, each timed as a user pays it:
- `workloads`: training images/s of the benchmark workloads (`experiments.benchmark`, aejax's whole-epoch scan)
  in float32 and bfloat16, the conv ones under both conv implementations (`ops`, `xla`), with FLOPs per image
  and the fraction of the measured matmul peak of that dtype;
- `linear_study`: wall seconds of the whole linear study (`aejax.configs.study.LINEAR`, every depth, one seed,
  compilation included) and its test MSEs;
- `seeds_vmap`: K seeds in one program against K runs one after another (`experiments.seeds_vmap`).
The defaults are the full measurement; the tests run it on CPU with tiny sizes (`--images 100 --epochs 1
--train-examples 500 --depths 32`). Then compare with `benchmarks/cpu.json` and commit the JSON.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import jax

from aejax import cli
from aejax.configs.study import LINEAR
from aejax.data import load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.files import refuse_overwrite, write_json
from experiments import benchmark, seeds_vmap
from experiments import depth_study as study

CONV_WORKLOADS = ("conv_original_b25", "conv_original_b128")


def time_workloads(images, names: list[str], n_images: int, reps: int) -> dict:
    """images/s of each named benchmark workload per dtype (and per conv implementation for the conv ones)."""
    rows = {}
    for dtype in ("float32", "bfloat16"):
        peak = benchmark.matmul_peak_gflops(dtype=dtype)
        for name in names:
            base = benchmark.WORKLOADS[name]
            for impl in (("ops", "xla") if name in CONV_WORKLOADS else (None,)):
                config = base.replace(dtype=dtype, **({"conv_impl": impl} if impl else {}))
                steps = max(10, n_images // config.batch_size)
                run = benchmark.aejax_scan(config, images, steps)
                run()  # compilation
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - t0)
                ips = steps * config.batch_size / statistics.median(times)
                flops = benchmark.flops_per_image(config)
                label = f"{name}_{dtype}" + (f"_{impl}" if impl else "")
                rows[label] = {"config": config.to_dict(), "images_per_second": ips, "flops_per_image": flops,
                               "gflops": ips * flops / 1e9, "fraction_of_matmul_peak": ips * flops / 1e9 / peak,
                               "matmul_peak_gflops": peak}
                print(f"{label:>36}: {ips:>10,.0f} img/s, {ips * flops / 1e9:.0f} GFLOP/s "
                      f"({ips * flops / 1e9 / peak:.0%} of the {dtype} matmul peak)", flush=True)
    return rows


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.device_report", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the JSON file to write, e.g. benchmarks/<device>.json")
    p.add_argument("--images", type=cli.positive_int, default=20_000, help="images per timed benchmark call")
    p.add_argument("--reps", type=cli.positive_int, default=3, help="timed repetitions per workload (median)")
    p.add_argument("--workloads", default=",".join(benchmark.WORKLOADS),
                   help=f"benchmark workloads, comma-separated, from: {', '.join(benchmark.WORKLOADS)}")
    p.add_argument("--epochs", type=cli.positive_int, default=5, help="epochs of the linear study")
    p.add_argument("--train-examples", type=cli.positive_int, default=None,
                   help="train the study on the first N images (default: all 60,000)")
    p.add_argument("--depths", default="32,64,128,256", help="the linear study's code sizes, comma-separated")
    p.add_argument("--ks", default="1,8", help="seed counts for the seeds-vmap timing, comma-separated")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file if it exists")
    args = p.parse_args()

    def body() -> None:
        refuse_overwrite([args.out], args.overwrite)
        depths, ks = cli.parse_ints(args.depths, "--depths"), cli.parse_ints(args.ks, "--ks")
        names = [n for n in args.workloads.split(",") if n]
        unknown = sorted(set(names) - set(benchmark.WORKLOADS))
        if unknown or not names:
            raise AejaxError(f"unknown workload(s) {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(benchmark.WORKLOADS)}")
        print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}, {jax.device_count()} devices)")
        images = load_mnist("train", data_dir=args.data_dir).images
        report = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
                  "workloads": time_workloads(images, names, args.images, args.reps)}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            rows = study.run_study(LINEAR, Path(tmp) / "study", depths=depths, seeds=(0,), epochs=args.epochs,
                                   train_examples=args.train_examples, data_dir=args.data_dir,
                                   log=lambda line: None)
            seconds = time.perf_counter() - t0
        report["linear_study"] = {"seconds": seconds, "depths": list(depths), "epochs": args.epochs,
                                  "train_examples": args.train_examples,
                                  "test_mse": {f"{r['variant']}_d{r['latent_dim']}": r["test_mse"] for r in rows}}
        print(f"linear study ({len(rows)} rows, compilation included): {seconds:.1f} s", flush=True)
        config = benchmark.WORKLOADS["linear_d32_b25"].replace(latent_dim=64, epochs=1,
                                                             train_examples=args.train_examples)
        study_images = images[:args.train_examples] if args.train_examples else images
        report["seeds_vmap"] = []
        for k in ks:
            together = seeds_vmap.train_seeds(config, list(range(k)), study_images)
            apart = sum(seeds_vmap.train_seeds(config, [s], study_images) for s in range(k))
            report["seeds_vmap"].append({"k": k, "vmapped_seconds": together, "sequential_seconds": apart,
                                         "speedup": apart / together})
            print(f"K={k} seeds: one program {together:.1f}s, one after another {apart:.1f}s", flush=True)
        report["environment"] = environment()
        write_json(Path(args.out), report)

    cli.cli(body)


if __name__ == "__main__":
    main()
