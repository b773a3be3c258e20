import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aejax import data
from aejax.data import mnist_idx, mnist_tfds
from aejax.errors import AejaxError
from tests.helpers import REPO, idx_bytes, run_cli, without

MNIST_TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _load(root: Path, checksums, tmp_path: Path, split: str = "train"):
    return data.load_mnist(split, data_dir=tmp_path / "tfds", mnist_dir=root, checksums=checksums)


def test_builder_prepares_and_reads_synthetic_idx(synthetic_idx, tmp_path):
    root, checksums = synthetic_idx
    train = _load(root, checksums, tmp_path)
    assert train.images.shape == (40, 28, 28, 1) and train.images.dtype == np.uint8
    raw = data.read_idx(root / "train-images-idx3-ubyte.gz", None)
    np.testing.assert_array_equal(train.images, raw)  # IDX order, bit-exact
    np.testing.assert_array_equal(train.labels, np.arange(40) % 10)
    assert _load(root, checksums, tmp_path, "test").images.shape == (20, 28, 28, 1)


def test_first_examples_only(synthetic_idx, tmp_path):
    root, checksums = synthetic_idx
    full = _load(root, checksums, tmp_path)
    head = data.load_mnist("train", data_dir=tmp_path / "tfds", mnist_dir=root, checksums=checksums, examples=7)
    np.testing.assert_array_equal(head.images, full.images[:7])
    np.testing.assert_array_equal(head.labels, full.labels[:7])
    for bad, pattern in ((0, "positive integer"), (41, "asked for 41 train examples; the split has 40")):
        with pytest.raises(AejaxError, match=pattern):
            data.load_mnist("train", data_dir=tmp_path / "tfds", mnist_dir=root, checksums=checksums, examples=bad)


def test_second_preparation_reuses_the_first(synthetic_idx, tmp_path):
    root, checksums = synthetic_idx
    _load(root, checksums, tmp_path)
    for f in root.iterdir():
        f.unlink()  # the sources are gone: only the prepared data can answer
    assert _load(root.parent / "elsewhere", checksums, tmp_path).images.shape == (40, 28, 28, 1)


def _expect_error(root, checksums, tmp_path, pattern):
    with pytest.raises(AejaxError, match=pattern) as info:
        _load(root, checksums, tmp_path)
    assert "\n" not in str(info.value)
    prepared = tmp_path / "tfds" / "aejax_mnist"
    assert not list(prepared.glob("*/dataset_info.json")), "a failed preparation left a dataset behind"


def test_missing_file_names_it_and_the_place(synthetic_idx, tmp_path):
    root, checksums = synthetic_idx
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    _expect_error(root, checksums, tmp_path, r"t10k-labels-idx1-ubyte.gz missing from .*idx")


def test_checksum_mismatch_gives_file_expected_and_got(synthetic_idx, tmp_path):
    root, checksums = synthetic_idx
    wrong = {**checksums, "train-images-idx3-ubyte.gz": "0" * 64}
    _expect_error(root, wrong, tmp_path,
                  r"train-images-idx3-ubyte.gz fails its checksum.*expected 0{64}, got [0-9a-f]{64}")


def test_real_pinned_checksums_reject_other_data(synthetic_idx, tmp_path):
    root, _ = synthetic_idx
    _expect_error(root, data.PINNED_SHA256, tmp_path, "fails its checksum")


def test_truncated_gzip(synthetic_idx, tmp_path):
    root, checksums = synthetic_idx
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    _expect_error(root, checksums, tmp_path, "train-images-idx3-ubyte.gz is truncated or not a gzip file")


def test_not_gzip(synthetic_idx, tmp_path):
    root, checksums = synthetic_idx
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data at all")
    _expect_error(root, checksums, tmp_path, "train-labels-idx1-ubyte.gz is truncated or not a gzip file")


@pytest.mark.parametrize("array, magic, pattern", [
    (np.zeros((4, 28, 28)), 2049, "has IDX magic 2049, expected 2051"),
    (np.zeros((4, 27, 28)), 2051, "holds 27x28 images, expected 28x28"),
])
def test_bad_idx_header(synthetic_idx, tmp_path, array, magic, pattern):
    root, _ = synthetic_idx
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(array, magic)))
    with pytest.raises(AejaxError, match=pattern):
        data.read_idx(path, None)


def test_idx_count_disagrees_with_body(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(np.array([2049, 5], ">u4").tobytes() + bytes(3)))
    with pytest.raises(AejaxError, match="header says 5 items but holds 3 data bytes"):
        data.read_idx(path, None)


def test_unknown_split():
    with pytest.raises(AejaxError, match="unknown MNIST split"):
        data.load_mnist("validation")


