"""The rate-distortion models and the codec: fast convolutions equal lax's, a lambda sweep trains in one program,
files decode bit for bit to the model's quantised reconstruction, and bad files are one-line errors."""

import functools
import os
import subprocess
import sys
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import aejax
from aejax.codec import HEADER, Codec, payload_bits
from aejax.codec.__main__ import main as codec_main
from aejax.models.rate_distortion import down5x5, up5x5
from aejax.training.loop import RunResult
from tests.helpers import REPO

LMBDAS = [0.01, 0.1]


def images(n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Smooth random uint8 images (blurred noise), so a tiny model learns something in one epoch."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, shape[0] + 4, shape[1] + 4, shape[2]))
    x = sum(x[:, i:i + shape[0], j:j + shape[1]] for i in range(5) for j in range(5)) / 25
    return np.clip((x - 0.5) * 4 * 255 + 128, 0, 255).astype(np.uint8)


@functools.cache
def _train(model: str, shape: tuple[int, int, int], root: Path) -> tuple[Path, RunResult, np.ndarray]:
    """One lambda sweep per model, trained once per process (a pytest-xdist worker may tear a module-scoped
    fixture down between two of its tests and set it up again)."""
    out = root / f"codec-{model}" / "run"
    train, test = images(96, shape, 0), images(12, shape, 1)
    config = aejax.Config(model=model, latent_dim=8, epochs=1, batch_size=16, lr=3e-3,
                          model_kwargs={"channels": 8})
    return out, aejax.run(config, out, sweep={"lmbda": LMBDAS}, data=(train, test), log=lambda *_: None), test


@pytest.fixture(params=[
    pytest.param(("rd_factorized", (16, 16, 1)), id="factorized-grey"),
    pytest.param(("rd_hyperprior", (20, 12, 3)), id="hyperprior-rgb", marks=pytest.mark.slow)])  # ~60 s of compiling
def trained(request, tmp_path_factory):
    return _train(*request.param, tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("impl_fn", [down5x5, up5x5], ids=["down", "up"])
@pytest.mark.parametrize("side", [1, 2, 7, 8])
def test_stride2_convolutions_match_lax_in_values_and_gradients(impl_fn, side):
    rng = np.random.default_rng(side)
    x = jnp.asarray(rng.standard_normal((2, side, side + 1, 3)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((5, 5, 3, 4)), jnp.float32)
    conv = jax.jit(impl_fn, static_argnums=2)
    np.testing.assert_allclose(conv(x, k, "ops"), conv(x, k, "xla"), atol=2e-5)
    grads = [jax.jit(jax.grad(lambda x, k, impl=impl: jnp.sum(jnp.sin(impl_fn(x, k, impl))), argnums=(0, 1)))(x, k)
             for impl in ("ops", "xla")]
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a, b, atol=5e-5)


def test_a_lambda_sweep_trains_in_one_program_and_reports_rate_and_distortion(trained):
    out, result, _ = trained
    assert [row["sweep"]["lmbda"] for row in result.rows] == LMBDAS
    for row in result.rows:
        assert row["test_bpp"] > 0 and row["test_bits_per_image"] > 0 and row["test_distortion_mse"] > 0
        np.testing.assert_allclose(row["test_distortion_mse"], row["test_mse"], rtol=1e-5)  # both: quantised
    assert "bpp" in (out / "metrics.jsonl").read_text()


def test_every_file_decodes_to_the_models_quantised_reconstruction_bit_for_bit(trained):
    out, result, test = trained
    for member in (1,):
        codec = Codec.from_run(out, member=member)
        files = codec.encode(test)
        decoded = codec.decode(files)
        assert decoded.dtype == np.float32 and decoded.shape == test.shape
        np.testing.assert_array_equal(decoded, codec.reconstruct(test))
        np.testing.assert_array_equal(codec.decode(files[3]), decoded[3])  # one file alone: the same image
        # The model's own (batched) reconstruction agrees to rounding; its rate estimate bounds the payload.
        np.testing.assert_allclose(decoded, aejax.reconstruct(codec.model, codec.variables, test), atol=1e-5)
        estimate = codec.estimated_bits(test)
        assert estimate.shape == (len(test),) and codec.estimated_bits(test[3]) == pytest.approx(estimate[3])
        payload = np.array([payload_bits(f) for f in files])
        assert np.all(payload <= estimate + 64), (payload, estimate)  # the range coder's last word, the tables


def test_the_command_line_round_trips_an_image_file(trained, tmp_path, capsys):
    out, _, test = trained
    codec = Codec.from_run(out, member=1)
    image = test[0]
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp_path / "in.png")
    codec_main(["encode", "--run", str(out), "--member", '{"lmbda": 0.1}', str(tmp_path / "in.png"),
                str(tmp_path / "x.aejx")])
    codec_main(["decode", "--run", str(out), "--member", "1", str(tmp_path / "x.aejx"), str(tmp_path / "back.png")])
    back = np.asarray(Image.open(tmp_path / "back.png")).reshape(image.shape)
    np.testing.assert_array_equal(back, np.rint(codec.reconstruct(image) * 255).astype(np.uint8))
    assert (tmp_path / "x.aejx").read_bytes() == codec.encode(image)
    with pytest.raises(SystemExit) as exit_info:  # an existing output is kept
        codec_main(["decode", "--run", str(out), str(tmp_path / "x.aejx"), str(tmp_path / "back.png")])
    assert exit_info.value.code == 2 and "exists" in capsys.readouterr().err


def test_bad_files_are_one_line_errors(trained, tmp_path):
    out, _, test = trained
    codec, other = Codec.from_run(out, member=0), Codec.from_run(out, member=1)
    good = codec.encode(test[0])
    version = bytearray(good)
    version[4] = 9
    flipped = bytearray(good)
    flipped[-2] ^= 0x10
    extra = good[HEADER.size:] + bytes(4)  # one more word, with a checksum that matches it
    appended = good[:HEADER.size - 4] + zlib.crc32(extra).to_bytes(4, "little") + extra
    cases = {b"\x89PNG\r\n\x1a\n" + bytes(40): "not an aejax codec file", good[:HEADER.size - 2]: "not an aejax",
             good[:-3]: "damaged or truncated", bytes(flipped): "damaged or truncated",
             bytes(version): "format version 9", other.encode(test[0]): "another model",
             appended: "holds data its codes do not explain"}
    for data, message in cases.items():
        with pytest.raises(aejax.AejaxError, match=message):
            codec.decode(data)
    with pytest.raises(aejax.AejaxError, match=r"codes images of \d channel"):  # any size, but its channels
        codec.encode(np.zeros((5, 5, 4 - codec.shape[-1]), np.uint8))
    (tmp_path / "bad.aejx").write_bytes(good[:-3])
    result = subprocess.run([sys.executable, "-m", "aejax.codec", "decode", "--run", str(out),
                             str(tmp_path / "bad.aejx"), str(tmp_path / "b.png")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "damaged" in result.stderr
    assert str(tmp_path / "bad.aejx") in result.stderr  # the error names the file
    assert not (tmp_path / "b.png").exists()


def test_the_codec_refuses_a_model_not_trained_for_compression(tmp_path):
    train = images(32, (8, 8, 1), 0)
    aejax.run(aejax.Config(model="linear", latent_dim=4, epochs=1, batch_size=16), tmp_path / "lin",
              data=(train, train[:8]), log=lambda *_: None)
    with pytest.raises(aejax.AejaxError, match="trained for compression"):
        Codec.from_run(tmp_path / "lin")


X64 = """
import sys, numpy as np
from aejax.codec import Codec
codec = Codec.from_run(sys.argv[1], member=0)
np.save(sys.argv[3], codec.decode(open(sys.argv[2], "rb").read()))
open(sys.argv[4], "wb").write(codec.encode(np.load(sys.argv[5])))
"""


def test_jax_enable_x64_on_and_off_read_the_same_model_and_files(trained, tmp_path):
    """With `JAX_ENABLE_X64=1` the run's checkpoint restores (its checksum and the model hash are computed in
    32-bit dtypes; it used to be set aside as corrupt), a file written without it decodes to the same image, and
    the file it writes is the one written without it."""
    out, _, test = trained
    codec = Codec.from_run(out, member=0)
    (tmp_path / "a.aejx").write_bytes(codec.encode(test[0]))
    np.save(tmp_path / "image.npy", test[1])
    done = subprocess.run([sys.executable, "-c", X64, str(out), str(tmp_path / "a.aejx"), str(tmp_path / "a.npy"),
                           str(tmp_path / "b.aejx"), str(tmp_path / "image.npy")], capture_output=True, text=True,
                          env={**os.environ, "JAX_ENABLE_X64": "1", "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (out / "corrupt_checkpoints").exists() or not any((out / "corrupt_checkpoints").iterdir())
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), codec.decode((tmp_path / "a.aejx").read_bytes()))
    assert (tmp_path / "b.aejx").read_bytes() == codec.encode(test[1])


@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="needs a GPU: compares the codec built on the GPU with the one built on the CPU")
def test_the_model_hash_and_entropy_tables_are_the_same_on_gpu_and_cpu(trained):
    """The model hash (parameter bytes) and the entropy model (computed on the CPU whatever the default backend)
    do not depend on the backend, so a file encoded on one machine decodes on another."""
    out, _, test = trained
    on_gpu = Codec.from_run(out, member=1)
    with jax.default_device(jax.devices("cpu")[0]):
        on_cpu = Codec.from_run(out, member=1)
    assert on_gpu.hash == on_cpu.hash
    np.testing.assert_array_equal(on_gpu._tables, on_cpu._tables)
    files = on_gpu.encode(test)
    assert [on_cpu.decode(f).shape for f in files] == [t.shape for t in test]  # every GPU file decodes on the CPU


def test_unsafe_paths_are_one_line_errors_and_a_16_bit_png_is_scaled_not_thresholded(trained, tmp_path, capsys):
    out, _, test = trained
    if test.shape[-1] != 1:
        pytest.skip("the 16-bit case is a grey image")
    codec = Codec.from_run(out, member=0)
    Image.fromarray(test[0][..., 0]).save(tmp_path / "in.png")
    sixteen = Image.fromarray(test[0][..., 0].astype(np.uint16) * 257)  # v * 257: exactly v again in 8 bits
    sixteen.save(tmp_path / "in16.png")
    assert Image.open(tmp_path / "in16.png").mode.startswith("I")
    codec_main(["encode", "--run", str(out), str(tmp_path / "in16.png"), str(tmp_path / "16.aejx")])
    assert (tmp_path / "16.aejx").read_bytes() == codec.encode(test[0])
    codec_main(["encode", "--run", str(out), str(tmp_path / "in.png"), str(tmp_path / "x.aejx")])
    before = (tmp_path / "in.png").read_bytes()
    cases = [(["encode", str(tmp_path / "in.png"), str(tmp_path / "missing" / "x.aejx")], "does not exist; create"),
             (["encode", str(tmp_path / "in.png"), str(tmp_path / "in.png"), "--overwrite"], "is the input"),
             (["decode", str(tmp_path / "x.aejx"), str(tmp_path / "back.jpg")], "lossy")]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            codec_main([args[0], "--run", str(out), *args[1:]])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
    assert (tmp_path / "in.png").read_bytes() == before
    assert not (tmp_path / "missing").exists() and not (tmp_path / "back.jpg").exists()
    codec_main(["decode", "--run", str(out), "--lossy", str(tmp_path / "x.aejx"), str(tmp_path / "back.jpg")])
    assert Image.open(tmp_path / "back.jpg").format == "JPEG"


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (17, 9), (100, 60)])
def test_any_image_size_round_trips_bit_for_bit_with_its_size_in_the_header(trained, size):
    """A model trained on one size codes any H x W: padded to its multiple, the size in the header, cropped on
    decode; the decoded image equals the model's quantised reconstruction of that image bit for bit."""
    out, _, test = trained
    codec = Codec.from_run(out, member=0)
    image = images(1, (*size, codec.shape[-1]), 7)[0]
    file = codec.encode(image)
    assert HEADER.unpack_from(file)[3:5] == size
    back = codec.decode(file)
    assert back.shape == image.shape
    np.testing.assert_array_equal(back, codec.reconstruct(image))
    both = codec.decode([file, codec.encode(test[0])])  # two sizes: a list, each its own size
    assert [b.shape for b in both] == [image.shape, test[0].shape] or size == test[0].shape[:2]


