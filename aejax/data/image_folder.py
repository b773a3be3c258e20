"""A folder of image files as a dataset: `--dataset folder:PATH`, or `aejax.data.folder(PATH)` in Python.

Files: PNG, JPEG, WebP, BMP and TIFF (by extension, any case), searched recursively; hidden files and folders are
skipped. Each is read by Pillow under `aejax.data.pixels`'s rules (16-bit, alpha, palette, orientation). The images
must share one size unless `image_size` (H x W) is given, reached by `image_fit`; `channels` is 1 or 3, or unset:
3 if any file has colour, else 1.

Splits: with `train/` and `test/` sub-folders, their files (others are left out, and counted in the run's first
lines). Otherwise a file is a test image when a hash of its path relative to the folder (sha256 of
`"{split_seed}/{path}"`, as a number in [0, 1)) falls below `TEST_FRACTION`. The training images are ordered by
the same hash, and a validation split takes the first of them (a fraction f: those whose hash, rescaled over the
training range, is below f), so adding files never moves an existing file to another split.

Prepared once: every image, decoded, is one record of raw uint8 bytes in ArrayRecord shards of about 64 MiB,
written to `<data_dir>/aejax_folders/<folder name>-<key>/` (without a data directory, `$XDG_CACHE_HOME/aejax` or
`~/.cache/aejax`), with a manifest: each file's path, size and modification time, the settings, and each shard's
sha256 and record count. A later start lists the folder and compares it with the manifest (a changed folder is
prepared again) and verifies every shard against its checksum (a damaged shard is a one-line error). Preparing
holds a lock, so a second run on the same folder waits for the first.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from aejax.data import pixels
from aejax.data.source import Source
from aejax.errors import AejaxError

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
PREFIX = "folder:"  # Config.dataset of a folder: "folder:PATH"
TEST_FRACTION = 0.1
SHARD_BYTES = 64 * 2 ** 20
FORMAT = 1  # the prepared layout's version, part of its key
THREADS = max(2, min(16, os.cpu_count() or 2))  # Pillow decodes without holding the GIL

File = tuple[str, int, int]  # (path relative to the folder, size in bytes, modification time in ns)


def folder(path: str | os.PathLike, *, channels: int | None = None, image_size: str | None = None,
           image_fit: str = "resize", split_seed: int = 0, data_dir: str | os.PathLike | None = None,
           log: Callable[[str], None] = print) -> Source:
    """The images of the folder at `path` as a `Source` (training rows read on demand from the prepared shards,
    the test images in memory), prepared first where they are not yet or the folder changed (module docstring).
    `image_size` is "HxW" (e.g. "64x64"); `log` receives a line when the folder is prepared."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise AejaxError(f"image folder {root} {'is not a folder' if root.exists() else 'does not exist'}")
    size = parse_size(image_size)
    if channels not in (None, 1, 3):
        raise AejaxError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if image_fit not in pixels.FITS:
        raise AejaxError(f"image_fit must be one of {', '.join(pixels.FITS)}, got {image_fit!r}")
    settings = {"folder": str(root.resolve()), "channels": channels, "image_size": image_size,
                "image_fit": image_fit, "split_seed": split_seed, "format": FORMAT}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    base = Path(data_dir).expanduser() if data_dir is not None else cache_dir()
    prepared = base / "aejax_folders" / f"{root.resolve().name or 'root'}-{key}"
    files = list_files(root)
    listing = hashlib.sha256("\n".join(f"{r}\t{s}\t{t}" for r, s, t in files).encode()).hexdigest()
    with _locked(prepared, root):
        manifest = _read_manifest(prepared)
        if manifest is None or manifest["listing"] != listing:
            if manifest is not None:
                log(f"image folder {root} changed since it was prepared; preparing it again")
            manifest = _prepare(root, files, listing, settings, size, prepared, log)
        else:
            _verify(prepared, manifest)
    return _source(prepared, manifest, root)


def parse_size(image_size: str | None) -> tuple[int, int] | None:
    """(H, W) of an "HxW" image size; None for None."""
    if image_size is None:
        return None
    parts = str(image_size).lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise AejaxError(f"image_size must be HxW with positive integers (e.g. 64x64), got {image_size!r}")
    return int(parts[0]), int(parts[1])


