"""The learned codecs against PNG, JPEG, WebP, JPEG XL, AVIF and CompressAI on the same images, rate = whole files.

    .venv/bin/pip install -e ".[compare]"
    .venv/bin/python -m experiments.codec_compare --out docs/codec --peers-from docs/codec/codec.json

For each dataset (every training and test image of MNIST and photo_patches), with seed 0:
- aejax's `rd_factorized` and `rd_hyperprior` (`aejax.models.rate_distortion`), one model per lambda, trained
  through `aejax.run` with a sweep of `lmbda` (all rate points in one vmapped program), and the variable-rate
  `rd_variable` (one model for every rate, trained once; coded at qualities 0..100; on MNIST with a code of
  M = 64 channels and levels up to lambda 3 to reach 32 dB, so per-lambda `rd_factorized` models of M = 64 are
  trained too, as what it replaces), then every test image coded to a file with `aejax.codec`, decoded, and
  checked bit for bit against the model's quantised reconstruction; the rate is the whole file (header included),
  beside the payload and the model's own estimate;
- CompressAI's `bmshj2018-factorized` (and on photo_patches `bmshj2018-hyperprior`), the same N, M, batch,
  epochs, learning rate and training images (`experiments/compressai_peer.py`, in CompressAI's environment:
  `--compressai-python`), or its points copied from an earlier report of the same settings (`--peers-from`); its
  rate is its `compress()` strings (it writes no header, so they are its whole files);
- PNG, WebP and JPEG XL lossless; JPEG (optimised tables), WebP (method 6), JPEG XL (effort 9) and AVIF (speed 6)
  at qualities 0-95 (Pillow; JPEG XL through pillow-jxl-plugin, the `compare` extra);
- the entropy estimate of the earlier compression study (`conv_strided`, code 32, uniformly quantised codes, the
  rate their empirical entropy: not a file, shown for reference and left out of every comparison).
On the test set's whole photographs (photo_patches' chelsea and rocket, 300x451 and 427x640), coded whole by the
photo_patches models and the classic codecs: bits per pixel.

Distortion: PSNR of the mean MSE over the test images (or all pixels of the photographs) and mean SSIM
(`aejax.evaluation.metrics`). Writes `codec.json` (every point, the bytes each codec needs at each PSNR of
`TARGETS_DB`, BD-rates on whole files, the goals, training times), `table.md` and `codec.png`.

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
from aejax.data import datasets, image_sets, load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.evaluation import compression, metrics
from aejax.evaluation.rd_curves import bd_rate, bits_at, front
from aejax.files import make_output_dir, refuse_overwrite, write_atomic, write_json
from aejax.training import step as training

QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)  # JPEG, WebP, JPEG XL, AVIF
VARIABLE_QUALITIES = tuple(range(0, 101, 5))  # rd_variable's file qualities
RELATIVE_STEPS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
TARGETS_DB = (20.0, 22.0, 24.0, 26.0, 28.0, 30.0, 32.0)
LOSSY = {"jpeg": compression.jpeg, "webp": compression.webp, "jpeg xl": compression.jxl, "avif": compression.avif}
LOSSLESS = ("png", "webp", "jxl")
LMBDAS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.1)  # one model each
VARIABLE_LMBDAS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)  # rd_variable's levels (0.03: no 10x step)
WIDE_LMBDAS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # to 32 dB on MNIST
SETTINGS = {  # dataset -> what is trained and coded; "variable": the rd_variable (its code M: "latent")
    "mnist": {"train": None, "test": None, "coded": 1000, "epochs": 3, "lmbdas": LMBDAS, "peers": ("factorized",),
              "variable": {"lmbdas": WIDE_LMBDAS, "epochs": 30, "latent": 64}, "photographs": False},
    "photo_patches": {"train": None, "test": None, "coded": None, "epochs": 30, "lmbdas": LMBDAS,
                      "peers": ("factorized", "hyperprior"), "variable": {"lmbdas": VARIABLE_LMBDAS, "epochs": 120},
                      "photographs": True},
}
PHOTO_CROPS = {"crop": 64, "stride": 32, "epochs": 30, "lmbdas": VARIABLE_LMBDAS}  # a model for whole photographs
CHANNELS, LATENT, BATCH, LR, SCHEDULE = 32, 32, 32, 2e-3, "constant"
ARCHITECTURE = {"channels_N": CHANNELS, "latent_M": LATENT, "batch_size": BATCH, "lr": LR, "schedule": SCHEDULE,
                "seed": 0}  # what a report records, and what copying CompressAI's points from one requires
SPEED_IMAGES, SPEED_REPEATS = 4000, 3


def load(dataset: str, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    if dataset == "mnist":
        return (load_mnist("train", examples=settings["train"]).images,
                load_mnist("test", examples=settings["test"]).images)
    source = datasets.source(dataset, None, None)
    return np.asarray(source.rows(range(source.n_train))), np.asarray(source.test)


def rd_config(model: str, dataset: str, epochs: int, **kwargs) -> aejax.Config:
    return aejax.Config(model=model, dataset=dataset, latent_dim=kwargs.pop("latent", LATENT), epochs=epochs,
                        batch_size=BATCH, lr=LR, schedule=SCHEDULE, model_kwargs={"channels": CHANNELS, **kwargs})


def training_speed(run_dir: Path) -> dict:
    """From the run's metrics: images per second (summed over its models) of its last epoch, which compiles
    nothing, and the seconds of all its epochs."""
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"images_per_second_all_models": float(epochs[-1]["images_per_second"]),
            "train_seconds": float(sum(e["epoch_seconds"] for e in epochs))}


def coded_point(codec: Codec, test: np.ndarray, name: str, quality: int | None = None) -> dict:
    """Every test image coded to a file, decoded and checked bit for bit against the model's reconstruction:
    whole-file bits, payload bits, the model's estimate and the scores."""
    files = codec.encode(test, quality=quality)
    decoded = codec.decode(files)
    if not np.array_equal(decoded, codec.reconstruct(test, quality=quality)):
        raise AejaxError(f"{name}: decoded images differ from the model's reconstruction")
    return {"bits_per_image": float(np.mean([8 * len(f) for f in files])),
            "payload_bits_per_image": float(np.mean([payload_bits(f) for f in files])),
            "estimated_bits_per_image": float(codec.estimated_bits(test, quality=quality).mean()),
            "decoded_exactly": True, **metrics.score(test, decoded)}


