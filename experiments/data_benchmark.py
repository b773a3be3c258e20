"""Memory and speed of the two ways a training set reaches the program: device-resident, and streamed from its
source (`--data-placement`), on a synthetic 64x64x3 uint8 set this script writes itself into a `.npy` file, given
to `aejax.run` as `np.load(path, mmap_mode="r")` (so the set is on disk, not in memory).

    python -m experiments.data_benchmark --out benchmarks/data_cpu.json

- Peak RSS of a 1-epoch linear run (code 32, batch 256) streamed at 50,000 and 200,000 images (2.46 GB of
  uint8), and device-resident at 40,000 and 50,000: each run in a fresh process, which reports its own peak.
- Images/s streamed against device-resident on a set that fits (20,000 images), in one process, interleaved,
  the median of the last epochs of three runs each: conv_strided (code 32, batch 25) and linear (code 256,
  batch 128).
- A folder of 50,000 PNG files of the same images (`--folder`): the time to prepare it (`aejax.data.folder`,
  decoding every file into checksummed ArrayRecord shards), the time of a second start (listing and
  verification only), each in a fresh process, and the peak RSS of a 1-epoch linear run streamed from it.
- Where the process may make a memory cgroup (Linux, cgroup v1 or v2, as root): a 1-epoch linear run on 40,000
  images given as arrays in memory, its training set device-resident, under a 4 GB cap (`--cap-gb`); it must end
  with its results.json.

Writes the JSON with the machine and versions, and prints a line per measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aejax.environment import environment
from aejax.files import refuse_overwrite, write_json

SHAPE = (64, 64, 3)
TEST = 1000

PEAK = """
def peak_rss():  # this process's own high-water mark (ru_maxrss would carry over the parent's from fork)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
"""

CHILD = PEAK + """
import json, sys, time
import numpy as np
import aejax
path, n, placement, out, TEST = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
images = np.load(path, mmap_mode="r")
config = aejax.Config(model="linear", latent_dim=32, epochs=1, batch_size=256, data_placement=placement)
t0 = time.perf_counter()
result = aejax.run(config, out, data=(images[:n], np.asarray(images[-TEST:])), log=lambda line: None)
print(json.dumps({"images": n, "placement": placement, "seconds": time.perf_counter() - t0,
                  "peak_rss_bytes": peak_rss(), "test_mse": result.rows[0]["test_mse"]}))
"""


FOLDER_CHILD = PEAK + """
import json, sys, time
import aejax
folder, data_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if out == "-":
    source = aejax.data.folder(folder, data_dir=data_dir, log=lambda line: None)
    report = {"training_images": source.n_train, "test_images": len(source.test)}
else:
    config = aejax.Config(dataset="folder:" + folder, model="linear", latent_dim=32, epochs=1, batch_size=256,
                          data_placement="stream")
    report = {"test_mse": aejax.run(config, out, data_dir=data_dir, log=lambda line: None).rows[0]["test_mse"]}
print(json.dumps({**report, "seconds": time.perf_counter() - t0, "peak_rss_bytes": peak_rss()}))
"""

CAPPED_CHILD = """
import json, sys, time
import numpy as np
import aejax
from experiments.data_benchmark import blobs
n, out = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
train = np.concatenate([blobs(rng, min(5000, n - i)) for i in range(0, n, 5000)])
config = aejax.Config(model="linear", latent_dim=32, epochs=1, batch_size=256, data_placement="device")
t0 = time.perf_counter()
result = aejax.run(config, out, data=(train, blobs(rng, 1000)), log=lambda line: None)
print(json.dumps({"images": n, "seconds": time.perf_counter() - t0, "test_mse": result.rows[0]["test_mse"]}))
"""


def blobs(rng: np.random.Generator, m: int) -> np.ndarray:
    """`m` images of a smooth random colour blob each, uint8 `[m, 64, 64, 3]`: structure a code can learn."""
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]].astype(np.float32) / SHAPE[0]
    cy, cx = rng.random((2, m, 1, 1), dtype=np.float32) * 0.8 + 0.1
    r = rng.random((m, 1, 1), dtype=np.float32) * 0.3 + 0.1
    colour = rng.random((m, 1, 1, 3), dtype=np.float32)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2)[..., None]  # [m, H, W, 1]
    return np.clip(255 * (0.15 + 0.85 * blob * colour), 0, 255).astype(np.uint8)


def synthetic_set(path: Path, n: int, seed: int = 0) -> None:
    """`n` images into a `.npy` file, written block by block (never whole in memory)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, *SHAPE)})
        for start in range(0, n, 5000):
            f.write(blobs(rng, min(5000, n - start)).tobytes())


