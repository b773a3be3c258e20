"""Compression that counts bits: quantised autoencoder and PCA codes against PNG and JPEG on the 10k test images.

    python -m experiments.rate_distortion --study runs/study --out runs/rate_distortion

Reloads the study's trained models (seed 0, no retraining) for the arms `linear` and `conv` at every depth,
quantises their codes uniformly at several step sizes (relative to the code's standard deviation), estimates
the rate as the empirical entropy of the symbols (`aejax.evaluation.compression`), decodes and scores. PCA codes
fitted on the training images are quantised the same way. PNG (lossless) and JPEG (Pillow, optimised Huffman tables) are
reported as whole files and as payload: the file minus an all-black image's file (headers and tables), since the
codes' entropy estimate pays no such overhead. Writes `rate_distortion.json` and `rate_distortion.png`.
"""

import json
from pathlib import Path

import jax
import numpy as np

from aejax import cli
from aejax.config import MNIST_SHAPE
from aejax.configs.study import parse_arms
from aejax.data import load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.evaluation import compression, metrics, plots
from aejax.files import make_output_dir, refuse_overwrite, write_json
from aejax.models import inference
from aejax.training.restore import load_model
from experiments.depth_study import study_runs

RELATIVE_STEPS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
JPEG_QUALITIES = (5, 10, 20, 40, 60, 80, 95)


def model_curve(run_dir: Path, images: np.ndarray) -> list[dict]:
    model, variables, _ = load_model(run_dir)
    codes = np.asarray(inference.encode(model, variables, images))
    return compression.code_curve(codes, lambda z: np.asarray(inference.decode(model, variables, z)), images,
                                  RELATIVE_STEPS)


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.rate_distortion", description=__doc__.splitlines()[0])
    p.add_argument("--study", default="runs/study", help="a study output directory (its runs/ are reloaded)")
    p.add_argument("--out", required=True, help="output directory (rate_distortion.json and .png)")
    p.add_argument("--arms", default="linear,conv", help="study arms whose codes to quantise, comma-separated")
    p.add_argument("--test-examples", type=cli.positive_int, default=None,
                   help="score on the first N test images (quick checks; default: all 10,000)")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file(s) if they exist")
    args = p.parse_args()

    def body() -> None:
        test = load_mnist("test", data_dir=args.data_dir, examples=args.test_examples).images
        runs = study_runs(args.study)  # arm -> [(depth, run dir)], by depth
        arms = [arm.label for arm in parse_arms(args.arms)]
        missing = [a for a in arms if a not in runs]
        if missing:
            raise AejaxError(f"{args.study}/runs holds no run of arm(s) {', '.join(missing)}; "
                             f"it has {', '.join(sorted(runs)) or 'none'} (pass --study, a study output directory)")
        out = make_output_dir(args.out)
        refuse_overwrite([out / "rate_distortion.json"], args.overwrite)
        train_images = load_mnist("train", data_dir=args.data_dir).images
        curves: dict[str, list[dict]] = {}
        for arm in arms:
            for depth, run_dir in runs[arm]:
                curves[f"{arm} d{depth}"] = model_curve(run_dir, test)
                print(f"{arm} d{depth}: done", flush=True)
        depths = sorted({depth for arm in arms for depth, _ in runs[arm]})
        pcas = metrics.fit_pca(jax.device_put(train_images), [d for d in depths if d <= 256])
        for k, pca in pcas.items():
            codes = np.asarray(pca.encode(metrics.to_float(jax.device_put(test))))
            curves[f"pca d{k}"] = compression.code_curve(
                codes, lambda z, pca=pca: np.asarray(pca.decode(z)).reshape(-1, *MNIST_SHAPE), test, RELATIVE_STEPS)
        png = float(compression.png_bits(test).mean())
        png_header = compression.blank_bits("png")
        curves["png (lossless)"] = [{"bits_per_image": png, "mse": 0.0, "psnr_db": None, "ssim": 1.0}]
        curves["png payload (lossless)"] = [{"bits_per_image": png - png_header, "header_bits": png_header,
                                             "mse": 0.0, "psnr_db": None, "ssim": 1.0}]  # PSNR infinite
        curves["jpeg"], curves["jpeg payload"] = [], []
        for q in JPEG_QUALITIES:
            bits, decoded = compression.jpeg(test, q)
            score = metrics.score(test, decoded.astype(np.float32) / 255.0)
            header = compression.blank_bits("jpeg", q)
            curves["jpeg"].append({"quality": q, "bits_per_image": float(bits.mean()), **score})
            curves["jpeg payload"].append({"quality": q, "bits_per_image": float(bits.mean()) - header,
                                           "header_bits": header, **score})
        write_json(out / "rate_distortion.json", {"curves": curves, "relative_steps": list(RELATIVE_STEPS),
                                                  "study": str(args.study), "environment": environment()})
        plots.rate_distortion(out / "rate_distortion.png", curves)
        for name, points in curves.items():
            best = max(points, key=lambda pt: pt["psnr_db"] if pt["psnr_db"] is not None else float("inf"))
            print(f"{name:>16}: {json.dumps({k: round(v, 3) for k, v in best.items() if isinstance(v, float)})}")

    cli.cli(body)


if __name__ == "__main__":
    main()
