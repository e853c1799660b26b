"""Scores from a confusion matrix: the one place where precision, recall, F1 and IoU are defined.

A confusion matrix ``cm`` is ``(classes, classes)`` with ``cm[true, predicted]`` pixel counts,
nodata and ignored pixels already left out. Downscaling's errors (:func:`error_metrics`) are
in the field's units over the cells where prediction and truth both have data.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(
    true: np.ndarray, pred: np.ndarray, n_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts of ``cm[true, pred]`` over pixels not ignored."""
    keep = (true < n_classes) & (pred < n_classes)
    if ignore_index is not None:
        keep &= true != ignore_index
    idx = true[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den`` is 0 (the score is undefined, not zero)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    ratio: np.ndarray = np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)
    return ratio


def scores(cm: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and IoU, overall accuracy, macro and micro averages.

    Macro averages are over the classes present in the reference (support > 0); a class's score
    is NaN where it is undefined (no such pixel predicted nor present).

    Returns:
        ``{"per_class": {name: {precision, recall, f1, iou, support}}, "overall_accuracy",
        "macro": {precision, recall, f1, iou}, "micro": {precision, recall, f1, iou},
        "pixels"}``
    """
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    support = cm.sum(axis=1)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1, iou = _ratio(2 * tp, 2 * tp + fp + fn), _ratio(tp, tp + fp + fn)
    present = support > 0
    total = cm.sum()

    def macro(values: np.ndarray) -> float:
        vals = values[present]
        vals = vals[np.isfinite(vals)]
        return float(vals.mean()) if vals.size else float("nan")

    tps, fps, fns = tp.sum(), fp.sum(), fn.sum()
    micro_p = float(_ratio(tps, tps + fps))
    micro_r = float(_ratio(tps, tps + fns))
    return {
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "iou": float(iou[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "overall_accuracy": float(_ratio(tps, total)),
        "macro": {"precision": macro(precision), "recall": macro(recall), "f1": macro(f1), "iou": macro(iou)},
        "micro": {
            "precision": micro_p,
            "recall": micro_r,
            "f1": float(_ratio(2 * tps, 2 * tps + fps + fns)),
            "iou": float(_ratio(tps, tps + fps + fns)),
        },
        "pixels": int(total),
    }


def error_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, bias (mean of prediction minus truth), max absolute error and the number of
    cells, over the cells where both are finite, in the field's units."""
    valid = np.isfinite(pred) & np.isfinite(truth)
    n = int(valid.sum())
    if n == 0:
        return {
            "rmse": float("nan"),
            "mae": float("nan"),
            "bias": float("nan"),
            "max_error": float("nan"),
            "cells": 0,
        }
    err = pred[valid].astype(np.float64) - truth[valid].astype(np.float64)
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "bias": float(np.mean(err)),
        "max_error": float(np.max(np.abs(err))),
        "cells": n,
    }
