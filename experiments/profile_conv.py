"""Where the conv autoencoder's train step spends its time: each layer's forward + backward, with XLA's own
operations differentiated by JAX against `aejax.models.ops` with its hand-written gradients.

    python -m experiments.profile_conv [--batch-size 25]

Each row times one jitted `lax.scan` over 20 different inputs and prints microseconds per call (median of 5).
The reference rows are what a straightforward flax model runs (`nn.Conv` / `nn.max_pool` compile to the same
`lax` operations); the rows are diagnostics for `experiments/benchmark.py`, not a replacement for it.
"""

import statistics
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from aejax import cli
from aejax.models import ops

REPEATS = 20
DIMS = ("NHWC", "HWIO", "NHWC")


def time_us(f: Callable, *args: jax.Array) -> float:
    """Median microseconds of one call of `f(*args)` inside a compiled scan over REPEATS distinct inputs."""
    stacked = [jnp.stack([a * (1 + 1e-3 * r) for r in range(REPEATS)]) for a in args]

    def many(xs: list[jax.Array]) -> jax.Array:
        def body(total: jax.Array, x: list[jax.Array]) -> tuple[jax.Array, None]:
            return total + sum(o.sum() for o in jax.tree_util.tree_leaves(f(*x))), None

        return jax.lax.scan(body, jnp.float32(0), xs)[0]

    run = jax.jit(many)
    run(stacked).block_until_ready()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        run(stacked).block_until_ready()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / REPEATS * 1e6


def reference_block(x: jax.Array, kernel: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DIMS)
    return nn.relu(nn.max_pool(y, (2, 2), strides=(2, 2)))


def aejax_block(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return nn.relu(ops.conv3x3_max_pool2(x, kernel))


def main() -> None:
    p = cli.ArgumentParser(prog="python -m experiments.profile_conv", description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=cli.positive_int, default=25, help="images per timed call")
    b = p.parse_args().batch_size
    key = jax.random.key(0)
    print(f"batch {b}, microseconds per call (forward + backward to the inputs named)")
    for name, (h, c, f) in {"conv1 1->64 + pool": (28, 1, 64), "conv2 64->8 + pool": (14, 64, 8)}.items():
        x = jax.random.normal(key, (b, h, h, c))
        kernel = jax.random.normal(key, (3, 3, c, f))
        dp = jax.random.normal(key, (b, h // 2, h // 2, f))
        for label, block in (("XLA autodiff", reference_block), ("aejax.models.ops", aejax_block)):
            dk = time_us(lambda x, k, dp, g=block: jax.vjp(lambda k: g(x, k), k)[1](dp), x, kernel, dp)
            both = time_us(lambda x, k, dp, g=block: jax.vjp(g, x, k)[1](dp), x, kernel, dp)
            print(f"{name:>20} {label:>13}: d kernel {dk:9.1f}   d kernel + d input {both:9.1f}", flush=True)
    z = jax.random.normal(key, (b, 7, 7, 8))
    k1, k2 = jax.random.normal(key, (2, 2, 8, 64)), jax.random.normal(key, (2, 2, 64, 1))

    def reference_decoder(z: jax.Array, k1: jax.Array, k2: jax.Array) -> jax.Array:
        up = lambda x, k: jax.lax.conv_transpose(x, k, (2, 2), "VALID", dimension_numbers=DIMS)  # noqa: E731
        return nn.sigmoid(up(nn.relu(up(z, k1)), k2))

    def aejax_decoder(z: jax.Array, k1: jax.Array, k2: jax.Array) -> jax.Array:
        return ops.unblock(nn.sigmoid(ops.upsample2x2(nn.relu(ops.upsample2x2(z, k1)), k2)))

    for label, dec in (("XLA autodiff", reference_decoder), ("aejax.models.ops", aejax_decoder)):
        us = time_us(lambda z, a, c, d=dec: jax.vjp(d, z, a, c)[1](jnp.ones((b, 28, 28, 1))), z, k1, k2)
        print(f"{'decoder (2 deconvs)':>20} {label:>13}: all gradients {us:9.1f}", flush=True)


if __name__ == "__main__":
    main()
