"""The first-accelerator probe: what aejax needs to know about a device, within a fixed time budget.

    python -m experiments.gpu_probe --budget 420 --out benchmarks/<device>_probe.json

Seven stages run in order, each with its own share of `--budget` (plus whatever earlier stages left unused).
Every measurement is sized for the device: each stage times a small version of its work first (the calibration)
and then takes, from each measurement's ladder of sizes, the largest whose predicted time fits what is left of
its share; a measurement predicted not to fit is skipped (listed under `skipped`). Every stage makes at least its
first, smallest measurement, so the probe ends near its budget on a slow CPU as on a GPU. The JSON is rewritten
after every stage, so a probe killed mid-way still leaves the stages it finished.

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
`--tiny` takes the smallest size of every ladder (the tests run it so, in a process where tensorflow-datasets and
tensorboardX cannot be imported).
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
from aejax.configs.study import DEPTHS, LINEAR
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
# Each measurement's ladder of sizes, smallest first: a stage takes the largest that its share's time left holds.
# The study's sizes are (linear arms, depths, epochs, training images; None: all 60,000), the last the study's own.
FULL = dict(matmul_n=(256, 512, 1024, 2048, 4096, 8192), matmul_chain=20, bandwidth_mib=(8, 32, 128, 512, 1024),
            scan_length=(2000, 10_000, 100_000), correctness_steps=(3, 20), batches=(25, 128, 1024),
            ks=(1, 8, 64, 256), steps=(4, 50),
            study=((1, 1, 1, 500), (3, 1, 1, 500), (3, 4, 1, 2000), (3, 4, 1, 10_000), (3, 4, 5, None)),
            hash_train=(200, 3000), bf16_train=(500, 5000, None))
TINY = {name: (ladder[:1] if name not in ("batches", "ks") else ladder[:2 if name == "ks" else 1])
        if isinstance(ladder, tuple) else 4 for name, ladder in FULL.items()}
CORRECTNESS_MODELS = {"linear": Config(model="linear", latent_dim=32),
                      "conv_original": Config(model="conv_original", latent_dim=392),
                      "conv_strided": Config(model="conv_strided", latent_dim=32, conv_features=(32, 64),
                                             model_kwargs={"linear": True})}
TOLERANCE = 1e-4  # max |parameter difference| against the CPU at the highest precision


class Deadline:
    """The end of one stage's share of the budget, and what the stage has measured so far."""

    def __init__(self, at: float):
        self.at = at
        self.measured = 0

    def left(self) -> float:
        return self.at - time.perf_counter()

    def allows(self, predicted: float) -> bool:
        """Whether a measurement predicted to take `predicted` seconds fits what is left; the stage's first
        measurement always runs (so every stage reports something), and each one allowed is counted."""
        if self.measured and predicted > self.left():
            return False
        self.measured += 1
        return True


def largest_fitting(ladder: tuple, cost: Callable[[Any], float], seconds: float) -> Any:
    """The largest size of `ladder` (smallest first) whose predicted `cost` fits `seconds`, else the smallest."""
    fitting = [size for size in ladder if cost(size) <= seconds]
    return fitting[-1] if fitting else ladder[0]


