"""The latent space of trained models: the test codes in 2-D, and interpolation between two test digits.

    python -m experiments.latent_space --study runs/study --out runs/latent [--depth 32] [--arms linear,conv]

Reloads the study's models (seed 0). `latent_codes.png`: the 10k test codes projected onto their top two
principal components, coloured by digit label, one panel per model. `latent_interpolation.png`: decodings of
(1 - t) z_a + t z_b for t in [0, 1] between the first two test digits (a 7 and a 2), one row per model.
`latent.json`: per model, the leave-one-out 1-nearest-neighbour label accuracy of the test codes (in the full
code space and in the 2-D projection), the code variance the 2-D projection keeps, and raw pixels' accuracy.
"""

from pathlib import Path

import numpy as np

from aejax import cli
from aejax.configs.study import parse_arms
from aejax.data import load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.evaluation import metrics, plots
from aejax.files import make_output_dir, refuse_overwrite, write_json
from aejax.models import inference
from aejax.training.restore import load_model
from experiments.depth_study import study_run_dir


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.latent_space", description=__doc__.splitlines()[0])
    p.add_argument("--study", default="runs/study", help="a study output directory (its runs/ are reloaded)")
    p.add_argument("--out", required=True, help="output directory (latent.json and the two figures)")
    p.add_argument("--depth", type=int, default=32, help="code size of the models to look at")
    p.add_argument("--arms", default="linear,conv", help="study arms to look at, comma-separated")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file(s) if they exist")
    args = p.parse_args()

    def body() -> None:
        run_dirs = {arm.label: study_run_dir(args.study, arm.label, args.depth) for arm in parse_arms(args.arms)}
        missing = [str(d) for d in run_dirs.values() if not (d / "config.json").exists()]
        if missing:
            raise AejaxError(f"no trained run at {', '.join(missing)}: pass --study, a study "
                             f"output directory, and --depth/--arms that it trained")
        refuse_overwrite([Path(args.out) / name for name in ("latent.json", "latent_codes.png",
                                                              "latent_interpolation.png")], args.overwrite)
        test = load_mnist("test", data_dir=args.data_dir)
        out = make_output_dir(args.out)  # only once the flags and the data are known to be good
        projections, rows, summary = {}, {}, {}
        pixels = metrics.to_float(test.images).reshape(len(test.images), -1)
        summary["pixels"] = {"nn_accuracy_code": metrics.nearest_neighbour_accuracy(pixels, test.labels)}
        t = np.linspace(0.0, 1.0, 10, dtype=np.float32)[:, None]
        for arm, run_dir in run_dirs.items():
            model, variables, _ = load_model(run_dir)
            codes = np.asarray(inference.encode(model, variables, test.images)).reshape(len(test.images), -1)
            pca = metrics.fit_pca(codes, [codes.shape[1]])[codes.shape[1]]  # [N, d] codes, all components
            plane = np.asarray(pca.encode(codes))[:, :2]  # [N, 2]
            projections[f"{arm}, code {args.depth}"] = plane
            summary[arm] = {"nn_accuracy_code": metrics.nearest_neighbour_accuracy(codes, test.labels),
                            "nn_accuracy_2d": metrics.nearest_neighbour_accuracy(plane, test.labels),
                            "variance_in_2d": float(pca.variance[:2].sum() / pca.variance.sum())}
            print(f"{arm}: {summary[arm]}", flush=True)
            path = (1 - t) * codes[0] + t * codes[1]  # [10, d]
            rows[f"{arm} {args.depth}"] = np.asarray(inference.decode(model, variables, path))
        write_json(out / "latent.json", {"depth": args.depth, "study": str(args.study), "models": summary,
                                         "environment": environment()})
        plots.latent_scatter(out / "latent_codes.png", projections, test.labels)
        plots.grid(out / "latent_interpolation.png", rows,
                   "Decoded interpolation between two test codes, t = 0 ... 1 (linear in code space)")
        print(f"wrote {out / 'latent_codes.png'} and {out / 'latent_interpolation.png'}")

    cli.cli(body)


if __name__ == "__main__":
    main()
