"""The latent space of trained models: the test codes in 2-D, and interpolation between two test digits.

    python -m experiments.latent_space --study runs/study --out runs/latent [--depth 32] [--arms linear,conv]

Reloads the study's models (seed 0). `latent_codes.png`: the 10k test codes projected onto their top two
principal components, coloured by digit label, one panel per model. `latent_interpolation.png`: decodings of
(1 - t) z_a + t z_b for t in [0, 1] between the first two test digits (a 7 and a 2), one row per model.
"""

from pathlib import Path

import jax
import numpy as np

from aejax import metrics, plots, train
from aejax.data import load_mnist
from aejax.rundir import make_output_dir


def main() -> None:
    p = train.ArgumentParser(prog="python -m experiments.latent_space", description=__doc__.splitlines()[0])
    p.add_argument("--study", default="runs/study")
    p.add_argument("--out", required=True)
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--arms", default="linear,conv")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    def body() -> None:
        out = make_output_dir(args.out)
        test = load_mnist("test", data_dir=args.data_dir)
        projections, rows = {}, {}
        t = np.linspace(0.0, 1.0, 10, dtype=np.float32)[:, None]
        for arm in args.arms.split(","):
            model, params, _ = train.load_model(Path(args.study) / "runs" / f"{arm}_d{args.depth}")
            variables = {"params": params}
            encode = jax.jit(lambda x, m=model, v=variables: m.apply(v, metrics.to_float(x), method=m.encode))
            codes = np.concatenate([np.asarray(encode(test.images[i:i + 1000]))
                                    for i in range(0, len(test.images), 1000)])
            centred = codes - codes.mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            projections[f"{arm}, code {args.depth}"] = centred @ vt[:2].T
            path = (1 - t) * codes[0] + t * codes[1]  # [10, d]
            rows[f"{arm} {args.depth}"] = np.asarray(model.apply(variables, path, method=model.decode))
        plots.latent_scatter(out / "latent_codes.png", projections, test.labels)
        plots.grid(out / "latent_interpolation.png", rows,
                   "Decoded interpolation between two test codes, t = 0 ... 1 (linear in code space)")
        print(f"wrote {out / 'latent_codes.png'} and {out / 'latent_interpolation.png'}")

    train.cli(body)


if __name__ == "__main__":
    main()
