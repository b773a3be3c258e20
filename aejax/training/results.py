"""The results schema: one row per trained model or baseline, as every `results.json`, table and figure reads it."""

from __future__ import annotations

from typing import Any

from aejax.config import MNIST_PIXELS


def result_row(*, model: str, variant: str, latent_dim: int, epochs: int, seed: int | None,
               scores: dict[str, float], params: int, train_seconds: float, pixels: int = MNIST_PIXELS,
               **extra: Any) -> dict[str, Any]:
    """One row of a results.json (a trained model's or a baseline's), the schema every table and figure reads.

    `scores` is `metrics.finalize`'s dict (mse, psnr_db, ssim); `pixels` the values per image (H * W * C), over
    which `compression_ratio` counts; `extra` adds fields after the common ones.
    """
    return {"model": model, "variant": variant, "latent_dim": latent_dim,
            "compression_ratio": pixels / latent_dim, "epochs": epochs, "seed": seed,
            "test_mse": scores["mse"], "test_psnr_db": scores["psnr_db"], "test_ssim": scores["ssim"],
            "params": params, "train_seconds": train_seconds, **extra}
