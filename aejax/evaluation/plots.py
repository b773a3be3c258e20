"""Every figure aejax draws (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aejax.config import MNIST_PIXELS  # noqa: E402
from aejax.files import write_atomic  # noqa: E402


def _image(x: np.ndarray) -> np.ndarray:
    """One image `[H, W, C]` (uint8, or float in [0, 1]) as imshow takes it: `[H, W]` grey or `[H, W, 3]` RGB,
    float in [0, 1]; an image of another channel count shows its first channel in grey."""
    x = np.asarray(x)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else np.clip(x.astype(np.float32), 0.0, 1.0)
    return x[..., 0] if x.ndim == 3 and x.shape[-1] != 3 else x


def _save(fig, path: str | Path) -> None:
    """The figure as a PNG, written atomically (a full disk leaves the previous file, never half of one)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_atomic(Path(path), buffer.getvalue())


def reconstructions(path: str | Path, originals: np.ndarray, recon: np.ndarray, title: str) -> None:
    """Originals (uint8 or float `[n, H, W, C]`) above, reconstructions below."""
    rows = {"original": originals, "reconstruction": recon}
    grid(path, rows, title)


def grid(path: str | Path, rows: Mapping[str, np.ndarray], title: str) -> None:
    """One row per entry of `rows` (label -> images `[n, H, W, C]`, grey or RGB), one column per image."""
    n = len(next(iter(rows.values())))
    height = len(rows) * 0.95 + 0.5  # inches; the title keeps a fixed 0.4 inch whatever the row count
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9 + 1.6, height), squeeze=False)
    fig.subplots_adjust(top=1 - 0.4 / height)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(_image(images[c]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / height)
    _save(fig, path)


def codec_preview(path: str | Path, originals: Sequence[np.ndarray], decoded: Sequence[np.ndarray],
                  captions: Sequence[str], title: str) -> None:
    """Originals above, their decoded images below (any sizes, uint8 `[H, W, C]`), each decoded image captioned
    (its bytes and PSNR)."""
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.3 + 1.2, 3.2), squeeze=False)
    for c in range(n):
        for r, image in enumerate((originals[c], decoded[c])):
            ax = axes[r, c]
            ax.imshow(_image(image), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1, c].set_xlabel(captions[c], fontsize=7)
    axes[0, 0].set_ylabel("original", rotation=0, ha="right", va="center", fontsize=9)
    axes[1, 0].set_ylabel("decoded", rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def depth_vs_error(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Test MSE against code size, one line per variant with error bars over seeds; compression on top."""
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    label = lambda r: r.get("variant") or r["model"]  # noqa: E731
    for variant in sorted({label(r) for r in rows}):
        depths = sorted({r["latent_dim"] for r in rows if label(r) == variant})
        values = [[r["test_mse"] for r in rows if label(r) == variant and r["latent_dim"] == d] for d in depths]
        ax.errorbar(depths, [np.mean(v) for v in values], yerr=[np.std(v) for v in values], marker="o",
                    capsize=3, label=variant, linestyle="--" if variant == "pca" else "-")
    all_depths = sorted({r["latent_dim"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(all_depths, [str(d) for d in all_depths])
    ax.minorticks_off()
    ax.set_xlabel("code size (encoding depth)")
    ax.set_ylabel("test MSE per pixel (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    top = ax.secondary_xaxis("top")
    top.set_xticks(all_depths, [f"{MNIST_PIXELS / d:.1f}x" for d in all_depths])
    top.minorticks_off()
    top.set_xlabel("compression ratio (784 / code size)")
    ax.set_title("Reconstruction error against code size (mean ± std over seeds)", fontsize=10)
    _save(fig, path)


def loss_curves(path: str | Path, curves: Mapping[str, Sequence[float]]) -> None:
    """Train loss per epoch, one line per label (e.g. 'linear d32')."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss (MSE, mean over the epoch)")
    ax.set_title("Training loss per epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def rate_distortion(path: str | Path, curves: Mapping[str, Sequence[Mapping[str, float]]]) -> None:
    """PSNR against bits per image, one curve per method; lossless ones ('png...') as vertical lines."""
    fig, ax = plt.subplots(figsize=(7.6, 5.0))
    for name, points in curves.items():
        if name.startswith("png"):
            bits = points[0]["bits_per_image"]
            ax.axvline(bits, color="gray", linestyle="--" if "payload" not in name else ":",
                       label=f"{name}: {bits:.0f} bits")
            continue
        pts = sorted(points, key=lambda p: p["bits_per_image"])
        family = name.split()[0]
        if family == "jpeg":
            style, color, width = ("-." if name == "jpeg" else "--"), "black", 2.0
        else:  # one colour family per method, darker for larger codes
            members = [n for n in curves if n.split()[0] == family]
            shade = 0.4 + 0.55 * members.index(name) / max(1, len(members) - 1)
            cmap = {"linear": "Blues", "conv": "Oranges", "pca": "Greens"}.get(family, "Purples")
            style, color, width = (":" if family == "pca" else "-"), plt.get_cmap(cmap)(shade), 1.3
        ax.plot([p["bits_per_image"] for p in pts], [p["psnr_db"] for p in pts], style, marker=".", label=name,
                linewidth=width, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("bits per image (entropy of the quantised code; file size, or file minus a blank image's, for "
                  "PNG/JPEG)", fontsize=8)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Rate-distortion on the MNIST test set: quantised codes against PNG and JPEG", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, ncol=2)
    _save(fig, path)


def latent_scatter(path: str | Path, projections: Mapping[str, np.ndarray], labels: np.ndarray) -> None:
    """One panel per model: 2-D projections `[N, 2]` of codes, coloured by digit label."""
    fig, axes = plt.subplots(1, len(projections), figsize=(5.8 * len(projections), 4.6), squeeze=False)
    for ax, (name, xy) in zip(axes[0], projections.items()):
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6, vmin=-0.5, vmax=9.5)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("code PC 1")
        ax.set_ylabel("code PC 2")
    fig.colorbar(points, ax=axes[0].tolist(), ticks=range(10), label="digit")
    fig.suptitle("Test-set codes, projected on their top two principal components", fontsize=10)
    _save(fig, path)
