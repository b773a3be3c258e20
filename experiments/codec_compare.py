"""The learned codec against PNG, JPEG, WebP and CompressAI on the same test images, rate = actual bytes.

    python3 -m venv .venv-compressai && .venv-compressai/bin/pip install compressai
    python -m experiments.codec_compare --out docs/codec --compressai-python .venv-compressai/bin/python

For each dataset (every training and test image of MNIST and photo_patches), with seed 0:
- aejax's `rd_factorized` and `rd_hyperprior` (`aejax.rd_models`) trained through `aejax.run` with a sweep of
  `lmbda` (all rate points in one vmapped program), then every test image coded to a file with `aejax.codec`,
  decoded, and checked bit for bit against the model's quantised reconstruction; rate = file bytes, and the
  payload = file minus the 19-byte header; the model's own estimate (its entropy model's -log2 likelihood of
  the quantised codes) beside them;
- CompressAI's `bmshj2018-factorized` architecture (`FactorizedPrior(N, M)`, the same N and M, batch, epochs,
  learning rate and training images; `experiments/compressai_peer.py`, in CompressAI's own environment), its
  rate the bytes of its `compress()` strings (payload only: it writes no header);
- PNG (lossless), JPEG (Pillow, optimised tables) and WebP (Pillow, lossy, method 6) at qualities 5-95, their
  rate the file, and the payload = file minus an all-black image's file at the same quality;
- the entropy estimate of the earlier compression study: an MSE-trained `conv_strided` autoencoder (code 32,
  same epochs) whose codes are uniformly quantised, the rate estimated by the codes' empirical entropy.

Distortion: PSNR of the mean MSE over the test images and mean SSIM (`aejax.metrics`). Writes `codec.json`
(every point, the bits per image each codec needs at 20, 25 and 30 dB, BD-rates, training speeds), `table.md`
and `codec.png` (bits per image against PSNR and SSIM).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

import aejax
from aejax import cli, compression, datasets, metrics
from aejax import train as training
from aejax.codec import Codec, payload_bits
from aejax.data import load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.files import make_output_dir, refuse_overwrite, write_atomic, write_json

QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
RELATIVE_STEPS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
TARGETS_DB = (20.0, 25.0, 30.0)
SETTINGS = {  # dataset -> what is trained and coded
    "mnist": {"train": None, "test": None, "epochs": 3, "lmbdas": (0.0003, 0.001, 0.003, 0.01, 0.1)},
    "photo_patches": {"train": None, "test": None, "epochs": 30, "lmbdas": (0.0003, 0.001, 0.003, 0.01, 0.1)},
}
CHANNELS, LATENT, BATCH, LR = 32, 32, 32, 2e-3
SPEED_IMAGES, SPEED_REPEATS = 4000, 3


def load(dataset: str, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    if dataset == "mnist":
        return (load_mnist("train", examples=settings["train"]).images,
                load_mnist("test", examples=settings["test"]).images)
    source = datasets.source(dataset, None, None)
    return np.asarray(source.rows(range(source.n_train))), np.asarray(source.test)


def rd_config(model: str, dataset: str, epochs: int) -> aejax.Config:
    return aejax.Config(model=model, dataset=dataset, latent_dim=LATENT, epochs=epochs, batch_size=BATCH, lr=LR,
                        model_kwargs={"channels": CHANNELS})


def last_speed(run_dir: Path) -> float:
    """Images per second (summed over the run's models) of the run's last epoch, which compiles nothing."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["images_per_second"])


def aejax_curves(model: str, dataset: str, train: np.ndarray, test: np.ndarray, settings: dict,
                 runs: Path) -> tuple[list[dict], dict]:
    run_dir = runs / f"{dataset}_{model}"
    lmbdas = list(settings["lmbdas"])
    start = time.perf_counter()
    aejax.run(rd_config(model, dataset, settings["epochs"]), run_dir, sweep={"lmbda": lmbdas}, data=(train, test),
              overwrite=True, log=lambda *_: None)
    seconds = time.perf_counter() - start
    points = []
    for i, lmbda in enumerate(lmbdas):
        codec = Codec.from_run(run_dir, member=i)
        files = codec.encode(test)
        decoded = codec.decode(files)
        exact = bool(np.array_equal(decoded, codec.reconstruct(test)))
        if not exact:
            raise AejaxError(f"{model} lmbda {lmbda}: decoded images differ from the model's reconstruction")
        x = np.asarray(test, np.float32) / 255.0
        estimate = np.concatenate([np.asarray(codec.model.apply(codec.variables, x[j:j + 500], method="rd_terms")[1])
                                   for j in range(0, len(x), 500)])
        points.append({"lmbda": lmbda, "bits_per_image": float(np.mean([8 * len(f) for f in files])),
                       "payload_bits_per_image": float(np.mean([payload_bits(f) for f in files])),
                       "estimated_bits_per_image": float(estimate.mean()), "decoded_exactly": exact,
                       **metrics.score(test, decoded)})
    speed = {"models": len(lmbdas), "images_per_second_all_models": last_speed(run_dir),
             "run_seconds_with_compilation_and_coding_excluded": seconds}
    return points, speed


def single_model_speed(dataset: str, images: np.ndarray) -> float:
    """rd_factorized training images per second, one model: the second epoch over `images` (the first
    compiles), timed to its end on the device."""
    trainer = training.make_trainer(rd_config("rd_factorized", dataset, 2), len(images))
    program = training.compile_program(trainer)
    images = jax.device_put(images)
    keys = lambda i: jax.random.split(jax.random.key(i), 1)  # noqa: E731 - one model
    state = program.init(keys(0), {})
    state, _ = jax.block_until_ready(program.epoch(state, images, keys(1), {}))
    start = time.perf_counter()
    jax.block_until_ready(program.epoch(state, images, keys(2), {}))
    return (len(images) // BATCH * BATCH) / (time.perf_counter() - start)


def conv_entropy_curve(dataset: str, train: np.ndarray, test: np.ndarray, epochs: int, runs: Path) -> list[dict]:
    run_dir = runs / f"{dataset}_conv_strided"
    result = aejax.run(aejax.Config(model="conv_strided", dataset=dataset, latent_dim=32, epochs=epochs,
                                    batch_size=BATCH), run_dir, data=(train, test), overwrite=True,
                       log=lambda *_: None)
    model, variables = result.model, result.variables[0]
    codes = np.asarray(aejax.encode(model, variables, test))
    points = compression.code_curve(codes, lambda z: np.asarray(aejax.decode(model, variables, z)), test,
                                    RELATIVE_STEPS)
    return [{**p, "payload_bits_per_image": p["bits_per_image"]} for p in points]  # an estimate: no file


def classic_curves(test: np.ndarray) -> dict[str, list[dict]]:
    shape = tuple(test.shape[1:])
    png = compression.png_bits(test)
    curves = {"png (lossless)": [{"bits_per_image": float(png.mean()),
                                  "payload_bits_per_image": float(png.mean()) - compression.blank_bits("png", None,
                                                                                                       shape),
                                  "mse": 0.0, "psnr_db": None, "ssim": 1.0}]}
    for name, fn in (("jpeg", compression.jpeg), ("webp", compression.webp)):
        curves[name] = []
        for q in QUALITIES:
            bits, decoded = fn(test, q)
            curves[name].append({"quality": q, "bits_per_image": float(bits.mean()),
                                 "payload_bits_per_image": float(bits.mean()) - compression.blank_bits(name, q, shape),
                                 **metrics.score(test, decoded.astype(np.float32) / 255.0)})
    return curves


def run_peer(python: str, train: np.ndarray, test: np.ndarray, lmbdas, epochs: int, work: Path,
             model: str) -> tuple[dict, dict]:
    """Run `compressai_peer.py` in CompressAI's environment: (its npz arrays, its info)."""
    data, out = work / "peer_data.npz", work / f"peer_{model}.npz"
    np.savez(data, train=train, test=test)
    command = [python, str(Path(__file__).with_name("compressai_peer.py")), str(data), str(out), "--model", model,
               "--channels", str(CHANNELS), "--latent", str(LATENT), "--lmbdas", ",".join(map(str, lmbdas)),
               "--epochs", str(epochs), "--batch-size", str(BATCH), "--lr", str(LR)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise AejaxError(f"the CompressAI peer failed: {done.stderr.strip().splitlines()[-1:]}")
    with np.load(out) as loaded:
        result = dict(loaded)
    data.unlink()
    out.unlink()
    return result, json.loads(str(result["info"]))


def speeds(python: str, dataset: str, train: np.ndarray, work: Path) -> dict:
    """Training images per second of one rd_factorized model in aejax and one FactorizedPrior in CompressAI
    (same N, M, batch, images), measured alternately `SPEED_REPEATS` times each on the same `SPEED_IMAGES`
    images (one epoch each, after aejax's compiling epoch); the medians and every value."""
    images = train[:SPEED_IMAGES]
    ours, theirs = [], []
    for _ in range(SPEED_REPEATS):
        ours.append(single_model_speed(dataset, images))
        theirs.append(run_peer(python, images, images[:1], [0.01], 1, work, "factorized")[1]["runs"][0][
            "images_per_second"])
    return {"aejax_rd_factorized": float(np.median(ours)), "compressai_factorized": float(np.median(theirs)),
            "aejax_all": ours, "compressai_all": theirs, "images": len(images)}


def compressai_curve(python: str, train: np.ndarray, test: np.ndarray, settings: dict, work: Path,
                     model: str) -> tuple[list[dict], dict]:
    result, info = run_peer(python, train, test, settings["lmbdas"], settings["epochs"], work, model)
    points = []
    for i, run in enumerate(info["runs"]):
        sizes = result[f"bytes_{i}"]
        points.append({"lmbda": run["lmbda"], "bits_per_image": float(8 * sizes.mean()),
                       "payload_bits_per_image": float(8 * sizes.mean()),
                       **metrics.score(test, result[f"decoded_{i}"])})
    return points, info


def bits_at(points: list[dict], psnr: float, key: str) -> float | None:
    """Bits per image at `psnr` dB, interpolating log-bits linearly in PSNR between the curve's points (None
    outside the curve's range)."""
    pts = sorted((p["psnr_db"], p[key]) for p in points if p.get("psnr_db") is not None and p[key] > 0)
    if len(pts) < 2 or not pts[0][0] <= psnr <= pts[-1][0]:
        return None
    return float(np.exp(np.interp(psnr, [p for p, _ in pts], [np.log(b) for _, b in pts])))


def bd_rate(test: list[dict], anchor: list[dict], key: str) -> float | None:
    """Bjontegaard delta rate (%) of `test` against `anchor`: the mean difference in bits at equal PSNR over the
    PSNR range both cover, from cubic fits of log-rate against PSNR (a lower-degree fit with fewer than 4
    points); negative means `test` needs fewer bits. None where the ranges do not overlap."""
    def fit(points: list[dict]):
        pts = sorted((p["psnr_db"], np.log10(p[key])) for p in points if p.get("psnr_db") is not None and p[key] > 0)
        psnr, rate = np.array([p for p, _ in pts]), np.array([r for _, r in pts])
        return psnr, np.polyfit(psnr, rate, min(3, len(pts) - 1))

    (pa, fa), (pb, fb) = fit(test), fit(anchor)
    low, high = max(pa.min(), pb.min()), min(pa.max(), pb.max())
    if not high > low:
        return None
    ia, ib = np.polyint(fa), np.polyint(fb)
    mean_diff = ((np.polyval(ia, high) - np.polyval(ia, low)) - (np.polyval(ib, high) - np.polyval(ib, low))) / (
        high - low)
    return float((10 ** mean_diff - 1) * 100)


def summarise(curves: dict[str, list[dict]]) -> dict:
    keys = ("payload_bits_per_image", "bits_per_image")
    at = {key: {name: {f"{t:g}": bits_at(points, t, key) for t in TARGETS_DB} for name, points in curves.items()}
          for key in keys}
    ours = [n for n in curves if n.startswith("aejax")]
    anchors = [n for n in curves if n.split(" ")[0] in ("jpeg", "webp", "compressai")]
    bd = {key: {f"{a} vs {b}": bd_rate(curves[a], curves[b], key) for a in ours for b in anchors} for key in keys}
    return {"bits_at_psnr": at, "bd_rate_percent": bd}


def table(report: dict) -> str:
    lines = []
    for dataset, part in report["datasets"].items():
        lines += [f"### {dataset}", "", "Payload bits per image at a PSNR (file bits in brackets; - : the curve does "
                  "not reach it)", "", "| codec | " + " | ".join(f"{t:g} dB" for t in TARGETS_DB) + " |",
                  "|---|" + "---:|" * len(TARGETS_DB)]
        at = part["summary"]["bits_at_psnr"]
        for name in part["curves"]:
            if name.startswith("png"):
                continue
            cells = []
            for t in TARGETS_DB:
                payload, file = at["payload_bits_per_image"][name][f"{t:g}"], at["bits_per_image"][name][f"{t:g}"]
                cells.append("-" if payload is None else f"{payload:.0f} ({file:.0f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "BD-rate (payload bits; negative: aejax needs fewer bits at equal PSNR)", "",
                  "| comparison | BD-rate |", "|---|---:|"]
        for pair, value in part["summary"]["bd_rate_percent"]["payload_bits_per_image"].items():
            lines.append(f"| {pair} | {'-' if value is None else f'{value:+.1f}%'} |")
        speed = part["speed"]
        side = speed["side_by_side"]
        lines += ["", f"Training speed (images/s, one model, batch {BATCH}, median of {SPEED_REPEATS} alternating "
                  f"epochs over {side['images']} images): aejax rd_factorized {side['aejax_rd_factorized']:.0f}, "
                  f"CompressAI FactorizedPrior {side['compressai_factorized']:.0f}", ""]
    return "\n".join(lines) + "\n"


def figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["datasets"])
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4.2 * len(names)), squeeze=False)
    for row, dataset in enumerate(names):
        for col, metric in enumerate(("psnr_db", "ssim")):
            ax = axes[row][col]
            for name, points in report["datasets"][dataset]["curves"].items():
                pts = sorted((p["payload_bits_per_image"], p[metric]) for p in points
                             if p.get(metric) is not None and p["payload_bits_per_image"] > 0 and p["mse"] > 0)
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=name)
            ax.set_xscale("log")
            ax.set_xlabel("payload bits per image")
            ax.set_ylabel("PSNR (dB)" if metric == "psnr_db" else "SSIM")
            ax.set_title(f"{dataset}: {'PSNR' if metric == 'psnr_db' else 'SSIM'}")
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.codec_compare", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (codec.json, table.md, codec.png)")
    p.add_argument("--runs", default="runs/codec", help="where the trained models' run directories go")
    p.add_argument("--compressai-python", required=True,
                   help="the Python of an environment with compressai installed (see the docstring)")
    p.add_argument("--datasets", default="mnist,photo_patches", help="comma-separated, of " + ", ".join(SETTINGS))
    p.add_argument("--overwrite", action="store_true", help="replace the result files if they exist")
    args = p.parse_args()

    def body() -> None:
        names = [d for d in args.datasets.split(",") if d]
        unknown = [d for d in names if d not in SETTINGS]
        if unknown or not names:
            raise AejaxError(f"--datasets takes {', '.join(SETTINGS)}, got {args.datasets!r}")
        if not Path(args.compressai_python).is_file():
            raise AejaxError(f"--compressai-python {args.compressai_python} does not exist")
        out = make_output_dir(args.out)
        refuse_overwrite([out / "codec.json", out / "table.md", out / "codec.png"], args.overwrite)
        runs = make_output_dir(args.runs)
        report = {"command": "python -m experiments.codec_compare " + " ".join(sys.argv[1:]),
                  "architecture": {"channels_N": CHANNELS, "latent_M": LATENT, "batch_size": BATCH, "lr": LR,
                                   "schedule": "constant", "seed": 0}, "environment": environment(), "datasets": {}}
        for dataset in names:
            settings = SETTINGS[dataset]
            train, test = load(dataset, settings)
            curves, speed = {}, {}
            for model in ("rd_factorized", "rd_hyperprior"):
                curves[f"aejax {model}"], speed[f"aejax_{model}_sweep"] = aejax_curves(
                    model, dataset, train, test, settings, runs)
                print(f"{dataset} {model}: done", flush=True)
            curves["compressai factorized"], peer = compressai_curve(args.compressai_python, train, test, settings,
                                                                     runs, "factorized")
            speed["compressai_factorized_training_runs"] = peer
            speed["side_by_side"] = speeds(args.compressai_python, dataset, train, runs)
            print(f"{dataset} compressai: done", flush=True)
            curves["conv_strided entropy estimate"] = conv_entropy_curve(dataset, train, test, settings["epochs"],
                                                                         runs)
            curves.update(classic_curves(test))
            report["datasets"][dataset] = {"settings": {**settings, "train_images": len(train),
                                                        "test_images": len(test),
                                                        "image_shape": list(test.shape[1:])},
                                           "curves": curves, "speed": speed, "summary": summarise(curves)}
            write_json(out / "codec.json", report)
        write_atomic(out / "table.md", table(report))
        figure(report, out / "codec.png")
        print(table(report))

    cli.cli(body)


if __name__ == "__main__":
    main()
