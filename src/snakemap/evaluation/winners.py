"""Which predictor wins each class at the calval sites, and by how much over the best baseline.

The table is built from the calval summary (one row per predictor: ``predictor``, ``kind`` (``model``,
``ensemble`` or ``baseline``), ``macro_iou``, ``iou_<class>``..., and ``selection`` where the summary
has one). It has one row per class, in the summary's order, then a ``macro`` row (macro IoU):

- ``winner``: the model or ensemble with the highest IoU. Equal IoUs are all named, as
  ``tie: a, b``. A name whose ``selection`` is ``calval`` is followed by ``(selected on calval)``:
  it was chosen on these very sites, so its score there is optimistic.
- ``winner_iou``, and ``selection``: the winners' ``selection`` (only where the summary has that column).
- ``best_baseline`` and ``baseline_iou``: the baseline with the highest IoU. A baseline that never
  predicts a class scores 0 there (its IoU is 0, or NaN where the class is absent from the references
  too). Where no baseline scores above 0, ``best_baseline`` is ``no baseline`` and ``baseline_iou``
  is 0, the score of every baseline there, so the margin is the winner's whole IoU. Where the summary
  has no baseline at all, ``best_baseline`` is ``no baseline`` and ``baseline_iou`` and the margin
  are empty: there is nothing to beat.
- ``margin_points``: the winner's IoU minus the baseline's, in IoU points (x 100).

:func:`out_of_fold_winners` tabulates what each ``combine: per_class`` ensemble chose on the
held-out folds of the training scenes: per class its member, and its margin over the best rule.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from snakemap.core.io import write_csv

#: Kinds of predictor that can win; baselines are what they are measured against.
CONTENDERS = ("model", "ensemble")
#: IoUs closer than this are a tie.
TIE_TOLERANCE = 1e-9
NO_BASELINE = "no baseline"


def _top(rows: pd.DataFrame, column: str) -> tuple[pd.DataFrame, float]:
    """The rows with the highest finite ``column`` (several on a tie) and that value (NaN if none)."""
    scores = rows[column].astype(float)
    finite = scores[np.isfinite(scores)]
    if finite.empty:
        return rows.iloc[:0], math.nan
    best = float(finite.max())
    return rows.loc[finite.index[np.isclose(finite, best, rtol=0, atol=TIE_TOLERANCE)]], best


def _names(rows: pd.DataFrame) -> str:
    """Predictor names, ``(selected on calval)`` after those picked there, ``tie: ...`` for several."""
    names = [
        str(row["predictor"]) + (" (selected on calval)" if row.get("selection") == "calval" else "")
        for _, row in rows.iterrows()
    ]
    return names[0] if len(names) == 1 else "tie: " + ", ".join(names)


def _winner(contenders: pd.DataFrame, column: str) -> dict[str, Any]:
    rows, iou = _top(contenders, column)
    out: dict[str, Any] = {"winner": _names(rows) if len(rows) else "no score", "winner_iou": iou}
    if "selection" in contenders:
        out["selection"] = ", ".join(rows["selection"].fillna("").astype(str))
    return out


def _baseline(baselines: pd.DataFrame, column: str) -> dict[str, Any]:
    if baselines.empty:
        return {"best_baseline": NO_BASELINE, "baseline_iou": math.nan}
    rows, iou = _top(baselines.assign(**{column: baselines[column].fillna(0.0)}), column)
    if iou <= 0:
        return {"best_baseline": NO_BASELINE, "baseline_iou": 0.0}
    return {"best_baseline": _names(rows), "baseline_iou": iou}


def winners(summary: pd.DataFrame) -> pd.DataFrame:
    """The winner of each class and of the macro IoU, and its margin over the best baseline.

    Args:
        summary: the calval summary, one row per predictor (see the module docstring).

    Returns:
        One row per class then ``macro``: ``class, winner, winner_iou, [selection,] best_baseline,
        baseline_iou, margin_points`` (IoUs in 0..1, the margin in IoU points).
    """
    contenders = summary[summary["kind"].isin(CONTENDERS)]
    baselines = summary[summary["kind"] == "baseline"]
    columns = [(c.removeprefix("iou_"), c) for c in summary.columns if c.startswith("iou_")]
    rows = [
        {"class": name, **_winner(contenders, column), **_baseline(baselines, column)}
        for name, column in [*columns, ("macro", "macro_iou")]
    ]
    table = pd.DataFrame(rows)
    table["margin_points"] = 100 * (table["winner_iou"] - table["baseline_iou"])
    return table


def write_winners(summary_csv: str | os.PathLike[str], out: str | os.PathLike[str]) -> pd.DataFrame:
    """Write :func:`winners` of a summary CSV as a CSV (IoUs to 3 decimals, margins to 1), atomically."""
    table = winners(pd.read_csv(summary_csv))
    rounded = table.round({"winner_iou": 3, "baseline_iou": 3, "margin_points": 1})
    write_csv(rounded, out)
    return rounded


def out_of_fold_winners(tuned: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per-class ensembles' choices, from their ``winners.json`` (:func:`snakemap.evaluation.
    tuning.tune_winners`), by ensemble name.

    Returns:
        One row per ensemble and class, in the classes' order: ``ensemble, class, winner,
        winner_iou`` (out of fold), ``best_rule, rule_iou, margin_points`` (over the best rule
        member, IoU points; empty without rules), ``claims`` (its rank in the precedence, 1 first)
        and ``fallback`` (the member that fills unclaimed pixels).
    """
    rows = []
    for name, result in tuned.items():
        rules = [m for m in result["members"] if m.startswith("baselines/")]
        for c in result["classes"]:
            winner = result["winners"][c]
            best_rule = max(rules, key=lambda r: result["iou"][r][c]) if rules else None
            rows.append(
                {
                    "ensemble": name,
                    "class": c,
                    "winner": winner,
                    "winner_iou": result["iou"][winner][c],
                    "best_rule": best_rule or "no rule",
                    "rule_iou": result["iou"][best_rule][c] if best_rule else math.nan,
                    "margin_points": result["margin_points"][c],
                    "claims": result["precedence"].index(c) + 1,
                    "fallback": result["fallback"],
                }
            )
    columns = ["ensemble", "class", "winner", "winner_iou", "best_rule", "rule_iou", "margin_points"]
    return pd.DataFrame(rows, columns=[*columns, "claims", "fallback"])


def write_out_of_fold_winners(
    files: dict[str, str | os.PathLike[str]], out: str | os.PathLike[str]
) -> pd.DataFrame:
    """Write :func:`out_of_fold_winners` of ensemble name -> ``winners.json`` as a CSV, atomically."""
    from snakemap.core.io import read_json

    table = out_of_fold_winners({name: read_json(path) for name, path in files.items()})
    rounded = table.round({"winner_iou": 3, "rule_iou": 3, "margin_points": 1})
    write_csv(rounded, out)
    return rounded
