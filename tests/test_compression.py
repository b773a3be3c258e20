import io

import numpy as np
import pytest
from PIL import Image

from aejax.errors import AejaxError
from aejax.evaluation import compression


def test_quantize_and_dequantize_by_hand():
    z = np.array([[-0.26, 0.0, 0.24, 0.26, 1.0]])
    q = compression.quantize(z, 0.5)
    assert q.tolist() == [[-1, 0, 0, 1, 2]]  # nearest: -0.52 -> -1, 0.48 -> 0, 0.52 -> 1
    np.testing.assert_array_equal(compression.dequantize(q, 0.5), [[-0.5, 0.0, 0.0, 0.5, 1.0]])
    # Exact ties (z / step = k + 1/2) round half to even.
    ties = np.array([[0.25, 0.75, 1.25, -0.25, -0.75]])  # / 0.5 = 0.5, 1.5, 2.5, -0.5, -1.5
    assert compression.quantize(ties, 0.5).tolist() == [[0, 2, 2, 0, -2]]


def test_entropy_by_hand():
    # Column 0: {0, 0, 1, 1} -> 1 bit. Column 1: constant -> 0 bits. Column 2: {0, 1, 2, 3} -> 2 bits.
    # Column 3: {0, 0, 0, 1} -> -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.811278... bits.
    symbols = np.array([[0, 5, 0, 0], [0, 5, 1, 0], [1, 5, 2, 0], [1, 5, 3, 1]])
    expected = 1.0 + 0.0 + 2.0 + (-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))
    assert abs(compression.entropy_bits(symbols) - expected) < 1e-12
    assert abs(expected - 3.8112781244591327) < 1e-12


def test_png_is_lossless_and_jpeg_decodes(mnist_test_images):
    images = mnist_test_images[:20]
    for image, png in zip(images, compression.png_files(images)):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)))[..., None], image)
    bits = compression.png_bits(images)
    assert bits.shape == (20,) and np.all(bits > 0) and np.all(bits < 8 * 28 * 28 * 2)
    low_bits, low = compression.jpeg(images, 10)
    high_bits, high = compression.jpeg(images, 95)
    assert low.shape == images.shape and low.dtype == np.uint8
    assert low_bits.mean() < high_bits.mean()
    err = lambda x: np.mean((x.astype(float) - images) ** 2)  # noqa: E731
    assert err(high) < err(low)
    # a blank image costs the format's fixed overhead, less than any digit
    assert 0 < compression.blank_bits("png") < bits.min()
    assert 0 < compression.blank_bits("jpeg", 10) < low_bits.min()


def test_jpeg_xl_avif_and_the_lossless_formats(mnist_test_images):
    images = mnist_test_images[:6]
    err = lambda x: np.mean((x.astype(float) - images) ** 2)  # noqa: E731
    for codec in (compression.jxl, compression.avif, compression.webp):
        (low_bits, low), (high_bits, high) = codec(images, 0), codec(images, 90)
        assert low.shape == images.shape and low.dtype == np.uint8
        assert low_bits.mean() < high_bits.mean() and err(high) < err(low), codec.__name__
    sizes = {fmt: compression.lossless_bits(images, fmt) for fmt in ("png", "webp", "jxl")}  # each checked exact
    assert all(s.shape == (6,) and np.all(s > 0) for s in sizes.values())
    with pytest.raises(AejaxError, match="lossless formats"):
        compression.lossless_bits(images, "gif")


def test_finer_steps_cost_more_bits_and_distort_less(mnist_test_images):
    images = mnist_test_images[:500]
    x = images.reshape(500, -1).astype(np.float32) / 255
    identity = lambda z: z.reshape(-1, 28, 28, 1)  # noqa: E731  quantise the pixels themselves
    points = compression.code_curve(x, identity, images, (0.5, 1.0, 2.0))
    bits = [p["bits_per_image"] for p in points]
    mse = [p["mse"] for p in points]
    assert bits[0] > bits[1] > bits[2] and mse[0] < mse[1] < mse[2]
