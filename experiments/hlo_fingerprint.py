"""Fingerprints of the programs the benchmark times: the sha256 of each workload's optimized HLO (the whole-epoch
`lax.scan` and the single train step, as XLA compiled them on this machine), with source locations removed.

    python -m experiments.hlo_fingerprint --out /tmp/head.json

Two commits whose fingerprints agree run the same compiled programs, so their throughput can differ only by the
machine's noise: a check that a refactor left the hot path alone, exact where a timed A/B on a shared machine is
not. To fingerprint another commit with this script, run it as a file over that commit's checkout:

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old python experiments/hlo_fingerprint.py --out /tmp/old.json
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import jax
import jax.numpy as jnp

from aejax import cli
from aejax.config import MNIST_SHAPE
from aejax.environment import environment
from aejax.files import refuse_overwrite, write_json
from aejax.training import step as train
from experiments.benchmark import WORKLOADS

_FRAME_TABLES = ("FileNames", "FunctionNames", "FileLocations", "StackFrames")


def strip_locations(hlo: str) -> str:
    """HLO text without what names the source: op metadata, the stack-frame tables and their ids, the module
    name (it carries the function's name)."""
    kept, skipping = [], False
    for line in hlo.splitlines():
        if line in _FRAME_TABLES:
            skipping = True
        elif skipping and not line.strip():
            skipping = False
        elif not skipping:
            line = re.sub(r", metadata=\{[^}]*\}", "", line)
            kept.append(re.sub(r", stack_frame_id=\d+", "", line))
    return re.sub(r"^HloModule \S+", "HloModule", "\n".join(kept), flags=re.M)


def fingerprints(images_per_call: int = 10_000) -> dict[str, dict[str, str]]:
    """{workload: {"scan": sha256, "step": sha256}} of the optimized HLO, compiled as the benchmark compiles it."""
    out = {}
    for name, config in WORKLOADS.items():
        trainer = train.make_trainer(config)
        state = train.init_state(trainer, jax.random.key(0))
        steps = max(10, images_per_call // config.batch_size)
        programs = {"scan": (train.train_epoch, jnp.zeros((steps * config.batch_size, *MNIST_SHAPE), jnp.uint8),
                             jax.random.key(1)),
                    "step": (train.train_step, jnp.zeros((config.batch_size, *MNIST_SHAPE)))}
        out[name] = {}
        for kind, (fn, *args) in programs.items():
            hlo = jax.jit(fn, static_argnums=0, donate_argnums=1).lower(trainer, state, *args).compile().as_text()
            out[name][kind] = hashlib.sha256(strip_locations(hlo).encode()).hexdigest()
        print(f"{name:>20}: scan {out[name]['scan'][:16]}  step {out[name]['step'][:16]}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="write the JSON here")
    p.add_argument("--images", type=cli.positive_int, default=10_000,
                   help="images per scanned call, as in the benchmark (the scan length is part of the program)")
    p.add_argument("--overwrite", action="store_true", help="replace the result file if it exists")
    args = p.parse_args()
    cli.cli(lambda: refuse_overwrite([args.out], args.overwrite))
    write_json(Path(args.out), {"fingerprints": fingerprints(args.images), "environment": environment()})


if __name__ == "__main__":
    main()
