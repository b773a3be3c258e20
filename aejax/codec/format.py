"""The codec's file format and the images it takes: the `.aejx` header, the model hash, the input rules.

A file is a 19-byte header (20 for a variable-rate model) and the coder's 32-bit words (little-endian):

    magic b"AEJX" | format version (1 byte) | model kind (1: factorized, 2: hyperprior, 3 and 4: their variable-rate
    forms) | H, W (uint16, the image's) | C (uint8) | model hash (4 bytes: sha256 of the model's config and
    parameters) | CRC-32 of the rest | [quality (uint8, 0..100): variable-rate kinds only] | payload
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aejax import numerics
from aejax.config import Config
from aejax.errors import AejaxError

MAGIC = b"AEJX"
VERSION = 2  # 1: ANS-coded payloads (no longer read)
HEADER = struct.Struct("<4sBBHHB4sI")  # magic, version, kind, H, W, C, model hash, payload CRC-32
MODEL_MAGIC, MODEL_VERSION = b"AEJM", 1  # a model file: magic | version | sha256 of the rest | config | params
MAX_SIDE = 65535  # H and W are uint16 in the header
KINDS = {(False, False): 1, (True, False): 2, (False, True): 3, (True, True): 4}  # (hyperprior, variable) -> kind
VARIABLE_KINDS = frozenset({3, 4})
QUALITIES = 100  # a variable-rate file's quality Q in 0..100 is the model's quality Q / 100 * (L - 1)


def model_hash(config: Config, variables: dict) -> bytes:
    """4 bytes identifying a trained model: sha256 of its config (JSON) and every parameter's bytes."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for leaf in jax.tree_util.tree_leaves(variables):
        digest.update(np.ascontiguousarray(numerics.x32(leaf)).tobytes())  # the same with JAX_ENABLE_X64
    return digest.digest()[:4]


def model_file(config: Config, variables: dict) -> bytes:
    """A model file: `MODEL_MAGIC` | version | sha256 of the rest | config length (uint32) | config (JSON) |
    parameters (flax msgpack, 32-bit dtypes)."""
    from flax import serialization

    text = json.dumps(config.to_dict(), sort_keys=True).encode()
    variables = jax.tree_util.tree_map(numerics.x32, jax.device_get(variables))
    body = struct.pack("<I", len(text)) + text + serialization.msgpack_serialize(variables)
    return MODEL_MAGIC + bytes([MODEL_VERSION]) + hashlib.sha256(body).digest() + body


def read_model_file(path: str | Path) -> tuple[Config, dict]:
    """(config, variables as numpy) of a model file `model_file` wrote, or a one-line error."""
    from flax import serialization

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise AejaxError(f"cannot read the model file {path} ({e.strerror or e})") from None
    head = len(MODEL_MAGIC) + 1 + 32
    if len(data) < head + 4 or data[:len(MODEL_MAGIC)] != MODEL_MAGIC:
        raise AejaxError(f"{path} is not an aejax model file (no {MODEL_MAGIC.decode()} header)")
    if data[len(MODEL_MAGIC)] != MODEL_VERSION:
        raise AejaxError(f"{path} has model file version {data[len(MODEL_MAGIC)]}; this aejax reads "
                         f"{MODEL_VERSION}")
    body = data[head:]
    if hashlib.sha256(body).digest() != data[len(MODEL_MAGIC) + 1:head]:
        raise AejaxError(f"{path} is damaged or truncated (its sha256 does not match)")
    (length,) = struct.unpack_from("<I", body)
    return Config.from_dict(json.loads(body[4:4 + length])), serialization.msgpack_restore(body[4 + length:])


def as_batch(images, channels: int) -> tuple[jax.Array, bool]:
    """Images as float32 `[N, H, W, C]` in [0, 1] (from uint8 0..255 or float [0, 1]), any H x W with the model's
    C channels; whether batched."""
    x = np.asarray(images)
    if x.ndim == 3 and x.shape[-1] == channels:
        x, batched = x[None], False
    elif x.ndim == 4 and x.shape[-1] == channels:
        batched = True
    else:
        raise AejaxError(f"the codec's model codes images of {channels} channel(s), [H, W, {channels}] or "
                         f"[N, H, W, {channels}]; got an array shaped {list(x.shape)}")
    if not (0 < x.shape[1] <= MAX_SIDE and 0 < x.shape[2] <= MAX_SIDE):
        raise AejaxError(f"images must be 1 to {MAX_SIDE} pixels on each side, got {x.shape[1]}x{x.shape[2]}")
    if x.dtype == np.uint8:
        return jnp.asarray(x, jnp.float32) / 255.0, batched
    if not np.issubdtype(x.dtype, np.floating) or not (0.0 <= float(x.min()) and float(x.max()) <= 1.0):
        raise AejaxError(f"images must be uint8 (0..255) or float in [0, 1], got {x.dtype} in "
                         f"[{float(x.min()):g}, {float(x.max()):g}]")
    return jnp.asarray(x, jnp.float32), batched


def read_header(data: bytes, name: str) -> tuple:
    """A file's header fields (magic, version, kind, H, W, C, model hash, payload CRC-32), or a one-line error."""
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise AejaxError(f"{name} is not an aejax codec file (no {MAGIC.decode()} header)")
    return HEADER.unpack_from(data)


def header_size(file: bytes) -> int:
    """Bytes of a file's header: 19, or 20 for a variable-rate model's (its quality byte)."""
    return HEADER.size + (len(file) > 5 and file[5] in VARIABLE_KINDS)


def payload_bits(file: bytes) -> int:
    """Bits of a file's entropy-coded payload (the file without its header)."""
    return 8 * (len(file) - header_size(file))