@pytest.mark.slow  # prepares all of real MNIST through tfds, ~10 s here; CI runs it (`pytest -m slow`)
def test_real_vendored_mnist(prepared_data_dir):
    train = data.load_mnist("train", data_dir=prepared_data_dir)
    test = data.load_mnist("test", data_dir=prepared_data_dir)
    assert train.images.shape == (60_000, 28, 28, 1) and test.images.shape == (10_000, 28, 28, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    assert np.bincount(train.labels, minlength=10).tolist() == MNIST_TRAIN_CLASS_COUNTS
    assert np.bincount(test.labels, minlength=10).tolist() == MNIST_TEST_CLASS_COUNTS
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # IDX order


def test_without_vendored_files_or_mnist_dir_one_line_names_the_flag(tmp_path, monkeypatch, capsys):
    """An installed package carries no data/mnist: it stops at once, naming --mnist-dir (no download)."""
    monkeypatch.setattr(mnist_idx, "VENDORED_DIR", tmp_path / "not_there")
    with pytest.raises(AejaxError, match="pass mnist_dir=DIR") as info:
        data.load_mnist("test", data_dir=tmp_path / "tfds")
    assert "\n" not in str(info.value) and "--mnist-dir DIR" in info.value.cli_message
    assert not (tmp_path / "tfds" / "aejax_mnist" / "1.0.0").exists()


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _flip_a_byte(path: Path) -> None:
    """Flip a bit of byte 10,000: inside the records of the synthetic set (its 40 random images fill the first
    ~32 KB of the 128 KB shard; a flip in the padding after them changes no record)."""
    raw = bytearray(path.read_bytes())
    raw[10_000] ^= 0x40
    path.write_bytes(bytes(raw))


TRAIN_SHARD = "aejax_mnist-train.array_record-00000-of-00001"


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, Path.unlink], ids=["truncated", "flipped", "deleted"])
@pytest.mark.parametrize("manifest", [True, False], ids=["verified-before", "never-verified"])
def test_damaged_prepared_data_is_one_line_naming_the_directory(synthetic_idx, tmp_path, damage, manifest):
    """Damage to a prepared file is caught before any record is used: by its recorded sha256 once the directory
    has been verified, else by decoding every record against the sources."""
    root, checksums = synthetic_idx
    before = _load(root, checksums, tmp_path, "test")
    prepared = tmp_path / "tfds" / "aejax_mnist" / "1.0.0"
    assert sorted(json.loads((prepared / mnist_tfds.MANIFEST).read_text())) == sorted(
        p.name for p in prepared.iterdir() if p.name != mnist_tfds.MANIFEST)
    if not manifest:
        (prepared / mnist_tfds.MANIFEST).unlink()
    damage(prepared / TRAIN_SHARD)
    for split in data.SPLITS:
        with pytest.raises(AejaxError, match=f"prepared MNIST in {re.escape(str(prepared))} is damaged") as info:
            _load(root, checksums, tmp_path, split)
        assert "\n" not in str(info.value) and f"delete {prepared} and run again" in str(info.value)
    shutil.rmtree(prepared)
    np.testing.assert_array_equal(_load(root, checksums, tmp_path, "test").images, before.images)


def test_prepared_data_that_decodes_to_other_content_is_refused(synthetic_idx, tmp_path):
    """Intact files of the wrong content (another preparation's, say) fail the content check."""
    root, checksums = synthetic_idx
    _load(root, checksums, tmp_path)
    prepared = tmp_path / "tfds" / "aejax_mnist" / "1.0.0"
    (prepared / mnist_tfds.MANIFEST).unlink()
    other = {**checksums, "t10k-labels-idx1-ubyte.gz": "0" * 64}
    with pytest.raises(AejaxError, match="its test split does not decode to the content of t10k-labels"):
        _load(root, other, tmp_path)
    assert not (prepared / mnist_tfds.MANIFEST).exists()


def test_an_unreadable_manifest_or_an_added_file_is_damage(synthetic_idx, tmp_path):
    root, checksums = synthetic_idx
    _load(root, checksums, tmp_path)
    prepared = tmp_path / "tfds" / "aejax_mnist" / "1.0.0"
    (prepared / "stray.bin").write_bytes(b"x")
    with pytest.raises(AejaxError, match="stray.bin was not part of it when it was verified"):
        _load(root, checksums, tmp_path)
    (prepared / "stray.bin").unlink()
    (prepared / mnist_tfds.MANIFEST).write_text("{not json")
    with pytest.raises(AejaxError, match=f"its {mnist_tfds.MANIFEST} cannot be read"):
        _load(root, checksums, tmp_path)


