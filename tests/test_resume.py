"""Crash and resume: SIGKILL, SIGTERM (preemption) and a corrupt checkpoint, each ending in parameters
bit-identical to an uninterrupted run.

The signals are sent by the training process to itself from its `log` callback, right after a chosen epoch's
checkpoint and metrics are written: a deterministic point, with the same files on disk as any moment during
the next epoch (nothing of an epoch is written before it ends; the next epoch is already running, since `run`
reads epoch e back while e+1 computes)."""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from aejax import cli
from aejax.config import Config
from aejax.errors import AejaxError
from aejax.training import loop
from aejax.training.restore import load_model, warm_start
from aejax.training.rundir import RunDir
from tests.helpers import REPO, fill_disk, run_cli, run_in_process, tmpfs

ARGS = ["--model", "linear", "--latent-dim", "64", "--epochs", "4", "--train-examples", "3000"]

# `python -c SELF_SIGNAL EPOCH SIGNAL <aejax.train flags>`: the CLI's run, signalling itself after EPOCH.
SELF_SIGNAL = r"""
import os, signal, sys
from aejax import cli
from aejax.training import loop
epoch, name, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
args = cli.parse_args(argv)

def log(line):
    print(line, flush=True)
    if line.startswith(f"epoch {epoch}/"):
        os.kill(os.getpid(), getattr(signal, name))

cli.cli(lambda: loop.run(cli.config_from_args(args), args.out, data_dir=args.data_dir, log=log))
"""


def _assert_same_params(a, b):
    (_, pa, _), (_, pb, _) = load_model(a), load_model(b)
    for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
        np.testing.assert_array_equal(x, y)


