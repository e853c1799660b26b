"""Analyze: per-band statistics over many scenes, streamed window by window.

Memory stays bounded by one strip of one scene: a first pass merges count, mean, variance (Chan
et al.'s parallel update), min and max; a second pass fills a fine histogram between the global
min and max, from which the percentiles are read (exact to one bin width, ``(max-min)/bins``).

``results/stats/bands.json``::

    {"bands": [{"name": "blue", "count": 123, "mean": 0.1, "std": 0.02, "min": 0.0, "max": 0.9,
                "p1": 0.01, "p2": 0.02, "p98": 0.5, "p99": 0.6}, ...],
     "scenes": ["reef_01", ...], "histogram_bins": 65536}

``std`` is the population standard deviation (numpy's default, ``ddof=0``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from snakemap.core.countdown import Countdown
from snakemap.core.io import write_json
from snakemap.core.status import SceneStatus, status_path

PERCENTILES = (1, 2, 98, 99)
STRIP_ROWS = 1024


def raster_strips(path: str | os.PathLike[str], rows: int = STRIP_ROWS) -> Iterator[np.ndarray]:
    """Yield a raster as ``(bands, rows<=STRIP_ROWS, cols)`` float64 strips."""
    with rasterio.open(path) as src:
        for row in range(0, src.height, rows):
            window = Window(0, row, src.width, min(rows, src.height - row))
            yield src.read(window=window).astype(np.float64)


@dataclass
class Normalizer:
    """Per-channel ``(x - mean) / std`` and NaN -> 0, for ``(..., channels, H, W)`` arrays."""

    mean: np.ndarray
    std: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        shape = (-1, 1, 1)
        out: np.ndarray = (x - self.mean.reshape(shape)) / self.std.reshape(shape)
        normalized: np.ndarray = np.nan_to_num(out, nan=0.0).astype(np.float32, copy=False)
        return normalized


def scene_normalizer(strips: Iterable[np.ndarray], channels: Sequence[int] | None = None) -> Normalizer:
    """Per-band mean and std of one scene's valid pixels, from its ``(bands, rows, cols)`` strips.

    Used by ``normalize: scene``: each scene is standardised by its own statistics. A band with no
    valid pixel, or a constant one, gets mean 0 / std 1 rather than a division by zero.

    Args:
        strips: the scene's strips, NaN where invalid.
        channels: keep only these bands (positions), in this order; None keeps all.
    """
    moments: BandMoments | None = None
    for strip in strips:
        moments = moments or BandMoments(strip.shape[0])
        moments.update(strip.astype(np.float64, copy=False))
    if moments is None:
        raise ValueError("a scene with no rows has no statistics")
    mean, std = moments.mean.copy(), moments.std
    std[(moments.count == 0) | ~(std > 0)] = 1.0
    keep = list(range(len(mean))) if channels is None else list(channels)
    return Normalizer(mean[keep].astype(np.float32), std[keep].astype(np.float32))


class BandMoments:
    """Running count, mean, sum of squared deviations, min and max per band."""

    def __init__(self, bands: int) -> None:
        self.count = np.zeros(bands, dtype=np.int64)
        self.mean = np.zeros(bands)
        self.m2 = np.zeros(bands)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)

    def update(self, strip: np.ndarray) -> None:
        """Merge a ``(bands, rows, cols)`` strip; NaN pixels are skipped per band."""
        for b, values in enumerate(strip):
            v = values[np.isfinite(values)]
            if v.size == 0:
                continue
            n, mean = v.size, v.mean()
            m2 = ((v - mean) ** 2).sum()
            total = self.count[b] + n
            delta = mean - self.mean[b]
            self.mean[b] += delta * n / total
            self.m2[b] += m2 + delta**2 * self.count[b] * n / total
            self.count[b] = total
            self.min[b] = min(self.min[b], v.min())
            self.max[b] = max(self.max[b], v.max())

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per band."""
        return np.sqrt(np.divide(self.m2, self.count, out=np.zeros_like(self.m2), where=self.count > 0))


def percentile_from_histogram(counts: np.ndarray, lo: float, hi: float, q: float) -> float:
    """The ``q``-th percentile (0..100, numpy's linear definition) read from a histogram.

    Args:
        counts: ``(bins,)`` counts over ``[lo, hi]`` in equal bins.
    """
    n = int(counts.sum())
    if n == 0:
        return float("nan")
    if hi <= lo:
        return float(lo)
    rank = q / 100 * (n - 1)
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, rank, side="right"))
    b = min(b, len(counts) - 1)
    before = cum[b - 1] if b else 0
    width = (hi - lo) / len(counts)
    inside = (rank - before + 0.5) / max(int(counts[b]), 1)
    return float(lo + (b + min(max(inside, 0.0), 1.0)) * width)


def band_statistics(
    paths: Sequence[str | os.PathLike[str]], names: list[str], bins: int = 65536
) -> list[dict[str, Any]]:
    """Per-band statistics over all valid (finite) pixels of ``paths``, in two streaming passes.

    Args:
        paths: rasters with the same bands, NaN where invalid.
        names: the band names, one per band.
        bins: histogram bins for the percentiles.

    Returns:
        One dict per band: name, count, mean, std, min, max, p1, p2, p98, p99.
    """
    moments = BandMoments(len(names))
    counted = Countdown(2 * len(paths), "scene passes (moments, then histograms)")
    for path in paths:
        for strip in raster_strips(path):
            _check_bands(path, strip, names)
            moments.update(strip)
        counted.step()
    hist = np.zeros((len(names), bins), dtype=np.int64)
    for path in paths:
        for strip in raster_strips(path):
            for b, values in enumerate(strip):
                if moments.count[b] == 0:
                    continue
                v = values[np.isfinite(values)]
                span = (moments.min[b], max(moments.max[b], moments.min[b] + 1e-12))
                hist[b] += np.histogram(v, bins=bins, range=span)[0]
        counted.step()
    out = []
    for b, name in enumerate(names):
        empty = moments.count[b] == 0
        entry: dict[str, Any] = {
            "name": name,
            "count": int(moments.count[b]),
            "mean": None if empty else float(moments.mean[b]),
            "std": None if empty else float(moments.std[b]),
            "min": None if empty else float(moments.min[b]),
            "max": None if empty else float(moments.max[b]),
        }
        for q in PERCENTILES:
            entry[f"p{q}"] = (
                None if empty else percentile_from_histogram(hist[b], moments.min[b], moments.max[b], q)
            )
        out.append(entry)
    return out


def _check_bands(path: str | os.PathLike[str], strip: np.ndarray, names: list[str]) -> None:
    if strip.shape[0] != len(names):
        raise ValueError(f"{path}: {strip.shape[0]} bands, the other scenes have {len(names)}")


def write_band_statistics(
    clean_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], bins: int = 65536
) -> dict[str, Any]:
    """Compute statistics over the ok scenes among ``clean_dirs`` and write ``bands.json``.

    Raises:
        ValueError: when no scene is ok (there is nothing to normalise with).
    """
    scenes, paths, names = [], [], None
    for d in map(Path, clean_dirs):
        status = SceneStatus.read(status_path(d))
        if status.status == "ok":
            scenes.append(status.scene_id)
            paths.append(d / "image.tif")
            names = names or status.bands
    if not paths or names is None:
        raise ValueError(f"no ok training scene among {len(clean_dirs)}: nothing to compute statistics on")
    result = {"bands": band_statistics(paths, names, bins), "scenes": scenes, "histogram_bins": bins}
    write_json(out, result)
    return result
