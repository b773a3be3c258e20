"""The variable-rate model (`rd_variable`): one model trained once codes at any quality 0..100, the quality rides
in the file, files decode bit for bit at every quality, and a target PSNR or byte budget picks each image's
quality (the lowest reaching the PSNR, the highest that fits)."""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aejax
from aejax.codec import HEADER, QUALITIES, Codec, header_size, payload_bits
from aejax.codec.__main__ import main as codec_main
from tests.test_codec import images

LMBDAS = [0.003, 0.03, 0.3]
SHAPE = (32, 32, 1)  # a 2x2x8 code: enough values for the rate to vary by quality in whole 32-bit words


@functools.cache
def _train(root: Path) -> tuple[Path, np.ndarray]:
    out = root / "variable" / "run"
    config = aejax.Config(model="rd_variable", latent_dim=8, epochs=4, batch_size=16, lr=1e-2,
                          model_kwargs={"channels": 8, "lmbdas": LMBDAS})
    aejax.run(config, out, data=(images(512, SHAPE, 0), images(12, SHAPE, 1)), log=lambda *_: None)
    return out, images(12, SHAPE, 1)


@pytest.fixture
def trained(tmp_path_factory):
    return _train(tmp_path_factory.getbasetemp())


def psnr(decoded: np.ndarray, test: np.ndarray) -> np.ndarray:
    mse = np.mean((decoded.astype(np.float64) - test / 255.0) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(1 / mse)


def test_the_gains_interpolate_geometrically_between_levels():
    config = aejax.Config(model="rd_variable", latent_dim=4, image_shape=(16, 16, 1),
                          model_kwargs={"channels": 4, "lmbdas": LMBDAS})
    model = aejax.models.build(config)
    params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))["params"]
    gain = lambda q: np.asarray(model.apply({"params": params}, params["log_gain"], q,  # noqa: E731
                                            method=lambda m, g, q: m._gain(g, q))).reshape(-1, 4)
    np.testing.assert_allclose(gain(1.0)[0], np.exp(params["log_gain"][1]), rtol=1e-6)
    np.testing.assert_allclose(gain(0.5)[0], np.sqrt(gain(0.0)[0] * gain(1.0)[0]), rtol=1e-5)
    np.testing.assert_allclose(gain(None)[0], gain(2.0)[0])  # no quality: the highest level
    np.testing.assert_allclose(gain(jnp.array([0.0, 2.0])), np.stack([gain(0.0)[0], gain(2.0)[0]]))
    # The gains start at sqrt(lambda / lambda_mid): the middle level at 1, the others a factor sqrt(10) away.
    np.testing.assert_allclose(gain(np.arange(3.0)).mean(axis=1), [10 ** -0.5, 1, 10 ** 0.5], rtol=1e-5)


def test_every_quality_decodes_bit_for_bit_and_a_higher_quality_costs_more(trained):
    out, test = trained
    codec = Codec.from_run(out)
    assert codec.variable and codec.kind == 3
    sizes = {}
    for q in (0, 37, 100):
        files = codec.encode(test, quality=q)
        assert all(f[HEADER.size] == q and header_size(f) == HEADER.size + 1 for f in files)
        np.testing.assert_array_equal(codec.decode(files), codec.reconstruct(test, quality=q))
        assert np.all(np.array([payload_bits(f) for f in files]) <= codec.estimated_bits(test, quality=q) + 64)
        sizes[q] = np.mean([len(f) for f in files])
    assert sizes[0] < sizes[100], sizes
    alone = np.stack([codec.reconstruct(image, quality=37) for image in test])  # each image's own program run
    np.testing.assert_array_equal(codec.reconstruct(test, quality=37), alone)
    mixed = codec.encode(test[:3], quality=[0, 50, 100])  # one quality per image
    assert [f[HEADER.size] for f in mixed] == [0, 50, 100]
    np.testing.assert_array_equal(codec.decode(mixed[1]), codec.reconstruct(test[1], quality=50))
    np.testing.assert_array_equal(codec.reconstruct(test), codec.reconstruct(test, quality=QUALITIES))


def test_a_target_psnr_picks_the_lowest_quality_reaching_it_and_a_budget_the_highest_that_fits(trained):
    out, test = trained
    codec = Codec.from_run(out)
    at = {q: psnr(codec.reconstruct(test, quality=q), test) for q in range(QUALITIES + 1)}
    target = float(np.median([at[50], at[0]]))
    chosen = codec.choose_quality(test, target_psnr=target)
    for i, q in enumerate(chosen):
        reaching = [v for v in range(QUALITIES + 1) if at[v][i] >= target]
        if reaching:
            assert at[q][i] >= target and (q == 0 or at[q - 1][i] < target or not all(
                at[v][i] >= target for v in range(q, QUALITIES + 1)))
        else:  # the sharpest quality instead
            assert at[q][i] == max(at[v][i] for v in range(QUALITIES + 1))
    sizes = {q: np.array([len(f) for f in codec.encode(test, quality=q)]) for q in range(QUALITIES + 1)}
    budget = int(np.median(sizes[50]))
    fits = codec.choose_quality(test, max_bytes=budget)
    for i, q in enumerate(fits):
        assert sizes[q][i] <= budget or q == 0
        assert q == QUALITIES or sizes[q + 1][i] > budget
    assert len({int(q) for q in fits}) > 1 or len({int(q) for q in chosen}) > 1  # per image, not one for all


