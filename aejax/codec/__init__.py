"""A learned image codec: a trained `rd_factorized` / `rd_hyperprior` model, or a variable-rate `rd_variable` /
`rd_variable_hyperprior` (`aejax.models.rate_distortion`), and an entropy coder (constriction's range coder) turn
images into bytes and back.

    codec = Codec.from_run("runs/rd", member={"lmbda": 0.01})
    files = codec.encode(images)           # uint8 or float [N, H, W, C] (or one [H, W, C]) -> list of bytes
    images_back = codec.decode(files)      # float32 [N, H, W, C] in [0, 1]
    assert (images_back == codec.reconstruct(images)).all()   # bit for bit

A variable-rate model codes each image at a quality from 0 to 100 (`QUALITIES`; its lowest level to its
highest, the gains interpolated in between): `encode(images, quality=60)`, one quality per image, or the
qualities `choose_quality` finds per image for a target PSNR or a byte budget. The quality is in the file.

Any H x W with the model's channels is coded, whatever size the model trained on (its layers are convolutions:
the analysis pads the image to a multiple of 16, the synthesis crops back to the size the file's header gives;
each size compiles once). Each image is encoded on its own (the model runs with a batch of one, so a result never
depends on which other images share the call): its quantised code values (clipped to +-`SYMBOL_BOUND`) are coded
under the model's entropy model, discretised to integer bins: per channel the learned factorized density's mass of
each bin (`rd_factorized`; the hyper code of `rd_hyperprior` the same way, coded first), and for `rd_hyperprior`'s
main code a quantised Gaussian whose scale is the hyper-synthesis output rounded up to a fixed table
(`SCALE_TABLE`), so the encoder and the decoder derive identical models. Decoding reruns the model on the
decoded symbols: it equals the model's own quantised reconstruction (`Codec.reconstruct`) bit for bit.

A range coder, rather than ANS, because a file holds one small image: its termination costs about 16 bits per
file against ANS's about 35 (constriction's coders, both with 32-bit words, measured on random messages).

The file format (a 19- or 20-byte header, then the coder's 32-bit words) is `aejax.codec.format`'s.

A file that is not one, of another version, of another model (or channel count), truncated or altered is refused with
one line (`AejaxError`) before an image is returned: decoding re-encodes the decoded symbols and accepts only
the very words `encode` writes for them.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import constriction
import jax
import jax.numpy as jnp
import numpy as np

from aejax.codec.format import (  # noqa: F401 - the format's names, re-exported
    HEADER,
    KINDS,
    MAGIC,
    MODEL_MAGIC,
    MODEL_VERSION,
    QUALITIES,
    VERSION,
    as_batch,
    header_size,
    model_file,
    model_hash,
    payload_bits,
    read_header,
    read_model_file,
)
from aejax.config import Config
from aejax.errors import AejaxError
from aejax.evaluation import chunks
from aejax.models.rate_distortion import SCALE_TABLE, SYMBOL_BOUND, RateDistortionAutoencoder

ESTIMATE_CHUNK = 500  # images per model call when estimating rates


def _in_32_bits(method: Callable) -> Callable:
    """Run `method` with JAX's 64-bit mode off: the symbols, entropy tables and decoded images are then the same
    bits whether or not the caller set `JAX_ENABLE_X64` (a file written in one mode decodes in the other)."""

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        with jax.enable_x64(False):
            return method(*args, **kwargs)

    return wrapped


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR (dB) of each image pair, `[N]`, float64; inf for identical images."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def _first(n: int, ok: Callable[[np.ndarray], np.ndarray], stop: int) -> np.ndarray:
    """Per image, the lowest quality q in 0..stop-1 with `ok(q)` true (stop when none): a binary search over all
    `n` images at once, `ok` ([N] qualities -> [N] bool) turning true at most once as q grows."""
    lo, hi = np.zeros(n, np.int64), np.full(n, stop, np.int64)
    while (lo < hi).any():
        mid, active = (lo + hi) // 2, lo < hi
        good = ok(mid)
        hi, lo = np.where(active & good, mid, hi), np.where(active & ~good, mid + 1, lo)
    return lo


class _Programs(NamedTuple):
    """The model functions for one image size. Each image runs alone through one program compiled for a batch of
    one (a loop over images compiled into one program can round differently when it has one image than when it
    has several, so a file decoded alone would not match its batch's reconstruction), with its own model quality
    (a float32 `[N]`: zeros for a one-rate model)."""

    symbols: Callable  # ([N, H, W, C], quality [N]) -> (y_hat, z_hat)
    decode: Callable  # (y_hat, quality [N]) -> images
    estimate: Callable  # (images, quality [N]) -> bits [N]
    scales: Callable | None  # z_hat -> y's scales (hyperprior)
    code_shape: tuple[int, ...]
    z_shape: tuple[int, ...] | None


class Codec:
    """Encode images to bytes and decode them with one trained rate-distortion model (module docstring)."""

    @_in_32_bits
    def __init__(self, model: RateDistortionAutoencoder, variables: dict, config: Config):
        if not isinstance(model, RateDistortionAutoencoder):
            raise AejaxError(f"the codec needs a model trained for compression (rd_factorized or rd_hyperprior), "
                             f"not {config.model}")
        self.model, self.variables, self.config = model, variables, config
        self.shape = tuple(model.image_shape)
        self.variable = bool(model.lmbdas)
        self.kind = KINDS[model.hyperprior, self.variable]
        self.hash = model_hash(config, variables)
        values = jnp.arange(-SYMBOL_BOUND, SYMBOL_BOUND + 1, dtype=jnp.float32)[:, None]  # [2R + 1, 1]
        density = lambda m, v: m.density.likelihood(jnp.broadcast_to(v, (v.shape[0], m.density.channels)))  # noqa: E731
        # The entropy model (tables, and the hyperprior's scales) is computed on the CPU whatever the default
        # backend, so encoder and decoder derive the same one on any machine.
        self._cpu = jax.devices("cpu")[0]
        self._cpu_variables = jax.device_put(variables, self._cpu)
        with jax.default_device(self._cpu):
            self._tables = np.asarray(model.apply(self._cpu_variables, jax.device_put(values, self._cpu),
                                                  method=density), np.float64).T  # [channels, 2R+1]
        self._programs: dict[tuple[int, ...], _Programs] = {}
        self._categorical = constriction.stream.model.Categorical(perfect=False)
        self._gaussian = constriction.stream.model.QuantizedGaussian(-SYMBOL_BOUND, SYMBOL_BOUND)

    @_in_32_bits
    def _at(self, shape: tuple[int, ...]) -> _Programs:
        """The model's functions for images of `shape` (H, W, C): the model with that `image_shape` (the
        parameters do not depend on it; the analysis pads to a multiple of 16 and the synthesis crops back),
        compiled once per size."""
        if shape not in self._programs:
            model, variables, variable = self.model.clone(image_shape=shape), self.variables, self.variable

            def apply(method: str) -> Callable:  # (*args, quality) -> the method's result (quality if variable)
                return lambda *a: model.apply(variables, *a[:-1], *([a[-1]] if variable else []), method=method)

            def one(f: Callable) -> Callable:  # per image, with a batch of one and that image's quality
                program = jax.jit(lambda x, q: f(x[None], q))
                return lambda xs, q: jax.tree_util.tree_map(lambda *v: jnp.concatenate(v), *[
                    program(x, q_i) for x, q_i in zip(jnp.asarray(xs), jnp.asarray(q), strict=True)])

            code_shape = tuple(jax.eval_shape(apply("encode"), jnp.zeros((1, *shape)), 0.0).shape[1:])
            z_shape = scales = None
            if model.hyperprior:
                z_shape = tuple(jax.eval_shape(lambda y: model.apply(variables, y, method="hyper_encode"),
                                               jnp.zeros((1, *code_shape))).shape[1:])
                on_cpu = jax.jit(lambda z: model.apply(self._cpu_variables, z, code_shape[:2], method="scales"))
                scales = lambda zs, _: np.concatenate([  # noqa: E731 - the entropy model, on the CPU (__init__)
                    np.asarray(on_cpu(jax.device_put(z[None], self._cpu))) for z in np.asarray(zs)])
            estimate = jax.jit(lambda x, q: chunks.map_over_chunks(
                lambda part: apply("rd_terms")(part[0], part[1])[1], (x, q), ESTIMATE_CHUNK))
            self._programs[shape] = _Programs(one(apply("symbols")), one(apply("decode")), estimate, scales,
                                              code_shape, z_shape)
        return self._programs[shape]

    @classmethod
    def from_run(cls, run_dir: str | Path, seed: int | None = None,
                 member: int | dict[str, float] | None = None) -> Codec:
        """The codec of a trained run's model (`aejax.load_model`'s `seed` and `member`)."""
        from aejax.training.restore import load_model

        return cls(*load_model(run_dir, seed=seed, member=member))

    @classmethod
    def from_run_for(cls, run_dir: str | Path, file: bytes, name: str = "the file") -> Codec:
        """The codec of whichever model of a run (any seed, any sweep member) wrote `file`, found by the model
        hash in its header."""
        from aejax.training.restore import load_models

        digest = read_header(file, name)[6]
        for _, _, model, variables, config in load_models(run_dir):
            if isinstance(model, RateDistortionAutoencoder) and model_hash(config, variables) == digest:
                return cls(model, variables, config)
        raise AejaxError(f"{name} was encoded by a model (hash {digest.hex()}) that is not one of {run_dir}'s")

    def export(self) -> bytes:
        """The model as one file: its config and parameters (no optimizer state), what `from_model_file` reads
        and what `python -m aejax.codec export` writes. Its files carry the same model hash."""
        return model_file(self.config, self.variables)

    @classmethod
    def from_model_file(cls, path: str | Path) -> Codec:
        """The codec of a model file `export` wrote (nothing else needed: no run directory, no checkpoint)."""
        from aejax import models

        config, variables = read_model_file(path)
        return cls(models.build(config), jax.tree_util.tree_map(jnp.asarray, variables), config)

    # --- arrays ----------------------------------------------------------------------------------------------

    def _qualities(self, quality, n: int) -> np.ndarray:
        """The file qualities (int `[n]`, 0..100) for `quality`: None (100, a variable-rate model's highest; 0
        for a one-rate model), one number or one per image."""
        if quality is None:
            return np.full(n, QUALITIES if self.variable else 0, np.int64)
        if not self.variable:
            raise AejaxError(f"a quality needs a variable-rate model (rd_variable); {self.config.model} codes at one "
                             f"rate")
        q = np.broadcast_to(np.asarray(quality), (n,)) if np.ndim(quality) == 0 else np.asarray(quality)
        if q.shape != (n,) or not np.issubdtype(q.dtype, np.integer) or q.min() < 0 or q.max() > QUALITIES:
            raise AejaxError(f"quality must be an integer from 0 to {QUALITIES} (one, or one per image), got "
                             f"{quality!r}")
        return q.astype(np.int64)

    def _model_quality(self, qualities: np.ndarray) -> jax.Array:
        """File qualities 0..100 `[N]` as the model's quality in [0, L - 1] (float32)."""
        return jnp.asarray(qualities / QUALITIES * self.model.top_quality, jnp.float32)

    @_in_32_bits
    def reconstruct(self, images, quality=None) -> np.ndarray:
        """The model's quantised reconstruction of each image, float32 `[N, H, W, C]` (what decoding gives); a
        variable-rate model's at `quality` (0..100, one or one per image; default 100)."""
        x, batched = as_batch(images, self.shape[-1])
        out = self._reconstruct(x, self._qualities(quality, x.shape[0]))
        return out if batched else out[0]

    def _reconstruct(self, x: jax.Array, qualities: np.ndarray) -> np.ndarray:
        programs, q = self._at(x.shape[1:]), self._model_quality(qualities)
        return np.asarray(programs.decode(programs.symbols(x, q)[0], q))

    @_in_32_bits
    def estimated_bits(self, images, quality=None) -> np.ndarray:
        """The model's own rate for each image, float32 `[N]` (`[]` for one image `[H, W, C]`): its entropy
        model's -log2 likelihood of the quantised codes, which a file's payload (`payload_bits`) approaches."""
        x, batched = as_batch(images, self.shape[-1])
        q = self._model_quality(self._qualities(quality, x.shape[0]))
        bits = np.asarray(self._at(x.shape[1:]).estimate(x, q))
        return bits if batched else bits[0]

    @_in_32_bits
    def encode(self, images, quality=None) -> list[bytes] | bytes:
        """Each image (uint8 or float in [0, 1], `[N, H, W, C]`) as the bytes of one file; one image
        `[H, W, C]` gives one `bytes`. A variable-rate model codes at `quality` (0..100: one, or one per image,
        such as `choose_quality`'s; default 100)."""
        x, batched = as_batch(images, self.shape[-1])
        qualities = self._qualities(quality, x.shape[0])
        files = self._files(x, qualities)
        return files if batched else files[0]

    def _files(self, x: jax.Array, qualities: np.ndarray) -> list[bytes]:
        programs = self._at(x.shape[1:])
        y_hat, z_hat = jax.device_get(programs.symbols(x, self._model_quality(qualities)))
        scales = None if z_hat is None else np.asarray(programs.scales(jnp.asarray(z_hat), qualities))
        files = []
        for words, q in zip(self._words(y_hat, z_hat, scales), qualities, strict=True):
            body = (bytes([int(q)]) if self.variable else b"") + words.astype("<u4").tobytes()
            files.append(HEADER.pack(MAGIC, VERSION, self.kind, *x.shape[1:], self.hash, zlib.crc32(body)) + body)
        return files

    @_in_32_bits
    def choose_quality(self, images, target_psnr: float | None = None,
                       max_bytes: int | None = None) -> np.ndarray:
        """Per image, the quality (int `[N]`, 0..100) a variable-rate model codes it at: with `target_psnr`, the
        lowest whose decoded image reaches that PSNR (dB); with `max_bytes`, the highest whose whole file fits
        (both: the lowest reaching the PSNR, if it fits, else the highest that fits). Binary searches over 0..100
        per image (rate and PSNR grow with the quality); an image that cannot reach the PSNR gets the lowest
        quality of its highest PSNR, from every quality tried (a model's top quality need not be its sharpest), one
        that fits at no quality gets 0 (`encode` then writes more than `max_bytes`: check the files' sizes)."""
        if not self.variable:
            raise AejaxError(f"choosing a quality needs a variable-rate model (rd_variable); {self.config.model} "
                             f"codes at one rate")
        if target_psnr is None and max_bytes is None:
            raise AejaxError("choose_quality needs target_psnr or max_bytes")
        if target_psnr is not None and not (np.isfinite(target_psnr) and target_psnr > 0):
            raise AejaxError(f"target_psnr must be a positive number of dB, got {target_psnr!r}")
        if max_bytes is not None and not (isinstance(max_bytes, (int, np.integer)) and max_bytes > 0):
            raise AejaxError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        x, batched = as_batch(images, self.shape[-1])
        sizes = lambda q: np.array([len(f) for f in self._files(x, q)])  # noqa: E731 - [N] bytes at qualities q
        chosen = np.full(x.shape[0], QUALITIES, np.int64)
        if target_psnr is not None:  # the lowest quality reaching the PSNR (when none does, the sharpest)
            chosen = _first(x.shape[0], lambda q: _psnr(self._reconstruct(x, q), x) >= target_psnr, QUALITIES + 1)
            short = np.flatnonzero(chosen > QUALITIES)
            if short.size:
                psnrs = np.stack([_psnr(self._reconstruct(x[short], np.full(short.size, q)), x[short])
                                  for q in range(QUALITIES + 1)], axis=1)  # [short, 101]
                chosen[short] = np.argmax(psnrs, axis=1)
        if max_bytes is not None:  # the highest that fits (0 when none does) caps it
            chosen = np.minimum(chosen, np.maximum(_first(x.shape[0], lambda q: sizes(q) > max_bytes,
                                                          QUALITIES + 1) - 1, 0))
        return chosen if batched else chosen[0]

    @_in_32_bits
    def decode(self, files: Sequence[bytes] | bytes, name: str | None = None) -> np.ndarray | list[np.ndarray]:
        """Images (float32 `[H, W, C]` in [0, 1], each the size its header gives) from files `encode` wrote: one
        `bytes` gives one image, several give `[N, H, W, C]` when they share a size, else a list (`name`: what
        errors call a single file, such as its path; default `file 0`)."""
        single = isinstance(files, (bytes, bytearray))
        files = [files] if single else list(files)
        labels = [name or "file 0"] if single else [f"file {i}" for i in range(len(files))]
        images = [self._decode_one(f, label) for f, label in zip(files, labels, strict=True)]
        if single:
            return images[0]
        return np.stack(images) if len({i.shape for i in images}) <= 1 and images else images

    def _decode_one(self, data: bytes, label: str) -> np.ndarray:
        shape, quality, words = self._payload(data, label)
        programs = self._at(shape)
        quality = np.array([quality])
        coder = constriction.stream.queue.RangeDecoder(words)
        if self.model.hyperprior:
            z_hat = self._decode_factorized(coder, programs.z_shape, label)[None]
            scales = np.asarray(programs.scales(jnp.asarray(z_hat, jnp.float32), quality))
            y_hat = self._decode_symbols(lambda: coder.decode(self._gaussian, np.zeros(scales[0].size),
                                                              self._table_scales(scales[0])), label)
            y_hat = y_hat.reshape(1, *programs.code_shape)
        else:
            z_hat, scales = None, None
            y_hat = self._decode_factorized(coder, programs.code_shape, label)[None]
        # A range decoder cannot tell where its data ends: accept only the words encode writes for these symbols.
        if not np.array_equal(self._words(y_hat, z_hat, scales)[0], words):
            raise AejaxError(f"{label} holds data its codes do not explain: it is not a file of this model")
        return np.asarray(programs.decode(jnp.asarray(y_hat, jnp.float32), self._model_quality(quality)))[0]

    # --- the entropy coder -----------------------------------------------------------------------------------

    def _words(self, y_hat: np.ndarray, z_hat: np.ndarray | None, scales: np.ndarray | None) -> list[np.ndarray]:
        """The coder's words (uint32) for each image's symbols: `y_hat` [N, h, w, M], and for the hyperprior its
        hyper codes `z_hat` (coded first) and the scales they give (None for the factorized model)."""
        words = []
        for i, y in enumerate(np.asarray(y_hat).astype(np.int32)):
            coder = constriction.stream.queue.RangeEncoder()
            if z_hat is None:
                self._encode_factorized(coder, y)
            else:
                self._encode_factorized(coder, np.asarray(z_hat[i]).astype(np.int32))
                coder.encode(y.ravel(), self._gaussian, np.zeros(y.size), self._table_scales(scales[i]))
            words.append(coder.get_compressed())
        return words

    def _encode_factorized(self, coder, symbols: np.ndarray) -> None:  # symbols [h, w, channels] int32
        rows = np.broadcast_to(np.arange(symbols.shape[-1]), symbols.shape).ravel()
        coder.encode(symbols.ravel() + SYMBOL_BOUND, self._categorical, self._tables[rows])

    def _decode_factorized(self, coder, shape: tuple[int, ...], label: str) -> np.ndarray:
        rows = np.broadcast_to(np.arange(shape[-1]), shape).ravel()
        symbols = self._decode_symbols(lambda: coder.decode(self._categorical, self._tables[rows]), label)
        return (symbols - SYMBOL_BOUND).reshape(shape)

    @staticmethod
    def _decode_symbols(decode, label: str) -> np.ndarray:
        try:
            return np.asarray(decode(), np.int32)
        except (ValueError, RuntimeError, AssertionError) as e:
            raise AejaxError(f"{label} does not decode ({e}): it is not a file of this model") from None

    @staticmethod
    def _table_scales(scales: np.ndarray) -> np.ndarray:
        """Each scale rounded up to the next entry of `SCALE_TABLE` (the largest beyond it), float64."""
        index = np.minimum(np.searchsorted(SCALE_TABLE, scales.ravel(), side="left"), len(SCALE_TABLE) - 1)
        return SCALE_TABLE[index]

    def _payload(self, data: bytes, name: str) -> tuple[tuple[int, int, int], int, np.ndarray]:
        """The image shape, the quality (0 for a one-rate model) and the coder's words of file `name`, after
        checking its header and CRC against this model."""
        magic, version, kind, h, w, c, digest, crc = read_header(data, name)
        if version != VERSION:
            raise AejaxError(f"{name} has format version {version}; this aejax reads version {VERSION}")
        if kind != self.kind or c != self.shape[-1] or digest != self.hash or not (h and w):
            raise AejaxError(f"{name} was encoded by another model ({h}x{w}x{c}, model hash {digest.hex()}); this "
                             f"model codes {self.shape[-1]}-channel images with hash {self.hash.hex()}")
        payload = bytes(data[header_size(data):])
        quality = data[HEADER.size] if self.variable and len(data) > HEADER.size else 0
        if len(payload) % 4 or zlib.crc32(bytes(data[HEADER.size:])) != crc or quality > QUALITIES:
            raise AejaxError(f"{name} is damaged or truncated (its checksum does not match)")
        return (h, w, c), quality, np.frombuffer(payload, "<u4").astype(np.uint32)
