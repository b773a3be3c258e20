"""The learned codec against PNG, JPEG, WebP and CompressAI on the same test images, rate = actual bytes.

    python3 -m venv .venv-compressai && .venv-compressai/bin/pip install compressai
    python -m experiments.codec_compare --out docs/codec --compressai-python .venv-compressai/bin/python

For each dataset (every training and test image of MNIST and photo_patches), with seed 0:
- aejax's `rd_factorized` and `rd_hyperprior` (`aejax.models.rate_distortion`) trained through `aejax.run` with a
  sweep of `lmbda` (all rate points in one vmapped program), then every test image coded to a file with `aejax.codec`,
  decoded, and checked bit for bit against the model's quantised reconstruction; rate = file bytes, and the
  payload = file minus the 19-byte header; the model's own estimate (its entropy model's -log2 likelihood of
  the quantised codes) beside them;
- CompressAI's `bmshj2018-factorized` architecture (`FactorizedPrior(N, M)`, the same N and M, batch, epochs,
  learning rate and schedule and training images; `experiments/compressai_peer.py`, in CompressAI's own
  environment), its rate the bytes of its `compress()` strings (payload only: it writes no header); on
  photo_patches also `bmshj2018-hyperprior` (`ScaleHyperprior(N, M)`; its strides need images padded to a
  multiple of 64, which on MNIST's 28x28 makes it five times the pixels, too slow to train here);
- PNG (lossless), JPEG (Pillow, optimised tables) and WebP (Pillow, lossy, method 6) at qualities 5-95, their
  rate the file, and the payload = file minus an all-black image's file at the same quality;
- the entropy estimate of the earlier compression study: an MSE-trained `conv_strided` autoencoder (code 32,
  same epochs) whose codes are uniformly quantised, the rate estimated by the codes' empirical entropy.

Distortion: PSNR of the mean MSE over the test images and mean SSIM (`aejax.evaluation.metrics`). Writes `codec.json`
(every point, the bits per image each codec needs at 20, 25 and 30 dB, BD-rates, training speeds), `table.md`
and `codec.png` (bits per image against PSNR and SSIM; lines join each curve's PSNR front, crosses mark the points
off it).

aejax's trained models are kept in `--runs` and reused when the script runs again with the same settings (a
finished run is reloaded, an interrupted one resumed); settings that differ are a one-line error naming the
directory.
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
from aejax import cli
from aejax.codec import Codec, payload_bits
from aejax.data import datasets, load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.evaluation import compression, metrics
from aejax.evaluation.rd_curves import bd_rate, bits_at, front
from aejax.files import make_output_dir, refuse_overwrite, write_atomic, write_json
from aejax.training import step as training

QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
RELATIVE_STEPS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
TARGETS_DB = (20.0, 25.0, 30.0)
SETTINGS = {  # dataset -> what is trained and coded
    "mnist": {"train": None, "test": None, "epochs": 3, "lmbdas": (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.1),
              "peers": ("factorized",)},
    "photo_patches": {"train": None, "test": None, "epochs": 30, "lmbdas": (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.1),
                      "peers": ("factorized", "hyperprior")},
}
CHANNELS, LATENT, BATCH, LR, SCHEDULE = 32, 32, 32, 2e-3, "constant"
SPEED_IMAGES, SPEED_REPEATS = 4000, 3


def load(dataset: str, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    if dataset == "mnist":
        return (load_mnist("train", examples=settings["train"]).images,
                load_mnist("test", examples=settings["test"]).images)
    source = datasets.source(dataset, None, None)
    return np.asarray(source.rows(range(source.n_train))), np.asarray(source.test)


def rd_config(model: str, dataset: str, epochs: int) -> aejax.Config:
    return aejax.Config(model=model, dataset=dataset, latent_dim=LATENT, epochs=epochs, batch_size=BATCH, lr=LR,
                        schedule=SCHEDULE, model_kwargs={"channels": CHANNELS})


def training_speed(run_dir: Path) -> dict:
    """From the run's metrics: images per second (summed over its models) of its last epoch, which compiles
    nothing, and the seconds of all its epochs."""
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"images_per_second_all_models": float(epochs[-1]["images_per_second"]),
            "train_seconds": float(sum(e["epoch_seconds"] for e in epochs))}


def aejax_curves(model: str, dataset: str, train: np.ndarray, test: np.ndarray, settings: dict,
                 runs: Path) -> tuple[list[dict], dict]:
    run_dir = runs / f"{dataset}_{model}"
    lmbdas = list(settings["lmbdas"])
    aejax.run(rd_config(model, dataset, settings["epochs"]), run_dir, sweep={"lmbda": lmbdas}, data=(train, test),
              resume=True, log=lambda *_: None)
    points = []
    for i, lmbda in enumerate(lmbdas):
        codec = Codec.from_run(run_dir, member=i)
        files = codec.encode(test)
        decoded = codec.decode(files)
        exact = bool(np.array_equal(decoded, codec.reconstruct(test)))
        if not exact:
            raise AejaxError(f"{model} lmbda {lmbda}: decoded images differ from the model's reconstruction")
        estimate = codec.estimated_bits(test)
        points.append({"lmbda": lmbda, "bits_per_image": float(np.mean([8 * len(f) for f in files])),
                       "payload_bits_per_image": float(np.mean([payload_bits(f) for f in files])),
                       "estimated_bits_per_image": float(estimate.mean()), "decoded_exactly": exact,
                       **metrics.score(test, decoded)})
    return points, {"models": len(lmbdas), **training_speed(run_dir)}


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
                                    batch_size=BATCH), run_dir, data=(train, test), resume=True,
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
               "--epochs", str(epochs), "--batch-size", str(BATCH), "--lr", str(LR), "--schedule", SCHEDULE]
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
    codecs = list(dict.fromkeys(name for part in report["datasets"].values() for name in part["curves"]))
    colours = {name: f"C{i % 10}" for i, name in enumerate(codecs)}  # one colour per codec in every panel
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4.2 * len(names)), squeeze=False)
    for row, dataset in enumerate(names):
        for col, metric in enumerate(("psnr_db", "ssim")):
            ax = axes[row][col]
            for name, points in report["datasets"][dataset]["curves"].items():
                chosen = {bits for _, bits in front(points, "payload_bits_per_image")}
                pts = sorted((p["payload_bits_per_image"], p[metric]) for p in points
                             if p.get(metric) is not None and p["payload_bits_per_image"] > 0 and p["mse"] > 0)
                on = [(b, v) for b, v in pts if b in chosen]
                off = [(b, v) for b, v in pts if b not in chosen]
                if on:
                    ax.plot(*zip(*on), marker="o", ms=3, color=colours[name], label=name)
                if off:  # points off the PSNR front (a lambda that came out worse than a cheaper one)
                    ax.plot(*zip(*off), ls="none", marker="x", ms=5, color=colours[name])
            ax.set_xscale("log")
            ax.set_xlabel("payload bits per image")
            ax.set_ylabel("PSNR (dB)" if metric == "psnr_db" else "SSIM")
            ax.set_title(f"{dataset}: {'PSNR' if metric == 'psnr_db' else 'SSIM'}")
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def outputs(out: Path) -> list[Path]:
    return [out / "codec.json", out / "table.md", out / "codec.png"]


def write_table_and_figure(report: dict, out: Path) -> None:
    """`table.md` and `codec.png` from the report (also printed)."""
    text = table(report)
    write_atomic(out / "table.md", text)
    figure(report, out / "codec.png")
    print(text)


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.codec_compare", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (codec.json, table.md, codec.png)")
    p.add_argument("--runs", default="runs/codec", help="where the trained models' run directories go")
    p.add_argument("--compressai-python",
                   help="the Python of an environment with compressai installed (see the docstring)")
    p.add_argument("--datasets", default="mnist,photo_patches", help="comma-separated, of " + ", ".join(SETTINGS))
    p.add_argument("--overwrite", action="store_true", help="replace the result files if they exist")
    p.add_argument("--resummarise", action="store_true",
                   help="train and code nothing: recompute the summaries, table and figure from --out's codec.json "
                        "(with --overwrite)")
    args = p.parse_args()

    def resummarise(out: Path) -> None:
        try:
            report = json.loads((out / "codec.json").read_text())
        except (OSError, ValueError) as e:
            raise AejaxError(f"--resummarise needs a codec.json this script wrote in {out} ({e})") from None
        refuse_overwrite(outputs(out), args.overwrite)
        for part in report["datasets"].values():
            part["summary"] = summarise(part["curves"])
        write_json(out / "codec.json", report)
        write_table_and_figure(report, out)

    def body() -> None:
        if args.resummarise:
            return resummarise(Path(args.out))
        names = [d for d in args.datasets.split(",") if d]
        unknown = [d for d in names if d not in SETTINGS]
        if unknown or not names:
            raise AejaxError(f"--datasets takes {', '.join(SETTINGS)}, got {args.datasets!r}")
        if not args.compressai_python or not Path(args.compressai_python).is_file():
            raise AejaxError(f"--compressai-python {args.compressai_python} does not exist")
        out = make_output_dir(args.out)
        refuse_overwrite(outputs(out), args.overwrite)
        runs = make_output_dir(args.runs)
        report = {"command": "python -m experiments.codec_compare " + " ".join(sys.argv[1:]),
                  "architecture": {"channels_N": CHANNELS, "latent_M": LATENT, "batch_size": BATCH, "lr": LR,
                                   "schedule": SCHEDULE, "seed": 0}, "environment": environment(), "datasets": {}}
        for dataset in names:
            settings = SETTINGS[dataset]
            train, test = load(dataset, settings)
            curves, speed = {}, {}
            for model in ("rd_factorized", "rd_hyperprior"):
                curves[f"aejax {model}"], speed[f"aejax_{model}_sweep"] = aejax_curves(
                    model, dataset, train, test, settings, runs)
                print(f"{dataset} {model}: done", flush=True)
            for peer in settings["peers"]:
                curves[f"compressai {peer}"], speed[f"compressai_{peer}_training_runs"] = compressai_curve(
                    args.compressai_python, train, test, settings, runs, peer)
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
        write_table_and_figure(report, out)

    cli.cli(body)


if __name__ == "__main__":
    main()
