import jax.numpy as jnp
import numpy as np

from aejax import metrics


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


def test_ssim_is_symmetric_and_bounded(mnist_test_images):
    a = metrics.to_float(jnp.asarray(mnist_test_images[:8]))
    b = metrics.to_float(jnp.asarray(mnist_test_images[8:16]))
    s_ab, s_ba = metrics.ssim(a, b), metrics.ssim(b, a)
    np.testing.assert_allclose(s_ab, s_ba, rtol=1e-5)
    assert bool(jnp.all(s_ab < 0.9)) and bool(jnp.all(s_ab > -1))


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
