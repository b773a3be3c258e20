"""Crash and resume: SIGKILL mid-epoch, SIGTERM (preemption) and a corrupt checkpoint, each ending in
parameters bit-identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from aejax import train
from aejax.config import Config
from tests.conftest import REPO, run_cli

ARGS = ["--model", "linear", "--latent-dim", "64", "--epochs", "4", "--train-examples", "30000"]


def _assert_same_params(a, b):
    (_, pa, _), (_, pb, _) = train.load_model(a), train.load_model(b)
    for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
        np.testing.assert_array_equal(x, y)


def _start(out, data_dir):
    return subprocess.Popen([sys.executable, "-m", "aejax.train", *ARGS, "--data-dir", str(data_dir),
                             "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for_epochs(out, n, proc, timeout=300):
    deadline = time.time() + timeout
    metrics = out / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no epoch {n} within {timeout}s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prepared_data_dir):
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    result = run_cli("aejax.train", *ARGS, "--data-dir", str(prepared_data_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_sigkill_in_epoch_3_then_resume_is_bit_identical(tmp_path, prepared_data_dir, uninterrupted):
    out = tmp_path / "killed"
    proc = _start(out, prepared_data_dir)
    _wait_for_epochs(out, 2, proc)  # epoch 2 checkpointed: epoch 3 is running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    resumed = run_cli("aejax.train", *ARGS, "--data-dir", str(prepared_data_dir), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "at epoch 2" in resumed.stdout
    _assert_same_params(out, uninterrupted)


def test_sigterm_checkpoints_and_exits_nonzero(tmp_path, prepared_data_dir, uninterrupted):
    out = tmp_path / "preempted"
    proc = _start(out, prepared_data_dir)
    _wait_for_epochs(out, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped by SIGTERM after epoch") and "continue with --resume" in last
    epoch = int(last.split("after epoch ")[1].split("/")[0])
    assert str(epoch) in os.listdir(out / "checkpoints")
    resumed = run_cli("aejax.train", *ARGS, "--data-dir", str(prepared_data_dir), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_params(out, uninterrupted)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, mnist_test_images):
    config = Config(latent_dim=8, epochs=3, batch_size=50, train_examples=1000)
    data = (mnist_test_images, mnist_test_images[:500])
    quiet = lambda *_: None  # noqa: E731
    reference = train.run(config, tmp_path / "reference", data=data, log=quiet)
    out = tmp_path / "run"
    train.run(config, out, data=data, log=quiet)
    for f in (out / "checkpoints" / "3" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # truncated
    messages = []
    rows = train.run(config, out, data=data, resume=True, log=messages.append)
    assert any("checkpoint step 3" in m and "is corrupt" in m for m in messages), messages
    assert any("resumed" in m and "at epoch 2" in m for m in messages), messages
    assert (out / "corrupt_checkpoints" / "3").is_dir()  # set aside, not deleted
    assert rows[0]["test_mse"] == reference[0]["test_mse"]
    _assert_same_params(out, tmp_path / "reference")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any directory")
def test_unwritable_output_directory(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    result = run_cli("aejax.train", "--out", str(out))
    assert result.returncode == 2 and "not writable" in result.stderr


def test_output_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    result = run_cli("aejax.train", "--out", str(blocker / "run"))
    assert result.returncode == 2 and "cannot create output directory" in result.stderr
    assert blocker.read_text() == "keep me"
    result = run_cli("aejax.train", "--out", str(blocker))
    assert result.returncode == 2 and "exists and is not a directory" in result.stderr