def timed_call(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(`fn()`, its wall seconds)."""
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


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
    """Each measurement is calibrated at its smallest size first; the size it is then made at is the largest of
    its ladder whose five calls (compile, warm-up, three timed) fit an even part of the share's time left."""
    report, skipped, errors = {"matmul_tflops": {}}, [], []
    kinds = (("bfloat16", "bfloat16", "default"), ("float32_default", "float32", "default"),
             ("float32_highest", "float32", "highest"))
    chain, smallest = sizes["matmul_chain"], sizes["matmul_n"][0]
    for i, (label, dtype, precision) in enumerate(kinds):
        rate, seconds = timed_call(functools.partial(matmul_tflops, smallest, 2, dtype, precision))  # calibration
        n = largest_fitting(sizes["matmul_n"], lambda m, r=rate, s=seconds: s + 5 * 2 * m ** 3 * chain / (r * 1e12),
                            deadline.left() / (len(kinds) + 2 - i))
        if not deadline.allows(5 * 2 * n ** 3 * chain / (rate * 1e12)):
            skipped.append(f"matmul {label}")
            continue
        what = f"matmul {label} n={n}"
        tflops = guarded("roofline", what, errors, functools.partial(matmul_tflops, n, chain, dtype, precision))
        if tflops is not None:
            report["matmul_tflops"][label] = tflops
            say("roofline", what, tflops, "TFLOP/s")

    reps = 10
    stream = jax.jit(lambda v: jax.lax.fori_loop(0, reps, lambda i, y: y * 1.0001 + 1e-4, v))

    def bandwidth(mib: int) -> float:  # GB/s read + written
        x = jnp.ones((mib * (1 << 20) // 4,), jnp.float32)
        return 2 * 4 * x.size * reps / timed(lambda: stream(x)) / 1e9

    rate = bandwidth(sizes["bandwidth_mib"][min(1, len(sizes["bandwidth_mib"]) - 1)])  # beyond the caches
    mib = largest_fitting(sizes["bandwidth_mib"], lambda m: 5 * 2 * m * (1 << 20) * reps / (rate * 1e9),
                          deadline.left() / 2)
    if deadline.allows(5 * 2 * mib * (1 << 20) * reps / (rate * 1e9)):
        report["bandwidth_gb_per_s"] = bandwidth(mib)
        say("roofline", f"memory bandwidth ({mib} MiB, read + write)", report["bandwidth_gb_per_s"], "GB/s")
    else:
        skipped.append("bandwidth")

    def scan_us(length: int) -> float:
        scan = jax.jit(lambda c: jax.lax.scan(lambda s, _: (s + 1.0, None), c, None, length=length)[0])
        return timed(lambda: scan(jnp.float32(0))) / length * 1e6

    per_iteration = scan_us(sizes["scan_length"][0]) / 1e6
    length = largest_fitting(sizes["scan_length"], lambda n: 5 * n * per_iteration, deadline.left())
    if deadline.allows(5 * length * per_iteration):
        report["scan_iteration_us"] = scan_us(length)
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
    """Compilation dominates each measurement: the first one (linear's CPU reference at the fewest steps) is the
    calibration, each later one is predicted to take as long as the last one of its model (a model's first,
    three times the calibration), and the steps are the ladder's most when all thirteen would fit twice over."""
    cpu, here = jax.devices("cpu")[0], jax.devices()[0]
    rows, skipped, failed, errors = [], [], [], []
    steps = sizes["correctness_steps"][0]
    _, calibration = timed_call(lambda: train_steps(CORRECTNESS_MODELS["linear"].replace(batch_size=25, epochs=1),
                                                    images, steps, cpu))
    if deadline.left() > 2 * 13 * calibration * 3:
        steps = sizes["correctness_steps"][-1]
    for name, model_config in CORRECTNESS_MODELS.items():
        base = model_config.replace(batch_size=25, epochs=1)
        predicted = calibration * (1 if name == "linear" else 3)
        if not deadline.allows(predicted):
            skipped.append(name)
            continue
        impls = {} if name == "linear" else {"conv_impl": "ops"}
        reference_config = base.replace(matmul_precision="highest", **impls)
        reference, predicted = timed_call(functools.partial(
            guarded, "correctness", f"{name} CPU reference", errors,
            functools.partial(train_steps, reference_config, images, steps, cpu)))
        if reference is None:
            continue
        reference = reference[0]
        for impl in (("ops", "xla") if name != "linear" else ("auto",)):
            for precision in ("highest", "default"):
                if not deadline.allows(predicted):
                    skipped.append(f"{name} {impl} {precision}")
                    continue
                config = base.replace(conv_impl=impl, matmul_precision=precision)
                trained, predicted = timed_call(functools.partial(
                    guarded, "correctness", f"{name} {impl} {precision}", errors,
                    functools.partial(train_steps, config, images, steps, here)))
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
    """A measurement's wall time is predicted as its workload's last compile time plus three epochs at its last
    measured seconds per image and seed (before a workload's first, the previous workload's); its steps are the
    most of the ladder that fit an even part of the share's time left."""
    peak_tflops = context["peak_tflops"]
    rows, skipped, errors = [], [], []
    workloads = [("linear_d32", Config(model="linear", latent_dim=32), "auto"),
                 ("conv_original_ops", Config(model="conv_original", latent_dim=392), "ops"),
                 ("conv_original_xla", Config(model="conv_original", latent_dim=392), "xla")]
    cases = [(label, base, impl, batch, k) for label, base, impl in workloads for batch in sizes["batches"]
             for k in sizes["ks"]]
    per_image: dict[str, float] = {}  # workload -> seconds per image and seed in a compiled epoch
    compile_seconds: dict[str, float] = {}  # workload -> wall time outside its timed epochs

    def predict(label: str, batch: int, k: int, steps: int) -> float:  # seconds
        rate = per_image.get(label, max(per_image.values(), default=1e-5))
        return compile_seconds.get(label, max(compile_seconds.values(), default=2.0)) + 3 * steps * batch * k * rate

    for i, (label, base, impl, batch, k) in enumerate(cases):
        steps = largest_fitting(sizes["steps"], functools.partial(predict, label, batch, k),
                                deadline.left() / (len(cases) - i))
        steps = min(steps, len(images) // batch)
        if not deadline.allows(predict(label, batch, k, steps)):
            skipped.append(f"{label} b{batch} K{k}")
            continue
        config = base.replace(batch_size=batch, conv_impl=impl, epochs=1)
        data = jax.device_put(images[: steps * batch])
        t0 = time.perf_counter()
        seconds = guarded("throughput", f"{label} b{batch} K={k}", errors,
                          functools.partial(time_epoch, config, data, steps, k))
        if seconds is None:
            continue
        flops = benchmark.flops_per_image(config)
        per_image[label] = seconds / (steps * batch * k)
        compile_seconds[label] = max(0.0, time.perf_counter() - t0 - 3 * seconds)
        ips = k * steps * batch / seconds
        row = {"workload": label, "batch_size": batch, "k": k, "steps": steps,
               "us_per_step": seconds / steps * 1e6, "images_per_second": ips,
               "gflops": ips * flops / 1e9, "flops_per_image": flops,
               "fraction_of_peak": ips * flops / 1e12 / peak_tflops if peak_tflops else None}
        rows.append(row)
        share = f"{row['fraction_of_peak']:.1%} of peak" if peak_tflops else ""
        say("throughput", f"{label} b{batch} K={k}", ips, "img/s", f"{row['us_per_step']:.0f} us/step {share}")
    return {"rows": rows, "skipped": skipped, "errors": errors, "peak": "float32_default matmul"}


def stage_study(sizes: dict, images: np.ndarray, deadline: Deadline, context: dict) -> dict:
    """The smallest study first (its wall time is the fixed cost of one arm at one depth); then the largest size of
    the ladder predicted to fit what is left (that fixed cost per arm and depth, plus every image of every epoch
    and seed at twice the linear d32 model's measured seconds per image), whose rows are the ones reported. Only
    the whole study (the ladder's last size) is comparable with docs/study."""
    data_dir = context["data_dir"]
    compile_seconds = [0.0]

    def listener(event: str, duration: float, **_: Any) -> None:
        if "backend_compile" in event:
            compile_seconds[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    published = {(r["variant"], r["latent_dim"], r["seed"]): r["test_mse"]
                 for r in json.loads((REPO / "docs" / "study" / "results.json").read_text())}
    errors: list[str] = []
    per_image = 2 * (context.get("linear_seconds_per_image") or 1e-5)

    def run(size: tuple) -> tuple[list[dict], float, float]:
        arms, depths, epochs, train = size
        t0, compiled = time.perf_counter(), compile_seconds[0]
        with tempfile.TemporaryDirectory() as tmp:
            rows = guarded("study", f"{arms} linear arms x {depths} depths", errors, functools.partial(
                study.run_study, LINEAR[:arms], Path(tmp), depths=DEPTHS[:depths], seeds=(0, 1, 2), epochs=epochs,
                train_examples=train, data_dir=data_dir, log=lambda line: None)) or []
        return rows, time.perf_counter() - t0, compile_seconds[0] - compiled

    ladder = sizes["study"]
    deadline.allows(0.0)
    rows, wall, compiled = run(ladder[0])
    size, fixed = ladder[0], wall

    def predict(s: tuple) -> float:
        arms, depths, epochs, train = s
        return arms * depths * (fixed + 3 * epochs * (train or len(images)) * per_image)

    larger = largest_fitting(ladder, predict, deadline.left())
    if larger != ladder[0] and deadline.allows(predict(larger)):
        rows, wall, compiled = run(larger)
        size = larger
    skipped = [str(list(s)) for s in ladder if s != size and predict(s) > predict(size)]
    deviations = {f"{r['variant']}_d{r['latent_dim']}_s{r['seed']}":
                  r["test_mse"] - published[r["variant"], r["latent_dim"], r["seed"]]
                  for r in rows if (r["variant"], r["latent_dim"], r["seed"]) in published}
    worst = max((abs(v) for v in deviations.values()), default=None)
    arms, depths, epochs, train = size
    comparable = size == FULL["study"][-1]
    say("study", f"{arms} linear arms x {depths} depths x 3 seeds, wall", wall, "s",
        f"{epochs} epochs, {train or len(images)} images")
    say("study", "of which XLA compilation", compiled, "s")
    if worst is not None:
        say("study", "max |test MSE - docs/study|", worst, "", "" if comparable else "(not the whole study)")
    return {"wall_seconds": wall, "compile_seconds": compiled, "rows": len(rows), "skipped": skipped,
            "errors": errors, "test_mse_deviation": deviations, "max_abs_deviation": worst,
            "comparable_with_docs_study": comparable, "arms": arms, "epochs": epochs, "train_examples": train,
            "depths": list(DEPTHS[:depths])}


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
    """The first training of each model, at the fewest images, is its calibration; the images are the ladder's most
    when the model's remaining trainings (one more here, two or three in fresh processes, each predicted to take as
    long plus the first process's start-up) fit twice over. A fresh process is predicted to take as long as the
    last one did (before the first: the training plus 5 s of start-up)."""
    data_dir = context["data_dir"]
    rows, skipped = [], []
    gpu = jax.default_backend() == "gpu"
    start_up = 5.0
    for model in ("linear", "conv_original"):
        n = sizes["hash_train"][0]
        first, seconds = timed_call(lambda m=model, n=n: training_hash(m, n, data_dir)) if deadline.allows(
            3 * start_up) else (None, 0.0)
        if first is None:
            skipped.append(model)
            continue
        larger = sizes["hash_train"][-1]
        here = [first]
        if larger != n and deadline.left() > 2 * 4 * (seconds * larger / n + start_up):
            n = larger
            here = [training_hash(model, n, data_dir)]
        here.append(training_hash(model, n, data_dir))
        row = {"model": model, "train_examples": n, "in_process": here}
        variants = [("processes", {}), ("processes", {})]
        if gpu:
            variants.append(("deterministic_ops", {"XLA_FLAGS": "--xla_gpu_deterministic_ops=true"}))
        predicted = seconds * (n / sizes["hash_train"][0]) + start_up
        for name, extra in variants:
            if not deadline.allows(predicted):
                skipped.append(f"{model} {name}")
                continue
            path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
            env = {**os.environ, **extra, "PYTHONPATH": path}
            t0 = time.perf_counter()
            try:
                result = subprocess.run([sys.executable, "-c", HASH_SCRIPT, model, str(n), data_dir or ""],
                                        cwd=REPO, env=env, capture_output=True, text=True,
                                        timeout=max(30, 2 * predicted))
            except subprocess.TimeoutExpired:
                skipped.append(f"{model} {name} (took over twice its predicted {predicted:.0f} s)")
                continue
            predicted = time.perf_counter() - t0
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
    """Four trainings on the ladder's most images whose four trainings are predicted to fit (2 s of compilation and
    ten times the linear model's measured seconds per image, each); each is then allowed if it is predicted to take
    as long as the last one did."""
    data_dir = context["data_dir"]
    test = jax.device_put(load_mnist("test", data_dir=data_dir).images)
    rows, skipped = [], []
    per_image = context.get("linear_seconds_per_image") or 1e-5
    predicted = 0.0
    n = largest_fitting(sizes["bf16_train"], lambda m: 4 * (2.0 + 10 * (m or len(images)) * per_image),
                        deadline.left()) or len(images)
    for model in ("linear", "conv_original"):
        for dtype in ("float32", "bfloat16"):
            if not deadline.allows(predicted):
                skipped.append(f"{model} {dtype}")
                continue
            config = CORRECTNESS_MODELS[model].replace(batch_size=25, epochs=1, dtype=dtype)
            t0 = time.perf_counter()
            params, _ = train_steps(config, images[:n], n // 25, jax.devices()[0])
            trainer = train.make_trainer(config, n)
            totals = train.evaluate(trainer, False, {"params": train.unstack(params, 0)}, test)
            mse = metrics.finalize(totals)["mse"]
            predicted = time.perf_counter() - t0
            rows.append({"model": model, "dtype": dtype, "train_examples": n, "test_mse": mse})
            say("bf16", f"{model} {dtype} 1 epoch", mse, "test MSE", f"{n} images")
    return {"rows": rows, "skipped": skipped}


# --- the probe ---------------------------------------------------------------------------------------------

STAGE_FUNCTIONS = {"environment": stage_environment, "roofline": stage_roofline, "correctness": stage_correctness,
                   "throughput": stage_throughput, "study": stage_study, "determinism": stage_determinism,
                   "bf16": stage_bf16}  # each (sizes, train images, deadline, context) -> its JSON section

def stage_context(report: dict, data_dir: str | None) -> dict:
    """What a stage learns from earlier ones: the measured matmul peak and the linear model's seconds per image."""
    linear = [r for r in report["stages"].get("throughput", {}).get("rows", [])
              if r["workload"] == "linear_d32" and r["k"] == 1]
    return {"data_dir": data_dir,
            "linear_seconds_per_image": 1 / linear[0]["images_per_second"] if linear else None,
            "peak_tflops": report["stages"].get("roofline", {}).get("matmul_tflops", {}).get("float32_default")}


def probe(budget: float, out: Path, sizes: dict, data_dir: str | None) -> dict:
    """Run the stages within `budget` seconds, rewriting `out` after each."""
    start = time.perf_counter()
    report: dict[str, Any] = {"budget_seconds": budget, "tiny": sizes is TINY, "sizes": dict(sizes), "stages": {}}
    images = load_mnist("train", data_dir=data_dir).images
    share_end = 0.0
    for name, share in STAGES:
        share_end += share
        deadline = Deadline(start + budget * share_end)
        t0 = time.perf_counter()
        run = functools.partial(STAGE_FUNCTIONS[name], sizes, images, deadline, stage_context(report, data_dir))
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
    p.add_argument("--out", required=True, help="the JSON file to write, e.g. benchmarks/<device>_probe.json")
    p.add_argument("--tiny", action="store_true",
                   help="the smallest size of every measurement (a quick check of the probe itself)")
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