def _run_main(capsys, *args: str) -> tuple[int, str]:
    try:
        codec_main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_folders_and_globs_in_one_process_a_model_file_and_the_member_found_by_hash(trained, tmp_path, capsys):
    """encode a folder (with a sub-folder) and a glob into --out-dir, decode that folder from the run without
    --member (the model found by the files' hash) and from an exported model file: every image equals the model's
    reconstruction, sub-folders kept; unsafe plans are refused before anything is written."""
    out, _, test = trained
    codec = Codec.from_run(out, member=1)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "more").mkdir()
    names = []
    for i, image in enumerate(test[:6]):
        name = Path("sub" if i % 2 else ".") / f"d{i}.png"
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp_path / "in" / name)
        names.append(name)
    Image.fromarray(test[6][..., 0] if test.shape[-1] == 1 else test[6]).save(tmp_path / "more" / "x.png")
    for d in ("codes", "back", "back2"):
        (tmp_path / d).mkdir()
    code, err = _run_main(capsys, "encode", "--run", str(out), "--member", "1", "--out-dir", str(tmp_path / "codes"),
                          str(tmp_path / "in"), str(tmp_path / "more" / "*.png"))
    assert code == 0, err
    for i, name in enumerate(names):
        assert (tmp_path / "codes" / name.with_suffix(".aejx")).read_bytes() == codec.encode(test[i])
    code, err = _run_main(capsys, "decode", "--run", str(out), "--out-dir", str(tmp_path / "back"),
                          str(tmp_path / "codes"))
    assert code == 0, err
    expected = np.rint(codec.reconstruct(test[:7]) * 255).astype(np.uint8)
    for i, name in enumerate([*names, Path("x.png")]):
        back = np.asarray(Image.open(tmp_path / "back" / name)).reshape(test[i].shape)
        np.testing.assert_array_equal(back, expected[i])
    assert _run_main(capsys, "export", "--run", str(out), "--member", "1", str(tmp_path / "m.aejm"))[0] == 0
    assert Codec.from_model_file(tmp_path / "m.aejm").hash == codec.hash
    code, err = _run_main(capsys, "decode", "--model", str(tmp_path / "m.aejm"), "--out-dir", str(tmp_path / "back2"),
                          str(tmp_path / "codes"))
    assert code == 0, err
    assert all((tmp_path / "back2" / n).read_bytes() == (tmp_path / "back" / n).read_bytes() for n in names)
    code, err = _run_main(capsys, "preview", "--model", str(tmp_path / "m.aejm"), "--count", "3", str(tmp_path / "in"),
                          str(tmp_path / "preview.png"))
    assert code == 0, err
    assert Image.open(tmp_path / "preview.png").format == "PNG"
    damaged = bytearray((tmp_path / "m.aejm").read_bytes())
    damaged[-5] ^= 1
    (tmp_path / "bad.aejm").write_bytes(bytes(damaged))
    before = sorted(p.name for p in (tmp_path / "back").rglob("*"))
    refusals = [(["decode", "--model", str(tmp_path / "bad.aejm"), str(tmp_path / "codes" / "d0.aejx"),
                  str(tmp_path / "y.png")], "damaged or truncated"),
                (["decode", "--run", str(out), "--out-dir", str(tmp_path / "back"), str(tmp_path / "codes")],
                 "exists; pass --overwrite"),
                (["encode", "--run", str(out), "--out-dir", str(tmp_path / "codes"), "--overwrite",
                  str(tmp_path / "in" / "d0.png"), str(tmp_path / "in" / "sub" / "d1.png"),
                  str(tmp_path / "more" / "x.png"), str(tmp_path / "in" / "d0.png")], "would both be written"),
                (["encode", "--run", str(out), "--out-dir", str(tmp_path / "nowhere"), str(tmp_path / "in")],
                 "does not exist")]
    for args, message in refusals:
        code, err = _run_main(capsys, *args)
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in (tmp_path / "back").rglob("*")) == before
