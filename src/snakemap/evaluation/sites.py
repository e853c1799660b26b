"""The calval sites side by side: how unlike the training scenes each one is (its shift score,
:mod:`snakemap.inference.shift`, over every cleaned band against the training scenes' band
statistics; an applied scene's is over its models' input bands), and how the best model or
ensemble and the best baseline score there.

``results/reports/sites.csv``, one row per calval site whose clean ended ok, most shifted first:
``site``, ``shift``, ``unlike_training`` (shift above ``shift.threshold``), ``most_shifted_bands``
(the three bands that moved most, with their distances), ``winner`` and ``winner_macro_iou`` (the
model or ensemble with the best macro IoU at the site), ``best_baseline`` and
``baseline_macro_iou``, and ``margin_points`` (winner minus baseline, IoU points). A site far from
the training data where the winner's margin shrinks is where maps are least to be trusted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

from snakemap.core.io import read_json, write_csv
from snakemap.inference.shift import BandMoments, shift_score

#: rows of a cleaned image read at a time
STRIP = 512


def site_moments(image: str | os.PathLike[str]) -> BandMoments:
    """The band moments of a cleaned image (NaN nodata, named bands), strip by strip."""
    with rasterio.open(image) as src:
        moments = BandMoments([d or f"b{i}" for i, d in enumerate(src.descriptions, start=1)])
        for row in range(0, src.height, STRIP):
            rows = min(STRIP, src.height - row)
            moments.add(src.read(window=Window(0, row, src.width, rows), out_dtype="float32"))
    return moments


def sites_table(
    cleans: Sequence[str | os.PathLike[str]],
    stats: str | os.PathLike[str],
    metrics: Sequence[str | os.PathLike[str]],
    threshold: float,
) -> pd.DataFrame:
    """The sites table (see the module docstring).

    Args:
        cleans: each calval site's clean folder (``status.json``, ``image.tif``).
        stats: ``bands.json``, the training scenes' band statistics.
        metrics: every calval predictor's ``metrics.json``.
        threshold: ``shift.threshold``.
    """
    # as a model's statistics: a constant band's std of 0 counts as 1 (training does the same)
    reference = {b["name"]: (float(b["mean"]), float(b["std"]) or 1.0) for b in read_json(stats)["bands"]}
    scored = [read_json(m) for m in metrics]
    rows = []
    for clean in map(Path, cleans):
        if read_json(clean / "status.json").get("status") != "ok":
            continue
        site = clean.name
        shift = shift_score(site_moments(clean / "image.tif"), reference)
        row: dict[str, Any] = {"site": site, "shift": shift["score"] if shift else float("nan")}
        row["unlike_training"] = bool(shift and shift["score"] > threshold)
        top = sorted((shift or {"bands": {}})["bands"].items(), key=lambda kv: -kv[1])[:3]
        row["most_shifted_bands"] = ", ".join(f"{b} {d:.2f}" for b, d in top)
        for kind, prefix in (("winner", ("models/", "ensembles/")), ("best_baseline", ("baselines/",))):
            best = _best_at(scored, site, prefix)
            row[kind] = best[0] if best else "none"
            row[f"{'winner' if kind == 'winner' else 'baseline'}_macro_iou"] = best[1] if best else np.nan
        row["margin_points"] = round(100 * (row["winner_macro_iou"] - row["baseline_macro_iou"]), 2)
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values("shift", ascending=False, na_position="last").reset_index(drop=True)


COLUMNS = [
    "site",
    "shift",
    "unlike_training",
    "most_shifted_bands",
    "winner",
    "winner_macro_iou",
    "best_baseline",
    "baseline_macro_iou",
    "margin_points",
]


def _best_at(
    scored: Sequence[dict[str, Any]], site: str, prefix: tuple[str, ...]
) -> tuple[str, float] | None:
    """The predictor (of those whose name starts with ``prefix``) with the best macro IoU at ``site``."""
    found = [
        (m["predictor"], float(m["sites"][site]["macro"]["iou"]))
        for m in scored
        if m["predictor"].startswith(prefix) and site in m["sites"]
    ]
    found = [f for f in found if np.isfinite(f[1])]
    return max(found, key=lambda f: f[1]) if found else None


def write_sites(
    cleans: Sequence[str | os.PathLike[str]],
    stats: str | os.PathLike[str],
    metrics: Sequence[str | os.PathLike[str]],
    threshold: float,
    out: str | os.PathLike[str],
) -> pd.DataFrame:
    """Write :func:`sites_table` as CSV, atomically; return it."""
    return write_csv(sites_table(cleans, stats, metrics, threshold), out)
