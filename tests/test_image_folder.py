"""A folder of image files as a dataset: the pixel rules (16-bit, alpha, palette, orientation, size), the splits
that adding files never moves, the prepared shards (reused, re-prepared when the folder changes, damage refused,
one preparer at a time), one-line errors, and a folder trained from the command line with validation and early
stopping, then reloaded."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aejax
from aejax import cli
from aejax.config import Config
from aejax.data import Source, image_folder, pixels
from aejax.errors import AejaxError
from aejax.training.plan import hold_out
from tests.helpers import run_in_process


def write_folder(root: Path, count: int, shape=(12, 10, 3), seed: int = 0, start: int = 0) -> None:
    """`count` random PNGs `[H, W, C]` in three sub-folders of `root`."""
    rng = np.random.default_rng(seed)
    for i in range(start, start + count):
        folder = root / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(image[..., 0] if shape[-1] == 1 else image).save(folder / f"{i:04d}.png")


def quiet(line: str) -> None:
    pass


def test_16_bit_images_are_scaled_not_thresholded():
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    got = pixels.pixels(Image.fromarray(values), 1, None, "resize", "x.png")
    assert got.shape == (1, 4, 1) and got[0, :, 0].tolist() == [0, 1, 128, 255]


def test_alpha_is_composited_onto_black_and_palettes_become_colour():
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [255, 255, 255, 128]]], np.uint8)
    got = pixels.pixels(Image.fromarray(rgba, "RGBA"), 3, None, "resize", "x.png")
    assert got[0].tolist() == [[200, 100, 50], [0, 0, 0], [128, 128, 128]]
    la = pixels.pixels(Image.fromarray(np.array([[[90, 255], [90, 0]]], np.uint8), "LA"), 1, None, "resize", "x")
    assert la[0, :, 0].tolist() == [90, 0]
    palette = Image.fromarray(rgba[..., :3]).convert("P")
    assert pixels.header(palette)[3] and pixels.pixels(palette, 3, None, "resize", "x").shape == (1, 3, 3)


def test_channels_convert_by_luma_or_copy():
    rgb = np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8)
    assert pixels.pixels(Image.fromarray(rgb), 1, None, "resize", "x")[0, :, 0].tolist() == [76, 150]
    grey = pixels.pixels(Image.fromarray(np.array([[7, 9]], np.uint8)), 3, None, "resize", "x")
    assert grey[0].tolist() == [[7, 7, 7], [9, 9, 9]]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3) * 40)
    exif = image.getexif()
    exif[pixels.EXIF_ORIENTATION] = 6  # rotate 90 degrees clockwise to view
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    with Image.open(tmp_path / "r.jpg") as opened:
        assert pixels.header(opened)[1:3] == (3, 2)
        assert pixels.pixels(opened, 1, None, "resize", "r.jpg").shape == (3, 2, 1)


def test_fit_resizes_to_cover_or_crops_the_centre():
    image = Image.fromarray(np.arange(40 * 60, dtype=np.uint32).reshape(40, 60).astype(np.uint8))
    assert pixels.pixels(image, 1, (20, 20), "resize", "x").shape == (20, 20, 1)
    cropped = pixels.pixels(image, 1, (20, 30), "crop", "x")
    assert np.array_equal(cropped[..., 0], np.asarray(image)[10:30, 15:45])
    with pytest.raises(AejaxError, match=r"x is 40x60, smaller than image_size 50x50; crop cannot enlarge"):
        pixels.pixels(image, 1, (50, 50), "crop", "x")


def test_adding_files_moves_none_between_the_splits():
    before = [f"a/{i}.png" for i in range(400)]
    after = before + [f"b/{i}.png" for i in range(400)]
    train0, test0, hash0, _ = image_folder.splits(before, 0)
    train1, test1, hash1, _ = image_folder.splits(after, 0)
    assert set(test0) == set(test1) & set(before) and set(train0) == set(train1) & set(before)
    assert 20 < len(test0) < 60 and hash0 == sorted(hash0) and 0 <= hash0[0] and hash0[-1] < 1
    config = Config(validation_examples=0.2, batch_size=1)
    held = [set(np.asarray(names)[_held_rows(config, hashes)]) for names, hashes in ((train0, hash0), (train1, hash1))]
    assert held[0] == held[1] & set(before) and len(held[1]) > len(held[0])
    assert image_folder.splits(before, 1)[1] != test0  # the split seed chooses another split


def _held_rows(config: Config, hashes: list[float]) -> np.ndarray:
    """Which rows a validation split holds out of a source ordered by `hashes` (each row's value is its index)."""
    n = len(hashes)
    rows = np.arange(n, dtype=np.uint8)[:, None, None, None] if n < 256 else np.arange(n)[:, None, None, None]
    source = Source(n, lambda r: rows[r.start:r.stop], rows[:1], lambda i: rows[np.asarray(i)],
                    split_hash=np.asarray(hashes))
    _, validation = hold_out(config, source, n)
    return validation[:, 0, 0, 0].astype(int)


def test_train_and_test_sub_folders_are_honoured(tmp_path):
    write_folder(tmp_path / "set" / "train", 30)
    write_folder(tmp_path / "set" / "test", 6, seed=1)
    (tmp_path / "set" / "extra").mkdir()
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "set" / "extra" / "x.png")
    source = aejax.data.folder(tmp_path / "set", data_dir=tmp_path / "data", log=quiet)
    assert (source.n_train, len(source.test), source.shape) == (30, 6, (12, 10, 3))
    assert "1 files outside train/ and test/ left out" in source.note
    expected = np.asarray(Image.open(sorted((tmp_path / "set" / "test").rglob("*.png"))[0]))
    assert np.array_equal(source.test[0], expected)


