"""Model selection without the test set: train variants on part of the training images, score each on the
held-out rest, and only then look at the test set.

`held_out_split` cuts the training images into a fitting part and a held-out part (the last `held_out`
images, so the split is the same for every variant and every seed). `score_variants` trains each named config
with those images as its validation split (through `aejax.run`, resumed when its run directory already holds
it) and returns one row per variant: its held-out error, chosen on, and its test error, scored once at the end
and reported beside it but never chosen on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from aejax import models
from aejax.config import MNIST_PIXELS, Config
from aejax.data import Source
from aejax.environment import environment
from aejax.errors import AejaxError
from aejax.files import write_atomic, write_json
from aejax.training import loop

Array = jax.Array


def held_out_split(train_images: Array | np.ndarray, held_out: int) -> tuple[Array, Array]:
    """(fitting part, held-out part) of uint8 training images `[N, 28, 28, 1]`: the first N - `held_out`
    images and the last `held_out`."""
    n = train_images.shape[0]
    if not 0 < held_out < n:
        raise AejaxError(f"held_out must be in 1..{n - 1} (of {n:,} training images), got {held_out}",
                         cli=f"--held-out must be in 1..{n - 1} (of {n:,} training images), got {held_out}")
    return train_images[: n - held_out], train_images[n - held_out:]


def se_per_image(mse: float) -> float:
    """Squared error summed over an image's 784 pixels, from the per-pixel MSE (Hinton & Salakhutdinov's
    measure: pixels in [0, 1], summed per image, averaged over the images)."""
    return float(mse) * MNIST_PIXELS


def score_variants(variants: Mapping[str, Config], train_images: Array, test_images: Array, out_dir: str | Path,
                   *, held_out: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every variant on the fitting part of `train_images`, score it on the held-out part and on the test
    set; one row per variant (seed `config.seed`), in the order given. Run directories: `out_dir/NAME`.

    The held-out part is the run's own validation split (`validation_examples`, scored every epoch as `val_mse`;
    the test set once, at the end): the source gives the run its training images with the last `held_out`
    first and says so by its row order (`Source.split_hash`), so the split is those images, and the fitting part
    keeps its order (the batches are those of training on it alone)."""
    held_out_split(train_images, held_out)  # its checks
    n = train_images.shape[0]
    order = np.concatenate([np.arange(n - held_out, n), np.arange(n - held_out)])  # the held-out images first
    source = Source(n, lambda r: train_images[order[r.start:r.stop]], test_images,
                    lambda indices: train_images[order[np.asarray(indices)]], split_hash=np.arange(n) / n)
    rows = []
    for i, (name, config) in enumerate(variants.items(), start=1):
        log(f"== variant {name} ({i}/{len(variants)}): trains on {n - held_out:,} images, scored on the "
            f"{held_out:,} held out")
        result = loop.run(config.replace(validation_examples=held_out), Path(out_dir) / name, data=source,
                          resume=True, variant=name, log=log)
        row, mse_loss = result.rows[0], models.resolve(config).loss == "mse"
        rows.append({"variant": name, "latent_dim": config.latent_dim, "held_out_mse": row["val_mse"],
                     "test_mse": row["test_mse"],
                     "held_out_se_per_image": se_per_image(row["val_mse"]),
                     "test_se_per_image": se_per_image(row["test_mse"]),
                     "train_se_per_image": se_per_image(row["final_train_loss"]) if mse_loss else None,
                     "epochs": config.epochs, "params": row["params"], "train_seconds": row["train_seconds"],
                     "config": config.to_dict()})
    return rows


def best(rows: list[dict[str, Any]]) -> dict[int, str]:
    """Code size -> the variant of that code size with the lowest held-out error."""
    return {d: min((r for r in rows if r["latent_dim"] == d), key=lambda r: r["held_out_mse"])["variant"]
            for d in sorted({r["latent_dim"] for r in rows})}


def markdown(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A Markdown table: one line per row, each column a title and a format string over the row's keys."""
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt.format(**row) for _, fmt in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


VARIANT_COLUMNS = [("variant", "{variant}"), ("code", "{latent_dim}"),
                   ("held-out SE/image", "{held_out_se_per_image:.2f}"), ("test SE/image", "{test_se_per_image:.2f}"),
                   ("held-out MSE", "{held_out_mse:.5f}"),
                   ("test MSE", "{test_mse:.5f}"), ("epochs", "{epochs}"), ("parameters", "{params:,}"),
                   ("train s", "{train_seconds:.0f}")]


def write_variants(out_dir: str | Path, rows: list[dict[str, Any]], held_out: int) -> str:
    """`variants.json` (the rows, the split, the environment) and `variants.md` in `out_dir`; returns the table."""
    out_dir = Path(out_dir)
    write_json(out_dir / "variants.json", {"rows": rows, "held_out": held_out, "chosen": best(rows),
                                           "environment": environment()})
    chosen = "; ".join(f"code {d}: {name}" for d, name in best(rows).items())
    text = markdown(rows, VARIANT_COLUMNS) + f"\nlowest held-out error: {chosen}\n"
    write_atomic(out_dir / "variants.md", text)
    return text
