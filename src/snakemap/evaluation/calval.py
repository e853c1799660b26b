"""Calval: score class maps against the labels of calibration/validation sites.

A *predictor* is a trained model's checkpoint (``models/{key}/{best|last}``), an ensemble
(``ensembles/{name}``) or a baseline map (``baselines/{name}``); all are scored the same way.
Outputs under ``results/calval/{predictor}/``:

- ``{site}.tif``: the class map (uint8, 255 nodata); ``probs/{site}.tif`` for models and ensembles.
  A site whose clean step did not end ok has no map: its files are empty (:func:`write_no_map`),
  and the scores list it under ``skipped`` with its state and reason.
- ``metrics.json``: confusion matrices and scores (:func:`snakemap.core.metrics.scores`) per site and
  overall; for a single target class, the precision-recall curve and the F1-optimal threshold.
- ``sites.csv``: one row per site (and ``overall``) and class: precision, recall, f1, iou, support.

``results/calval/summary.csv`` has one row per predictor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from snakemap.core.calval_sections import BaselineOptions
from snakemap.core.io import NODATA_CLASS, PROB_SCALE, read_json, write_cog
from snakemap.core.metrics import confusion_matrix, scores
from snakemap.core.status import SceneStatus, status_path, write_no_map

log = logging.getLogger(__name__)


def baseline_map(
    spec: BaselineOptions,
    site: str,
    image: str | os.PathLike[str],
    classes: list[str],
    out: str | os.PathLike[str],
) -> None:
    """Write a baseline's class map of one site on the site's cleaned grid (nodata where the
    cleaned image has none of its bands).

    Raises:
        ExpressionError: a rule that reads a band the cleaned image does not have.
        ValueError: a product baseline without a map of ``site``.
    """
    with rasterio.open(image) as src:
        profile = {"crs": src.crs, "transform": src.transform, "nodata": NODATA_CLASS}
        names = [d or f"b{i}" for i, d in enumerate(src.descriptions, start=1)]
        data = src.read(out_dtype="float32")
    valid = np.isfinite(data).all(axis=0)
    result = np.full(valid.shape, NODATA_CLASS, dtype=np.uint8)
    rules = spec.rule_list()
    if rules is not None:
        # The first rule that claims a pixel wins: the rules are laid down last to first.
        bands = dict(zip(names, data, strict=True))
        ruled, default = rules
        mapped = np.full(valid.shape, classes.index(default), dtype=np.uint8)
        for rule in reversed(ruled):
            mapped[rule.hits(bands)] = classes.index(rule.class_)
        result[valid] = mapped[valid]
    else:
        maps, remap = spec.maps or {}, spec.remap or {}
        if site not in maps:
            raise ValueError(f"baseline has no map for site {site!r} (maps: {', '.join(maps)})")
        with rasterio.open(maps[site]) as src:
            raw = src.read(1)
            lut = np.full(int(raw.max()) + 1, NODATA_CLASS, dtype=np.uint8)
            for value, name in remap.items():
                if int(value) < len(lut):
                    lut[int(value)] = classes.index(name)
            mapped = lut[np.clip(raw, 0, None)]
            reproject(
                mapped,
                result,
                src_transform=src.transform,
                src_crs=src.crs,
                src_nodata=NODATA_CLASS,
                dst_transform=profile["transform"],
                dst_crs=profile["crs"],
                dst_nodata=NODATA_CLASS,
                resampling=Resampling.nearest,
            )
        result[~valid] = NODATA_CLASS
    write_cog(out, result[None], profile, descriptions=["class"])


def read_band(path: str | os.PathLike[str], band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        data: np.ndarray = src.read(band)
    return data


def pr_curve(positive: np.ndarray, negative: np.ndarray) -> dict[str, list[float]]:
    """Precision and recall at each threshold ``t / 250`` from histograms of uint8 probabilities.

    Args:
        positive, negative: ``(251,)`` counts of target and other pixels per probability value.
    """
    tp = np.cumsum(positive[::-1])[::-1].astype(np.float64)  # pixels with p >= t
    fp = np.cumsum(negative[::-1])[::-1].astype(np.float64)
    total = positive.sum()
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    recall = tp / total if total else np.zeros_like(tp)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0
    )
    return {
        "threshold": (np.arange(len(tp)) / PROB_SCALE).tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
    }


@dataclass
class SiteFiles:
    """One site's files for scoring a predictor."""

    site: str
    label: Path
    classes: Path
    probs: Path | None = None


def site_image(clean: str | os.PathLike[str], outputs: Sequence[str | os.PathLike[str]]) -> Path | None:
    """The cleaned image of a calval site, or None when its clean step did not end ok.

    Every calval site has its prediction jobs, known before any scene is cleaned; a site without
    an image (empty or corrupt) gets :func:`write_no_map`'s empty ``outputs`` instead of a map.
    """
    status = SceneStatus.read(status_path(clean))
    if status.status == "ok":
        return Path(clean) / "image.tif"
    write_no_map(status, outputs)
    return None


