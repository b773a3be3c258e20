"""Encode an image file with a trained rate-distortion model, or decode one back.

    python -m aejax.codec encode --run RUN_DIR image.png out.aejx
    python -m aejax.codec decode --run RUN_DIR out.aejx back.png

`--seed` and `--member` pick one model of a run that trained several (seeds, a sweep of `lmbda`): the member
as an index or as JSON (`--member '{"lmbda": 0.01}'`). Images are read and written with Pillow (grey for a
1-channel model, RGB for a 3-channel one); an existing output is replaced only with `--overwrite`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from aejax import cli
from aejax.errors import AejaxError
from aejax.files import write_atomic

MODES = {1: "L", 3: "RGB"}


def read_image(path: Path, channels: int) -> np.ndarray:
    """uint8 `[H, W, C]` from an image file, for a model of `channels` channels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise AejaxError(f"{path} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise AejaxError(f"{path} is not an image Pillow can read ({e})") from None
    grey = image.mode in ("1", "L", "LA", "I", "I;16", "F")
    if grey != (channels == 1):
        raise AejaxError(f"{path} is a {'grey' if grey else 'colour'} image (mode {image.mode}); the model codes "
                         f"{'grey' if channels == 1 else 'RGB'} images")
    array = np.asarray(image.convert(MODES[channels]))
    return array[..., None] if channels == 1 else array


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
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    args = p.parse_args(argv)

    def body() -> None:
        from aejax.codec import Codec

        source, target = Path(args.input), Path(args.output)
        if target.exists() and not args.overwrite:
            raise AejaxError(f"{target} exists; pass --overwrite to replace it")
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
