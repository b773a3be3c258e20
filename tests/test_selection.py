"""Model selection on held-out training images (`experiments.selection`) and the scripts built on it."""

import json

import jax
import numpy as np
import pytest

from aejax.config import Config
from aejax.errors import AejaxError
from aejax.evaluation import metrics
from aejax.training import restore
from experiments import selection
from tests.helpers import run_cli


def test_held_out_split_takes_the_last_images_and_checks_its_size():
    images = np.arange(10).reshape(10, 1, 1, 1)
    fit, held = selection.held_out_split(images, 3)
    assert fit[:, 0, 0, 0].tolist() == list(range(7)) and held[:, 0, 0, 0].tolist() == [7, 8, 9]
    for bad in (0, 10, 11):
        with pytest.raises(AejaxError, match="held_out must be in 1..9"):
            selection.held_out_split(images, bad)


def test_se_per_image_is_the_sum_over_784_pixels():
    x = np.random.default_rng(0).uniform(size=(5, 28, 28, 1))
    y = np.random.default_rng(1).uniform(size=(5, 28, 28, 1))
    want = np.mean(np.sum((x - y) ** 2, axis=(1, 2, 3)))
    assert selection.se_per_image(np.mean((x - y) ** 2)) == pytest.approx(want, rel=1e-12)


def test_variants_are_scored_on_the_held_out_images_and_chosen_per_code_size(tmp_path, mnist_test_images):
    train_images, test_images = mnist_test_images[:1500], mnist_test_images[1500:]
    base = Config(model="linear", epochs=1, batch_size=50)
    variants = {"slow_d8": base.replace(latent_dim=8, lr=1e-5), "fast_d8": base.replace(latent_dim=8, lr=3e-3),
                "fast_d16": base.replace(latent_dim=16, lr=3e-3)}
    rows = selection.score_variants(variants, train_images, test_images, tmp_path, held_out=500, log=lambda _: None)
    assert [r["variant"] for r in rows] == list(variants)
    assert selection.best(rows) == {8: "fast_d8", 16: "fast_d16"}
    for row in rows:  # held-out error: the last 500 training images, reconstructed by the trained model
        model, variables, _ = restore.load_model(tmp_path / row["variant"])
        params = variables["params"]
        apply = lambda images: metrics.reconstruction_metrics(model.apply, {"params": params}, images)["mse"]  # noqa
        assert row["held_out_mse"] == pytest.approx(apply(jax.numpy.asarray(train_images[1000:])), rel=1e-5)
        assert row["test_mse"] == pytest.approx(apply(jax.numpy.asarray(test_images)), rel=1e-5)
        assert row["held_out_se_per_image"] == pytest.approx(row["held_out_mse"] * 784)
        config = json.loads((tmp_path / row["variant"] / "config.json").read_text())
        assert config["config"]["latent_dim"] == row["latent_dim"]
    assert rows[0]["held_out_mse"] > rows[1]["held_out_mse"]  # lr 1e-5 for one epoch learns almost nothing
    text = selection.write_variants(tmp_path, rows, 500)
    assert "code 8: fast_d8; code 16: fast_d16" in text
    assert json.loads((tmp_path / "variants.json").read_text())["chosen"] == {"8": "fast_d8", "16": "fast_d16"}


@pytest.mark.slow  # two scripts end to end, ~1 min here; CI runs it (`pytest -m slow`)
def test_paper_2006_and_conv_search_scripts(tmp_path, prepared_data_dir):
    data = ("--data-dir", str(prepared_data_dir), "--train-examples", "1000", "--epochs", "1")
    result = run_cli("experiments.paper_2006", "--out", str(tmp_path / "p"), *data)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PCA, 30 components fitted on the 1,000 training images" in result.stdout
    saved = json.loads((tmp_path / "p" / "results.json").read_text())
    assert [r["variant"].split(":")[0] for r in saved["rows"]] == ["pca", "paper", "best"]
    for row in saved["rows"]:
        assert row["test_se_per_image"] == pytest.approx(row["test_mse"] * 784) and row["latent_dim"] == 30
    assert "deep autoencoder (paper) | 3.00" in (tmp_path / "p" / "results.md").read_text()

    result = run_cli("experiments.paper_2006", "--out", str(tmp_path / "v"), "--variants", "--held-out", "200",
                     "--only", "paper_e20", *data)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["variant"] for r in json.loads((tmp_path / "v" / "variants.json").read_text())["rows"]] == ["paper_e20"]
    bad = run_cli("experiments.paper_2006", "--out", str(tmp_path / "bad"), "--variants", "--held-out", "1000", *data)
    assert bad.returncode == 2 and "--held-out must be in 1..999" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()

    result = run_cli("experiments.conv_search", "--out", str(tmp_path / "c"), "--depths", "16", "--held-out", "200",
                     "--candidates", "strided_linear_wcos2e-3", *data)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "c" / "variants.json").read_text())["rows"]
    assert {r["variant"] for r in rows} == {"strided_linear_wcos2e-3_d16", "linear_cos_d16", "linear_h512_d16"}
