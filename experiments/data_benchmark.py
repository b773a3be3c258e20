"""Memory and speed of the two ways a training set reaches the program: device-resident, and streamed from its
source (`--data-placement`), on a synthetic 64x64x3 uint8 set this script writes itself into a `.npy` file, given
to `aejax.run` as `np.load(path, mmap_mode="r")` (so the set is on disk, not in memory).

    python -m experiments.data_benchmark --out benchmarks/data_cpu.json

- Peak RSS of a 1-epoch linear run (code 32, batch 256) streamed at 50,000 and 200,000 images (2.46 GB of
  uint8), and device-resident at 40,000 and 50,000: each run in a fresh process, which reports its own peak.
- Images/s streamed against device-resident on a set that fits (20,000 images), in one process, interleaved,
  the median of the last epochs of three runs each: conv_strided (code 32, batch 25) and linear (code 256,
  batch 128).

Writes the JSON with the machine and versions, and prints a line per measurement.
"""

from __future__ import annotations

import argparse
import json
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

CHILD = """
import json, resource, sys, time
import numpy as np
import aejax
path, n, placement, out, TEST = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
images = np.load(path, mmap_mode="r")
config = aejax.Config(model="linear", latent_dim=32, epochs=1, batch_size=256, data_placement=placement)
t0 = time.perf_counter()
result = aejax.run(config, out, data=(images[:n], np.asarray(images[-TEST:])), log=lambda line: None)
print(json.dumps({"images": n, "placement": placement, "seconds": time.perf_counter() - t0,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "test_mse": result.rows[0]["test_mse"]}))
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
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), str(n), placement,
                             str(work / f"{placement}_{n}"), str(TEST)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"the {placement} run on {n} images failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    write_json(Path(args.out), {"image_shape": list(SHAPE), "test_images": TEST, "prepared": prepared,
                                "memory": memory, "throughput": speed, "environment": environment()})


if __name__ == "__main__":
    main()
