"""Encode image files with a trained rate-distortion model, decode them back, or export the model as one file.

    python -m aejax.codec encode --run RUN_DIR image.png out.aejx
    python -m aejax.codec decode --run RUN_DIR out.aejx back.png
    python -m aejax.codec encode --run RUN_DIR --out-dir codes/ images/ more/*.png   # many files, one process
    python -m aejax.codec decode --model model.aejm --out-dir back/ codes/
    python -m aejax.codec export --run RUN_DIR --member '{"lmbda": 0.01}' model.aejm
    python -m aejax.codec encode --model variable.aejm --target-psnr 28 image.png out.aejx   # rd_variable models

`--seed` and `--member` pick one model of a run that trained several (seeds, a sweep of `lmbda`): the member
as an index or as JSON (`--member '{"lmbda": 0.01}'`); decoding from a run without them finds the model by the
hash in the first file's header. `--model FILE` (from `export`: config and parameters, no optimizer state) needs
no run directory. With `--out-dir`, every input is coded in one process: files, folders (searched recursively
for images, or for `.aejx` files to decode) and quoted glob patterns; outputs keep the inputs' relative paths.

A variable-rate model (`rd_variable`) codes at `--quality Q` (0..100, default 100), or per image at the lowest
quality reaching `--target-psnr DB`, or the highest whose file fits `--max-bytes N` (`Codec.choose_quality`).

Images are read and written with Pillow (grey for a 1-channel model, RGB for a 3-channel one; any size; 16-bit
grey scaled to 8 bits, alpha composited onto black, as `aejax.data.pixels` states). Before any work, one line
(exit 2) refuses: an output that is an input (even with `--overwrite`), an output directory that does not exist,
an existing output without `--overwrite`, two inputs with one output name, and a decoded image in a lossy format
(unless `--lossy`).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np

from aejax import cli
from aejax.codec import HEADER
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
    check_output(target, overwrite)
    if command == "decode" and target.suffix.lower() not in LOSSLESS and not lossy:
        raise AejaxError(f"{target.name}: '{target.suffix}' would store the decoded image in a lossy format (or one "
                         f"Pillow may not write losslessly), changing its pixels again; write .png, .bmp or .tiff, "
                         f"or pass --lossy")


def check_output(target: Path, overwrite: bool) -> None:
    """One-line errors for an output whose directory does not exist, or that exists without `--overwrite`."""
    if not target.parent.is_dir():
        raise AejaxError(f"the directory of {target} does not exist; create {target.parent} first")
    if target.exists() and not overwrite:
        raise AejaxError(f"{target} exists; pass --overwrite to replace it")


def parse_member(text: str | None) -> int | dict[str, float] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise AejaxError(f"--member must be an index or a JSON object such as '{{\"lmbda\": 0.01}}', got {text!r}") \
            from None
    return value


def expand(paths: list[str], command: str) -> list[tuple[Path, Path]]:
    """(input file, its output path relative to --out-dir) for each file a path names: a file, a folder searched
    recursively (images to encode, .aejx files to decode), or a glob pattern."""
    from aejax.data.image_folder import EXTENSIONS

    wanted = EXTENSIONS if command == "encode" else frozenset({".aejx"})
    found = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in wanted)
            found += [(f, f.relative_to(path)) for f in files]
        elif path.exists():
            found.append((path, Path(path.name)))
        elif any(c in text for c in "*?["):
            found += [(Path(f), Path(Path(f).name)) for f in sorted(glob.glob(text, recursive=True))
                      if Path(f).is_file()]
        else:
            raise AejaxError(f"{path} does not exist")
    if not found:
        raise AejaxError(f"no {'images' if command == 'encode' else '.aejx files'} in {' '.join(paths)}")
    return found


def plan(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(input, output) pairs, every one checked before any work."""
    if args.out_dir is None:
        if len(args.paths) != 2:
            raise AejaxError(f"{args.command} takes an input and an output, or inputs and --out-dir DIR")
        source, target = Path(args.paths[0]), Path(args.paths[1])
        if args.command == "decode" and not source.is_file():
            raise AejaxError(f"{source} does not exist")
        check_paths(source, target, args.command, args.overwrite, args.lossy)
        return [(source, target)]
    out, suffix = Path(args.out_dir), ".aejx" if args.command == "encode" else ".png"
    if not out.is_dir():
        raise AejaxError(f"--out-dir {out} does not exist or is not a directory; create it first")
    pairs = [(source, out / relative.with_suffix(suffix)) for source, relative in expand(args.paths, args.command)]
    sources, targets = {source.resolve() for source, _ in pairs}, {}
    for source, target in pairs:  # sub-folders of --out-dir are created as the files are written
        if target in targets:
            raise AejaxError(f"{targets[target]} and {source} would both be written to {target}")
        if target.resolve() in sources:
            raise AejaxError(f"the output {target} is an input; choose another --out-dir (inputs are never replaced)")
        if target.exists() and not args.overwrite:
            raise AejaxError(f"{target} exists; pass --overwrite to replace it")
        targets[target] = source
    return pairs


