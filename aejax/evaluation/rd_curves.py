"""Rate-distortion curves compared: the front of a curve's operating points, its bits at a given PSNR, and the
Bjontegaard delta rate of one curve against another. A curve is a list of points, dicts with `psnr_db` and a
rate under `key` (bits per image, whole-file or payload)."""

from __future__ import annotations

import numpy as np


def front(points: list[dict], key: str) -> list[tuple[float, float]]:
    """(PSNR, bits) of the curve's points that no other point beats (fewer or as many bits with a higher PSNR),
    by rising bits: the operating points anyone would choose. A lambda whose model came out worse than a cheaper
    one's is left out, so every curve rises and its fits and interpolations are meaningful."""
    pts = sorted((p[key], p["psnr_db"]) for p in points if p.get("psnr_db") is not None and p[key] > 0)
    kept: list[tuple[float, float]] = []
    for bits, psnr in pts:
        if not kept or psnr > kept[-1][0]:
            kept.append((psnr, bits))
    return kept


def bits_at(points: list[dict], psnr: float, key: str) -> float | None:
    """Bits per image at `psnr` dB on the curve's front, interpolating log-bits linearly in PSNR between its
    points (None outside the front's range)."""
    pts = front(points, key)
    if len(pts) < 2 or not pts[0][0] <= psnr <= pts[-1][0]:
        return None
    return float(np.exp(np.interp(psnr, [p for p, _ in pts], [np.log(b) for _, b in pts])))


def bd_rate(test: list[dict], anchor: list[dict], key: str) -> float | None:
    """Bjontegaard delta rate (%) of `test` against `anchor`: the mean difference in log-bits at equal PSNR over
    the PSNR range both fronts cover (`front`), each front's log-bits interpolated piecewise linearly in PSNR (as
    `bits_at`; the classic cubic fit oscillates through curves of a few points spanning 1-2 dB); negative means
    `test` needs fewer bits. None where a front has fewer than 2 points or the ranges do not overlap."""
    fa, fb = front(test, key), front(anchor, key)
    if len(fa) < 2 or len(fb) < 2:
        return None
    low, high = max(fa[0][0], fb[0][0]), min(fa[-1][0], fb[-1][0])
    if not high > low:
        return None
    grid = np.linspace(low, high, 1001)
    log_bits = [np.interp(grid, [p for p, _ in f], np.log10([b for _, b in f])) for f in (fa, fb)]
    return float((10 ** np.mean(log_bits[0] - log_bits[1]) - 1) * 100)
