"""Training throughput: aejax's whole-epoch `lax.scan` against a per-step jitted loop fed from the host and
against PyTorch (eager, and `torch.compile` where it works; each with the default and the fused Adam), plus FLOPs
and a measured matmul peak.

    python -m experiments.benchmark --out benchmarks/cpu.json [--reps 3] [--images 10000] [--dtype bfloat16]
        [--workloads linear_d32_b25,...] [--no-torch]

One process; every contender trains the identical architecture with Adam (lr 1e-3) and MSE on the same MNIST
images; after a warm-up call, repetitions are interleaved across contenders and medians reported. FLOPs per
image come from XLA's cost analysis of the compiled train step (forward + backward + Adam, divided by the batch).
PyTorch is optional: without it those rows are skipped with a notice (`pip install torch==2.13.0`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aejax import cli
from aejax.config import MNIST_SHAPE, Config
from aejax.data import load_mnist
from aejax.environment import environment
from aejax.files import refuse_overwrite, write_json
from aejax.training import step as train

WORKLOADS = {
    "linear_d32_b25": Config(model="linear", latent_dim=32, batch_size=25),
    "linear_d256_b25": Config(model="linear", latent_dim=256, batch_size=25),
    "linear_d32_b128": Config(model="linear", latent_dim=32, batch_size=128),
    "linear_d256_b128": Config(model="linear", latent_dim=256, batch_size=128),
    "conv_original_b25": Config(model="conv_original", latent_dim=392, batch_size=25),
    "conv_original_b128": Config(model="conv_original", latent_dim=392, batch_size=128),
    "linear_d256_b1024": Config(model="linear", latent_dim=256, batch_size=1024),
}


def aejax_scan(config: Config, images: np.ndarray, steps: int) -> Callable[[], None]:
    """The real training path: one compiled `lax.scan` over `steps` device-resident batches."""
    trainer = train.make_trainer(config)
    epoch = jax.jit(train.train_epoch, static_argnums=0, donate_argnums=1)
    data = jax.device_put(images[: steps * config.batch_size])
    box = [train.init_state(trainer, jax.random.key(0))]

    def run() -> None:
        box[0], losses = epoch(trainer, box[0], data, jax.random.key(1))
        jax.block_until_ready(losses)

    return run


def aejax_host_loop(config: Config, images: np.ndarray, steps: int) -> Callable[[], None]:
    """What most tutorials do: a jitted step called from Python, each batch sliced on the host and sent."""
    trainer = train.make_trainer(config)
    step = jax.jit(train.train_step, static_argnums=0, donate_argnums=1)
    floats = images.astype(np.float32) / 255.0
    box = [train.init_state(trainer, jax.random.key(0))]
    rng = np.random.default_rng(0)

    def run() -> None:
        order = rng.permutation(steps * config.batch_size).reshape(steps, config.batch_size)
        state = box[0]
        for idx in order:
            state, loss = step(trainer, state, floats[idx])
        jax.block_until_ready(loss)
        box[0] = state

    return run


def flops_per_image(config: Config) -> float:
    trainer = train.make_trainer(config)
    state = train.init_state(trainer, jax.random.key(0))
    batch = jnp.zeros((config.batch_size, *MNIST_SHAPE))
    compiled = jax.jit(train.train_step, static_argnums=0).lower(trainer, state, batch).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"]) / config.batch_size


def matmul_peak_gflops(n: int = 2048, reps: int = 10, dtype: str = "float32") -> float:
    """Dense fp32 matmul throughput on the default device, as the hardware yardstick: the best of `reps`
    (a peak is what the machine can do; the median moved by 10% between runs on a shared 2-core VM)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype=jnp.dtype(dtype))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e9