def peak_rss(path: Path, n: int, placement: str, work: Path) -> dict:
    """A 1-epoch linear run in a fresh process: its own report (peak RSS, seconds, test MSE)."""
    return child(CHILD, str(path), str(n), placement, str(work / f"{placement}_{n}"), str(TEST))


def child(code: str, *args: str, cwd: Path | None = None, cgroup: Path | None = None) -> dict:
    """Run `code` in a fresh Python process (inside `cgroup`, a cgroup's folder, where given); its last line of
    JSON."""
    command = [sys.executable, "-c", code, *args]
    if cgroup is not None:  # the shell joins the group, then becomes Python
        command = ["sh", "-c", f'echo $$ > "{cgroup / "cgroup.procs"}" && exec "$@"', "sh", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=cwd)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise SystemExit(f"a benchmark process failed: {lines[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def image_folder(path: Path, n: int, work: Path) -> dict:
    """Write `n` PNGs into `path` (100 sub-folders), then time preparing it, a second start, and a streamed run."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    t0 = time.perf_counter()

    def write(start: int) -> None:
        images = blobs(np.random.default_rng(start + 1), min(1000, n - start))
        for i, image in enumerate(images):
            folder = path / f"{(start + i) % 100:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{start + i:06d}.png")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(0, n, 1000)))
    written = {"files": n, "bytes": int(sum(f.stat().st_size for f in path.rglob("*.png"))),
               "seconds": time.perf_counter() - t0}
    print(f"wrote {n:,} PNG files ({written['bytes'] / 1e9:.2f} GB) in {written['seconds']:.0f} s", flush=True)
    data_dir = str(work / "prepared")
    first = child(FOLDER_CHILD, str(path), data_dir, "-")
    print(f"folder prepared in {first['seconds']:.1f} s (peak RSS {first['peak_rss_bytes'] / 1e9:.2f} GB)",
          flush=True)
    second = child(FOLDER_CHILD, str(path), data_dir, "-")
    print(f"second start (list + verify) {second['seconds']:.1f} s", flush=True)
    streamed = child(FOLDER_CHILD, str(path), data_dir, str(work / "folder_run"))
    print(f"streamed 1-epoch run from the folder: peak RSS {streamed['peak_rss_bytes'] / 1e9:.2f} GB, "
          f"{streamed['seconds']:.0f} s", flush=True)
    return {"written": written, "prepare": first, "second_start": second, "streamed_run": streamed}


def memory_cgroup(cap_bytes: int) -> tuple[Path, str, str] | None:
    """A fresh memory cgroup capped at `cap_bytes`: (its folder, its peak-usage file, its limit file), or None
    where this process may not make one."""
    candidates = ((Path("/sys/fs/cgroup/memory"), "memory.max_usage_in_bytes", "memory.limit_in_bytes"),
                  (Path("/sys/fs/cgroup"), "memory.peak", "memory.max"))
    for root, peak, limit in candidates:
        group = root / f"aejax_benchmark_{os.getpid()}"
        try:
            group.mkdir()
            (group / limit).write_text(str(cap_bytes))
            return group, peak, limit
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
    return None


def capped(n: int, cap_bytes: int, work: Path) -> dict:
    """The device-resident run of `n` in-memory images in a fresh process under a memory cgroup of `cap_bytes`."""
    group = memory_cgroup(cap_bytes)
    if group is None:
        print("no memory cgroup can be made here: the capped run is skipped", flush=True)
        return {"skipped": "no memory cgroup can be made by this process"}
    folder, peak, _ = group
    out = work / f"capped_{n}"
    try:
        row = child(CAPPED_CHILD, str(n), str(out), cwd=Path(__file__).resolve().parents[1], cgroup=folder)
        row["cgroup_peak_bytes"] = int((folder / peak).read_text())
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()
    row.update(cap_bytes=cap_bytes, results_json=(out / "results.json").exists())
    print(f"device-resident {n:,} images under a {cap_bytes / 1e9:.1f} GB cap: finished in {row['seconds']:.0f} s, "
          f"cgroup peak {row['cgroup_peak_bytes'] / 1e9:.2f} GB, results.json {row['results_json']}", flush=True)
    return row


def throughput(path: Path, n: int, work: Path, repeats: int = 3) -> list[dict]:
    """Images/s of the last epoch, device-resident and streamed, interleaved, for two workloads."""
    import aejax

    images = np.load(path, mmap_mode="r")
    train, test = images[:n], np.asarray(images[-TEST:])
    workloads = {"conv_strided d32 b25": aejax.Config(model="conv_strided", latent_dim=32, batch_size=25, epochs=2),
                 "linear d256 b128": aejax.Config(model="linear", latent_dim=256, batch_size=128, epochs=2)}
    rows = []
    for label, config in workloads.items():
        rates: dict[str, list[float]] = {"device": [], "stream": []}
        for i in range(repeats):
            for placement in ("device", "stream"):
                out = work / f"{label.replace(' ', '_')}_{placement}_{i}"
                aejax.run(config.replace(data_placement=placement), out, data=(train, test), log=lambda line: None)
                last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
                rates[placement].append(last["images_per_second"])
        device, streamed = statistics.median(rates["device"]), statistics.median(rates["stream"])
        rows.append({"workload": label, "images": n, "device_images_per_second": device,
                     "stream_images_per_second": streamed, "stream_over_device": streamed / device,
                     "runs": rates})
        print(f"{label}: device {device:,.0f} img/s, streamed {streamed:,.0f} img/s ({streamed / device:.2f}x)",
              flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.data_benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the JSON file to write, e.g. benchmarks/data_cpu.json")
    p.add_argument("--sizes", default="50000,200000", help="training-set sizes of the streamed RSS runs")
    p.add_argument("--resident", default="40000,50000", help="training-set sizes of the device-resident RSS runs")
    p.add_argument("--fits", type=int, default=20_000, help="images of the throughput comparison")
    p.add_argument("--folder", type=int, default=50_000, help="PNG files of the folder measurements (0: none)")
    p.add_argument("--capped", type=int, default=40_000, help="images of the capped device-resident run (0: none)")
    p.add_argument("--cap-gb", type=float, default=4.0, help="the memory cap of that run, in GB (10**9 bytes)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    refuse_overwrite([args.out], args.overwrite)
    sizes = [int(v) for v in args.sizes.split(",")]
    resident = [int(v) for v in args.resident.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work, path = Path(tmp), Path(tmp) / "images.npy"
        n = max(sizes + resident + [args.fits]) + TEST
        t0 = time.perf_counter()
        synthetic_set(path, n)
        prepared = {"images": n, "bytes_on_disk": path.stat().st_size, "seconds": time.perf_counter() - t0}
        print(f"wrote {n:,} synthetic {'x'.join(map(str, SHAPE))} images ({prepared['bytes_on_disk'] / 1e9:.2f} "
              f"GB) in {prepared['seconds']:.0f} s", flush=True)
        memory = []
        for placement, counts in (("stream", sizes), ("device", resident)):
            for count in counts:
                row = peak_rss(path, count, placement, work)
                memory.append(row)
                print(f"{placement} {count:,} images: peak RSS {row['peak_rss_bytes'] / 1e9:.2f} GB, "
                      f"{row['seconds']:.0f} s, test MSE {row['test_mse']:.5f}", flush=True)
        speed = throughput(path, args.fits, work)
        path.unlink()
        folder = image_folder(work / "folder", args.folder, work) if args.folder else None
        cap = capped(args.capped, int(args.cap_gb * 1e9), work) if args.capped else None
    write_json(Path(args.out), {"image_shape": list(SHAPE), "test_images": TEST, "prepared": prepared,
                                "memory": memory, "throughput": speed, "folder": folder, "capped": cap,
                                "environment": environment()})


if __name__ == "__main__":
    main()
