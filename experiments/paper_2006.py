"""Hinton & Salakhutdinov (2006) on their own table: PCA, their 784-1000-500-250-30 architecture trained from
random initialisation, and aejax's best 30-value code, scored as squared error per test image.

    python -m experiments.paper_2006 --out runs/paper_2006              # PCA, the paper's model, the best one
    python -m experiments.paper_2006 --out runs/paper_2006 --variants   # PCA, every variant (model selection)

Settings, variants and the selection protocol: `aejax/configs/paper_2006.py`. Writes `results.json` (one row
per model, `test_se_per_image` beside `test_mse`) and `results.md` (aejax's rows beside the paper's); with
`--variants` instead `variants.json` / `variants.md` (each variant's held-out error, which chose BEST, and its
test error). Runs are resumed, not redone, when the command is repeated.
"""

import jax

from aejax import cli
from aejax.config import MNIST_PIXELS
from aejax.configs.paper_2006 import BEST, CODE, HELD_OUT, PAPER, PAPER_TABLE, VARIANTS
from aejax.data import load_mnist
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.evaluation import metrics
from aejax.files import make_output_dir, write_atomic, write_json
from aejax.training import loop
from aejax.training.results import result_row
from experiments import selection

RESULT_COLUMNS = [("aejax model (code 30)", "{name}"), ("SE per test image", "{test_se_per_image:.2f}"),
                  ("test MSE", "{test_mse:.5f}"), ("epochs", "{epochs}"), ("parameters", "{params:,}"),
                  ("train s (this CPU)", "{train_seconds:.0f}")]


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.paper_2006", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (runs are resumed from it)")
    p.add_argument("--variants", action="store_true",
                   help="instead of the final models, train every variant on the first 50,000 training images and "
                        "score it on the held-out rest")
    p.add_argument("--only", default=None, help="with --variants: the variants to train, comma-separated")
    p.add_argument("--epochs", type=cli.positive_int, default=None,
                   help="override every model's epochs, warmup scaled alike (a quick check; the table's use the "
                        "configs')")
    p.add_argument("--train-examples", type=cli.positive_int, default=None,
                   help="use only the first N training images (a quick check)")
    p.add_argument("--held-out", type=cli.positive_int, default=HELD_OUT,
                   help="with --variants: training images held out to score the variants")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data (default: tfds's)")
    p.add_argument("--mnist-dir", default=None, help="directory of the four MNIST IDX files")
    args = p.parse_args()

    def body() -> None:
        def configured(config):
            return config if args.epochs is None else config.with_epochs(args.epochs)

        names = list(VARIANTS) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in VARIANTS]
        if unknown or not names:
            raise AejaxError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; choose from "
                                       f"{', '.join(VARIANTS)}")
        train_np = load_mnist("train", data_dir=args.data_dir, mnist_dir=args.mnist_dir,
                              examples=args.train_examples).images
        test_np = load_mnist("test", data_dir=args.data_dir, mnist_dir=args.mnist_dir).images
        if args.variants:
            selection.held_out_split(train_np, args.held_out)  # a bad --held-out fails before --out is made
        out = make_output_dir(args.out)
        train_images, test_images = jax.device_put(train_np), jax.device_put(test_np)

        pca = metrics.fit_pca(train_images, [CODE])[CODE]
        pca_row = result_row(model="pca", variant="pca", latent_dim=CODE, epochs=0, seed=None,
                             scores=metrics.reconstruction_metrics(metrics.Pca.reconstruct, pca, test_images),
                             params=CODE * MNIST_PIXELS + MNIST_PIXELS, train_seconds=0.0)
        pca_row["test_se_per_image"] = selection.se_per_image(pca_row["test_mse"])
        print(f"PCA, {CODE} components fitted on the {len(train_np):,} training images: "
              f"{pca_row['test_se_per_image']:.2f} per test image (paper: {PAPER_TABLE['PCA']:.2f})")

        if args.variants:
            rows = selection.score_variants({n: configured(VARIANTS[n]) for n in names}, train_images,
                                            test_images, out / "variants", held_out=args.held_out)
            print(selection.write_variants(out, rows, args.held_out))
            return

        rows = [pca_row]
        for label, config in (("paper", PAPER), (f"best: {BEST}", VARIANTS[BEST])):
            print(f"== {label}: trains on all {len(train_np):,} training images")
            result = loop.run(configured(config), out / "runs" / label.split(":")[0], resume=True,
                               data=(train_images, test_images), variant=label, log=print)
            rows.append({**result.rows[0], "test_se_per_image": selection.se_per_image(result.rows[0]["test_mse"])})
        write_json(out / "results.json", {"rows": rows, "paper": PAPER_TABLE, "environment": environment()})
        published = selection.markdown([{"name": f"{name} (paper)", "se": se} for name, se in PAPER_TABLE.items()],
                                       [("published (code 30)", "{name}"), ("SE per test image", "{se:.2f}")])
        measured = selection.markdown([{**r, "name": r["variant"]} for r in rows], RESULT_COLUMNS)
        write_atomic(out / "results.md", published + "\n" + measured)
        print(published + "\n" + measured)

    cli.cli(body)


if __name__ == "__main__":
    main()
