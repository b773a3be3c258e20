"""Two small real image sets built from files that scikit-image ships, so they need no download.

- `lfw_faces`: scikit-image's `lfw_subset` (200 grey 25x25 crops from Labeled Faces in the Wild: 100 faces, then
  100 non-face patches), scaled to 0..255 and rounded to uint8 `[N, 25, 25, 1]`. Test: every fifth image
  (index 4, 9, ...), 40 images, half of them faces; train: the other 160.
- `photo_patches`: RGB 32x32 patches, uint8 `[N, 32, 32, 3]`, cut on a 32-pixel grid (no overlap, from the top
  left, partial patches at the right and bottom edges dropped) from scikit-image's colour photographs. Split by
  photograph, so no test patch shares a picture with a training patch: train from astronaut, coffee,
  hubble_deep_field, immunohistochemistry and the left motorcycle view (1,910 patches); test from chelsea and
  rocket (386 patches).

Both are deterministic functions of the installed scikit-image files. `aejax.data.image_tfds` turns them into tfds
datasets (`aejax.data.datasets` reads them through tfds where it can be imported).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aejax.errors import AejaxError

PATCH = 32
TRAIN_PHOTOS = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "motorcycle_left")
TEST_PHOTOS = ("chelsea", "rocket")
LFW_SHAPE = (25, 25, 1)
PATCH_SHAPE = (PATCH, PATCH, 3)


def _skimage_data():
    try:
        import skimage.data
    except ImportError as e:
        raise AejaxError(f"this dataset is built from scikit-image's bundled images, and scikit-image cannot be "
                         f"imported ({e}); pip install scikit-image") from None
    return skimage.data


def lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    """(train `[160, 25, 25, 1]`, test `[40, 25, 25, 1]`) uint8."""
    faces = np.round(_skimage_data().lfw_subset() * 255).astype(np.uint8)[..., None]  # [200, 25, 25, 1]
    test = np.arange(len(faces)) % 5 == 4
    return faces[~test], faces[test]


def photo(name: str) -> np.ndarray:
    """One of the photographs the set is cut from (`TRAIN_PHOTOS`, `TEST_PHOTOS`), uint8 `[H, W, C]`."""
    data = _skimage_data()
    loaders: dict[str, Callable[[], np.ndarray]] = {"motorcycle_left": lambda: data.stereo_motorcycle()[0]}
    image = loaders.get(name, getattr(data, name, lambda: None))()
    return np.asarray(image)


def patches(image: np.ndarray, size: int = PATCH) -> np.ndarray:
    """Non-overlapping `size` x `size` patches of an `[H, W, C]` image, row by row: `[n, size, size, C]`."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    grid = image[: rows * size, : cols * size].reshape(rows, size, cols, size, image.shape[2])
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * cols, size, size, image.shape[2])


def photo_patches() -> tuple[np.ndarray, np.ndarray]:
    """(train `[1910, 32, 32, 3]`, test `[386, 32, 32, 3]`) uint8, photographs in the order of `TRAIN_PHOTOS`
    and `TEST_PHOTOS`."""
    def cut(names: tuple[str, ...]) -> np.ndarray:
        return np.concatenate([patches(photo(n)[..., :3].astype(np.uint8)) for n in names])

    return cut(TRAIN_PHOTOS), cut(TEST_PHOTOS)


BUILDERS: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], tuple[int, int, int], str]] = {
    "lfw_faces": (lfw_faces, LFW_SHAPE, "200 grey 25x25 crops of scikit-image's lfw_subset (faces and non-faces)"),
    "photo_patches": (photo_patches, PATCH_SHAPE, "RGB 32x32 patches of scikit-image's colour photographs, "
                                                  "split by photograph"),
}