def aejax_curves(model: str, dataset: str, train: np.ndarray, test: np.ndarray, coded: np.ndarray, settings: dict,
                 runs: Path, latent: int = LATENT) -> tuple[list[dict], dict, list[Codec]]:
    """One model per lambda (code M `latent`), trained on `train` (scored on `test`), coding `coded`: (points,
    training, codecs)."""
    run_dir = runs / (f"{dataset}_{model}" + ("" if latent == LATENT else f"_m{latent}"))
    lmbdas = list(settings["lmbdas"])
    aejax.run(rd_config(model, dataset, settings["epochs"], latent=latent), run_dir, sweep={"lmbda": lmbdas},
              data=(train, test), resume=True, log=lambda *_: None)
    codecs = [Codec.from_run(run_dir, member=i) for i in range(len(lmbdas))]
    points = [{"lmbda": lmbda, **coded_point(codec, coded, f"{model} lmbda {lmbda}")}
              for lmbda, codec in zip(lmbdas, codecs, strict=True)]
    return points, {"models": len(lmbdas), **training_speed(run_dir)}, codecs


def variable_curve(dataset: str, train: np.ndarray, test: np.ndarray, coded: np.ndarray, settings: dict,
                   runs: Path) -> tuple[list[dict], dict, Codec]:
    """One `rd_variable` model for every rate (`settings["variable"]`), coded at each of `VARIABLE_QUALITIES`:
    (points, training, codec)."""
    run_dir = runs / f"{dataset}_rd_variable"
    variable = settings["variable"]
    aejax.run(rd_config("rd_variable", dataset, variable["epochs"], lmbdas=list(variable["lmbdas"]),
                        latent=variable.get("latent", LATENT)), run_dir,
              data=(train, test), resume=True, log=lambda *_: None)
    codec = Codec.from_run(run_dir)
    points = [{"quality": q, **coded_point(codec, coded, f"rd_variable quality {q}", q)} for q in VARIABLE_QUALITIES]
    return points, {"models": 1, **training_speed(run_dir)}, codec


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


