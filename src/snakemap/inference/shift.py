"""How unlike the training scenes an applied scene is: its shift score.

Per input band of the predictor, the scene's distribution (over its valid pixels, as cleaned) is
compared with the training scenes' (the mean and standard deviation each model was trained with)
by the 2-Wasserstein distance between the two normal distributions, in units of the training
standard deviation: ``sqrt((m - mu)^2 + (s - sigma)^2) / sigma``. The score is its mean over the
bands: 0 for a scene distributed like the training data, about 1 when the scene's bands have moved
by one training standard deviation (another sensor's calibration, a scene that is mostly water or
cloud, a season or a place the models never saw). It is written into each ok scene's sentinel
(``extra.shift``), its STAC item (``snakemap:shift``) and the shard's manifest; ``snakemap
progress`` lists the scenes above ``shift.threshold`` as unlike the training data. An ensemble with
a ``fallback`` maps a scene whose score is above the fallback's ``shift`` by its fallback members
alone (:class:`snakemap.inference.predictor.Fallback`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class BandMoments:
    """Count, sum and sum of squares of each band over the pixels valid in every band."""

    names: list[str]
    count: int = 0
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    squares: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, image: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the valid pixels of a ``(bands, rows, cols)`` float image (NaN invalid; ``valid``,
        ``(rows, cols)``, when the caller has it already)."""
        flat = image.reshape(image.shape[0], -1)
        valid = np.isfinite(flat).all(axis=0) if valid is None else valid.reshape(-1)
        pixels = flat[:, valid].astype(np.float64)
        if not len(self.total):
            self.total, self.squares = np.zeros(len(self.names)), np.zeros(len(self.names))
        self.count += int(valid.sum())
        self.total += pixels.sum(axis=1)
        self.squares += (pixels * pixels).sum(axis=1)

    def stats(self) -> dict[str, tuple[float, float]]:
        """Band name -> ``(mean, std)``; empty without valid pixels."""
        if not self.count:
            return {}
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean * mean, 0.0))
        return {n: (float(m), float(s)) for n, m, s in zip(self.names, mean, std, strict=True)}


def shift_score(scene: BandMoments, reference: Mapping[str, tuple[float, float]]) -> dict[str, Any] | None:
    """``{"score", "bands": {name: distance}}`` of a scene against the training ``reference``
    (band -> mean, std), over the bands both have; None when they share none (or no valid pixel)."""
    stats = scene.stats()
    bands = [b for b in reference if b in stats]
    if not bands:
        return None
    distances = {}
    for band in bands:
        (m, s), (mu, sigma) = stats[band], reference[band]
        distances[band] = round(float(np.hypot(m - mu, s - sigma) / max(sigma, 1e-12)), 4)
    return {"score": round(float(np.mean(list(distances.values()))), 4), "bands": distances}


def unlike(entries: Sequence[Mapping[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """The scenes of shard-manifest ``entries`` whose shift is above ``threshold``, most shifted
    first: ``[{"scene_id", "shift", "fallback"}]`` (``fallback``: mapped by the ensemble's fallback
    members alone)."""
    found = [
        {"scene_id": e["scene_id"], "shift": float(e["shift"]), "fallback": bool(e.get("fallback"))}
        for e in entries
        if e.get("shift") is not None and float(e["shift"]) > threshold
    ]
    return sorted(found, key=lambda e: -e["shift"])
