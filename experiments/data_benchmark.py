"""Memory and speed of the two ways a training set reaches the program: device-resident, and streamed from its
source (`--data-placement`), on a synthetic 64x64x3 uint8 set this script prepares itself as a tfds dataset
(ArrayRecord, no TensorFlow) in a temporary data directory, read by name as any prepared tfds set is.

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
import aejax
data_dir, n, placement, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
config = aejax.Config(dataset="aejax_blobs", model="linear", latent_dim=32, epochs=1, batch_size=256,
                      train_examples=n, data_placement=placement)
t0 = time.perf_counter()
result = aejax.run(config, out, data_dir=data_dir, log=lambda line: None)
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


def prepare(data_dir: Path, n: int) -> None:
    """`n` training and `TEST` test images as the tfds dataset `aejax_blobs` in `data_dir`, generated block by
    block (never whole in memory)."""
    import tensorflow_datasets as tfds

    class AejaxBlobs(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"image": tfds.features.Tensor(shape=SHAPE, dtype=np.uint8)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, n), "test": self._generate_examples(1, TEST)}

        def _generate_examples(self, seed: int, count: int):
            rng = np.random.default_rng(seed)
            for start in range(0, count, 5000):
                for i, image in enumerate(blobs(rng, min(5000, count - start))):
                    yield start + i, {"image": image}

    AejaxBlobs(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def peak_rss(data_dir: Path, n: int, placement: str, work: Path) -> dict:
    """A 1-epoch linear run in a fresh process: its own report (peak RSS, seconds, test MSE)."""
    result = subprocess.run([sys.executable, "-c", CHILD, str(data_dir), str(n), placement,
                             str(work / f"{placement}_{n}")], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"the {placement} run on {n} images failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def throughput(data_dir: Path, n: int, work: Path, repeats: int = 3) -> list[dict]:
    """Images/s of the last epoch, device-resident and streamed, interleaved, for two workloads."""
    import aejax

    workloads = {"conv_strided d32 b25": aejax.Config(model="conv_strided", latent_dim=32, batch_size=25, epochs=2),
                 "linear d256 b128": aejax.Config(model="linear", latent_dim=256, batch_size=128, epochs=2)}
    rows = []
    for label, config in workloads.items():
        rates: dict[str, list[float]] = {"device": [], "stream": []}
        for i in range(repeats):
            for placement in ("device", "stream"):
                out = work / f"{label.replace(' ', '_')}_{placement}_{i}"
                aejax.run(config.replace(dataset="aejax_blobs", train_examples=n, data_placement=placement), out,
                          data_dir=str(data_dir), log=lambda line: None)
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
        work, data_dir = Path(tmp), Path(tmp) / "tfds"
        n = max(sizes + resident + [args.fits])
        t0 = time.perf_counter()
        prepare(data_dir, n)
        size = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
        prepared = {"images": n, "bytes_on_disk": size, "seconds": time.perf_counter() - t0}
        print(f"prepared {n:,} synthetic {'x'.join(map(str, SHAPE))} images ({size / 1e9:.2f} GB of ArrayRecord) "
              f"in {prepared['seconds']:.0f} s", flush=True)
        memory = []
        for placement, counts in (("stream", sizes), ("device", resident)):
            for count in counts:
                row = peak_rss(data_dir, count, placement, work)
                memory.append(row)
                print(f"{placement} {count:,} images: peak RSS {row['peak_rss_bytes'] / 1e9:.2f} GB, "
                      f"{row['seconds']:.0f} s, test MSE {row['test_mse']:.5f}", flush=True)
        speed = throughput(data_dir, args.fits, work)
    write_json(Path(args.out), {"image_shape": list(SHAPE), "test_images": TEST, "prepared": prepared,
                                "memory": memory, "throughput": speed, "environment": environment()})


if __name__ == "__main__":
    main()