def conv_entropy_curve(dataset: str, train: np.ndarray, test: np.ndarray, coded: np.ndarray, epochs: int,
                       runs: Path) -> list[dict]:
    run_dir = runs / f"{dataset}_conv_strided"
    result = aejax.run(aejax.Config(model="conv_strided", dataset=dataset, latent_dim=32, epochs=epochs,
                                    batch_size=BATCH), run_dir, data=(train, test), resume=True,
                       log=lambda *_: None)
    model, variables = result.model, result.variables[0]
    codes = np.asarray(aejax.encode(model, variables, coded))
    points = compression.code_curve(codes, lambda z: np.asarray(aejax.decode(model, variables, z)), coded,
                                    RELATIVE_STEPS)
    return points  # an estimate: no file


def lossless_sizes(test: np.ndarray) -> dict[str, float]:
    """Bits per image of each lossless format (`LOSSLESS`), checked to decode exactly."""
    return {fmt: float(compression.lossless_bits(test, fmt).mean()) for fmt in LOSSLESS}


def classic_curves(test: np.ndarray) -> dict[str, list[dict]]:
    """Each lossy classic codec at every quality of `QUALITIES`: whole files."""
    curves = {}
    for name, fn in LOSSY.items():
        curves[name] = []
        for q in QUALITIES:
            bits, decoded = fn(test, q)
            curves[name].append({"quality": q, "bits_per_image": float(bits.mean()),
                                 **metrics.score(test, decoded.astype(np.float32) / 255.0)})
    return curves


def photograph_point(photos: list[np.ndarray], decoded: list[np.ndarray], bits: float) -> dict:
    """Bits per pixel over all the photographs and the PSNR of their pooled MSE (decoded float in [0, 1])."""
    pixels = sum(p.shape[0] * p.shape[1] for p in photos)
    sq = sum(float(np.sum((d.astype(np.float64) - p / 255.0) ** 2)) for p, d in zip(photos, decoded, strict=True))
    mse = sq / sum(p.size for p in photos)
    return {"bits_per_pixel": bits / pixels, "mse": mse, "psnr_db": float(10 * np.log10(1 / mse)) if mse else None}