def torch_contenders(config: Config, images: np.ndarray, steps: int) -> dict[str, Callable[[], None]]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    if config.model == "linear":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, config.latent_dim), nn.Linear(config.latent_dim, 784),
                              nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28)))
    else:
        model = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(64, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.ConvTranspose2d(8, 64, 2, stride=2), nn.ReLU(),
                              nn.ConvTranspose2d(64, 1, 2, stride=2), nn.Sigmoid())
    data = torch.from_numpy(images[: steps * config.batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)

    def make(step_model, fused: bool) -> Callable[[], None]:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
        gen = torch.Generator().manual_seed(0)

        def run() -> None:
            order = torch.randperm(len(data), generator=gen).reshape(steps, config.batch_size)
            for idx in order:
                batch = data[idx]
                opt.zero_grad(set_to_none=True)
                loss = torch.mean((step_model(batch) - batch) ** 2)
                loss.backward()
                opt.step()

        return run

    compiled = torch.compile(model)
    contenders = {}
    for name, step_model, fused in (("torch_eager", model, False), ("torch_eager_fused_adam", model, True),
                                    ("torch_compile", compiled, False), ("torch_compile_fused_adam", compiled, True)):
        try:
            run = make(step_model, fused=fused)
            run()  # compiles and builds the fused kernels now, so a failure is caught here
            contenders[name] = run
        except Exception as e:  # torch.compile's and fused Adam's failures come in many types
            print(f"{name} unavailable for {config.model}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    return contenders


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the JSON here")
    p.add_argument("--reps", type=cli.positive_int, default=3, help="timed repetitions per contender (best kept)")
    p.add_argument("--images", type=cli.positive_int, default=10_000,
                   help="images per timed call (at least 10 steps)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, from: {', '.join(WORKLOADS)}")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="aejax compute dtype (params stay fp32) and the dtype of the peak matmul; PyTorch stays fp32")
    p.add_argument("--no-torch", action="store_true", help="aejax contenders only, even where PyTorch is installed")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file(s) if they exist")
    args = p.parse_args()
    if args.out:
        cli.cli(lambda: refuse_overwrite([args.out], args.overwrite))
    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workload(s) {', '.join(sorted(unknown))}; choose from {', '.join(WORKLOADS)}")
    images = load_mnist("train", data_dir=args.data_dir).images
    torch_version = None
    try:
        if not args.no_torch:
            import torch

            torch_version = torch.__version__
    except ImportError:
        print("PyTorch not installed: its rows are skipped (pip install torch==2.13.0)")
    peaks = [matmul_peak_gflops(dtype=args.dtype)]
    print(f"dense {args.dtype} matmul peak (2048^3, best of 10): {peaks[0]:.1f} GFLOP/s")
    results, ratios = {}, {}
    for name in args.workloads.split(","):
        config = WORKLOADS[name].replace(dtype=args.dtype)
        steps = max(10, args.images // config.batch_size)
        contenders = {"aejax_scan": aejax_scan(config, images, steps),
                      "aejax_host_loop": aejax_host_loop(config, images, steps)}
        if torch_version is not None:
            contenders.update(torch_contenders(config, images, steps))
        for run in contenders.values():
            run()  # warm-up: compilation and caches
        times = {c: [] for c in contenders}
        for _ in range(args.reps):
            for c, run in contenders.items():
                t0 = time.perf_counter()
                run()
                times[c].append(time.perf_counter() - t0)
        n_images = steps * config.batch_size
        ips = {c: n_images / statistics.median(t) for c, t in times.items()}
        flops = flops_per_image(config)
        row = {"config": config.to_dict(), "steps_per_call": steps, "images_per_second": ips,
               "flops_per_image": flops, "flops_source": "XLA cost_analysis of the compiled train_step",
               "aejax_gflops": ips["aejax_scan"] * flops / 1e9,
               "scan_over_host_loop": ips["aejax_scan"] / ips["aejax_host_loop"]}
        torch_best = max((v for c, v in ips.items() if c.startswith("torch")), default=None)
        if torch_best:
            row["aejax_over_fastest_torch"] = ratios[name] = ips["aejax_scan"] / torch_best
        results[name] = row
        cells = "  ".join(f"{c} {v:>9,.0f}" for c, v in ips.items())
        print(f"{name:>20}: {cells}  | {flops / 1e6:.2f} MFLOP/img, {row['aejax_gflops']:.0f} GFLOP/s"
              + (f", aejax/torch {ratios[name]:.2f}x" if name in ratios else ""), flush=True)
    peaks.append(matmul_peak_gflops(dtype=args.dtype))  # again at the end: the machine's state may have changed
    peak = max(peaks)
    print(f"dense {args.dtype} matmul peak at the end: {peaks[1]:.1f} GFLOP/s; using the higher, {peak:.1f}")
    for name, row in results.items():
        row["fraction_of_matmul_peak"] = row["aejax_gflops"] / peak
        print(f"{name:>20}: {row['fraction_of_matmul_peak']:.0%} of peak, scan / host loop "
              f"{row['scan_over_host_loop']:.2f}x" + (f", aejax / fastest torch {ratios[name]:.2f}x"
                                                      if name in ratios else ""))
    out = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "dtype": args.dtype,
           "torch": torch_version,
           "matmul_peak_gflops": peak, "matmul_peak_runs_gflops": peaks, "reps": args.reps,
           "workloads": results, "ratios": ratios, "environment": environment()}
    if args.out:
        write_json(Path(args.out), out)


if __name__ == "__main__":
    main()
