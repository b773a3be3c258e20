"""Counting bits: uniform scalar quantisation of codes, an empirical entropy estimate of the rate, and the
classic codecs on the same images through Pillow: PNG, JPEG, WebP and AVIF, and JPEG XL (pillow-jxl-plugin).

The rate of a quantised code is estimated as the sum over code dimensions of each dimension's empirical entropy
on the test set (bits per image): the size an ideal entropy coder with one adaptive model per dimension
approaches, ignoring the cost of sending the models.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from aejax.config import MNIST_SHAPE
from aejax.errors import AejaxError


def quantize(z: np.ndarray, step: float) -> np.ndarray:
    """Uniform scalar quantisation: integer symbols round(z / step)."""
    return np.rint(np.asarray(z, np.float64) / step).astype(np.int64)


def dequantize(symbols: np.ndarray, step: float) -> np.ndarray:
    return symbols.astype(np.float32) * np.float32(step)


def entropy_bits(symbols: np.ndarray) -> float:
    """Sum over columns of the empirical entropy (bits) of `symbols` `[N, D]`: bits per row."""
    symbols = np.asarray(symbols).reshape(len(symbols), -1)
    total = 0.0
    for column in symbols.T:
        _, counts = np.unique(column, return_counts=True)
        p = counts / counts.sum()
        total += float(-(p * np.log2(p)).sum())
    return total


def _pil(image: np.ndarray) -> Image.Image:
    """A uint8 `[H, W, 1]` (grey) or `[H, W, 3]` (RGB) image for Pillow."""
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def png_files(images: np.ndarray) -> list[bytes]:
    """Each uint8 image `[N, H, W, C]` (C = 1 or 3) as a lossless PNG file, Pillow at its best compression."""
    files = []
    for image in images:
        buffer = io.BytesIO()
        _pil(image).save(buffer, format="PNG", optimize=True)
        files.append(buffer.getvalue())
    return files


def png_bits(images: np.ndarray) -> np.ndarray:
    """Lossless PNG size (bits) of each uint8 image `[N, H, W, C]`."""
    return np.asarray([8 * len(f) for f in png_files(images)])


def _lossy(images: np.ndarray, format: str, **options) -> tuple[np.ndarray, np.ndarray]:
    sizes, decoded = [], []
    for image in images:
        buffer = io.BytesIO()
        _pil(image).save(buffer, format=format, **options)
        sizes.append(8 * buffer.tell())
        buffer.seek(0)
        with Image.open(buffer) as back:
            decoded.append(np.asarray(back.convert(_pil(image).mode), dtype=np.uint8).reshape(image.shape))
    return np.asarray(sizes), np.stack(decoded)


def jpeg(images: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """JPEG at `quality` (grayscale or RGB as the images are, optimised Huffman tables, Pillow): (bits per image
    `[N]`, decoded uint8 images `[N, H, W, C]`)."""
    return _lossy(images, "JPEG", quality=quality, optimize=True)


def webp(images: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Lossy WebP at `quality` (Pillow's libwebp, slowest and best method 6; grey images are coded as colour,
    which WebP always is, and decoded back to grey): (bits per image `[N]`, decoded uint8 `[N, H, W, C]`)."""
    return _lossy(images, "WEBP", quality=quality, method=6, lossless=False)


def _jxl_plugin() -> None:
    try:
        import pillow_jxl  # noqa: F401 - registers the JXL format with Pillow
    except ImportError as e:
        raise AejaxError(f"JPEG XL needs the pillow-jxl-plugin package ({e}); pip install -e '.[compare]'") from None


def jxl(images: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Lossy JPEG XL at `quality` (0..100; libjxl through pillow-jxl-plugin, effort 9, its slowest and best):
    (bits per image `[N]`, decoded uint8 `[N, H, W, C]`)."""
    _jxl_plugin()
    return _lossy(images, "JXL", quality=quality, effort=9, lossless=False)


def avif(images: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """AVIF at `quality` (0..100; Pillow's libavif at speed 6, its default: speed 0, 8x slower, wrote files within
    4% of these on MNIST digits; grey images are coded as colour and decoded back to grey): (bits per image `[N]`,
    decoded uint8 `[N, H, W, C]`)."""
    return _lossy(images, "AVIF", quality=quality, speed=6)


def lossless_bits(images: np.ndarray, fmt: str) -> np.ndarray:
    """Lossless file size (bits) of each uint8 image `[N, H, W, C]` as `fmt`: "png" (`png_bits`), "webp"
    (lossless, method 6, quality 100: its strongest effort) or "jxl" (lossless, effort 9); each file is decoded
    and checked to give the image back exactly."""
    if fmt == "png":
        return png_bits(images)
    options = {"webp": {"format": "WEBP", "lossless": True, "quality": 100, "method": 6},
               "jxl": {"format": "JXL", "lossless": True, "effort": 9}}
    if fmt not in options:
        raise AejaxError(f"lossless formats: png, {', '.join(options)}; got {fmt!r}")
    if fmt == "jxl":
        _jxl_plugin()
    sizes, decoded = _lossy(images, **options[fmt])
    if not np.array_equal(decoded, images):
        raise AejaxError(f"lossless {fmt} did not give the images back exactly")
    return sizes


def blank_bits(fmt: str, quality: int | None = None, shape: tuple[int, int, int] = MNIST_SHAPE) -> int:
    """Bits of an all-black image of `shape` (default 28x28x1) as PNG, JPEG or WebP (at `quality`): the file
    format's fixed cost (headers, tables), which a code's entropy estimate does not pay; file size minus it
    approximates the payload."""
    blank = np.zeros((1, *shape), np.uint8)
    if fmt == "png":
        return int(png_bits(blank)[0])
    return int((jpeg if fmt == "jpeg" else webp)(blank, quality)[0][0])


def code_curve(codes: np.ndarray, decode, images: np.ndarray, relative_steps: tuple[float, ...]) -> list[dict]:
    """Rate-distortion points of quantised `codes` `[N, ...]` of uint8 `images`.

    Each step is `relative_steps[i] * std(codes)`, so one list of relative steps fits every model's code scale.
    `decode` maps float codes to float reconstructions in [0, 1]. Returns one dict per step with `bits_per_image`,
    `mse`, `psnr_db`, `ssim`.
    """
    from aejax.evaluation import metrics

    scale = float(np.std(codes))
    points = []
    for rel in relative_steps:
        step = rel * scale
        symbols = quantize(codes, step)
        recon = np.clip(np.asarray(decode(dequantize(symbols, step))), 0.0, 1.0)
        points.append({"relative_step": rel, "step": step, "bits_per_image": entropy_bits(symbols),
                       **metrics.score(images, recon)})
    return points