def test_a_garbled_dataset_info_or_a_file_as_data_dir_is_one_line_saying_what_is_wrong(synthetic_idx, tmp_path):
    root, checksums = synthetic_idx
    _load(root, checksums, tmp_path)
    prepared = tmp_path / "tfds" / "aejax_mnist" / "1.0.0"
    (prepared / "dataset_info.json").write_text("garbage")
    with pytest.raises(AejaxError, match="dataset_info.json fails its sha256"):
        _load(root, checksums, tmp_path)
    (prepared / mnist_tfds.MANIFEST).unlink()  # never verified: tfds's own reading fails, in one line
    with pytest.raises(AejaxError, match="is damaged: it cannot be read") as info:
        _load(root, checksums, tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(AejaxError, match="cannot prepare MNIST in .*: a file stands where a directory must be"):
        data.load_mnist("test", data_dir=tmp_path / "file", mnist_dir=root, checksums=checksums)


PREPARE = r"""
import sys
from aejax import data
print(len(data.load_mnist("test", data_dir=sys.argv[1], mnist_dir=sys.argv[2]).images))
"""


@pytest.mark.slow  # fresh processes; CI runs it (`pytest -m slow`)
def test_two_processes_preparing_one_fresh_data_dir_both_succeed(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", PREPARE, str(tmp_path / "tfds"), str(mnist_idx.VENDORED_DIR)],
                              cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-2000:]
        assert stdout.strip().splitlines()[-1] == "10000"


@pytest.mark.slow  # fresh processes; CI runs it (`pytest -m slow`)
def test_training_on_damaged_prepared_data_stops_before_the_run_directory(synthetic_data_dir, tmp_path):
    """The command line: one line on stderr, exit 2, no traceback, and no run directory made."""
    damaged = tmp_path / "tfds"
    shutil.copytree(synthetic_data_dir, damaged)
    _flip_a_byte(damaged / "aejax_mnist" / "1.0.0" / TRAIN_SHARD)
    out = tmp_path / "run"
    proc = run_cli("aejax.train", "--epochs", "1", "--data-dir", str(damaged), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is damaged" in lines[0] and TRAIN_SHARD in lines[0], proc.stderr
    assert not out.exists()


NO_TFDS = ("tensorflow_datasets", "array_record", "tensorboardX")


@pytest.mark.slow  # fresh processes; CI runs it (`pytest -m slow`)
def test_without_tfds_the_idx_files_give_the_same_arrays(synthetic_idx, tmp_path):
    """Where tensorflow-datasets cannot be imported, MNIST comes from the IDX files directly: the same arrays
    (and sizes, and first-examples rows) as through tfds, with one warning line."""
    root, checksums = synthetic_idx
    script = without(*NO_TFDS) + f"""
import numpy as np
from aejax import data
assert data.tfds_available() is None
kw = dict(data_dir={str(tmp_path / 'tfds')!r}, mnist_dir={str(root)!r}, checksums={checksums!r})
np.savez({str(tmp_path / 'direct.npz')!r}, **{{f"{{s}}_{{k}}": getattr(data.load_mnist(s, **kw), k)
                                            for s in data.SPLITS for k in ("images", "labels")}},
         head=data.load_mnist("train", examples=7, **kw).images, n=data.split_size("train", **kw))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "tensorflow-datasets cannot be imported" in warnings[0], proc.stderr
    assert not (tmp_path / "tfds").exists()  # nothing prepared
    direct = np.load(tmp_path / "direct.npz")
    for split in data.SPLITS:
        through_tfds = _load(root, checksums, tmp_path, split)
        np.testing.assert_array_equal(direct[f"{split}_images"], through_tfds.images)
        np.testing.assert_array_equal(direct[f"{split}_labels"], through_tfds.labels)
        assert direct[f"{split}_labels"].dtype == through_tfds.labels.dtype == np.int32
    np.testing.assert_array_equal(direct["head"], _load_head(root, checksums, tmp_path))
    assert int(direct["n"]) == len(_load(root, checksums, tmp_path).labels)


def _load_head(root, checksums, tmp_path):
    return data.load_mnist("train", data_dir=tmp_path / "tfds", mnist_dir=root, checksums=checksums,
                           examples=7).images


@pytest.mark.slow  # fresh processes; CI runs it (`pytest -m slow`)
def test_a_run_trains_where_tfds_and_tensorboardx_cannot_be_imported(tmp_path, mnist_test_images):
    """`python -m aejax.train` on the vendored IDX files with neither package: it trains, warns once for each,
    and its result equals a run given the same arrays in memory."""
    out = tmp_path / "run"
    script = without(*NO_TFDS) + "import runpy; runpy.run_module('aejax.train', run_name='__main__')"
    argv = ["--epochs", "1", "--train-examples", "500", "--batch-size", "50", "--latent-dim", "16", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", script, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in (proc.stdout + proc.stderr).splitlines()
              if line.startswith("warning:") and "learned nothing" not in line]  # 10 steps learn little
    assert len(warned) == 2, warned
    assert "tensorflow-datasets cannot be imported" in warned[0] and "tensorboardX is not installed" in warned[1]
    assert not (out / "tensorboard").exists() or not any((out / "tensorboard").rglob("events*"))
    from aejax.config import Config
    from aejax.training import loop

    train = data.read_idx(data.VENDORED_DIR / data.FILES["train"][0], data.PINNED_SHA256[data.FILES["train"][0]])
    reference = loop.run(Config(epochs=1, train_examples=500, batch_size=50, latent_dim=16), tmp_path / "reference",
                         data=(train[:500], data.read_idx(data.VENDORED_DIR / data.FILES["test"][0], None)),
                         log=lambda *_: None).rows
    assert json.loads((out / "results.json").read_text())[0]["test_mse"] == reference[0]["test_mse"]