def cache_dir() -> Path:
    """Where folders are prepared without a data directory: `$XDG_CACHE_HOME/aejax`, else `~/.cache/aejax`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aejax"


def list_files(root: Path) -> list[File]:
    """The image files under `root`, sorted by relative path; an empty folder is an error."""
    found: list[File] = []

    def unreadable(error: OSError) -> None:
        raise AejaxError(f"cannot list {error.filename}: {error.strerror}")

    for directory, subdirs, names in os.walk(root, onerror=unreadable):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in names:
            if name.startswith(".") or Path(name).suffix.lower() not in EXTENSIONS:
                continue
            file = Path(directory) / name
            stat = file.stat()
            found.append((file.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    if not found:
        raise AejaxError(f"image folder {root} holds no images ({', '.join(sorted(EXTENSIONS))}, searched "
                         f"recursively)")
    return sorted(found)


def split_hash(relative: str, split_seed: int) -> float:
    """A file's place in [0, 1), from its relative path alone: what decides its split."""
    return int.from_bytes(hashlib.sha256(f"{split_seed}/{relative}".encode()).digest()[:8], "big") / 2 ** 64


def splits(relatives: list[str], split_seed: int) -> tuple[list[str], list[str], list[float], int]:
    """(training files ordered by hash, test files, each training file's hash rescaled to [0, 1), files left out
    by a train/ + test/ layout)."""
    layout = any(r.startswith("train/") for r in relatives) and any(r.startswith("test/") for r in relatives)
    hashed = sorted((split_hash(r, split_seed), r) for r in relatives)
    if layout:
        train = [(u, r) for u, r in hashed if r.startswith("train/")]
        test = sorted(r for r in relatives if r.startswith("test/"))
        return [r for _, r in train], test, [u for u, _ in train], len(relatives) - len(train) - len(test)
    train = [(u, r) for u, r in hashed if u >= TEST_FRACTION]
    test = sorted(r for u, r in hashed if u < TEST_FRACTION)
    return [r for _, r in train], test, [(u - TEST_FRACTION) / (1 - TEST_FRACTION) for u, _ in train], 0


def _prepare(root: Path, files: list[File], listing: str, settings: dict, size: tuple[int, int] | None,
             prepared: Path, log: Callable[[str], None]) -> dict:
    train, test, _, left_out = splits([r for r, _, _ in files], settings["split_seed"])
    for split, names in (("training", train), ("test", test)):
        if not names:
            raise AejaxError(f"image folder {root}: none of its {len(files)} images is a {split} image (a tenth are "
                             f"test images, chosen by a hash of each path); add images, or give it train/ and "
                             f"test/ sub-folders")
    channels, shape = _scan(root, [r for r, _, _ in files], settings["channels"], size)
    log(f"preparing image folder {root}: {len(train):,} training and {len(test):,} test images "
        f"{shape[0]}x{shape[1]}x{channels}, into {prepared}")
    temporary = prepared.with_name(prepared.name + f".partial-{os.getpid()}")
    for stale in prepared.parent.glob(prepared.name + ".partial-*"):  # left by a process that ended mid-way
        shutil.rmtree(stale, ignore_errors=True)  # (this one holds the lock: no other is writing)
    try:
        temporary.mkdir(parents=True)
        shards = {split: _write(root, names, split, temporary, channels, size, settings["image_fit"],
                                (*shape, channels))
                  for split, names in (("train", train), ("test", test))}
        manifest = {"settings": settings, "listing": listing, "shape": [*shape, channels], "files": files,
                    "train": train, "test": test, "left_out": left_out, "shards": shards}
        (temporary / "manifest.json").write_text(json.dumps(manifest))
        if prepared.exists():
            shutil.rmtree(prepared)
        temporary.rename(prepared)
    except OSError as e:
        shutil.rmtree(temporary, ignore_errors=True)
        raise AejaxError(f"cannot prepare image folder {root} in {prepared.parent}: "
                         f"{e.strerror or e}{' (' + e.filename + ')' if e.filename else ''}") from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return manifest