def check_rate_flags(args: argparse.Namespace, codec) -> None:
    """One-line errors for --quality / --target-psnr / --max-bytes that this model or each other rule out."""
    given = [f for f, v in (("--quality", args.quality), ("--target-psnr", args.target_psnr),
                            ("--max-bytes", args.max_bytes)) if v is not None]
    if given and not codec.variable:
        raise AejaxError(f"{given[0]} needs a variable-rate model (rd_variable); this one ({codec.config.model}) "
                         f"codes at one rate")
    if args.quality is not None and len(given) > 1:
        raise AejaxError("give --quality, or --target-psnr and/or --max-bytes, not both")
    if args.quality is not None and not 0 <= args.quality <= 100:
        raise AejaxError(f"--quality must be from 0 to 100, got {args.quality}")
    if args.target_psnr is not None and not (np.isfinite(args.target_psnr) and args.target_psnr > 0):
        raise AejaxError(f"--target-psnr must be a positive number of dB, got {args.target_psnr}")
    if args.max_bytes is not None and args.max_bytes < 1:
        raise AejaxError(f"--max-bytes must be a positive number of bytes, got {args.max_bytes}")


def encode_image(args: argparse.Namespace, codec, image: np.ndarray) -> bytes:
    """One image's file at --quality, or at the quality --target-psnr / --max-bytes choose for it."""
    quality = args.quality
    if args.target_psnr is not None or args.max_bytes is not None:
        quality = int(codec.choose_quality(image, target_psnr=args.target_psnr, max_bytes=args.max_bytes))
    return codec.encode(image, quality=quality)


def load_codec(args: argparse.Namespace, first: Path):
    from aejax.codec import Codec

    if args.model is not None:
        if args.run is not None or args.seed is not None or args.member is not None:
            raise AejaxError("--model is a whole model; give it without --run, --seed and --member")
        return Codec.from_model_file(args.model)
    if args.run is None:
        raise AejaxError("give --run RUN_DIR (a trained rate-distortion run, such as rd_factorized) or --model FILE")
    if args.command == "decode" and args.seed is None and args.member is None:
        return Codec.from_run_for(args.run, first.read_bytes(), name=str(first))
    return Codec.from_run(args.run, seed=args.seed, member=parse_member(args.member))


def decoded_pixels(codec, data: bytes, name: str | None = None) -> np.ndarray:
    """The image a file decodes to, as uint8 `[H, W, C]` (what is written, and what PSNR is measured on)."""
    return np.rint(codec.decode(data, name=name) * 255.0).astype(np.uint8)


