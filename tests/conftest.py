"""Shared fixtures: a tiny synthetic IDX set, real MNIST test digits read straight from the vendored files,
and the real MNIST prepared once per session into a temporary tfds data dir.

The session and every command-line subprocess it starts share one persistent JAX compilation cache in a
temporary directory (removed at exit): the tests compile the same programs in many processes, and on a 2-core
CPU compilation is most of their time. It changes no result: a cached executable is the compiled one. Unless
`XLA_FLAGS` names a backend optimisation level, they also compile for speed of compiling: LLVM at level 0, and,
where the installed XLA knows the flags (asked once, in a subprocess: XLA aborts on a flag it does not know),
loops emitted by XLA:CPU's elemental emitter rather than its MLIR fusion emitters, in one LLVM module. The
programs are the same HLO, compiled about three times as fast into slower machine code, which the tests' tiny
shapes do not notice. The main command, the experiments and the benchmarks compile with XLA's defaults.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # before anything imports jax
    _cache = tempfile.mkdtemp(prefix="aejax-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit the result
    _flags = [*os.environ.get("XLA_FLAGS", "").split(), "--xla_backend_optimization_level=0"]
    _faster = [*_flags, "--xla_cpu_use_fusion_emitters=false", "--xla_cpu_parallel_codegen_split_count=1"]
    _probe = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
                            env={**os.environ, "XLA_FLAGS": " ".join(_faster), "JAX_PLATFORMS": "cpu"},
                            capture_output=True)
    os.environ["XLA_FLAGS"] = " ".join(_faster if _probe.returncode == 0 else _flags)

import numpy as np
import pytest

from aejax import data
from tests.helpers import run_cli, write_idx_set


@pytest.fixture(autouse=True)
def _matmul_precision_is_the_default():
    """Each test starts at JAX's default matmul precision: a test that sets it globally would make every later
    comparison run at another precision (on a GPU, TF32 against highest) without saying so."""
    import jax

    assert jax.config.jax_default_matmul_precision is None, "an earlier test set jax_default_matmul_precision"
    yield


@pytest.fixture
def synthetic_idx(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "idx"
    return root, write_idx_set(root)


@pytest.fixture(scope="session")
def mnist_test_images() -> np.ndarray:
    """The first 2,000 real MNIST test images, uint8 [2000, 28, 28, 1], without tfds."""
    path = data.VENDORED_DIR / "t10k-images-idx3-ubyte.gz"
    return data.read_idx(path, data.PINNED_SHA256[path.name])[:2000]


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A tfds data dir holding a prepared synthetic MNIST-shaped set (300 random training images, 100 test), for
    command lines that read `--data-dir` and need no real digits: preparing it takes a fraction of a second."""
    root = tmp_path_factory.mktemp("synthetic")
    checksums = write_idx_set(root / "idx", n_train=300, n_test=100)
    data.load_mnist("test", data_dir=root / "tfds", mnist_dir=root / "idx", checksums=checksums)
    return root / "tfds"


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory) -> Path:
    """Real vendored MNIST prepared once into a fresh tfds data dir."""
    root = tmp_path_factory.mktemp("tfds")
    data.load_mnist("test", data_dir=root)
    return root


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, prepared_data_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """A tiny study through the real command line (linear and conv at depth 32, 1 epoch on 500 images, seeds
    0 and 1), shared by the study test and the application-script test: (its output dir, the finished process)."""
    out = tmp_path_factory.mktemp("small") / "study"
    result = run_cli("experiments.study", "--out", str(out), "--depths", "32", "--epochs", "1", "--seeds", "0,1",
                     "--arms", "linear,conv", "--train-examples", "500", "--data-dir", str(prepared_data_dir))
    return out, result
