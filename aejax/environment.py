"""Where a result came from: package versions, devices, host and CPU of this process, recorded by every run
(`config.json`) and every experiment's JSON."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

from aejax import numerics

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy", "aejax")


def environment() -> dict[str, Any]:
    """Versions, devices and host of this process, for reproducibility records."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {"versions": versions, "python": platform.python_version(), "platform": platform.platform(),
            "host": socket.gethostname(), "backend": jax.default_backend(),
            "device_kind": devices[0].device_kind, "device_count": len(devices),
            "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS"),
            "portable_cpu": numerics.portable_cpu(), "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            **_cpu()}


CPU_FEATURES = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")  # what XLA's CPU code generation uses


def _cpu() -> dict[str, Any]:
    """The CPU model and its vector instruction sets: XLA compiles for the host CPU, so float results are
    bit-identical only on the same kind of CPU."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or None, "cpu_features": None}
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name"), "cpu_features": [f for f in CPU_FEATURES if f in flags]}