def crops(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Every `size` x `size` crop of an `[H, W, C]` image at `stride`, row by row: `[n, size, size, C]`."""
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size), axis=(0, 1))[::stride, ::stride]
    return windows.transpose(0, 1, 3, 4, 2).reshape(-1, size, size, image.shape[2])


def photo_crop_model(runs: Path) -> tuple[Codec, dict]:
    """An `rd_variable` trained on overlapping crops of the training photographs (`PHOTO_CROPS`: a 4x4 code, so
    it sees code cells away from the image border, which 32x32 patches never show), for whole photographs; its
    test images are the test photographs' crops. (codec, training)."""
    size, stride = PHOTO_CROPS["crop"], PHOTO_CROPS["stride"]
    cut = lambda names, step: np.concatenate([crops(image_sets.photo(n)[..., :3].astype(np.uint8), size, step)  # noqa: E731
                                              for n in names])
    train, test = cut(image_sets.TRAIN_PHOTOS, stride), cut(image_sets.TEST_PHOTOS, size)
    run_dir = runs / "photo_crops_rd_variable"
    aejax.run(rd_config("rd_variable", "photo_crops", PHOTO_CROPS["epochs"], lmbdas=list(PHOTO_CROPS["lmbdas"])),
              run_dir, data=(train, test), resume=True, log=lambda *_: None)
    return Codec.from_run(run_dir), {"model": f"aejax rd_variable ({size}x{size} crops)", "models": 1,
                                     "train_crops": len(train), **PHOTO_CROPS, **training_speed(run_dir)}


def photograph_curves(codecs: dict[str, list[tuple[dict, Codec, int | None]]]) -> dict:
    """The test set's whole photographs coded by each learned codec (label -> (point fields, codec, quality)
    per rate point) and by every classic codec: bits per pixel against PSNR, and the lossless formats."""
    photos = [image_sets.photo(name)[..., :3].astype(np.uint8) for name in image_sets.TEST_PHOTOS]
    curves = {}
    for label, members in codecs.items():
        curves[label] = []
        for fields, codec, quality in members:
            files = [codec.encode(p, quality=quality) for p in photos]
            decoded = [codec.decode(f) for f in files]
            if not all(np.array_equal(d, codec.reconstruct(p, quality=quality)) for p, d in zip(photos, decoded)):
                raise AejaxError(f"{label}: a decoded photograph differs from the model's reconstruction")
            curves[label].append({**fields, **photograph_point(photos, decoded, sum(8 * len(f) for f in files))})
    for name, fn in LOSSY.items():
        curves[name] = []
        for q in QUALITIES:
            coded = [fn(p[None], q) for p in photos]
            curves[name].append({"quality": q, **photograph_point(
                photos, [d[0] / 255.0 for _, d in coded], float(sum(b[0] for b, _ in coded)))})
    pixels = sum(p.shape[0] * p.shape[1] for p in photos)
    lossless = {fmt: sum(float(compression.lossless_bits(p[None], fmt)[0]) for p in photos) / pixels
                for fmt in LOSSLESS}
    return {"photographs": {name: list(p.shape) for name, p in zip(image_sets.TEST_PHOTOS, photos)},
            "curves": curves, "lossless_bits_per_pixel": lossless}


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


ESTIMATE = "conv_strided entropy estimate"  # not a file: shown, never compared


def summarise(curves: dict[str, list[dict]], key: str = "bits_per_image") -> dict:
    """Bits each codec needs at each PSNR of `TARGETS_DB`, and the BD-rates (whole files) of every aejax curve
    against every other codec's, and of the variable-rate model against the per-lambda models it replaces."""
    at = {name: {f"{t:g}": bits_at(points, t, key) for t in TARGETS_DB} for name, points in curves.items()}
    ours = [n for n in curves if n.startswith("aejax")]
    anchors = [n for n in curves if not n.startswith("aejax") and n != ESTIMATE]
    pairs = [(a, b) for a in ours for b in anchors]
    pairs += [(a, b) for a in ours for b in ours if "rd_variable" in a and "rd_variable" not in b]
    peers = [(a, b) for a in ours for b in anchors if b.startswith("compressai")]  # payloads: coded the same way
    return {"bits_at_psnr": at, "bd_rate_percent": {f"{a} vs {b}": bd_rate(curves[a], curves[b], key)
                                                    for a, b in pairs},
            "payload_bd_rate_percent": {f"{a} vs {b}": bd_rate(curves[a], curves[b], "payload_bits_per_image")
                                        for a, b in peers}}


def bits_to_reach(points: list[dict], psnr: float, key: str = "bits_per_image") -> float | None:
    """The fewest bits of any point whose PSNR is at least `psnr`: what a user pays for at least that quality
    with the qualities measured (None when no point reaches it)."""
    reaching = [p[key] for p in points if p.get("psnr_db") is not None and p["psnr_db"] >= psnr]
    return min(reaching) if reaching else None


MNIST_GOALS = {"webp": 0.5, "jpeg xl": 1.0}  # anchor -> the largest ratio met (1.0: strictly fewer bits)
PHOTO_GOALS = {"jpeg": 1.0, "webp": 1.0}


def goals(curves: dict[str, list[dict]], ours: str, key: str = "bits_per_image", anchors: dict | None = None,
          low: int = 20, high: int = 32) -> dict:
    """At each whole dB from `low` to `high`, the fewest bits reaching it (`bits_to_reach`, the same rule for every
    codec): `ours`'s over each anchor's; met where every ratio is at most its goal (`MNIST_GOALS`: half of WebP's,
    fewer than JPEG XL's), strictly below 1.0 for a goal of 1.0; None where a codec reaches no such PSNR (for
    `ours`, the goal is then not met)."""
    anchors = anchors or MNIST_GOALS
    rows = {}
    for t in range(low, high + 1):
        mine = bits_to_reach(curves[ours], t, key)
        ratios = {}
        for anchor in anchors:
            theirs = bits_to_reach(curves[anchor], t, key)
            ratios[anchor] = None if mine is None or theirs is None else mine / theirs
        rows[str(t)] = ratios
    met = all(r[a] is not None and (r[a] < 1 if goal == 1.0 else r[a] <= goal)
              for r in rows.values() for a, goal in anchors.items())
    return {"codec": ours, "goals": anchors, "ratios": rows, "met": met}


def _cell(bits: float | None, unit: str) -> str:
    if bits is None:
        return "-"
    return f"{bits / 8:.0f}" if unit == "bytes" else f"{bits:.3f}"


def rate_table(curves: dict[str, list[dict]], at: dict, unit: str) -> list[str]:
    lines = ["| codec | " + " | ".join(f"{t:g} dB" for t in TARGETS_DB) + " | PSNR range |",
             "|---|" + "---:|" * (len(TARGETS_DB) + 1)]
    for name in curves:
        pts = front(curves[name], "bits_per_image" if unit == "bytes" else "bits_per_pixel")
        span = f"{pts[0][0]:.1f}-{pts[-1][0]:.1f}" if pts else "-"
        label = f"{name} (not a file)" if name == ESTIMATE else name
        lines.append(f"| {label} | " + " | ".join(_cell(at[name][f"{t:g}"], unit) for t in TARGETS_DB)
                     + f" | {span} |")
    return lines


def bd_lines(bd: dict) -> list[str]:
    lines = ["| comparison | BD-rate |", "|---|---:|"]
    return lines + [f"| {pair} | {'-' if v is None else f'{v:+.1f}%'} |" for pair, v in bd.items()]


def table(report: dict) -> str:
    lines = []
    for dataset, part in report["datasets"].items():
        lossless = ", ".join(f"{fmt.upper()} {bits / 8:.1f}" for fmt, bits in part["lossless_bits_per_image"].items())
        settings = part["settings"]
        lines += [f"### {dataset}", "", f"Whole-file bytes per image at a PSNR (headers included; - : the curve does "
                  f"not reach it) and the PSNR range of each curve's front, over the first "
                  f"{settings['coded_images']:,} of {settings['test_images']:,} test images", ""]
        lines += rate_table(part["curves"], part["summary"]["bits_at_psnr"], "bytes")
        lines += ["", f"Lossless, bytes per image: {lossless}", "",
                  "BD-rate on whole files (negative: the first needs fewer bytes at equal PSNR)", ""]
        lines += bd_lines(part["summary"]["bd_rate_percent"])
        if part["summary"].get("payload_bd_rate_percent"):
            lines += ["", "BD-rate on payloads against CompressAI (the entropy-coded bits alone: CompressAI's strings "
                      "carry no header, so its whole files are payloads)", ""]
            lines += bd_lines(part["summary"]["payload_bd_rate_percent"])
        if "goals" in part:
            g = part["goals"]
            lines += goal_lines(g, "bytes")
        train = part["training"]
        lines += ["", "Training (seconds of all epochs, from the runs' metrics; a sweep trains its models together): "
                  + "; ".join(f"{name} {t['train_seconds']:.0f} s for {t['models']} rate point(s), "
                              f"{t['train_seconds'] / t['models']:.0f} s each" for name, t in train.items())]
        side = part["speed"].get("side_by_side")
        if side:
            lines += ["", f"Training speed (images/s, one model, batch {BATCH}, median of {SPEED_REPEATS} "
                      f"alternating epochs over {side['images']} images): aejax rd_factorized "
                      f"{side['aejax_rd_factorized']:.0f}, CompressAI FactorizedPrior "
                      f"{side['compressai_factorized']:.0f} ({part['peers']})"]
        lines += [""]
        if "photographs" in part:
            photos = part["photographs"]
            lines += [f"#### {dataset}: whole photographs ({', '.join(photos['photographs'])})", "",
                      "Bits per pixel at a PSNR (all pixels of the photographs pooled)", ""]
            lines += rate_table(photos["curves"], photos["summary"]["bits_at_psnr"], "bpp")
            lines += ["", "Lossless, bits per pixel: " + ", ".join(
                f"{fmt.upper()} {v:.3f}" for fmt, v in photos["lossless_bits_per_pixel"].items()), "",
                "BD-rate (bits per pixel)", ""]
            lines += bd_lines(photos["summary"]["bd_rate_percent"])
            if "goals" in photos:
                lines += goal_lines(photos["goals"], "bits per pixel")
            if "training" in photos:
                t = photos["training"]
                lines += ["", f"{t['model']}: trained {t['train_seconds']:.0f} s on {t['train_crops']:,} crops "
                          f"{t['crop']}x{t['crop']} (stride {t['stride']}) of the training photographs"]
            lines += [""]
    return "\n".join(lines) + "\n"


def goal_lines(g: dict, unit: str) -> list[str]:
    aims = ", ".join(f"over {a}'s {'below 1' if v == 1.0 else f'at most {v:g}'}" for a, v in g["goals"].items())
    lines = ["", f"Goals ({g['codec']}): the fewest {unit} of a measured quality reaching each PSNR, {aims}; met at "
             f"every PSNR: {'yes' if g['met'] else 'no'}", "",
             "| PSNR | " + " | ".join(f"over {a}" for a in g["goals"]) + " |", "|---|" + "---:|" * len(g["goals"])]
    return lines + [f"| {t} dB | " + " | ".join(_ratio(r[a]) for a in g["goals"]) + " |"
                    for t, r in g["ratios"].items()]


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _panel(ax, curves: dict[str, list[dict]], key: str, metric: str, colours: dict[str, str]) -> None:
    for name, points in curves.items():
        chosen = {bits for _, bits in front(points, key)}
        pts = sorted((p[key], p[metric]) for p in points
                     if p.get(metric) is not None and p[key] > 0 and p["mse"] > 0)
        on = [(b, v) for b, v in pts if b in chosen]
        off = [(b, v) for b, v in pts if b not in chosen]
        style = {"ls": ":"} if name == ESTIMATE else {}
        if on:
            ax.plot(*zip(*on), marker="o", ms=3, color=colours[name], label=name, **style)
        if off:  # points off the PSNR front (a lambda or quality that came out worse than a cheaper one)
            ax.plot(*zip(*off), ls="none", marker="x", ms=5, color=colours[name])
    ax.set_xscale("log")
    ax.grid(alpha=0.3)


def figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []  # (title, curves, key, metric, x label)
    for dataset, part in report["datasets"].items():
        for metric in ("psnr_db", "ssim"):
            panels.append((f"{dataset}: {'PSNR' if metric == 'psnr_db' else 'SSIM'}", part["curves"],
                           "bits_per_image", metric, "whole-file bits per image"))
        if "photographs" in part:
            panels.append((f"{dataset}: whole photographs, PSNR", part["photographs"]["curves"], "bits_per_pixel",
                           "psnr_db", "bits per pixel"))
    codecs = list(dict.fromkeys(name for _, curves, *_ in panels for name in curves))
    palette = [f"C{i}" for i in range(10)] + ["black", "gold", "teal", "navy"]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(codecs)}  # one per codec, every panel
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(11, 4.2 * rows), squeeze=False)
    for ax, (title, curves, key, metric, xlabel) in zip(axes.flat, panels):
        _panel(ax, curves, key, metric, colours)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("PSNR (dB)" if metric == "psnr_db" else "SSIM")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_peers(path: str, names: list[str]) -> dict:
    """An earlier report of this script holding every dataset of `names` (read before anything is written, so
    it may be the very codec.json this run replaces)."""
    try:
        report = json.loads(Path(path).read_text())
        missing = [n for n in names if n not in report["datasets"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AejaxError(f"--peers-from {path} is not a report of this script ({e})") from None
    if missing:
        raise AejaxError(f"--peers-from {path} holds no {', '.join(missing)}")
    return report


def previous_datasets(path: Path, names: list[str]) -> dict:
    """The datasets of an existing report that this run does not redo (`--datasets` names fewer), kept as they
    were; nothing when there is no readable report."""
    try:
        previous = json.loads(path.read_text())["datasets"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {name: part for name, part in previous.items() if name not in names}


def peers_from(report: dict, path: str, dataset: str, settings: dict, coded: int, test: int) -> tuple[dict, dict]:
    """CompressAI's curves and speeds for `dataset` from an earlier report of this script (`read_peers`) with the
    same settings (lambdas, epochs, architecture): (curves, speed entries). Its points coded all `test` images:
    named so where this run codes fewer (`coded`)."""
    part = report["datasets"][dataset]
    same = (report.get("architecture") == ARCHITECTURE and part["settings"]["epochs"] == settings["epochs"]
            and part["settings"]["lmbdas"] == list(settings["lmbdas"]))
    if not same:
        raise AejaxError(f"--peers-from {path} was run with other settings for {dataset}")
    every = f" (all {test:,} test images)"
    curves = {name.removesuffix(every) + (every if coded < test else ""): points
              for name, points in part["curves"].items() if name.startswith("compressai")}
    speed = {k: v for k, v in part["speed"].items() if k.startswith("compressai") or k == "side_by_side"}
    return curves, speed


def in_order(datasets: dict) -> dict:
    """A report's datasets in `SETTINGS`' order, however many were kept from an earlier report."""
    order = list(SETTINGS)
    place = lambda name: order.index(name) if name in order else len(order)  # noqa: E731
    return {name: datasets[name] for name in sorted(datasets, key=place)}


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
                   help="the Python of an environment with compressai installed: train CompressAI's models here")
    p.add_argument("--peers-from", metavar="CODEC_JSON",
                   help="instead, copy CompressAI's points and speeds from an earlier codec.json of the same settings")
    p.add_argument("--datasets", default="mnist,photo_patches", help="comma-separated, of " + ", ".join(SETTINGS))
    p.add_argument("--overwrite", action="store_true", help="replace the result files if they exist")
    p.add_argument("--resummarise", action="store_true",
                   help="train and code nothing: recompute the summaries, table and figure from --out's codec.json "
                        "(with --overwrite)")
    args = p.parse_args()

    def summaries(part: dict) -> None:
        part["summary"] = summarise(part["curves"])
        if "aejax rd_variable" in part["curves"] and "webp" in part["curves"]:
            part["goals"] = goals(part["curves"], "aejax rd_variable")
        if "photographs" in part:
            photos = part["photographs"]
            photos["summary"] = summarise(photos["curves"], "bits_per_pixel")
            ours = photos.get("training", {}).get("model")
            if ours in photos["curves"]:
                photos["goals"] = goals(photos["curves"], ours, "bits_per_pixel", PHOTO_GOALS, 24, 32)

    def resummarise(out: Path) -> None:
        try:
            report = json.loads((out / "codec.json").read_text())
        except (OSError, ValueError) as e:
            raise AejaxError(f"--resummarise needs a codec.json this script wrote in {out} ({e})") from None
        refuse_overwrite(outputs(out), args.overwrite)
        for part in report["datasets"].values():
            summaries(part)
        report["datasets"] = in_order(report["datasets"])
        write_json(out / "codec.json", report)
        write_table_and_figure(report, out)

    def body() -> None:
        if args.resummarise:
            return resummarise(Path(args.out))
        names = [d for d in args.datasets.split(",") if d]
        unknown = [d for d in names if d not in SETTINGS]
        if unknown or not names:
            raise AejaxError(f"--datasets takes {', '.join(SETTINGS)}, got {args.datasets!r}")
        if args.compressai_python and not Path(args.compressai_python).is_file():
            raise AejaxError(f"--compressai-python {args.compressai_python} does not exist")
        if args.compressai_python and args.peers_from:
            raise AejaxError("give --compressai-python or --peers-from, not both")
        peers = read_peers(args.peers_from, names) if args.peers_from else None
        compression.jxl(np.zeros((1, 8, 8, 1), np.uint8), 50)  # the JPEG XL plugin is there before any training
        out = make_output_dir(args.out)
        refuse_overwrite(outputs(out), args.overwrite)
        runs = make_output_dir(args.runs)
        kept = previous_datasets(out / "codec.json", names)
        for part in kept.values():  # summarised again, as this version of the script does
            summaries(part)
        report = {"command": "python -m experiments.codec_compare " + " ".join(sys.argv[1:]),
                  "architecture": ARCHITECTURE, "environment": environment(),
                  "datasets": dict(kept), "kept_from_the_previous_report": list(kept)}
        for dataset in names:
            settings = SETTINGS[dataset]
            train, test = load(dataset, settings)
            coded = test[:settings["coded"]]  # what every codec codes and is scored on
            curves, speed, training_runs, learned = {}, {}, {}, {}
            for model in ("rd_factorized", "rd_hyperprior"):
                curves[f"aejax {model}"], training_runs[f"aejax {model}"], codecs = aejax_curves(
                    model, dataset, train, test, coded, settings, runs)
                learned[f"aejax {model}"] = [({"lmbda": lm}, c, None) for lm, c in zip(settings["lmbdas"], codecs)]
                print(f"{dataset} {model}: done", flush=True)
            wide = settings["variable"].get("latent", LATENT)
            if wide != LATENT:  # the per-lambda models the variable-rate one replaces, at its code size
                name = f"aejax rd_factorized (M={wide})"
                curves[name], training_runs[name], _ = aejax_curves("rd_factorized", dataset, train, test, coded,
                                                                     settings, runs, wide)
                print(f"{dataset} rd_factorized M={wide}: done", flush=True)
            curves["aejax rd_variable"], training_runs["aejax rd_variable"], codec = variable_curve(
                dataset, train, test, coded, settings, runs)
            learned["aejax rd_variable"] = [({"quality": q}, codec, q) for q in VARIABLE_QUALITIES]
            print(f"{dataset} rd_variable: done", flush=True)
            if args.compressai_python:
                for peer in settings["peers"]:
                    curves[f"compressai {peer}"], speed[f"compressai_{peer}_training_runs"] = compressai_curve(
                        args.compressai_python, train, coded, settings, runs, peer)
                speed["side_by_side"] = speeds(args.compressai_python, dataset, train, runs)
            elif args.peers_from:
                peer_curves, peer_speed = peers_from(peers, args.peers_from, dataset, settings, len(coded), len(test))
                curves.update(peer_curves)
                speed.update(peer_speed)
            curves[ESTIMATE] = conv_entropy_curve(dataset, train, test, coded, settings["epochs"], runs)
            curves.update(classic_curves(coded))
            part = {"settings": {**settings, "train_images": len(train), "test_images": len(test),
                                 "coded_images": len(coded), "image_shape": list(test.shape[1:])},
                    "curves": curves, "lossless_bits_per_image": lossless_sizes(coded), "speed": speed,
                    "training": training_runs,
                    "peers": ("trained here" if args.compressai_python else
                              f"copied from {args.peers_from}" if args.peers_from else "not run")}
            if settings["photographs"]:
                crop_codec, crop_training = photo_crop_model(runs)
                learned[crop_training["model"]] = [({"quality": q}, crop_codec, q) for q in VARIABLE_QUALITIES]
                part["photographs"] = {**photograph_curves(learned), "training": crop_training}
            summaries(part)
            report["datasets"] = in_order({**report["datasets"], dataset: part})
            write_json(out / "codec.json", report)
        write_table_and_figure(report, out)

    cli.cli(body)


if __name__ == "__main__":
    main()