def test_a_psnr_no_quality_reaches_gets_the_sharpest_quality_not_the_top_one(trained):
    """A model whose top level codes coarsely (its gains made the lowest level's): an image that reaches the
    target at no quality gets the lowest quality of its highest PSNR, found over every quality."""
    out, test = trained
    codec = Codec.from_run(out)
    params = dict(codec.variables["params"])
    for name in ("log_gain", "log_inverse_gain"):
        params[name] = params[name].at[-1].set(params[name][0])
    coarse = Codec(codec.model, {**codec.variables, "params": params}, codec.config)
    at = np.stack([psnr(coarse.reconstruct(test, quality=q), test) for q in range(QUALITIES + 1)], axis=1)
    chosen = coarse.choose_quality(test, target_psnr=float(at.max()) + 1.0)
    np.testing.assert_array_equal(chosen, np.argmax(at, axis=1))
    assert (chosen < QUALITIES).all() and (at[np.arange(len(test)), chosen] > at[:, QUALITIES]).all()


def test_a_model_file_decodes_and_an_altered_quality_byte_is_refused(trained, tmp_path):
    out, test = trained
    codec = Codec.from_run(out)
    (tmp_path / "v.aejm").write_bytes(codec.export())
    shipped = Codec.from_model_file(tmp_path / "v.aejm")
    assert shipped.hash == codec.hash and shipped.variable
    files = codec.encode(test[:2], quality=[30, 70])
    np.testing.assert_array_equal(shipped.decode(files), codec.decode(files))
    altered = bytearray(files[0])
    altered[HEADER.size] = 31  # the quality is under the checksum: not a silently different image
    with pytest.raises(aejax.AejaxError, match="damaged"):
        shipped.decode(bytes(altered))


def test_quality_errors_are_one_line(trained, tmp_path, capsys):
    out, test = trained
    codec = Codec.from_run(out)
    for bad in (101, -1, 2.5, [1, 2]):
        with pytest.raises(aejax.AejaxError, match="quality must be an integer"):
            codec.encode(test[:3], quality=bad)
    with pytest.raises(aejax.AejaxError, match="target_psnr or max_bytes"):
        codec.choose_quality(test)
    with pytest.raises(aejax.AejaxError, match="lmbdas must be two or more increasing"):
        aejax.models.build(aejax.Config(model="rd_variable", latent_dim=4, image_shape=(16, 16, 1),
                                        model_kwargs={"channels": 4, "lmbdas": [0.1, 0.01]}))
    from PIL import Image

    Image.fromarray(test[0, ..., 0]).save(tmp_path / "in.png")
    for flags, message in ((["--quality", "101"], "from 0 to 100"),
                           (["--quality", "3", "--max-bytes", "9"], "not both"),
                           (["--target-psnr", "-3"], "positive number of dB")):
        with pytest.raises(SystemExit) as exit_info:
            codec_main(["encode", "--run", str(out), *flags, str(tmp_path / "in.png"), str(tmp_path / "x.aejx")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.aejx").exists()
    codec_main(["encode", "--run", str(out), "--quality", "40", str(tmp_path / "in.png"), str(tmp_path / "x.aejx")])
    assert "quality 40" in capsys.readouterr().out
    assert (tmp_path / "x.aejx").read_bytes() == codec.encode(test[0], quality=40)


def test_a_one_rate_model_refuses_a_quality(tmp_path, capsys):
    config = aejax.models.resolve(aejax.Config(model="rd_factorized", latent_dim=4, image_shape=(16, 16, 1),
                                               model_kwargs={"channels": 4}))
    model = aejax.models.build(config)
    codec = Codec(model, model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1))), config)
    test = images(2, (16, 16, 1), 0)
    for call in (lambda: codec.encode(test[0], quality=50), lambda: codec.choose_quality(test, max_bytes=40)):
        with pytest.raises(aejax.AejaxError, match="variable-rate model"):
            call()
    (tmp_path / "m.aejm").write_bytes(codec.export())
    from PIL import Image

    Image.fromarray(test[0, ..., 0]).save(tmp_path / "in.png")
    with pytest.raises(SystemExit) as exit_info:
        codec_main(["encode", "--model", str(tmp_path / "m.aejm"), "--target-psnr", "25", str(tmp_path / "in.png"),
                    str(tmp_path / "x.aejx")])
    assert exit_info.value.code == 2 and "needs a variable-rate model" in capsys.readouterr().err