def _run_signalling_itself(out, data_dir, epoch: int, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SELF_SIGNAL, str(epoch), name, *ARGS, "--data-dir", str(data_dir),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prepared_data_dir):
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    result = run_cli("aejax.train", *ARGS, "--data-dir", str(prepared_data_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


# The two signal tests need fresh processes (~25 s here with their reference run): they run with the slow tests
# (CI runs both); the resume logic itself is checked in-process below, in the default suite.
@pytest.mark.slow
def test_sigkill_after_epoch_2_then_resume_is_bit_identical(tmp_path, prepared_data_dir, uninterrupted):
    out = tmp_path / "killed"
    killed = _run_signalling_itself(out, prepared_data_dir, 2, "SIGKILL")
    assert killed.returncode == -signal.SIGKILL and "epoch 3/4" not in killed.stdout
    assert not (out / "results.json").exists()
    resumed = run_cli("aejax.train", *ARGS, "--data-dir", str(prepared_data_dir), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "at epoch 2" in resumed.stdout and "epoch 2/4" not in resumed.stdout
    _assert_same_params(out, uninterrupted)


# A streamed run (chunks of 10 steps) that kills itself while its third epoch is being handed over.
STREAM_KILL = r"""
import os, signal, sys
from aejax import cli
from aejax.data import stream
from aejax.training import loop
stream.CHUNK_BYTES = 25 * 784 * 10
epochs, real = [], stream.epoch_chunks

def chunks(*args, **kwargs):
    epochs.append(1)
    for i, chunk in enumerate(real(*args, **kwargs)):
        if len(epochs) == 3 and i == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        yield chunk

stream.epoch_chunks = chunks
args = cli.parse_args(sys.argv[1:])
cli.cli(lambda: loop.run(cli.config_from_args(args), args.out, data_dir=args.data_dir, log=print))
"""


@pytest.mark.slow
def test_a_streamed_run_killed_mid_epoch_resumes_bit_for_bit(tmp_path, prepared_data_dir, uninterrupted):
    """SIGKILL halfway through a streamed epoch; the resumed run (streamed too) ends with the parameters of the
    uninterrupted device-resident one: the same batches, and the loader's position is the epoch."""
    out = tmp_path / "streamed"
    common = [*ARGS, "--data-dir", str(prepared_data_dir), "--out", str(out), "--data-placement", "stream"]
    killed = subprocess.run([sys.executable, "-c", STREAM_KILL, *common], cwd=REPO, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert killed.returncode == -signal.SIGKILL and "epoch 2/4" in killed.stdout and "epoch 3/4" not in killed.stdout
    resumed = run_cli("aejax.train", *common, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "at epoch 2" in resumed.stdout and ": stream (as asked)" in resumed.stdout
    _assert_same_params(out, uninterrupted)


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_nonzero(tmp_path, prepared_data_dir, uninterrupted):
    # SIGTERM while epoch 1 is being reported: epoch 2 is already running on the device; it is finished and
    # checkpointed too, and the run stops there.
    out = tmp_path / "preempted"
    stopped = _run_signalling_itself(out, prepared_data_dir, 1, "SIGTERM")
    assert stopped.returncode == 128 + signal.SIGTERM
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped by SIGTERM after epoch 2/4") and "continue with --resume" in last
    assert sorted(os.listdir(out / "checkpoints")) == ["1", "2"]
    assert "epoch 3/4" not in stopped.stdout
    resumed = run_cli("aejax.train", *ARGS, "--data-dir", str(prepared_data_dir), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_params(out, uninterrupted)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_test_images):
    """A 3-epoch run, trained once: (config, data, its rows, its directory). Tests that damage a run and resume
    it work on a copy and compare with this one."""
    config = Config(latent_dim=8, epochs=3, batch_size=50, train_examples=1000)
    data = (mnist_test_images, mnist_test_images[:500])
    out = tmp_path_factory.mktemp("trained") / "run"
    return config, data, loop.run(config, out, data=data, log=lambda *_: None).rows, out


def _copy_of(trained, tmp_path):
    """`trained`'s run copied to `tmp_path/run`: (config, data, the original's rows, the copy)."""
    config, data, reference, original = trained
    shutil.copytree(original, tmp_path / "run")
    return config, data, reference, tmp_path / "run"


def test_a_finished_run_continued_for_more_epochs_equals_a_longer_run(tmp_path, trained):
    config, data, reference, out = _copy_of(trained, tmp_path)
    longer = loop.run(config.replace(epochs=4), tmp_path / "four", data=data, log=lambda *_: None).rows
    with pytest.raises(AejaxError, match="holds a run of a different config"):  # without resume: refused
        loop.run(config.replace(epochs=4), out, data=data, log=lambda *_: None)
    messages = []
    rows = loop.run(config.replace(epochs=4), out, data=data, resume=True, log=messages.append).rows
    assert any("at epoch 3" in m for m in messages) and rows[0]["test_mse"] == longer[0]["test_mse"]
    assert json.loads((out / "config.json").read_text())["continued_from_epochs"] == 3
    cosine = config.replace(schedule="cosine")
    loop.run(cosine, tmp_path / "cosine", data=data, log=lambda *_: None)
    with pytest.raises(AejaxError, match="would stretch the cosine schedule"):
        loop.run(cosine.replace(epochs=4), tmp_path / "cosine", data=data, resume=True, log=lambda *_: None)


def test_a_run_initialised_from_another_starts_from_its_parameters(tmp_path, trained):
    config, data, reference, source = trained
    lines = []
    warm = config.replace(epochs=1, init_from=str(source))
    state = loop.train.compile_program(loop.make_trainer(warm, 1000)).init(
        jax.numpy.stack([loop.seed_keys(s)[0] for s in (0, 1)]))
    started = warm_start(warm, state, lines.append)
    _, variables, _ = load_model(source)
    for lane in (0, 1):  # one model, copied to both lanes; the optimizer fresh
        for a, b in zip(jax.tree_util.tree_leaves(loop.unstack(started.params, lane)),
                        jax.tree_util.tree_leaves(variables["params"]), strict=True):
            np.testing.assert_array_equal(a, b)
    assert int(started.step[0]) == 0 and "initialised from" in lines[0]
    rows = loop.run(warm, tmp_path / "warm", data=data, seeds=[0, 1], log=lambda *_: None).rows
    assert rows[0]["test_mse"] < reference[0]["test_mse"] * 1.5  # it starts where the source ended
    with pytest.raises(AejaxError, match="does not fit this model: params/decoder_layers_0/kernel"):
        loop.run(warm.replace(latent_dim=16), tmp_path / "other", data=data, log=lambda *_: None)
    assert not (tmp_path / "other").exists()  # refused before the run directory is made


def test_resume_skips_a_checkpoint_whose_metrics_line_is_missing(tmp_path, trained):
    # Killed between a checkpoint's save and its metrics line: the resume starts from the previous epoch, so
    # metrics.jsonl keeps one line per epoch, and the result equals an uninterrupted run's.
    config, data, reference, out = _copy_of(trained, tmp_path)
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    (out / "metrics.jsonl").write_text("".join(lines[:2]))
    messages = []
    rows = loop.run(config, out, data=data, resume=True, log=messages.append).rows
    assert any("resumed" in m and "at epoch 2" in m for m in messages), messages
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert rows[0]["test_mse"] == reference[0]["test_mse"]


def test_a_metrics_file_cut_mid_line_resumes_from_the_epoch_before(tmp_path, trained):
    config, data, reference, out = _copy_of(trained, tmp_path)
    text = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 30])  # line 3 cut short
    messages = []
    rows = loop.run(config, out, data=data, resume=True, log=messages.append).rows
    assert any("resumed" in m and "at epoch 2" in m for m in messages), messages
    assert rows[0]["test_mse"] == reference[0]["test_mse"]


def test_an_unreadable_config_json_is_named_and_the_run_left_alone(tmp_path, trained):
    config, data, reference, out = _copy_of(trained, tmp_path)
    (out / "config.json").write_text("{not json")
    for resume in (False, True):
        with pytest.raises(AejaxError, match="config.json cannot be read \\(JSONDecodeError") as info:
            loop.run(config, out, data=data, resume=resume, log=lambda *_: None)
        assert "\n" not in str(info.value) and (out / "checkpoints").exists()
    with pytest.raises(AejaxError, match="is a file; load_model takes a run directory"):
        load_model(out / "results.json")
    rows = loop.run(config, out, data=data, overwrite=True, log=lambda *_: None).rows  # asked: replaced
    assert rows[0]["test_mse"] == reference[0]["test_mse"]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, trained):
    config, data, reference, out = _copy_of(trained, tmp_path)
    for f in (out / "checkpoints" / "3" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # truncated
    messages = []
    rows = loop.run(config, out, data=data, resume=True, log=messages.append).rows
    assert any("checkpoint step 3" in m and "is corrupt" in m for m in messages), messages
    assert any("resumed" in m and "at epoch 2" in m for m in messages), messages
    assert (out / "corrupt_checkpoints" / "3").is_dir()  # set aside, not deleted
    assert rows[0]["test_mse"] == reference[0]["test_mse"]
    _assert_same_params(out, trained[3])


def test_a_flipped_bit_in_the_latest_checkpoint_is_never_restored(tmp_path, trained, capsys):
    config, data, reference, out = _copy_of(trained, tmp_path)
    largest = max((f for f in (out / "checkpoints" / "3" / "state").rglob("*") if f.is_file()),
                  key=lambda f: f.stat().st_size)
    raw = bytearray(largest.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    largest.write_bytes(bytes(raw))
    load_model(out)  # sets step 3 aside, reloads step 2
    printed = capsys.readouterr().out
    assert "checkpoint step 3" in printed and "restored the previous good checkpoint, step 2" in printed
    messages = []
    rows = loop.run(config, out, data=data, resume=True, log=messages.append).rows
    assert any("resumed" in m and "at epoch 2" in m for m in messages), messages
    assert rows[0]["test_mse"] == reference[0]["test_mse"]
    _assert_same_params(out, trained[3])


# Another process holding a run directory: it takes the lock as a run does, says so, and waits (or is killed).
HOLDER = r"""
import json, sys
from aejax.config import Config
from aejax.training.rundir import RunDir
saved = json.loads(open(sys.argv[1] + "/config.json").read())
run_dir = RunDir.open(sys.argv[1], Config.from_dict(saved["config"]), saved["seeds"], resume=True, overwrite=False)
print("holding", flush=True)
sys.stdin.read()
"""


def _files(path):
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_a_second_writer_is_refused_until_the_first_ends_or_crashes(tmp_path, trained):
    config, data, reference, out = _copy_of(trained, tmp_path)
    (out / "results.json").unlink()  # an unfinished run, as a resume would find it
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = _files(out)
        for resume, overwrite in ((True, False), (False, True)):
            with pytest.raises(AejaxError, match="in use by another aejax run") as refused:
                loop.run(config, out, data=data, resume=resume, overwrite=overwrite, log=lambda *_: None)
            assert "\n" not in str(refused.value) and "--out" in refused.value.cli_message
        assert _files(out) == before  # the first run's files untouched
    finally:
        holder.kill()  # a crash: the kernel releases the lock with the process
        holder.wait()
    rows = loop.run(config, out, data=data, resume=True, log=lambda *_: None).rows
    assert rows[0]["test_mse"] == reference[0]["test_mse"]
    saved = json.loads((out / "config.json").read_text())
    RunDir.open(out, Config.from_dict(saved["config"]), saved["seeds"], resume=True, overwrite=False).close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any directory")
def test_unwritable_output_directory(tmp_path, capsys, synthetic_data_dir):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    code, _, stderr = run_in_process(capsys, cli.main, "--out", str(out), "--data-dir", str(synthetic_data_dir))
    assert code == 2 and "not writable" in stderr


def test_output_directory_that_cannot_be_created(tmp_path, capsys, synthetic_data_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    data = ("--data-dir", str(synthetic_data_dir))
    code, _, stderr = run_in_process(capsys, cli.main, "--out", str(blocker / "run"), *data)
    assert code == 2 and "cannot create output directory" in stderr
    assert blocker.read_text() == "keep me"
    code, _, stderr = run_in_process(capsys, cli.main, "--out", str(blocker), *data)
    assert code == 2 and "exists and is not a directory" in stderr


@pytest.mark.parametrize("full_after", [1, 3], ids=["mid-run", "before-results"])
def test_a_full_disk_stops_in_one_line_keeps_the_checkpoints_and_resume_finishes(tmp_path, trained, full_after):
    """The disk fills up after epoch `full_after` (an action fills it): after epoch 1 the next checkpoint cannot be
    written; after the last epoch, results.json cannot. One line names the path and the space; every complete
    checkpoint is kept; once there is room, --resume ends as the uninterrupted run did."""
    config, data, reference, original = trained

    def fill_after(end: loop.EpochEnd) -> None:
        if end.epoch == full_after:
            fill_disk(disk)

    with tmpfs(tmp_path / "disk", "16m") as disk:
        out = disk / "run"
        with pytest.raises(AejaxError, match=f"no space left on the device for {out}") as stopped:
            loop.run(config, out, data=data, log=lambda *_: None, actions=[fill_after])
        message = stopped.value.cli_message
        assert "\n" not in message and "free there" in message and message.endswith("continue with --resume")
        steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir())  # no partial step left behind
        assert steps and steps[-1] >= full_after and f"epoch{'s' if len(steps) > 1 else ''} " in message
        assert "a checkpoint of this run takes" in message
        assert not (out / "results.json").exists()
        lines = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert lines == list(range(1, full_after + 1))  # each line has its checkpoint; none is half written
        (disk / "filler").unlink()
        rows = loop.run(config, out, data=data, resume=True, log=lambda *_: None).rows
        assert rows[0]["test_mse"] == reference[0]["test_mse"]
        _assert_same_params(out, original)


def test_a_disk_full_before_the_run_starts_writes_nothing_half(tmp_path, trained):
    config, data, _, _ = trained
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill_disk(disk)
        with pytest.raises(AejaxError, match=r"no space left on the device for .*config\.json \(it needs") as stopped:
            loop.run(config, disk / "run", data=data, log=lambda *_: None)
        assert "no checkpoint is complete yet" in str(stopped.value)
        assert sorted(p.name for p in (disk / "run").iterdir()) == [".lock"]  # no half-written config.json


def test_checkpoint_every_saves_fewer_and_a_resume_still_ends_as_an_uninterrupted_run(tmp_path, trained):
    """checkpoint_every=2 over 3 epochs saves epochs 2 and 3 (the last always); with epoch 3's checkpoint gone
    (a crash before it was written) a resume redoes epoch 3 from epoch 2, dropping the metrics line past its
    checkpoint, and ends as the uninterrupted run did."""
    config, data, reference, original = trained
    every = config.replace(checkpoint_every=2)
    out = tmp_path / "run"
    rows = loop.run(every, out, data=data, log=lambda *_: None).rows
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == [2, 3]
    assert rows[0]["test_mse"] == reference[0]["test_mse"]
    shutil.rmtree(out / "checkpoints" / "3")
    (out / "results.json").unlink()
    messages = []
    rows = loop.run(every, out, data=data, resume=True, log=messages.append).rows
    assert any("resumed" in m and "at epoch 2" in m for m in messages), messages
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert rows[0]["test_mse"] == reference[0]["test_mse"]
    _assert_same_params(out, original)
