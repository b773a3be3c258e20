"""Linear, conv and conv_strided autoencoders at code 32 on the two non-MNIST image sets, with PCA beside them.

    python -m experiments.datasets_table --out docs/datasets

Each model trains 3 seeds together (one vmapped program) on `lfw_faces` (25x25x1, 160 training images) and
`photo_patches` (32x32x3, 1,910 training patches); test MSE, PSNR and SSIM are means over the seeds (± the
spread across them). Writes `results.json` (every row) and `table.md` into `--out`, and the run directories
under `--out/runs` (not meant for the repository).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aejax import cli
from aejax.config import Config
from aejax.data import datasets
from aejax.evaluation import metrics
from aejax.files import refuse_overwrite, write_atomic, write_json
from aejax.training import loop
from aejax.training.results import result_row

CODE = 32
SETTINGS = {"lfw_faces": {"epochs": 60, "batch_size": 20}, "photo_patches": {"epochs": 20, "batch_size": 25}}
MODELS = {"linear": {}, "conv": {"conv_features": (32, 32)}, "conv_strided": {"conv_features": (32, 64)}}


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.datasets_table", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (results.json, table.md, runs/)")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace results.json if it exists")
    args = p.parse_args()

    def body() -> None:
        out = Path(args.out)
        refuse_overwrite([out / "results.json"], args.overwrite)
        rows = []
        for name, settings in SETTINGS.items():
            source = datasets.source(name, args.data_dir)
            train_images = source.rows(range(source.n_train))
            pca = metrics.fit_pca(train_images, [CODE])[CODE]
            pixels = int(np.prod(source.shape))
            rows.append({"dataset": name, **result_row(
                model="pca", variant="pca", latent_dim=CODE, epochs=0, seed=None, pixels=pixels,
                scores=metrics.reconstruction_metrics(metrics.Pca.reconstruct, pca, source.test),
                params=CODE * pixels + pixels, train_seconds=0.0)})
            for model, extra in MODELS.items():
                config = Config(model=model, dataset=name, latent_dim=CODE, **settings, **extra)
                result = loop.run(config, out / "runs" / f"{name}_{model}", seeds=[0, 1, 2], data_dir=args.data_dir,
                                  overwrite=args.overwrite)
                rows += [{"dataset": name, **row} for row in result.rows]
        write_json(out / "results.json", rows)
        lines = ["| dataset | model | seeds | test MSE | PSNR (dB) | SSIM | params |", "|---|---|---|---|---|---|---|"]
        for name in SETTINGS:
            for model in ("pca", *MODELS):
                group = [r for r in rows if r["dataset"] == name and r["variant"] == model]
                mse = np.array([r["test_mse"] for r in group])
                lines.append(f"| {name} | {model} | {len(group)} | {mse.mean():.5f} ± {mse.std():.5f} | "
                             f"{np.mean([r['test_psnr_db'] for r in group]):.2f} | "
                             f"{np.mean([r['test_ssim'] for r in group]):.3f} | {group[0]['params']:,} |")
        write_atomic(out / "table.md", "\n".join(lines) + "\n")
        print("\n".join(lines))

    cli.cli(body)


if __name__ == "__main__":
    main()
