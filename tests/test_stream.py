"""Streamed training sets (`aejax.data.stream`, `aejax.training.streamed`): the same batches in the same order
as device-resident images, bit for bit; where auto places a set; memmaps; a stopped streamed run resumed."""

import jax
import numpy as np
import pytest

from aejax.config import Config
from aejax.data import array_source, stream
from aejax.errors import AejaxError
from aejax.training import loop


def quiet(_: str) -> None:
    pass


def _leaves(result) -> list[np.ndarray]:
    return [np.asarray(x) for v in result.variables for x in jax.tree_util.tree_leaves(v)]


def test_a_streamed_epoch_trains_on_the_device_runs_batches_bit_for_bit(tmp_path, mnist_test_images, monkeypatch):
    """Two seeds in one program, chunks of 7 steps (the last one shorter): every parameter and score equal."""
    monkeypatch.setattr(stream, "CHUNK_BYTES", 2 * 25 * 784 * 7)
    config = Config(model="conv_strided", latent_dim=16, epochs=1, train_examples=1000)
    data = (mnist_test_images[:1000], mnist_test_images[1000:1500])
    runs = {where: loop.run(config.replace(data_placement=where), tmp_path / where, seeds=[0, 1], data=data,
                            log=quiet) for where in ("device", "stream")}
    assert stream.chunk_steps(40, 2, 25, (28, 28, 1)) == 7
    for a, b in zip(_leaves(runs["device"]), _leaves(runs["stream"]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r["test_mse"] for r in runs["device"].rows] == [r["test_mse"] for r in runs["stream"].rows]


def test_auto_streams_a_set_over_its_budget_and_says_so(tmp_path, mnist_test_images, monkeypatch):
    monkeypatch.setattr(stream, "_device_budget", lambda: (500 * 784, "a test's budget"))
    assert stream.placement("auto", 500, (28, 28, 1)).where == "device"
    over = stream.placement("auto", 501, (28, 28, 1))
    assert over.where == "stream" and "a test's budget" in over.describe(501)
    lines = []
    loop.run(Config(latent_dim=8, epochs=1, batch_size=50), tmp_path / "run",
             data=(mnist_test_images[:600], mnist_test_images[600:700]), log=lines.append)
    assert lines[0].startswith("data: 600 training images") and ": stream (auto: over a test's budget" in lines[0]
    with pytest.raises(AejaxError, match="unknown data_placement 'disk'; choose one of auto, device, stream"):
        Config(data_placement="disk")


def test_a_memmapped_training_set_streams_from_disk(tmp_path, mnist_test_images):
    """`np.load(..., mmap_mode="r")` trains without being read into memory first, as the in-memory array does."""
    np.save(tmp_path / "train.npy", mnist_test_images[:500])
    mapped = np.load(tmp_path / "train.npy", mmap_mode="r")
    config = Config(latent_dim=8, epochs=1, batch_size=50)
    test = mnist_test_images[500:600]
    streamed = loop.run(config.replace(data_placement="stream"), tmp_path / "mapped", data=(mapped, test), log=quiet)
    resident = loop.run(config.replace(data_placement="device"), tmp_path / "array",
                        data=(mnist_test_images[:500], test), log=quiet)
    for a, b in zip(_leaves(streamed), _leaves(resident), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_stopped_streamed_run_resumes_to_the_uninterrupted_result(tmp_path, mnist_test_images):
    """The loader's position is the epoch: a streamed run stopped after epoch 1 and resumed ends bit for bit as
    one that ran through."""
    config = Config(latent_dim=8, epochs=3, batch_size=50, data_placement="stream")
    data = (mnist_test_images[:500], mnist_test_images[500:600])
    whole = loop.run(config, tmp_path / "whole", data=data, log=quiet)
    loop.run(config, tmp_path / "stopped", data=data, log=quiet, actions=[lambda end: end.epoch == 1])
    resumed = loop.run(config, tmp_path / "stopped", data=data, log=quiet, resume=True)
    assert resumed.epochs_trained == 2  # a streamed epoch is read back before the next one starts
    for a, b in zip(_leaves(whole), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_streaming_refuses_what_it_cannot_do(tmp_path, mnist_test_images):
    from aejax.data import Source

    no_take = Source(500, lambda r: mnist_test_images[r.start:r.stop], mnist_test_images[500:600])
    with pytest.raises(AejaxError, match="cannot read rows by index"):
        next(stream.epoch_chunks(no_take, np.zeros((1, 2, 25), np.int64), 1))
    config = Config(data_parallel=True, shard_data=True, data_placement="stream", train_examples=500)
    with pytest.raises(AejaxError, match="shard_data splits a device-resident training set's rows"):
        loop.run(config, tmp_path / "run", data=(mnist_test_images[:500], mnist_test_images[500:600]))
    assert not (tmp_path / "run").exists()
    orders = np.arange(2 * 3 * 8).reshape(1, 6, 8)  # one lane, 6 steps of batch 8
    chunks = list(stream.epoch_chunks(array_source(mnist_test_images[:48], mnist_test_images[:1]), orders, 4,
                                      columns=range(4, 8)))
    assert [c.shape[:3] for c in chunks] == [(4, 1, 4), (2, 1, 4)]  # this process's half of each batch
    np.testing.assert_array_equal(chunks[0][1, 0], mnist_test_images[12:16])


def test_a_memmap_is_read_by_positioned_reads_of_its_file(tmp_path):
    """Rows and rows by index of a memmap (or a slice of one) equal the array's, read without the mapping."""
    from aejax.data import array_source
    from aejax.data.source import FileRows

    images = (np.arange(50 * 4 * 4 * 3) % 251).astype(np.uint8).reshape(50, 4, 4, 3)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    for view, array in ((mapped, images), (mapped[10:40], images[10:40])):
        assert FileRows.of(view) is not None
        source = array_source(view, images[:5])
        np.testing.assert_array_equal(source.rows(range(3, 9)), array[3:9])
        np.testing.assert_array_equal(source.take(np.array([7, 2, 2, 19])), array[[7, 2, 2, 19]])
    assert FileRows.of(images) is None and FileRows.of(mapped[:, :2]) is None  # in memory; not contiguous