def site_files(
    clean_dirs: Sequence[str | os.PathLike[str]],
    maps: Sequence[str | os.PathLike[str]],
    probs: Sequence[str | os.PathLike[str]] | None = None,
) -> tuple[list[SiteFiles], dict[str, str]]:
    """The files of the sites to score, and the sites skipped because their clean did not end ok.

    Args:
        clean_dirs: each site's clean folder (named by the site), with ``status.json`` and,
            when ok, ``label.tif``.
        maps, probs: each site's class map and probabilities, in the order of ``clean_dirs``.

    Returns:
        The ok sites' :class:`SiteFiles`, and ``{site: "empty: no valid pixels"}`` for the others.
    """
    found: list[SiteFiles] = []
    skipped: dict[str, str] = {}
    prob_paths: list[Path | None] = [Path(p) for p in probs] if probs else [None] * len(maps)
    for clean, classes, prob in zip(clean_dirs, maps, prob_paths, strict=True):
        status = SceneStatus.read(status_path(clean))
        if status.status != "ok":
            skipped[status.scene_id] = f"{status.status}: {status.reason}"
            continue
        found.append(SiteFiles(status.scene_id, Path(clean) / "label.tif", Path(classes), prob))
    return found, skipped


def score_predictor(
    predictor: str,
    sites: Sequence[SiteFiles],
    classes: list[str],
    ignore_index: int,
    target: int | None,
    threshold: Mapping[str, Any] | None = None,
    selection: str = "",
    skipped: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Score a predictor's class maps over its sites (see the module docstring for the result).

    The maps are scored as they are: a tuned threshold was applied when they were predicted,
    chosen out of fold (:mod:`snakemap.evaluation.tuning`), never here. The PR curve's F1-optimal point at
    these sites (``best_threshold``) is reported as a diagnostic only.

    Args:
        target: the single target class, for the PR curve; None for none.
        threshold: the tuning result whose threshold made the maps (recorded as
            ``threshold_used`` and ``threshold_tuned_on``), or None.
        selection: how the predictor's checkpoint was chosen (``held-out fold`` or ``calval``),
            recorded so that a report can mark figures that are not independent.
        skipped: the sites not scored and why (:func:`site_files`), recorded as ``skipped``.
    """
    pos = np.zeros(PROB_SCALE + 1, dtype=np.int64)
    neg = np.zeros(PROB_SCALE + 1, dtype=np.int64)
    loaded = []
    for s in sites:
        label = read_band(s.label)
        pred = read_band(s.classes)
        keep = (label != ignore_index) & (pred != NODATA_CLASS)
        if target is not None and s.probs is not None:
            p = read_band(s.probs, target + 1)
            ok = keep & (p != NODATA_CLASS)
            pos += np.bincount(p[ok & (label == target)], minlength=PROB_SCALE + 1)[: PROB_SCALE + 1]
            neg += np.bincount(p[ok & (label != target)], minlength=PROB_SCALE + 1)[: PROB_SCALE + 1]
        loaded.append((s, label, pred, keep))
    result: dict[str, Any] = {
        "predictor": predictor,
        "classes": classes,
        "selection": selection,
        "sites": {},
        "skipped": dict(skipped or {}),
    }
    if target is not None and pos.sum() + neg.sum() > 0:
        curve = pr_curve(pos, neg)
        best = int(np.argmax(curve["f1"]))
        result.update(pr=curve, best_threshold=curve["threshold"][best], best_f1=curve["f1"][best])
    result["threshold_used"] = None if threshold is None else threshold["threshold"]
    result["threshold_tuned_on"] = None if threshold is None else threshold["tuned_on"]
    total = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for s, label, pred, keep in loaded:
        cm = confusion_matrix(label[keep], pred[keep], len(classes))
        total += cm
        result["sites"][s.site] = {"confusion": cm.tolist(), **scores(cm, classes)}
    result["overall"] = {"confusion": total.tolist(), **scores(total, classes)}
    return result


def sites_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """One row per site (and ``overall``) and class."""
    rows = []
    for site, res in [*result["sites"].items(), ("overall", result["overall"])]:
        for name, c in res["per_class"].items():
            rows.append({"predictor": result["predictor"], "site": site, "class": name, **c})
    return pd.DataFrame(rows)


def summary(metrics_files: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """One row per predictor: its kind, overall accuracy, macro F1 and IoU, per-class IoU."""
    rows = []
    for path in metrics_files:
        m = read_json(path)
        overall = m["overall"]
        row: dict[str, Any] = {
            "predictor": m["predictor"],
            "kind": m["predictor"].split("/")[0].rstrip("s"),
            "overall_accuracy": overall["overall_accuracy"],
            "macro_f1": overall["macro"]["f1"],
            "macro_iou": overall["macro"]["iou"],
            "pixels": overall["pixels"],
        }
        row.update({f"iou_{c}": v["iou"] for c, v in overall["per_class"].items()})
        row.update(
            {
                "best_threshold": m.get("best_threshold"),
                "best_f1": m.get("best_f1"),
                "threshold_used": m.get("threshold_used"),
                "selection": m.get("selection", ""),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows).sort_values("macro_iou", ascending=False, na_position="last")
