"""Denoising autoencoders against classical filters and PCA projection, on the 10k test images.

    python -m experiments.denoising --out runs/denoising [--sigmas 0.1,0.3,0.5] [--latent-dim 64] [--epochs 5]

Trains the linear (original) and the depth-matched conv autoencoder on Gaussian-noised inputs with clean
targets (noise drawn on the device from each step's key), then scores, on one fixed noisy copy of the test set:
the noisy input itself, each autoencoder, a 3x3 median filter, a Gaussian blur (sigma 1) and projection onto
the top-d PCA components of the clean training images. Writes `denoising.json`, `denoising.md`, `denoising.png`.
"""


import jax
import numpy as np

from aejax import baselines, corruption, metrics, plots, train
from aejax.configs.study import ARMS
from aejax.data import load_mnist
from aejax.rundir import environment, make_output_dir, write_json

NOISE_SEED = 1234  # the fixed noisy test set


def main() -> None:
    p = train.ArgumentParser(prog="python -m experiments.denoising", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--sigmas", default="0.1,0.3,0.5", help="Gaussian noise levels")
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default="linear,conv")
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    def body() -> None:
        out = make_output_dir(args.out)
        sigmas = [float(s) for s in args.sigmas.split(",")]
        train_np = load_mnist("train", data_dir=args.data_dir).images
        test_np = load_mnist("test", data_dir=args.data_dir).images
        data = (jax.device_put(train_np), jax.device_put(test_np))
        clean = metrics.to_float(data[1])
        pca = metrics.fit_pca(data[0], [args.latent_dim])[args.latent_dim]
        rows, figure_rows = [], {"clean": np.asarray(test_np[:10])}
        for sigma in sigmas:
            noisy = corruption.gaussian(jax.random.key(NOISE_SEED), clean, sigma)
            outputs = {"noisy input": noisy, "median 3x3": baselines.median3x3(noisy),
                       "gaussian blur": baselines.gaussian_blur(noisy),
                       f"pca {args.latent_dim}": jax.numpy.clip(pca.reconstruct(noisy), 0, 1)}
            for arm in args.arms.split(","):
                config = ARMS[arm].config.replace(latent_dim=args.latent_dim, epochs=args.epochs, seed=args.seed,
                                                  noise="gaussian", noise_level=sigma,
                                                  train_examples=args.train_examples)
                run_dir = out / "runs" / f"{arm}_d{args.latent_dim}_sigma{sigma}"
                train.run(config, run_dir, data=data, resume=True)
                model, params, _ = train.load_model(run_dir)
                apply = jax.jit(lambda x, model=model, params=params: model.apply({"params": params}, x))
                outputs[f"{arm} AE"] = np.concatenate([np.asarray(apply(noisy[i:i + 1000]))
                                                       for i in range(0, len(noisy), 1000)])
            for method, recon in outputs.items():
                rows.append({"sigma": sigma, "method": method, **metrics.score(test_np, np.asarray(recon))})
                figure_rows[f"σ={sigma} {method}"] = np.asarray(recon[:10])
        write_json(out / "denoising.json", {"rows": rows, "latent_dim": args.latent_dim, "epochs": args.epochs,
                                            "noise_seed": NOISE_SEED, "environment": environment()})
        lines = ["| sigma | method | PSNR (dB) | SSIM | MSE |", "|---|---|---|---|---|"]
        lines += [f"| {r['sigma']} | {r['method']} | {r['psnr_db']:.2f} | {r['ssim']:.4f} | {r['mse']:.5f} |"
                  for r in rows]
        (out / "denoising.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        plots.grid(out / "denoising.png", figure_rows,
                   f"Gaussian noise: noisy input, then each denoiser (code {args.latent_dim}), clean on top")

    train.cli(body)


if __name__ == "__main__":
    main()
