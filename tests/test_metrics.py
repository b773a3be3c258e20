import jax.numpy as jnp
import numpy as np
import pytest

from aejax.evaluation import baselines, metrics


def test_pca_reconstruction_matches_numpy_svd(mnist_test_images):
    images = mnist_test_images[:1000]
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    pcas = metrics.fit_pca(jnp.asarray(images), [16, 64])
    for k, pca in pcas.items():
        ref = ((x - mean) @ vt[:k].T) @ vt[:k] + mean
        ref_mse = np.mean((ref - x) ** 2)
        got = metrics.reconstruction_metrics(metrics.Pca.reconstruct, pca, jnp.asarray(images), chunk=300)
        assert abs(got["mse"] - ref_mse) < 1e-5, (k, got["mse"], ref_mse)
        recon = np.asarray(pca.reconstruct(jnp.asarray(x, jnp.float32).reshape(-1, 28, 28, 1)))
        np.testing.assert_allclose(recon.reshape(len(x), -1), ref, atol=1e-4)
        variance = (np.linalg.svd(x - mean, compute_uv=False) ** 2 / len(x))[:k]
        np.testing.assert_allclose(pca.variance, variance, rtol=1e-3)
    # Float rows (e.g. codes) fit the same way as images.
    rows = metrics.fit_pca(jnp.asarray(x, jnp.float32), [16])[16]
    np.testing.assert_allclose(np.abs(rows.components), np.abs(pcas[16].components), atol=1e-4)


def test_pca_of_a_large_uint8_set_is_fitted_in_chunks_and_agrees(mnist_test_images, tmp_path):
    np.save(tmp_path / "x.npy", mnist_test_images[:2000])
    images = np.load(tmp_path / "x.npy", mmap_mode="r")  # on disk: read a chunk at a time
    whole = metrics.fit_pca(jnp.asarray(images), [16])[16]
    chunked = metrics.fit_pca(images, [16], whole_bytes=0, chunk=300)[16]
    np.testing.assert_allclose(chunked.mean, whole.mean, atol=1e-6)
    np.testing.assert_allclose(chunked.variance, whole.variance, rtol=1e-4)
    x = jnp.asarray(images[:500])
    mses = [metrics.reconstruction_metrics(metrics.Pca.reconstruct, p, x, chunk=250)["mse"] for p in (whole, chunked)]
    assert mses[0] == pytest.approx(mses[1], rel=1e-5)


def test_metrics_of_a_perfect_and_a_known_reconstruction(mnist_test_images):
    images = jnp.asarray(mnist_test_images[:100])
    perfect = metrics.reconstruction_metrics(lambda _, x: x, None, images, chunk=64)
    assert perfect["mse"] == 0.0 and abs(perfect["ssim"] - 1.0) < 1e-5
    shifted = metrics.reconstruction_metrics(lambda _, x: jnp.clip(x + 0.1, 0, 1), None, images, chunk=64)
    x = np.asarray(images, np.float64) / 255
    expected = np.mean((np.clip(x + 0.1, 0, 1) - x) ** 2)
    assert abs(shifted["mse"] - expected) < 1e-7
    assert abs(shifted["psnr_db"] - 10 * np.log10(1 / expected)) < 1e-3
    assert shifted["ssim"] < 1.0


def test_ssim_equals_scikit_image(mnist_test_images):
    """scikit-image's structural_similarity with the same Gaussian window (sigma 1.5, 11 taps), population
    covariance and data range 1, on real digits against other digits, noisy copies and blurred copies."""
    from skimage.metrics import structural_similarity

    x = np.asarray(mnist_test_images[:12], np.float64) / 255
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 0.2, x.shape), 0, 1)
    blurred = np.asarray(baselines.gaussian_blur(jnp.asarray(x, jnp.float32)), np.float64)
    for a, b in ((x, x[::-1]), (x, noisy), (x, blurred)):
        got = np.asarray(metrics.ssim(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
        want = [structural_similarity(a[i, ..., 0], b[i, ..., 0], gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0) for i in range(len(a))]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_one_evaluation_path_for_models_and_given_reconstructions(mnist_test_images):
    """Scoring a function's outputs and scoring the same outputs precomputed agree, also with a remainder
    chunk (1,000 images in chunks of 300), and the SSIM-free pass gives the same squared error."""
    images = jnp.asarray(mnist_test_images[:1000])
    fn = lambda _, x: jnp.sqrt(x)  # noqa: E731
    direct = metrics.reconstruction_metrics(fn, None, images, chunk=300)
    given = metrics.score(images, jnp.sqrt(metrics.to_float(images)), chunk=300)
    assert direct == pytest.approx(given, rel=1e-6)
    x = np.asarray(images, np.float64) / 255
    assert direct["mse"] == pytest.approx(np.mean((np.sqrt(x) - x) ** 2), rel=1e-5)
    fast = metrics.finalize(metrics.totals(fn, None, images, chunk=300, with_ssim=False))
    assert set(fast) == {"mse", "psnr_db"} and fast["mse"] == pytest.approx(direct["mse"], rel=1e-6)


def test_mean_image_baseline(mnist_test_images):
    train, test = mnist_test_images[:1500], mnist_test_images[1500:]
    mean = np.asarray(train, np.float64).mean(axis=0) / 255
    want = np.mean((np.asarray(test, np.float64) / 255 - mean) ** 2)
    def rows(r: range) -> np.ndarray:
        read.append(len(r))
        return train[r.start:r.stop]

    read = []
    got = metrics.mean_image_mse(rows, len(train), jnp.asarray(test), chunk=400)
    assert got == pytest.approx(want, rel=1e-12)  # exact sums of the uint8 values, float64 after
    assert read == [400, 400, 400, 300]  # a chunk at a time, never the whole set
    floats = metrics.mean_image_mse(lambda r: train[r.start:r.stop] / np.float32(255), len(train), test / 255.0)
    assert floats == pytest.approx(want, rel=1e-6)


def test_nearest_neighbour_accuracy_by_hand():
    # Two tight pairs far apart: each point's nearest other point shares its label -> 1.0.
    codes = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.0, 5.1]])
    assert metrics.nearest_neighbour_accuracy(codes, np.array([0, 0, 1, 1]), chunk=3) == 1.0
    # Crossed labels: every nearest neighbour has the other label -> 0.0 (a point never counts as its own).
    assert metrics.nearest_neighbour_accuracy(codes, np.array([0, 1, 0, 1]), chunk=3) == 0.0
    # One of four disagrees with its neighbour's label.
    codes = np.array([[0.0], [1.0], [10.0], [12.0]])
    # 10 -> 12 and 12 -> 10 cross labels
    assert metrics.nearest_neighbour_accuracy(codes, np.array([0, 0, 1, 2])) == 0.5
