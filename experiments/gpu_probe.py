"""The first-accelerator probe: what aejax needs to know about a device, within a fixed time budget.

    python -m experiments.gpu_probe --budget 420 --out benchmarks/h200_probe.json

Seven stages run in order, each with its own share of `--budget` (plus whatever earlier stages left unused); a
stage stops its remaining measurements once its share is spent (they are listed under `skipped`), and a stage
whose share cannot hold its first measurement is skipped whole. The JSON is rewritten after every stage, so a
probe killed mid-way still leaves the stages it finished.

    environment   versions, devices, backend, and the GPU's clocks where `nvidia-smi` answers
    roofline      matmul TFLOP/s in bfloat16, float32 at the default precision (TF32 on GPUs that have it) and
                  float32 at the highest, each from a chain of products inside one compiled call; memory
                  bandwidth (GB/s read + written); the cost of one `lax.scan` iteration (us)
    correctness   a few training steps of linear, conv_original and conv_strided against the same steps on the
                  CPU in float32 at the highest precision, in this process: max |parameter difference| for conv
                  under ops and xla, at the highest and the default precision; above 1e-4 at the highest fails
    throughput    us per step, images/s and the fraction of the measured float32-default peak, at batch 25, 128
                  and 1024 and K = 1, 8, 64, 256 vmapped seeds: linear d32, conv_original under ops and xla
    study         the study's linear arms (`aejax.configs.study.LINEAR`) with 3 seeds, 5 epochs: wall and compile
                  seconds, and each row's test-MSE deviation from `docs/study/results.json`
    determinism   a parameter hash of a short training twice in this process, in two fresh processes, and in
                  one with XLA's deterministic-ops flag (GPU only; conv_original's max-pool gradient included)
    bf16          test MSE after one epoch in bfloat16 against float32, linear d32 and conv_original

Every printed line is `STAGE  WHAT  NUMBER UNIT [note]`; the docs (docs/performance.md) say what each means.
`--tiny` shrinks every size so the whole probe runs in about a minute on a CPU (the tests run it so, in a
process where tensorflow-datasets and tensorboardX cannot be imported).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aejax import cli
from aejax.config import Config
from aejax.configs.study import LINEAR
from aejax.data import load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.evaluation import metrics
from aejax.files import refuse_overwrite, write_json
from aejax.training import step as train
from experiments import benchmark
from experiments import depth_study as study

REPO = Path(__file__).resolve().parent.parent
STAGES = (("environment", 0.02), ("roofline", 0.10), ("correctness", 0.12), ("throughput", 0.28), ("study", 0.24),
          ("determinism", 0.16), ("bf16", 0.08))
FULL = dict(matmul_n=8192, matmul_chain=20, bandwidth_mib=1024, scan_length=100_000, correctness_steps=20,
            batches=(25, 128, 1024), ks=(1, 8, 64, 256), steps=50, study_epochs=5, study_train=None,
            study_depths=(32, 64, 128, 256), hash_train=3000, bf16_train=None)
TINY = dict(matmul_n=256, matmul_chain=4, bandwidth_mib=8, scan_length=2000, correctness_steps=3,
            batches=(25,), ks=(1, 2), steps=4, study_epochs=1, study_train=500, study_depths=(32,),
            hash_train=200, bf16_train=500)
CORRECTNESS_MODELS = {"linear": Config(model="linear", latent_dim=32),
                      "conv_original": Config(model="conv_original", latent_dim=392),
                      "conv_strided": Config(model="conv_strided", latent_dim=32, conv_features=(32, 64),
                                             model_kwargs={"linear": True})}
TOLERANCE = 1e-4  # max |parameter difference| against the CPU at the highest precision


class Deadline:
    """The end of one stage's share of the budget."""

    def __init__(self, at: float):
        self.at = at

    def left(self) -> float:
        return self.at - time.perf_counter()

    def passed(self) -> bool:
        return self.left() <= 0


def say(stage: str, what: str, value: float | str, unit: str = "", note: str = "") -> None:
    if isinstance(value, float):
        number = f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    else:
        number = str(value)
    print(f"{stage:<12} {what:<44} {number} {unit}{'  ' + note if note else ''}".rstrip(), flush=True)


