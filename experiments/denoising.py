"""Denoising autoencoders against classical filters and PCA projection, on the 10k test images.

    python -m experiments.denoising --out runs/denoising [--noise gaussian --levels 0.1,0.3,0.5]
        [--latent-dim 64] [--epochs 5]
    python -m experiments.denoising --noise salt_pepper --levels 0.1,0.3 --out runs/denoising_sp

Trains the linear (original) and the depth-matched conv autoencoder on corrupted inputs with clean targets
(Gaussian noise of std `level`, salt-and-pepper or masking at rate `level`, drawn on the device from each
step's key), then scores, on one fixed corrupted copy of the test set:
the noisy input itself, each autoencoder, a 3x3 median filter, a Gaussian blur (sigma 1) and projection onto
the top-d PCA components of the clean training images. Writes `denoising.json`, `denoising.md`, `denoising.png`.
"""

from pathlib import Path

import jax
import numpy as np

from aejax import cli
from aejax.configs.study import parse_arms
from aejax.data import corruption, load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.evaluation import baselines, metrics, plots
from aejax.files import make_output_dir, refuse_overwrite, write_json
from aejax.models import inference
from aejax.training import loop

NOISE_SEED = 1234  # the fixed noisy test set


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.denoising", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (runs/, denoising.json/.md/.png)")
    p.add_argument("--noise", choices=[k for k in corruption.KINDS if k != "none"], default="gaussian",
                   help="the corruption to train and score on")
    p.add_argument("--levels", default="0.1,0.3,0.5", help="noise std (gaussian) or corruption rates, comma-separated")
    p.add_argument("--latent-dim", type=int, default=64, help="code size of every autoencoder")
    p.add_argument("--epochs", type=int, default=5, help="training epochs per autoencoder")
    p.add_argument("--seed", type=int, default=0, help="training seed of every autoencoder")
    p.add_argument("--arms", default="linear,conv", help="study arms to train as denoisers (aejax/configs/study.py)")
    p.add_argument("--train-examples", type=int, default=None, help="train on the first N images only")
    p.add_argument("--test-examples", type=cli.positive_int, default=None,
                   help="score on the first N test images (quick checks; default: all 10,000)")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file(s) if they exist")
    args = p.parse_args()

    def body() -> None:
        try:
            levels = [float(s) for s in args.levels.split(",")]
        except ValueError:
            raise AejaxError(f"--levels must be comma-separated numbers, got {args.levels!r}") from None
        arms = parse_arms(args.arms)
        configs = {(level, arm.label): arm.config.replace(  # validated here, before any work
            latent_dim=args.latent_dim, epochs=args.epochs, seed=args.seed, noise=args.noise, noise_level=level,
            train_examples=args.train_examples) for level in levels for arm in arms}
        refuse_overwrite([Path(args.out) / "denoising.json"], args.overwrite)
        train_np = load_mnist("train", data_dir=args.data_dir).images
        test_np = load_mnist("test", data_dir=args.data_dir, examples=args.test_examples).images
        out = make_output_dir(args.out)  # only once the flags and the data are known to be good
        data = (jax.device_put(train_np), jax.device_put(test_np))
        clean = metrics.to_float(data[1])
        pca = metrics.fit_pca(data[0], [args.latent_dim])[args.latent_dim]
        rows, figure_rows = [], {"clean": np.asarray(test_np[:10])}
        for level in levels:
            noisy = corruption.corrupt(jax.random.key(NOISE_SEED), clean, args.noise, level)
            outputs = {"noisy input": noisy, "median 3x3": baselines.median3x3(noisy),
                       "gaussian blur": baselines.gaussian_blur(noisy),
                       f"pca {args.latent_dim}": jax.numpy.clip(pca.reconstruct(noisy), 0, 1)}
            for arm in arms:
                run_dir = out / "runs" / f"{arm.label}_d{args.latent_dim}_{args.noise}{level}"
                result = loop.run(configs[level, arm.label], run_dir, data=data, resume=True)
                outputs[f"{arm.label} AE"] = inference.reconstruct(result.model, result.variables[0], noisy)
            for method, recon in outputs.items():
                rows.append({"noise": args.noise, "level": level, "method": method,
                             **metrics.score(test_np, np.asarray(recon))})
                figure_rows[f"{level} {method}"] = np.asarray(recon[:10])
        write_json(out / "denoising.json", {"rows": rows, "noise": args.noise, "latent_dim": args.latent_dim,
                                            "epochs": args.epochs, "seed": args.seed, "noise_seed": NOISE_SEED,
                                            "environment": environment()})
        lines = [f"| {args.noise} level | method | PSNR (dB) | SSIM | MSE |", "|---|---|---|---|---|"]
        lines += [f"| {r['level']} | {r['method']} | {r['psnr_db']:.2f} | {r['ssim']:.4f} | {r['mse']:.5f} |"
                  for r in rows]
        (out / "denoising.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        plots.grid(out / "denoising.png", figure_rows,
                   f"{args.noise} noise: corrupted input, then each denoiser (code {args.latent_dim}), clean on top")

    cli.cli(body)


if __name__ == "__main__":
    main()
