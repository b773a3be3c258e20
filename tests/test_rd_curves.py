"""Rate-distortion fronts, bits at a PSNR and BD-rate (`aejax.evaluation.rd_curves`)."""

import pytest

from aejax.evaluation.rd_curves import bd_rate, bits_at, front


def test_codec_comparison_summaries_use_each_curves_front():
    def curve(pairs):  # (bits, psnr) -> the comparison's points
        return [{"payload_bits_per_image": b, "psnr_db": p} for b, p in pairs]

    anchor = curve([(100, 20.0), (200, 24.0), (400, 28.0)])
    worse_lambda = curve([(100, 20.0), (150, 19.0), (200, 24.0), (300, 23.5), (400, 28.0)])
    assert front(worse_lambda, "payload_bits_per_image") == [(20.0, 100), (24.0, 200), (28.0, 400)]
    assert bits_at(worse_lambda, 22.0, "payload_bits_per_image") == pytest.approx(100 * 2 ** 0.5)
    assert bits_at(anchor, 30.0, "payload_bits_per_image") is None
    assert bd_rate(worse_lambda, anchor, "payload_bits_per_image") == pytest.approx(0.0, abs=1e-9)
    half = curve([(50, 20.0), (100, 24.0), (200, 28.0)])
    assert bd_rate(half, anchor, "payload_bits_per_image") == pytest.approx(-50.0)
    assert bd_rate(curve([(10, 10.0), (20, 12.0)]), anchor, "payload_bits_per_image") is None  # no common range