def guarded(stage: str, what: str, errors: list[str], fn: Callable[[], Any]) -> Any | None:
    """`fn()`, or None with its error printed and recorded: one failed measurement (out of memory, a flag the
    backend refuses) must not end the probe."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the probe reports every failure and goes on
        message = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        errors.append(f"{what}: {type(e).__name__}: {message}")
        say(stage, what, "ERROR", "", f"{type(e).__name__}: {message}")
        return None


def timed(fn: Callable[[], Any], reps: int = 3) -> float:
    """The best of `reps` wall times of `fn()` (after one untimed call, which compiles), blocking on its result."""
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def params_hash(tree: Any) -> str:
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:16]


# --- stages ----------------------------------------------------------------------------------------------------

def stage_environment(sizes: dict, images: np.ndarray, deadline: Deadline, context: dict) -> dict:
    report = {"environment": environment()}
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "name,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.draw,temperature.gpu"
        result = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=20)
        report["nvidia_smi"] = result.stdout.strip() or result.stderr.strip()
        say("environment", "nvidia-smi", report["nvidia_smi"])
    env = report["environment"]
    say("environment", "device", f"{env['device_kind']} x{env['device_count']} ({env['backend']})")
    say("environment", "jax / flax / optax", f"{env['versions']['jax']} / {env['versions']['flax']} / "
                                            f"{env['versions']['optax']}")
    return report


def matmul_tflops(n: int, chain: int, dtype: str, precision: str) -> float:
    """TFLOP/s of `chain` dependent n x n products in one compiled call (dispatch outside the timing's share)."""
    a = (jax.random.normal(jax.random.key(0), (n, n)) / np.sqrt(n)).astype(dtype)
    b = (jax.random.normal(jax.random.key(1), (n, n))).astype(dtype)

    @jax.jit
    def products(x):
        with jax.default_matmul_precision(precision):
            return jax.lax.fori_loop(0, chain, lambda i, y: (y @ a).astype(dtype), x)

    return 2 * n ** 3 * chain / timed(lambda: products(b)) / 1e12


def stage_roofline(sizes: dict, images: np.ndarray, deadline: Deadline, context: dict) -> dict:
    report, skipped, errors = {"matmul_tflops": {}}, [], []
    for label, dtype, precision in (("bfloat16", "bfloat16", "default"), ("float32_default", "float32", "default"),
                                    ("float32_highest", "float32", "highest")):
        if deadline.passed():
            skipped.append(f"matmul {label}")
            continue
        what = f"matmul {label} n={sizes['matmul_n']}"
        tflops = guarded("roofline", what, errors, functools.partial(
            matmul_tflops, sizes["matmul_n"], sizes["matmul_chain"], dtype, precision))
        if tflops is not None:
            report["matmul_tflops"][label] = tflops
            say("roofline", what, tflops, "TFLOP/s")
    if not deadline.passed():
        n = sizes["bandwidth_mib"] * (1 << 20) // 4
        x = jnp.ones((n,), jnp.float32)
        reps = 10
        stream = jax.jit(lambda v: jax.lax.fori_loop(0, reps, lambda i, y: y * 1.0001 + 1e-4, v))
        seconds = timed(lambda: stream(x))
        report["bandwidth_gb_per_s"] = 2 * 4 * n * reps / seconds / 1e9
        say("roofline", f"memory bandwidth ({sizes['bandwidth_mib']} MiB, read + write)",
            report["bandwidth_gb_per_s"], "GB/s")
    else:
        skipped.append("bandwidth")
    if not deadline.passed():
        length = sizes["scan_length"]
        scan = jax.jit(lambda c: jax.lax.scan(lambda s, _: (s + 1.0, None), c, None, length=length)[0])
        report["scan_iteration_us"] = timed(lambda: scan(jnp.float32(0))) / length * 1e6
        say("roofline", f"one scan iteration (length {length})", report["scan_iteration_us"], "us")
    else:
        skipped.append("scan iteration")
    return {**report, "skipped": skipped, "errors": errors}


def train_steps(config: Config, images: np.ndarray, steps: int, device: jax.Device) -> tuple[Any, np.ndarray]:
    """`steps` training steps of one seed on `device`: (parameters, losses) on the host."""
    with jax.default_device(device):
        trainer = train.make_trainer(config, steps * config.batch_size)
        program = train.compile_program(trainer)
        init_key, data_key = train.seed_keys(0)
        state = program.init(init_key[None], {})
        data = jax.device_put(images[: steps * config.batch_size], device)
        state, (losses, _) = program.epoch(state, data, data_key[None], {})
        return jax.device_get(state.params), np.asarray(losses)


def max_difference(a: Any, b: Any) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def stage_correctness(sizes: dict, images: np.ndarray, deadline: Deadline, context: dict) -> dict:
    cpu, here = jax.devices("cpu")[0], jax.devices()[0]
    rows, skipped, failed, errors = [], [], [], []
    steps = sizes["correctness_steps"]
    for name, model_config in CORRECTNESS_MODELS.items():
        base = model_config.replace(batch_size=25, epochs=1)
        if deadline.passed():
            skipped.append(name)
            continue
        impls = {} if name == "linear" else {"conv_impl": "ops"}
        reference_config = base.replace(matmul_precision="highest", **impls)
        reference = guarded("correctness", f"{name} CPU reference", errors, functools.partial(
            train_steps, reference_config, images, steps, cpu))
        if reference is None:
            continue
        reference = reference[0]
        for impl in (("ops", "xla") if name != "linear" else ("auto",)):
            for precision in ("highest", "default"):
                if deadline.passed():
                    skipped.append(f"{name} {impl} {precision}")
                    continue
                trained = guarded("correctness", f"{name} {impl} {precision}", errors, functools.partial(
                    train_steps, base.replace(conv_impl=impl, matmul_precision=precision), images, steps, here))
                if trained is None:
                    continue
                params, losses = trained
                difference = max_difference(params, reference)
                ok = difference <= TOLERANCE or precision != "highest"
                rows.append({"model": name, "conv_impl": impl, "precision": precision, "steps": steps,
                             "max_param_difference": difference, "final_loss": float(losses[0, -1]),
                             "passed": ok})
                if not ok:
                    failed.append(f"{name} {impl} {precision}")
                say("correctness", f"{name} {impl} {precision} vs CPU fp32", difference, "max |dparam|",
                    "" if precision != "highest" else ("ok" if ok else f"FAILS (> {TOLERANCE:g})"))
    return {"rows": rows, "tolerance": TOLERANCE, "failed": failed, "skipped": skipped, "errors": errors}


def time_epoch(config: Config, data: jax.Array, steps: int, k: int) -> float:
    """Seconds of one compiled epoch of `steps` steps for `k` vmapped seeds (best of two, after compiling)."""
    trainer = train.make_trainer(config, steps * config.batch_size)
    program = train.compile_program(trainer)
    keys = [train.seed_keys(s) for s in range(k)]
    box = [program.init(jnp.stack([a for a, _ in keys]), {})]
    data_keys = jnp.stack([b for _, b in keys])

    def epoch() -> jax.Array:
        box[0], (losses, _) = program.epoch(box[0], data, data_keys, {})
        return losses

    return timed(epoch, reps=2)


def stage_throughput(sizes: dict, images: np.ndarray, deadline: Deadline, context: dict) -> dict:
    peak_tflops = context["peak_tflops"]
    rows, skipped, errors = [], [], []
    workloads = [("linear_d32", Config(model="linear", latent_dim=32), "auto"),
                 ("conv_original_ops", Config(model="conv_original", latent_dim=392), "ops"),
                 ("conv_original_xla", Config(model="conv_original", latent_dim=392), "xla")]
    for label, base, impl in workloads:
        for batch in sizes["batches"]:
            config = base.replace(batch_size=batch, conv_impl=impl, epochs=1)
            flops = benchmark.flops_per_image(config)
            steps = min(sizes["steps"], len(images) // batch)
            data = jax.device_put(images[: steps * batch])
            for k in sizes["ks"]:
                if deadline.passed():
                    skipped.append(f"{label} b{batch} K{k}")
                    continue
                seconds = guarded("throughput", f"{label} b{batch} K={k}", errors,
                                  functools.partial(time_epoch, config, data, steps, k))
                if seconds is None:
                    continue
                ips = k * steps * batch / seconds
                row = {"workload": label, "batch_size": batch, "k": k, "steps": steps,
                       "us_per_step": seconds / steps * 1e6, "images_per_second": ips,
                       "gflops": ips * flops / 1e9, "flops_per_image": flops,
                       "fraction_of_peak": ips * flops / 1e12 / peak_tflops if peak_tflops else None}
                rows.append(row)
                share = f"{row['fraction_of_peak']:.1%} of peak" if peak_tflops else ""
                say("throughput", f"{label} b{batch} K={k}", ips, "img/s",
                    f"{row['us_per_step']:.0f} us/step {share}")
    return {"rows": rows, "skipped": skipped, "errors": errors, "peak": "float32_default matmul"}


def stage_study(sizes: dict, images: np.ndarray, deadline: Deadline, context: dict) -> dict:
    data_dir = context["data_dir"]
    compile_seconds = [0.0]

    def listener(event: str, duration: float, **_: Any) -> None:
        if "backend_compile" in event:
            compile_seconds[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    published = {(r["variant"], r["latent_dim"], r["seed"]): r["test_mse"]
                 for r in json.loads((REPO / "docs" / "study" / "results.json").read_text())}
    rows, skipped, errors = [], [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for depth in sizes["study_depths"]:  # one depth at a time, so the stage stops between depths
            if deadline.passed():
                skipped.append(f"d{depth}")
                continue
            rows += guarded("study", f"linear arms d{depth}", errors, functools.partial(
                study.run_study, LINEAR, Path(tmp) / f"d{depth}", depths=(depth,), seeds=(0, 1, 2),
                epochs=sizes["study_epochs"], train_examples=sizes["study_train"], data_dir=data_dir,
                log=lambda line: None)) or []
    wall = time.perf_counter() - t0
    deviations = {f"{r['variant']}_d{r['latent_dim']}_s{r['seed']}":
                  r["test_mse"] - published[r["variant"], r["latent_dim"], r["seed"]]
                  for r in rows if (r["variant"], r["latent_dim"], r["seed"]) in published}
    worst = max((abs(v) for v in deviations.values()), default=None)
    depths = len(sizes["study_depths"]) - len(skipped)
    say("study", f"{len(LINEAR)} linear arms x {depths} depths x 3 seeds, wall", wall, "s")
    say("study", "of which XLA compilation", compile_seconds[0], "s")
    if worst is not None:
        say("study", "max |test MSE - docs/study|", worst, "", "" if sizes is FULL else "(tiny: not comparable)")
    return {"wall_seconds": wall, "compile_seconds": compile_seconds[0], "rows": len(rows), "skipped": skipped,
            "errors": errors,
            "test_mse_deviation": deviations, "max_abs_deviation": worst, "epochs": sizes["study_epochs"],
            "train_examples": sizes["study_train"], "depths": list(sizes["study_depths"])}


HASH_SCRIPT = """
import sys
from experiments import gpu_probe
print(gpu_probe.training_hash(sys.argv[1], int(sys.argv[2]), sys.argv[3] or None))
"""


def training_hash(model: str, n_train: int, data_dir: str | None) -> str:
    """The parameter hash of one short, seeded training of `model` on the first `n_train` images."""
    images = load_mnist("train", data_dir=data_dir, examples=n_train).images
    config = CORRECTNESS_MODELS[model].replace(batch_size=25, epochs=1)
    params, _ = train_steps(config, images, n_train // 25, jax.devices()[0])
    return params_hash(params)


def stage_determinism(sizes: dict, images: np.ndarray, deadline: Deadline, context: dict) -> dict:
    data_dir = context["data_dir"]
    rows, skipped = [], []
    gpu = jax.default_backend() == "gpu"
    for model in ("linear", "conv_original"):
        if deadline.passed():
            skipped.append(model)
            continue
        n = sizes["hash_train"]
        here = [training_hash(model, n, data_dir), training_hash(model, n, data_dir)]
        row = {"model": model, "train_examples": n, "in_process": here}
        variants = [("processes", {}), ("processes", {})]
        if gpu:
            variants.append(("deterministic_ops", {"XLA_FLAGS": "--xla_gpu_deterministic_ops=true"}))
        for name, extra in variants:
            if deadline.left() < 5:
                skipped.append(f"{model} {name}")
                continue
            path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
            env = {**os.environ, **extra, "PYTHONPATH": path}
            try:
                result = subprocess.run([sys.executable, "-c", HASH_SCRIPT, model, str(n), data_dir or ""],
                                        cwd=REPO, env=env, capture_output=True, text=True,
                                        timeout=max(5, deadline.left()))
            except subprocess.TimeoutExpired:  # the stage's share ran out while it ran
                skipped.append(f"{model} {name} (stopped at the end of the stage's share)")
                continue
            value = (result.stdout.strip().splitlines() or ["?"])[-1] if result.returncode == 0 else (
                "error: " + (result.stderr.strip().splitlines() or ["?"])[-1][:200])
            row.setdefault(name, []).append(value)
        hashes = here + [h for h in row.get("processes", []) if not h.startswith("error")]
        row["identical"] = len(set(hashes)) == 1
        rows.append(row)
        say("determinism", f"{model}: {len(hashes)} trainings", "identical" if row["identical"] else "DIFFER",
            "", " ".join(hashes))
        if "deterministic_ops" in row:
            say("determinism", f"{model}: with --xla_gpu_deterministic_ops", row["deterministic_ops"][0])
    return {"rows": rows, "skipped": skipped}


def stage_bf16(sizes: dict, images: np.ndarray, deadline: Deadline, context: dict) -> dict:
    data_dir = context["data_dir"]
    test = load_mnist("test", data_dir=data_dir).images
    rows, skipped = [], []
    n = sizes["bf16_train"] or len(images)
    for model in ("linear", "conv_original"):
        for dtype in ("float32", "bfloat16"):
            if deadline.passed():
                skipped.append(f"{model} {dtype}")
                continue
            config = CORRECTNESS_MODELS[model].replace(batch_size=25, epochs=1, dtype=dtype)
            params, _ = train_steps(config, images[:n], n // 25, jax.devices()[0])
            trainer = train.make_trainer(config, n)
            totals = train.evaluate(trainer, False, {"params": train.unstack(params, 0)}, jax.device_put(test))
            mse = metrics.finalize(totals)["mse"]
            rows.append({"model": model, "dtype": dtype, "train_examples": n, "test_mse": mse})
            say("bf16", f"{model} {dtype} 1 epoch", mse, "test MSE")
    return {"rows": rows, "skipped": skipped}


# --- the probe ---------------------------------------------------------------------------------------------

STAGE_FUNCTIONS = {"environment": stage_environment, "roofline": stage_roofline, "correctness": stage_correctness,
                   "throughput": stage_throughput, "study": stage_study, "determinism": stage_determinism,
                   "bf16": stage_bf16}  # each (sizes, train images, deadline, context) -> its JSON section

def probe(budget: float, out: Path, sizes: dict, data_dir: str | None) -> dict:
    """Run the stages within `budget` seconds, rewriting `out` after each."""
    start = time.perf_counter()
    report: dict[str, Any] = {"budget_seconds": budget, "tiny": sizes is TINY, "sizes": dict(sizes), "stages": {}}
    images = load_mnist("train", data_dir=data_dir).images
    share_end = 0.0
    minimum = {"environment": 0, "roofline": 3, "correctness": 5, "throughput": 5, "study": 10, "determinism": 10,
               "bf16": 5}
    for name, share in STAGES:
        share_end += share
        deadline = Deadline(start + budget * share_end)
        t0 = time.perf_counter()
        if name != "environment" and deadline.left() < (minimum[name] if sizes is FULL else 0.5):
            report["stages"][name] = {"skipped": "its share of the budget was spent"}
            say(name, "skipped", "its share of the budget was spent")
        else:
            context = {"data_dir": data_dir, "peak_tflops": report["stages"].get("roofline", {}).get(
                "matmul_tflops", {}).get("float32_default")}
            run = functools.partial(STAGE_FUNCTIONS[name], sizes, images, deadline, context)
            errors: list[str] = []
            result = guarded(name, "the stage", errors, run)
            report["stages"][name] = {**(result or {"errors": errors}), "seconds": time.perf_counter() - t0}
        report["elapsed_seconds"] = time.perf_counter() - start
        write_json(out, report)
    failed = report["stages"].get("correctness", {}).get("failed", [])
    say("probe", "done in", report["elapsed_seconds"], "s", f"correctness failures: {', '.join(failed) or 'none'}")
    return report


def main(argv: list[str] | None = None) -> None:
    p = cli.ArgumentParser(prog="python -m experiments.gpu_probe", description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=420.0, help="seconds for the whole probe (default 420)")
    p.add_argument("--out", required=True, help="the JSON file to write, e.g. benchmarks/h200_probe.json")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: the whole probe in about a minute on a CPU")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file if it exists")
    args = p.parse_args(argv)

    def body() -> None:
        if not args.budget > 0:
            raise AejaxError(f"--budget must be a positive number of seconds, got {args.budget}")
        refuse_overwrite([args.out], args.overwrite)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        probe(args.budget, out, TINY if args.tiny else FULL, args.data_dir)

    cli.cli(body)


if __name__ == "__main__":
    main()