def write_image(target: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    partial = target.with_name(target.name + ".partial")
    try:
        image.save(partial, format=Image.registered_extensions().get(target.suffix.lower(), "PNG"))
    except (KeyError, ValueError, OSError) as e:
        partial.unlink(missing_ok=True)
        raise AejaxError(f"cannot write {target} ({e})") from None
    partial.replace(target)


class Progress:
    """`k/n` on stderr every tenth of the work (one line each), from 20 files on."""

    def __init__(self, total: int, verb: str):
        self.total, self.verb, self.done, self.start = total, verb, 0, time.perf_counter()

    def step(self, count: int = 1) -> None:
        before, self.done = self.done, self.done + count
        if self.total >= 20 and (10 * self.done) // self.total > (10 * before) // self.total:
            print(f"{self.verb} {self.done}/{self.total} ({time.perf_counter() - self.start:.1f}s)", file=sys.stderr,
                  flush=True)


def main(argv: list[str] | None = None) -> None:
    p = cli.ArgumentParser(prog="python -m aejax.codec", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("encode", "decode", "export", "preview"))
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="encode/decode: INPUT OUTPUT, or inputs (files, folders, globs) with --out-dir; export: the "
                        "model file to write; preview: images (files, folders, globs), then the .png to write")
    p.add_argument("--out-dir", default=None, metavar="DIR", help="write each input's output here (must exist)")
    p.add_argument("--run", default=None,
                   help="the run directory of a trained rate-distortion model (rd_factorized, rd_variable, ...)")
    p.add_argument("--model", default=None, metavar="FILE", help="a model file from export, instead of --run")
    p.add_argument("--seed", type=int, default=None, help="which seed of the run (default: its first)")
    p.add_argument("--member", default=None, help="which sweep member: an index or JSON values (default: the first; "
                                                  "decode: the one whose hash the file carries)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist (never an input)")
    p.add_argument("--lossy", action="store_true",
                   help="decode: allow an output format that stores the image lossily (.jpg, .webp)")
    p.add_argument("--quality", type=int, default=None, metavar="Q",
                   help="encode/preview with a variable-rate model: quality 0..100 (default 100)")
    p.add_argument("--target-psnr", type=float, default=None, metavar="DB",
                   help="encode/preview with a variable-rate model: per image, the lowest quality reaching this PSNR")
    p.add_argument("--max-bytes", type=int, default=None, metavar="N",
                   help="encode/preview with a variable-rate model: per image, the highest quality whose file has "
                        "at most N bytes")
    p.add_argument("--count", type=int, default=8, help="preview: at most this many images (default 8)")
    p.add_argument("--compile-cache", default=None, metavar="DIR",
                   help="keep compiled programs in DIR (JAX's persistent cache): a later process loads them")
    args = p.parse_args(argv)

    def body() -> None:
        if args.compile_cache:
            from aejax.training.step import use_compile_cache

            use_compile_cache(args.compile_cache)
        if args.command in ("export", "preview"):
            (export if args.command == "export" else preview)(args)
            return
        start = time.perf_counter()
        pairs = plan(args)
        codec = load_codec(args, pairs[0][0])
        check_rate_flags(args, codec)
        total, progress = 0, Progress(len(pairs), f"{args.command}d")
        for source, target in pairs:
            target.parent.mkdir(parents=True, exist_ok=True)
            if args.command == "encode":
                image = read_image(source, codec.shape[-1])
                data = encode_image(args, codec, image)
                write_atomic(target, data)
                total += len(data)
                if len(pairs) == 1:
                    quality = f", quality {data[HEADER.size]}" if codec.variable else ""
                    print(f"{source} ({'x'.join(map(str, image.shape))}) -> {target}: {len(data)} bytes "
                          f"({8 * len(data) / (image.shape[0] * image.shape[1]):.3f} bits per pixel{quality})")
            else:
                pixels = decoded_pixels(codec, source.read_bytes(), str(source))
                write_image(target, pixels)
                if len(pairs) == 1:
                    print(f"{source} -> {target} ({'x'.join(map(str, pixels.shape))})")
            progress.step()
        if len(pairs) > 1:
            seconds = time.perf_counter() - start
            sizes = f", {total:,} bytes ({total / len(pairs):.1f} per file)" if args.command == "encode" else ""
            print(f"{args.command}d {len(pairs)} files into {args.out_dir}{sizes} in {seconds:.1f}s after start-up "
                  f"({1000 * seconds / len(pairs):.2f} ms per file, loading the model and compiling included)")

    cli.cli(body)


def preview(args: argparse.Namespace) -> None:
    """`preview`: a picture of the first `--count` images, each encoded and decoded, with bytes and PSNR."""
    import jax.numpy as jnp

    from aejax.evaluation.metrics import psnr_db
    from aejax.evaluation.plots import codec_preview

    if len(args.paths) < 2 or args.out_dir is not None or not 1 <= args.count <= 64:
        raise AejaxError("preview takes images (files, folders, globs), then the .png to write; --count 1..64")
    target = Path(args.paths[-1])
    if target.suffix.lower() != ".png":
        raise AejaxError(f"preview writes a .png, not {target.name}")
    check_output(target, args.overwrite)
    sources = [source for source, _ in expand(args.paths[:-1], "encode")][:args.count]
    codec = load_codec(args, sources[0])
    check_rate_flags(args, codec)
    originals, decoded, captions = [], [], []
    for source in sources:
        image = read_image(source, codec.shape[-1])
        data = encode_image(args, codec, image)
        back = decoded_pixels(codec, data)
        mse = float(np.mean((back.astype(np.float64) - image) ** 2)) / 255.0 ** 2
        originals.append(image)
        decoded.append(back)
        quality = f", q{data[HEADER.size]}" if codec.variable else ""
        captions.append(f"{len(data)} B, {float(psnr_db(jnp.asarray(mse))):.1f} dB{quality}")  # inf when exact
    codec_preview(target, originals, decoded, captions, f"aejax codec, model {codec.hash.hex()}: whole files "
                                                        f"(header included), PSNR of the 8-bit "
                                                        f"decoded image")
    print(f"{len(sources)} images -> {target}")


def export(args: argparse.Namespace) -> None:
    """`export`: the model (config and parameters) as one file that `--model` reads."""
    from aejax.codec import Codec

    if args.run is None or len(args.paths) != 1 or args.out_dir is not None or args.model is not None:
        raise AejaxError("export takes --run RUN_DIR (with --seed / --member) and one output file")
    target = Path(args.paths[0])
    check_output(target, args.overwrite)
    codec = Codec.from_run(args.run, seed=args.seed, member=parse_member(args.member))
    data = codec.export()
    write_atomic(target, data)
    print(f"{args.run} -> {target}: {len(data):,} bytes (config and parameters), model hash {codec.hash.hex()}")


if __name__ == "__main__":
    main(sys.argv[1:])