def test_prepared_once_reused_re_prepared_when_changed_and_damage_refused(tmp_path):
    root, data = tmp_path / "imgs", tmp_path / "data"
    write_folder(root, 60, shape=(8, 8, 1))
    lines = []
    first = aejax.data.folder(root, data_dir=data, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("preparing image folder") and first.shape == (8, 8, 1)
    second = aejax.data.folder(root, data_dir=data, log=lines.append)
    assert len(lines) == 1 and np.array_equal(second.take(np.arange(5)), first.rows(range(5)))
    write_folder(root, 3, shape=(8, 8, 1), seed=2, start=60)
    third = aejax.data.folder(root, data_dir=data, log=lines.append)
    assert "changed since it was prepared" in lines[1] and third.n_train + len(third.test) == 63
    shard = next(data.rglob("train-00000.array_record"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 1
    shard.write_bytes(bytes(raw))
    with pytest.raises(AejaxError, match=r"is damaged: train-00000.array_record differs from its checksum; delete"):
        aejax.data.folder(root, data_dir=data, log=quiet)


def test_two_runs_preparing_one_folder_prepare_it_once(tmp_path):
    write_folder(tmp_path / "imgs", 90)
    lines, errors = [], []

    def load() -> None:
        try:
            aejax.data.folder(tmp_path / "imgs", data_dir=tmp_path / "data", log=lines.append)
        except Exception as e:  # noqa: BLE001 - reported by the assertion
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(lines) == 1


@pytest.mark.parametrize("case, message", [
    ("missing", r"image folder .*nope does not exist"),
    ("empty", r"holds no images \(\.bmp, \.jpeg"),
    ("mixed", r"differ in size: class0/0000\.png is 12x10, class1/0001\.png is 9x10; give image_size HxW"),
    ("unreadable", r"cannot read .*class2/bad\.png as an image \(UnidentifiedImageError"),
    ("float", r"floating-point pixels \(mode F\)"),
    ("too few", r"none of its 1 images is a (training|test) image"),
])
def test_bad_folders_are_one_line_errors(tmp_path, case, message):
    root = tmp_path / "imgs"
    root.mkdir()
    if case in ("mixed", "unreadable", "float"):
        write_folder(root, 30)
    if case == "mixed":
        Image.fromarray(np.zeros((9, 10, 3), np.uint8)).save(root / "class1" / "0001.png")
    if case == "unreadable":
        (root / "class2" / "bad.png").write_bytes(b"not a png")
    if case == "float":
        Image.fromarray(np.zeros((12, 10), np.float32)).save(root / "class0" / "f.tif")
    if case == "too few":
        write_folder(root, 1)
    with pytest.raises(AejaxError, match=message) as error:
        aejax.data.folder(root / "nope" if case == "missing" else root, data_dir=tmp_path / "data", log=quiet)
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "data").rglob("*.partial-*"))


def test_folder_settings_are_checked_and_belong_to_folders():
    with pytest.raises(AejaxError, match="image_size must be HxW"):
        Config(dataset="folder:x", image_size="64")
    with pytest.raises(AejaxError, match="channels must be 1"):
        Config(dataset="folder:x", channels=2)
    with pytest.raises(AejaxError, match="apply to a folder of images"):
        Config(dataset="mnist", image_size="28x28")
    assert Config(dataset="folder:my images", image_size="64x48", image_fit="crop").image_fit == "crop"


def test_a_folder_trains_from_the_command_line_with_validation_and_early_stopping_and_reloads(tmp_path, capsys):
    root = tmp_path / "my images"
    write_folder(root, 150, shape=(20, 16, 3))
    Image.fromarray(np.full((30, 24), 40_000, np.uint16)).save(root / "class0" / "deep.png")  # grey, 16-bit
    out = tmp_path / "run"
    code, stdout, stderr = run_in_process(
        capsys, cli.main, "--dataset", f"folder:{root}", "--image-size", "12x12", "--channels", "3",
        "--data-dir", str(tmp_path / "data"), "--model", "conv", "--latent-dim", "8", "--epochs", "3",
        "--batch-size", "16", "--validation-examples", "0.2", "--early-stopping", "1", "--select", "best",
        "--out", str(out))
    assert code == 0, stderr
    assert "preparing image folder" in stdout and "image folder" in stdout and "12x12x3" in stdout
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["dataset"], config["image_shape"], config["image_size"], config["image_fit"]) == (
        f"folder:{root}", [12, 12, 3], "12x12", "resize")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("val_mse" in m for m in metrics)
    (row,) = json.loads((out / "results.json").read_text())
    model, variables, loaded = aejax.load_model(out)
    assert loaded.image_shape == (12, 12, 3) and loaded.dataset == f"folder:{root}"
    source = aejax.data.folder(root, channels=3, image_size="12x12", data_dir=tmp_path / "data", log=quiet)
    images = source.test.astype(np.float32) / 255
    mse = float(np.mean((np.asarray(aejax.reconstruct(model, variables, images)) - images) ** 2))
    assert mse == pytest.approx(row["test_mse"], rel=1e-4)


def test_a_streamed_folder_trains_bit_for_bit_as_the_device_resident_one(tmp_path):
    write_folder(tmp_path / "imgs", 120, shape=(8, 8, 1))
    rows = {}
    for placement in ("device", "stream"):
        config = Config(dataset=f"folder:{tmp_path / 'imgs'}", model="linear", latent_dim=4, epochs=2,
                        batch_size=8, data_placement=placement)
        result = aejax.run(config, tmp_path / placement, data_dir=str(tmp_path / "data"), log=quiet)
        rows[placement] = result.rows[0]
    assert rows["device"]["test_mse"] == rows["stream"]["test_mse"]
    assert rows["device"]["final_train_loss"] == rows["stream"]["final_train_loss"]