def _scan(root: Path, relatives: list[str], channels: int | None,
          size: tuple[int, int] | None) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) of the prepared images, from every file's header; unreadable files and mixed sizes
    without `size` are one-line errors."""
    def read(relative: str) -> tuple[str, int, int, bool]:
        with _opened(root, relative) as image:
            return pixels.header(image)

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        headers = list(pool.map(read, relatives))
    if channels is None:
        channels = 3 if any(colour for *_, colour in headers) else 1
    if size is not None:
        return channels, size
    sizes = {}
    for relative, (_, height, width, _) in zip(relatives, headers, strict=True):
        sizes.setdefault((height, width), relative)
        if len(sizes) > 1:
            (h0, w0), first = next(iter(sizes.items()))
            raise AejaxError(f"images in {root} differ in size: {first} is {h0}x{w0}, {relative} is "
                             f"{height}x{width}; give image_size HxW (and image_fit resize or crop)",
                             cli=f"images in {root} differ in size: {first} is {h0}x{w0}, {relative} is "
                                 f"{height}x{width}; give --image-size HxW (and --image-fit resize or crop)")
    return channels, next(iter(sizes))


@contextlib.contextmanager
def _opened(root: Path, relative: str) -> Iterator[Image.Image]:
    try:
        with Image.open(root / relative) as image:
            yield image
    except AejaxError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise AejaxError(f"cannot read {root / relative} as an image ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'no message'})") from None


def _write(root: Path, relatives: list[str], split: str, into: Path, channels: int, size: tuple[int, int] | None,
           fit: str, shape: tuple[int, int, int]) -> list[dict]:
    """Decode `relatives` in order into ArrayRecord shards `{split}-NNNNN.array_record`; their manifest entries."""
    from array_record.python.array_record_module import ArrayRecordWriter

    def decode(relative: str) -> bytes:
        with _opened(root, relative) as image:
            array = pixels.pixels(image, channels, size, fit, str(root / relative))
        if array.shape != shape:
            raise AejaxError(f"{root / relative} decodes to {list(array.shape)}, not the {list(shape)} of its "
                             f"header; the file may be damaged")
        return array.tobytes()

    per_shard = max(1, SHARD_BYTES // int(np.prod(shape)))
    shards = []
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        for start in range(0, len(relatives), per_shard):
            name = f"{split}-{len(shards):05d}.array_record"
            writer = ArrayRecordWriter(str(into / name), "group_size:1")
            batch = relatives[start:start + per_shard]
            for record in pool.map(decode, batch):
                writer.write(record)
            writer.close()
            shards.append({"name": name, "records": len(batch), "sha256": _sha256(into / name)})
    return shards


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _locked(prepared: Path, root: Path) -> Iterator[None]:
    """Hold `prepared`'s lock file (made with its parent): one run prepares while the others wait."""
    try:
        prepared.parent.mkdir(parents=True, exist_ok=True)
        handle = open(prepared.with_name(prepared.name + ".lock"), "a")  # noqa: SIM115 - closed below
    except OSError as e:
        raise AejaxError(f"cannot prepare image folder {root} in {prepared.parent}: {e.strerror or e}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _read_manifest(prepared: Path) -> dict | None:
    """The manifest of a prepared folder, or None where none was completed (a completed one is renamed into place
    whole); an unreadable one is damage."""
    path = prepared / "manifest.json"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if manifest["settings"]["format"] != FORMAT:
            return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _damaged(prepared, f"its manifest cannot be read ({type(e).__name__})") from None


def _verify(prepared: Path, manifest: dict) -> None:
    for split in ("train", "test"):
        for shard in manifest["shards"][split]:
            path = prepared / shard["name"]
            if not path.exists():
                raise _damaged(prepared, f"{shard['name']} is missing")
            if _sha256(path) != shard["sha256"]:
                raise _damaged(prepared, f"{shard['name']} differs from its checksum")


def _damaged(prepared: Path, why: str) -> AejaxError:
    return AejaxError(f"prepared image folder {prepared} is damaged: {why}; delete {prepared} and run again to "
                      f"prepare it afresh")


def _source(prepared: Path, manifest: dict, root: Path) -> Source:
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    shape = tuple(manifest["shape"])
    paths = {split: [str(prepared / s["name"]) for s in manifest["shards"][split]] for split in ("train", "test")}
    train = ArrayRecordDataSource(paths["train"])

    def take(indices) -> np.ndarray:  # uint8 [n, H, W, C]
        records = train.__getitems__([int(i) for i in np.asarray(indices).reshape(-1)])
        return np.frombuffer(b"".join(records), np.uint8).reshape(len(records), *shape)

    test_source = ArrayRecordDataSource(paths["test"])
    test = np.frombuffer(b"".join(test_source.__getitems__(range(len(test_source)))), np.uint8).reshape(-1, *shape)
    _, _, hashes, _ = splits(manifest["train"], manifest["settings"]["split_seed"])
    left = f"; {manifest['left_out']:,} files outside train/ and test/ left out" if manifest["left_out"] else ""
    note = (f"image folder {root}: {len(manifest['train']):,} training and {len(test):,} test images "
            f"{'x'.join(map(str, shape))}{left}")
    return Source(len(train), lambda r: take(np.arange(r.start, r.stop)), test, take,
                  split_hash=np.asarray(hashes), note=note)
