"""The command line as a user meets it: one-line errors with status 2, the files a run writes, and that an
existing run is never overwritten by accident."""

import json

import pytest

from tests.conftest import run_cli


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, message", [
    (["--latent-dim", "0"], "latent_dim must be in 1..784"),
    (["--latent-dim", "785"], "latent_dim must be in 1..784"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--batch-size", "0"], "batch_size must be in 1..60000"),
    (["--batch-size", "60001"], "batch_size must be in 1..60000"),
    (["--lr", "0"], "lr must be > 0"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--model", "vae"], "unknown model 'vae'"),
    (["--latent-dim", "3.5"], "argument --latent-dim: invalid int value: '3.5'"),
    (["--loss", "l1"], "unknown loss 'l1'"),
    (["--optimizer", "lion"], "unknown optimizer 'lion'"),
])
def test_invalid_values_exit_2_with_one_line(tmp_path, args, message):
    out = tmp_path / "out"
    result = run_cli("aejax.train", "--out", str(out), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_train_cli_writes_a_run_and_protects_it(tmp_path, prepared_data_dir):
    out = tmp_path / "run"
    common = ["--data-dir", str(prepared_data_dir), "--out", str(out), "--batch-size", "50",
              "--train-examples", "1000"]
    result = run_cli("aejax.train", "--model", "linear", "--latent-dim", "16", "--epochs", "2", *common)
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results[0]["model"] == "linear" and results[0]["latent_dim"] == 16 and results[0]["epochs"] == 2
    before = _files(out)

    other = run_cli("aejax.train", "--model", "linear", "--latent-dim", "32", "--epochs", "2", *common)
    assert other.returncode == 2 and "holds a run of a different config" in other.stderr
    same = run_cli("aejax.train", "--model", "linear", "--latent-dim", "16", "--epochs", "2", *common)
    assert same.returncode == 2 and "already holds a run of this config" in same.stderr
    assert _files(out) == before  # byte-identical

    resumed = run_cli("aejax.train", "--model", "linear", "--latent-dim", "16", "--epochs", "2", "--resume",
                      *common)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "epoch 1/2" not in resumed.stdout
    assert json.loads((out / "results.json").read_text())[0]["test_mse"] == results[0]["test_mse"]
