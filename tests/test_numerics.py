"""Portable CPU numerics (`aejax.numerics`): the flags, their record, and gradients that do not depend on how many
cores the process may use. Each case runs in a fresh process, since XLA reads its flags once."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from aejax import numerics
from tests.helpers import REPO, run_cli

x86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 flags")

# Prints one hash per gradient leaf of a conv model at the given code size, on the CPUs the process is pinned to.
GRADIENTS = """
import hashlib, os, sys
os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:int(sys.argv[3])]))
import jax, jax.numpy as jnp, numpy as np
from aejax.config import Config
from aejax.models import registry
model = registry.build(registry.resolve(Config(model=sys.argv[1], latent_dim=int(sys.argv[2]))))
x = jax.random.uniform(jax.random.key(0), (128, 28, 28, 1))  # [batch, 28, 28, 1]
params = model.init(jax.random.key(1), x)
grads = jax.jit(jax.grad(lambda p: jnp.mean((model.apply(p, x) - x) ** 2)))(params)
for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    print(jax.tree_util.keystr(path), hashlib.sha256(np.asarray(leaf).tobytes()).hexdigest())
"""


def _gradients(model: str, depth: int, cores: int, flags: str) -> list[str]:
    env = {**os.environ, "XLA_FLAGS": flags, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", GRADIENTS, model, str(depth), str(cores)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@x86
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to compare one core with two")
@pytest.mark.parametrize("model,depth", [("conv_strided", 32),
                                         pytest.param("conv_original", 392, marks=pytest.mark.slow)])
def test_portable_gradients_are_the_same_bits_on_one_core_and_two(model, depth):
    """The kernel gradients of the ops convolutions (sums over every pixel of a batch) and every other gradient:
    equal bit for bit whether XLA's CPU runtime has one thread or two, under portable numerics. Without them (the
    one long matmul, split across threads) the first conv kernel's gradient differs."""
    flags = " ".join([os.environ.get("XLA_FLAGS", ""), *numerics.PORTABLE_XLA_FLAGS])
    one, two = _gradients(model, depth, 1, flags), _gradients(model, depth, 2, flags)
    assert len(one) > 4 and one == two


def test_portable_cpu_reads_xla_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert not numerics.portable_cpu()
    monkeypatch.setenv("XLA_FLAGS", " ".join(["--xla_backend_optimization_level=0", *numerics.PORTABLE_XLA_FLAGS]))
    assert numerics.portable_cpu()
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX512 --xla_cpu_experimental_ynn_fusion_type=-reduce")
    assert not numerics.portable_cpu()


@x86
def test_use_portable_cpu_adds_the_flags_once_and_leaves_a_users_own_choice(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)  # restored after the test, as XLA_FLAGS is
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert numerics.use_portable_cpu() and numerics.portable_cpu()
    once = os.environ["XLA_FLAGS"]
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert numerics.use_portable_cpu() and os.environ["XLA_FLAGS"] == once
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX512")
    assert not numerics.use_portable_cpu() and os.environ["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX512"


@x86
@pytest.mark.slow  # two command-line runs in fresh processes; CI runs it (`-m slow`)
def test_portable_cpu_flag_is_recorded_in_config_json(tmp_path, synthetic_data_dir):
    """`aejax.train --portable-cpu` in a fresh process: the flags in XLA_FLAGS and `portable_cpu: true` in
    config.json's environment; without the flag, `false`."""
    common = ["--model", "conv_strided", "--latent-dim", "8", "--epochs", "1", "--train-examples", "100",
              "--batch-size", "50", "--data-dir", str(synthetic_data_dir)]
    for name, extra in (("portable", ["--portable-cpu"]), ("native", [])):
        result = run_cli("aejax.train", *common, *extra, "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    portable, native = (json.loads((tmp_path / n / "config.json").read_text())["environment"]
                        for n in ("portable", "native"))
    assert portable["portable_cpu"] is True and not native["portable_cpu"]
    assert all(f in portable["xla_flags"].split() for f in numerics.PORTABLE_XLA_FLAGS)


@pytest.mark.parametrize("op,shapes", [("conv3x3", [(4, 8, 8, 3), (3, 3, 3, 5)]),
                                       ("conv3x3_max_pool2", [(4, 8, 8, 1), (3, 3, 1, 16)]),
                                       ("downsample2x2", [(4, 8, 8, 3), (2, 2, 3, 5)]),
                                       ("upsample2x2", [(4, 5, 5, 3), (2, 2, 3, 5)])])
def test_the_chunked_kernel_gradients_equal_the_one_matmul_ones(monkeypatch, op, shapes):
    """The portable forms (chosen when the flags are in XLA_FLAGS, read as the function is traced) compute the same
    values, gradients and forward-mode tangents as the default forms, to float32 rounding."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aejax.models import ops

    fn = getattr(ops, op)
    x, k = (jax.random.normal(jax.random.key(i), s) for i, s in enumerate(shapes))

    def results():
        loss = lambda x, k: jnp.sum(fn(x, k) ** 2)  # noqa: E731
        value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, k)
        _, tangent = jax.jit(lambda x, k: jax.jvp(fn, (x, k), (x, k)))(x, k)
        return value, grads, tangent

    monkeypatch.setenv("XLA_FLAGS", "")
    default = results()
    monkeypatch.setenv("XLA_FLAGS", " ".join(numerics.PORTABLE_XLA_FLAGS))
    assert numerics.portable_cpu()
    portable = results()
    for a, b in zip(jax.tree_util.tree_leaves(default), jax.tree_util.tree_leaves(portable), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
