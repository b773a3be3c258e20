"""Images for a run: a `Source` of training and test images (`source`), MNIST read from its IDX files or
through a TF-free tensorflow-datasets builder (`mnist`, `mnist_idx`, `mnist_tfds`), the bundled image sets
(`image_sets`, `image_tfds`), a folder of image files (`image_folder`, `pixels`), datasets by name (`datasets`)
and input corruption for denoising (`corruption`).
"""

from aejax.data.image_folder import folder
from aejax.data.mnist import load_mnist, mnist_source, split_size, tfds_available
from aejax.data.mnist_idx import FILES, IMAGES_MAGIC, LABELS_MAGIC, PINNED_SHA256, SPLITS, VENDORED_DIR, Mnist, read_idx
from aejax.data.source import Source, array_source, check_images

__all__ = ["FILES", "IMAGES_MAGIC", "LABELS_MAGIC", "PINNED_SHA256", "SPLITS", "VENDORED_DIR", "Mnist", "Source",
           "array_source", "check_images", "folder", "load_mnist", "mnist_source", "read_idx", "split_size",
           "tfds_available"]
