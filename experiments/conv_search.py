"""Choose the study's new conv arm on held-out training images: every candidate of
`aejax.configs.study.CONV_CANDIDATES`, and the arms it must beat, at each depth.

    python -m experiments.conv_search --out runs/conv_search [--depths 32,256] [--held-out 10000]

Each trains on the first 50,000 training images (5 epochs, seed 0) and is scored on the last 10,000; the test
error is written beside it, never chosen on. Writes `variants.json` and `variants.md`.
"""

import jax

from aejax import cli
from aejax.configs.study import ARMS, CONV_BASELINES, CONV_CANDIDATES
from aejax.data import load_mnist
from aejax.errors import AejaxError
from aejax.files import make_output_dir
from experiments import selection


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.conv_search", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (runs are resumed from it)")
    p.add_argument("--depths", default="32,256", help="code sizes, comma-separated")
    p.add_argument("--candidates", default=",".join(CONV_CANDIDATES),
                   help=f"candidates to train, from: {', '.join(CONV_CANDIDATES)}")
    p.add_argument("--held-out", type=cli.positive_int, default=10_000, help="training images held out to score")
    p.add_argument("--train-examples", type=cli.positive_int, default=None, help="use the first N training images")
    p.add_argument("--epochs", type=cli.positive_int, default=None,
                   help="override the epochs, warmup scaled alike (a quick check)")
    p.add_argument("--data-dir", default=None, help="where tfds keeps prepared data")
    p.add_argument("--mnist-dir", default=None, help="directory of the four MNIST IDX files")
    args = p.parse_args()

    def body() -> None:
        depths = cli.parse_ints(args.depths, "--depths")
        names = [n.strip() for n in args.candidates.split(",") if n.strip()]
        unknown = [n for n in names if n not in CONV_CANDIDATES]
        if unknown or not names:
            raise AejaxError(f"unknown candidate(s) {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(CONV_CANDIDATES)}")
        bases = {**{n: CONV_CANDIDATES[n] for n in names}, **{n: ARMS[n].config for n in CONV_BASELINES}}
        variants = {f"{n}_d{d}": (c if args.epochs is None else c.with_epochs(args.epochs)).replace(latent_dim=d)
                    for d in depths for n, c in bases.items()}
        train_np = load_mnist("train", data_dir=args.data_dir, mnist_dir=args.mnist_dir,
                              examples=args.train_examples).images
        test_np = load_mnist("test", data_dir=args.data_dir, mnist_dir=args.mnist_dir).images
        selection.held_out_split(train_np, args.held_out)  # a bad --held-out fails before --out is created
        out = make_output_dir(args.out)
        rows = selection.score_variants(variants, jax.device_put(train_np), jax.device_put(test_np),
                                        out / "variants", held_out=args.held_out)
        print(selection.write_variants(out, rows, args.held_out))

    cli.cli(body)


if __name__ == "__main__":
    main()
