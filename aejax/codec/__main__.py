"""Encode an image file with a trained rate-distortion model, or decode one back.

    python -m aejax.codec encode --run RUN_DIR image.png out.aejx
    python -m aejax.codec decode --run RUN_DIR out.aejx back.png

`--seed` and `--member` pick one model of a run that trained several (seeds, a sweep of `lmbda`): the member
as an index or as JSON (`--member '{"lmbda": 0.01}'`). Images are read and written with Pillow (grey for a
1-channel model, RGB for a 3-channel one; 16-bit grey scaled to 8 bits, alpha composited onto black, as
`aejax.data.pixels` states). An existing output is replaced only with `--overwrite`, the input never; a missing
output directory and a decoded image in a lossy format (unless `--lossy`) are refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from aejax import cli
from aejax.errors import AejaxError
from aejax.files import write_atomic


def read_image(path: Path, channels: int) -> np.ndarray:
    """uint8 `[H, W, C]` from an image file, for a model of `channels` channels, by `aejax.data.pixels`'s rules:
    16-bit grey scaled to 8 bits (never thresholded), alpha composited onto black, palettes as colour, EXIF
    orientation applied. A grey image for a colour model (or the reverse) is refused rather than converted."""
    from PIL import Image, UnidentifiedImageError

    from aejax.data.pixels import header, pixels

    try:
        with Image.open(path) as image:
            mode, _, _, colour = header(image)
            if colour != (channels == 3):
                raise AejaxError(f"{path} is a {'colour' if colour else 'grey'} image (mode {mode}); the model codes "
                                 f"{'grey' if channels == 1 else 'RGB'} images")
            return pixels(image, channels, None, "resize", str(path))
    except FileNotFoundError:
        raise AejaxError(f"{path} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise AejaxError(f"{path} is not an image Pillow can read ({e})") from None


LOSSLESS = frozenset({".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm"})


def check_paths(source: Path, target: Path, command: str, overwrite: bool, lossy: bool) -> None:
    """One-line errors, before anything is read or written: an output that is the input, an output directory that
    does not exist, an existing output without `--overwrite`, a decoded image in a lossy format without `--lossy`."""
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise AejaxError(f"the output {target} is the input; choose another name (the input is never replaced)")
    if not target.parent.is_dir():
        raise AejaxError(f"the directory of {target} does not exist; create {target.parent} first")
    if target.exists() and not overwrite:
        raise AejaxError(f"{target} exists; pass --overwrite to replace it")
    if command == "decode" and target.suffix.lower() not in LOSSLESS and not lossy:
        raise AejaxError(f"{target.name}: '{target.suffix}' would store the decoded image in a lossy format (or one "
                         f"Pillow may not write losslessly), changing its pixels again; write .png, .bmp or .tiff, "
                         f"or pass --lossy")


def parse_member(text: str | None) -> int | dict[str, float] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise AejaxError(f"--member must be an index or a JSON object such as '{{\"lmbda\": 0.01}}', got {text!r}") \
            from None
    return value


def main(argv: list[str] | None = None) -> None:
    p = cli.ArgumentParser(prog="python -m aejax.codec", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("encode", "decode"))
    p.add_argument("input", help="the image (encode) or the .aejx file (decode)")
    p.add_argument("output", help="the .aejx file (encode) or the image (decode; its suffix names the format)")
    p.add_argument("--run", required=True, help="the run directory of a trained rd_factorized / rd_hyperprior model")
    p.add_argument("--seed", type=int, default=None, help="which seed of the run (default: its first)")
    p.add_argument("--member", default=None, help="which sweep member: an index or JSON values (default: the first)")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists (never the input)")
    p.add_argument("--lossy", action="store_true",
                   help="decode: allow an output format that stores the image lossily (.jpg, .webp)")
    args = p.parse_args(argv)

    def body() -> None:
        from aejax.codec import Codec

        source, target = Path(args.input), Path(args.output)
        check_paths(source, target, args.command, args.overwrite, args.lossy)
        if args.command == "decode" and not source.is_file():
            raise AejaxError(f"{source} does not exist")
        codec = Codec.from_run(args.run, seed=args.seed, member=parse_member(args.member))
        if args.command == "encode":
            image = read_image(source, codec.shape[-1])
            data = codec.encode(image)
            write_atomic(target, data)
            print(f"{source} ({'x'.join(map(str, image.shape))}) -> {target}: {len(data)} bytes "
                  f"({8 * len(data) / (image.shape[0] * image.shape[1]):.3f} bits per pixel)")
        else:
            from PIL import Image

            pixels = np.rint(codec.decode(source.read_bytes(), name=str(source)) * 255.0).astype(np.uint8)
            image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            try:
                image.save(target.with_name(target.name + ".partial"), format=Image.registered_extensions().get(
                    target.suffix.lower(), "PNG"))
            except (KeyError, ValueError, OSError) as e:
                raise AejaxError(f"cannot write {target} ({e})") from None
            target.with_name(target.name + ".partial").replace(target)
            print(f"{source} -> {target} ({'x'.join(map(str, pixels.shape))})")

    cli.cli(body)


if __name__ == "__main__":
    main(sys.argv[1:])
