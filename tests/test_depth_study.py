"""A small, fast version of the study through its real command line: schema and figures."""

import json
import re

import pytest

from aejax.configs.study import CONV, LINEAR
from experiments.depth_study import study_main
from tests.helpers import run_cli, run_in_process

ROW_KEYS = {"model", "variant", "latent_dim", "compression_ratio", "epochs", "seed", "test_mse", "test_psnr_db",
            "test_ssim", "params", "train_seconds"}
SMALL = ["--depths", "32", "--epochs", "1", "--seeds", "0,1", "--arms", "linear,conv", "--train-examples", "500"]


@pytest.mark.slow  # the real command line end to end on real MNIST, ~1 min here; CI runs it (`pytest -m slow`)
def test_small_study_writes_table_and_figures(small_study, prepared_data_dir):
    out, result = small_study
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert sorted((r["model"], r["seed"]) for r in rows if r["model"] != "pca") == [
        ("conv", 0), ("conv", 1), ("linear", 0), ("linear", 1)]
    assert [r["latent_dim"] for r in rows if r["model"] == "pca"] == [32]
    for r in rows:
        assert r["compression_ratio"] == 784 / 32 and 0 < r["test_mse"] < 0.2 and r["params"] > 0
        assert -1 <= r["test_ssim"] <= 1 and r["test_psnr_db"] > 0
    for name in ("recon_linear_d32.png", "recon_conv_d32.png", "recon_grid.png", "depth_vs_error.png",
                 "loss_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert json.loads((out / "study.json").read_text())["seeds"] == [0, 1]
    # Progress: each run is announced with its place; once something trained, with the training time left.
    announced = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert [line.split(":")[0] for line in announced] == ["== linear d=32 (1/2)", "== conv d=32 (2/2)"]
    assert re.search(r"about \d+\.\d min of training left$", announced[1]), announced[1]

    # The same study again reuses every finished run: nothing is trained, the rows are the same.
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("checkpoints/*/state/*") if p.is_file()}
    same = run_cli("experiments.study", "--out", str(out), *SMALL, "--data-dir", str(prepared_data_dir))
    assert same.returncode == 0, same.stderr[-2000:]
    assert not re.search(r"^epoch \d", same.stdout, re.MULTILINE) and same.stdout.count("resumed") == 2
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints
    again_rows = json.loads((out / "results.json").read_text())
    assert [r["test_mse"] for r in again_rows] == [r["test_mse"] for r in rows]

    again = run_cli("experiments.study", "--out", str(out), "--depths", "32", "--epochs", "2", "--seeds", "0,1",
                    "--arms", "linear", "--train-examples", "500", "--data-dir", str(prepared_data_dir))
    assert again.returncode == 2 and "holds a study with other settings" in again.stderr
    assert json.loads((out / "results.json").read_text()) == again_rows  # untouched


def test_study_rejects_bad_flags(tmp_path, capsys):
    # In this process, through the same `main` as `python -m experiments.study` (whose process exits 2 the same
    # way: `aejax.cli`'s tests check that path once, in a subprocess).
    for args, message in ((["--arms", "mlp"], "unknown arm(s) mlp"), (["--depths", "0"], "--depths must be"),
                          (["--seeds", "a,b"], "--seeds must be comma-separated integers"),
                          (["--seeds", "-1"], "--seeds must be distinct non-negative integers"),
                          (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
                          (["--epochs", "0"], "epochs must be >= 1"),  # checked before the directory is made
                          (["--train-examples", "70000"], "train_examples must be an integer in 1..60000"),
                          (["--arms", "conv_original", "--depths", "32"],
                           "leaves out the fixed code size of arm(s) conv_original (392)")):
        code, _, stderr = run_in_process(capsys, lambda argv: study_main(LINEAR + CONV, argv),
                                         "--out", str(tmp_path / "s"), *args)
        assert not (tmp_path / "s").exists()
        assert code == 2 and message in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1
