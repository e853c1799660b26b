"""Downscaling's scores: a predictor's maps of the calval sites against each site's own field.

``metrics.json`` of a predictor: ``{predictor, scale, method, selection, sites: {site: errors},
overall: errors, skipped}``, where errors are :func:`snakemap.core.metrics.error_metrics`' (RMSE,
MAE, bias, max error, cells) in the field's units; ``overall`` pools every site's cells. The
summary has one row per predictor and ``rmse_ratio_<method>``, its RMSE over that interpolation
baseline's at the same scale.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio

from snakemap.core.io import read_json
from snakemap.core.metrics import error_metrics
from snakemap.core.status import SceneStatus, status_path

#: the columns of a downscaling summary, before the ratios to each baseline
SUMMARY_COLUMNS = ["predictor", "kind", "scale", "rmse", "mae", "bias", "max_error", "cells", "selection"]


def score_sites(
    predictor: str,
    clean_dirs: Sequence[str | os.PathLike[str]],
    maps: Sequence[str | os.PathLike[str]],
    scale: int,
    method: str | None = None,
    selection: str = "",
) -> dict[str, Any]:
    """Score a predictor's maps against each ok site's field (see the module docstring)."""
    result: dict[str, Any] = {
        "predictor": predictor,
        "scale": scale,
        "method": method,
        "selection": selection,
        "sites": {},
        "skipped": {},
    }
    errors, truths = [], []
    for clean, path in zip(clean_dirs, maps, strict=True):
        status = SceneStatus.read(status_path(clean))
        if status.status != "ok":
            result["skipped"][status.scene_id] = f"{status.status}: {status.reason}"
            continue
        with rasterio.open(path) as src:
            pred = src.read(1)
        with rasterio.open(Path(clean) / "image.tif") as src:
            truth = src.read(1, window=((0, pred.shape[0]), (0, pred.shape[1]))).astype(np.float32)
        result["sites"][status.scene_id] = error_metrics(pred, truth)
        valid = np.isfinite(pred) & np.isfinite(truth)
        errors.append(pred[valid])
        truths.append(truth[valid])
    pooled = (np.concatenate(errors), np.concatenate(truths)) if errors else (np.zeros(0), np.zeros(0))
    result["overall"] = error_metrics(*pooled)
    return result


def sites_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """One row per site (and ``overall``) with its errors."""
    rows = [
        {"predictor": result["predictor"], "scale": result["scale"], "site": site, **errors}
        for site, errors in [*result["sites"].items(), ("overall", result["overall"])]
    ]
    return pd.DataFrame(rows)


def summary(metrics_files: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """One row per predictor with its overall errors, and ``rmse_ratio_<method>``: its RMSE over
    that interpolation baseline's at the same scale (below 1: better than the baseline)."""
    results = [read_json(p) for p in metrics_files]
    rows = [
        {
            "predictor": m["predictor"],
            "kind": m["predictor"].split("/")[0].rstrip("s"),
            "scale": m["scale"],
            **{k: m["overall"][k] for k in ("rmse", "mae", "bias", "max_error", "cells")},
            "selection": m.get("selection", ""),
            "method": m.get("method"),
        }
        for m in results
    ]
    table = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "method"])
    baselines = table[table["kind"] == "baseline"]
    for method in sorted(baselines["method"].dropna().unique()):
        ref = baselines[baselines["method"] == method].set_index("scale")["rmse"]
        table[f"rmse_ratio_{method}"] = table["rmse"] / table["scale"].map(ref)
    table = table.drop(columns="method")
    return table.sort_values(["scale", "rmse"], na_position="last").reset_index(drop=True)
