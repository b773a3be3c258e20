import contextlib
import errno
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import files
from aejax.config import Config
from aejax.errors import AejaxError
from aejax.training import checkpoint
from aejax.training import step as train
from tests.helpers import REPO, fill_disk, tmpfs


def _state(config: Config):
    trainer = train.make_trainer(config)
    return train.compile_program(trainer).init(train.seed_keys(0)[0][None])


def test_roundtrip_keeps_the_last_few(tmp_path):
    state = _state(Config(latent_dim=8))
    mngr = checkpoint.manager(tmp_path / "ckpt", max_to_keep=2)
    for epoch in (1, 2, 3):
        checkpoint.save(mngr, epoch, state, {"epoch": epoch})
    assert list(mngr.all_steps()) == [2, 3]
    restored, meta = checkpoint.restore(mngr, jax.tree_util.tree_map(jnp.zeros_like, state))
    assert meta == {"epoch": 3, checkpoint.STATE_SHA256: checkpoint.state_digest(state)}
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_a_step_whose_arrays_differ_from_its_checksum_is_set_aside(tmp_path):
    state = _state(Config(latent_dim=8))
    mngr = checkpoint.manager(tmp_path / "ckpt", max_to_keep=3)
    for epoch in (1, 2):
        checkpoint.save(mngr, epoch, jax.tree_util.tree_map(lambda x, e=epoch: x + e, state), {"epoch": epoch})
    meta = next((tmp_path / "ckpt" / "2" / "meta").glob("metadata"))
    meta.write_text(meta.read_text().replace('"state_sha256": "', '"state_sha256": "0'))  # not what was saved
    lines = []
    restored, meta = checkpoint.restore(mngr, state, log=lines.append)
    assert meta["epoch"] == 1 and "differ from the checksum recorded when it was saved" in lines[0]
    assert lines[1] == "restored the previous good checkpoint, step 1"
    assert (tmp_path / "corrupt_checkpoints" / "2").is_dir()
    np.testing.assert_array_equal(restored.step, state.step + 1)
    changed = checkpoint.state_digest(jax.tree_util.tree_map(lambda x: x.at[(0,) * x.ndim].add(1), state))
    assert changed != checkpoint.state_digest(state)


def test_a_step_without_its_state_metadata_is_set_aside_not_called_another_model(tmp_path):
    state = _state(Config(latent_dim=8))
    mngr = checkpoint.manager(tmp_path / "ckpt", max_to_keep=3)
    for epoch in (1, 2):
        checkpoint.save(mngr, epoch, state, {"epoch": epoch})
    (tmp_path / "ckpt" / "2" / "state" / "_METADATA").unlink()
    lines = []
    _, meta = checkpoint.restore(mngr, state, log=lines.append)
    assert meta["epoch"] == 1 and "its state's metadata cannot be read" in lines[0]


def test_restore_into_another_architecture_names_the_shapes(tmp_path):
    mngr = checkpoint.manager(tmp_path / "ckpt", max_to_keep=2)
    checkpoint.save(mngr, 1, _state(Config(latent_dim=32)), {"epoch": 1})
    with pytest.raises(AejaxError, match=r"params/encoder_layers_0/kernel is \(1, 784, 32\) in the checkpoint "
                                         r"but \(1, 784, 64\) in this model"):
        checkpoint.restore(mngr, _state(Config(latent_dim=64)))
    with pytest.raises(AejaxError, match="params/conv1/bias missing from checkpoint"):
        checkpoint.restore(mngr, _state(Config(model="conv", latent_dim=32)))


def test_restore_without_checkpoint(tmp_path):
    with pytest.raises(AejaxError, match="no checkpoint found"):
        checkpoint.restore(checkpoint.manager(tmp_path / "empty", 2), _state(Config(latent_dim=8)))
    with pytest.raises(AejaxError, match="no checkpoint found"):  # reloading a model creates nothing
        checkpoint.restore(checkpoint.manager(tmp_path / "absent", 2, read_only=True), _state(Config(latent_dim=8)))
    assert not (tmp_path / "absent").exists()


# After a failed save, tensorstore's pending writes may complete into orbax's closed event loop, which Python
# reports as an unraisable `RuntimeError: Event loop is closed`: orbax's, and harmless to the steps on disk.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_save_that_fills_the_disk_inside_orbax_is_one_line_and_keeps_the_complete_steps(tmp_path, monkeypatch,
                                                                                           caplog):
    """Past the check for room (space taken by another process meanwhile): orbax's background write fails, its
    partial step is removed, the complete one kept, and orbax's own error records are not logged."""
    state = _state(Config(latent_dim=8))
    with tmpfs(tmp_path / "disk", "4m") as disk:
        mngr = checkpoint.manager(disk / "run" / "checkpoints", max_to_keep=3)
        checkpoint.save(mngr, 1, state, {"epoch": 1})
        monkeypatch.setattr(checkpoint, "_check_room", lambda *_: None)
        fill_disk(disk)
        with pytest.raises(AejaxError, match=f"no space left on the device for {disk}/run/checkpoints/2") as info:
            with checkpoint.stop_when_full(disk / "run", keep=3), contextlib.closing(mngr):  # as a run nests them
                checkpoint.save(mngr, 2, state, {"epoch": 2})
        assert checkpoint._not_a_full_disk not in logging.getLogger("absl").filters  # no filter left installed
        assert "\n" not in str(info.value) and "the checkpoint of epoch 1 is complete and kept" in str(info.value)
        assert sorted(p.name for p in (disk / "run" / "checkpoints").iterdir()) == ["1"]
        assert not [r for r in caplog.records if r.name == "absl" and r.levelname == "ERROR"]
        (disk / "filler").unlink()
        restored, meta = checkpoint.restore(checkpoint.manager(disk / "run" / "checkpoints", max_to_keep=3), state)
        assert meta["epoch"] == 1


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device", "/x"),
                                   OSError(errno.EDQUOT, "Disk quota exceeded"),
                                   ValueError('RESOURCE_EXHAUSTED: Error writing local file "/x": Failed to write 1 '
                                              "bytes to file 5: No space left on device [os_error_code='28']")])
def test_a_full_disk_is_recognised_in_every_form_it_takes(error):
    wrapped = RuntimeError("the save failed")
    wrapped.__cause__ = error
    assert files.is_full(error) and files.is_full(wrapped)
    assert not files.is_full(OSError(errno.EACCES, "Permission denied"))


CLOSED_LOOP = """
import sys, threading
from aejax.training import checkpoint
checkpoint.quiet_closed_loop()
checkpoint.quiet_closed_loop()  # once per process: the second call wraps nothing
sys.excepthook(RuntimeError, RuntimeError("Event loop is closed"), None)
threading.excepthook(threading.ExceptHookArgs((RuntimeError, RuntimeError("Event loop is closed"), None, None)))
sys.excepthook(ValueError, ValueError("a real error"), None)
"""


def test_tensorstores_late_callbacks_into_a_closed_event_loop_print_nothing_and_other_errors_still_do():
    """A damaged step read on resume used to print up to nine `RuntimeError: Event loop is closed` tracebacks
    (tensorstore's callbacks after orbax closed its loop, reported through Python's hooks) around the one line."""
    done = subprocess.run([sys.executable, "-c", CLOSED_LOOP], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Event loop is closed" not in done.stderr and "ValueError: a real error" in done.stderr
