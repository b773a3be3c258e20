"""One image file as uint8 pixels `[H, W, C]`, by stated rules (`aejax.data.folder` applies them to every file).

- Orientation: an EXIF orientation tag is applied (the image as a viewer shows it).
- Depth: 16-bit grey images (`I;16`, `I`) are scaled to 8 bits, `round(v * 255 / 65535)`, never thresholded; 1-bit
  images become 0 and 255; floating-point images (`F`) are refused.
- Transparency: alpha (`LA`, `RGBA`, palette images with a transparent colour) is composited onto black,
  `round(colour * alpha / 255)`, so a fully transparent pixel is 0 whatever colour it stores.
- Channels: 1 (grey) or 3 (RGB). Colour becomes grey by Pillow's ITU-R 601-2 luma (`L = R*299/1000 +
  G*587/1000 + B*114/1000`); grey becomes RGB by copying it to the three channels. Palette, CMYK and YCbCr images
  are colour.
- Size (`fit`, with a target H x W): `resize` scales the image to cover H x W (Lanczos) and centre-crops what
  overflows, keeping its aspect; `crop` centre-crops without scaling and refuses an image smaller than H x W.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from aejax.errors import AejaxError

SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
GREY = frozenset({"1", "L", "LA", "La", *SIXTEEN_BIT})
FITS = ("resize", "crop")
EXIF_ORIENTATION = 0x0112
TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def header(image: Image.Image) -> tuple[str, int, int, bool]:
    """(mode, height, width, colour) of an opened image as `pixels` will see it, from its header alone."""
    width, height = image.size
    if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSED:
        width, height = height, width
    return image.mode, height, width, image.mode not in GREY


def pixels(image: Image.Image, channels: int, size: tuple[int, int] | None, fit: str, name: str) -> np.ndarray:
    """uint8 `[H, W, channels]` of an opened image by the module's rules; `size` (H, W) with `fit`, or None to
    keep the image's own size. `name` names the file in errors."""
    image = ImageOps.exif_transpose(image)
    image = _eight_bit(image, name)
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None:
        image = _fit(image, size, fit, name)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _eight_bit(image: Image.Image, name: str) -> Image.Image:
    """The image as 8-bit L or RGB (or a mode Pillow converts to them), 16-bit scaled, alpha composited."""
    if image.mode in SIXTEEN_BIT:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise AejaxError(f"{name}: its {image.mode} pixels lie outside 0..65535; aejax reads 8- and 16-bit images")
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")
    if image.mode == "F":
        raise AejaxError(f"{name}: floating-point pixels (mode F); aejax reads 8- and 16-bit images")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("PA", "La", "RGBa"):
        image = image.convert("RGBA" if image.mode != "La" else "LA")
    if image.mode in ("LA", "RGBA"):
        values = np.asarray(image).astype(np.uint32)
        composited = ((values[..., :-1] * values[..., -1:] + 127) // 255).astype(np.uint8)
        return Image.fromarray(composited[..., 0], "L") if image.mode == "LA" else Image.fromarray(composited, "RGB")
    return image


def _fit(image: Image.Image, size: tuple[int, int], fit: str, name: str) -> Image.Image:
    height, width = size
    if image.size == (width, height):
        return image
    if fit == "resize":
        return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)
    if image.width < width or image.height < height:
        raise AejaxError(f"{name} is {image.height}x{image.width}, smaller than image_size {height}x{width}; crop "
                         f"cannot enlarge it (image_fit resize scales it)",
                         cli=f"{name} is {image.height}x{image.width}, smaller than --image-size {height}x{width}; "
                             f"crop cannot enlarge it (--image-fit resize scales it)")
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))
