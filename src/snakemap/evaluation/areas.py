"""Area estimates with 95% confidence intervals from a class map and a reference sample.

Good practice (Olofsson et al. 2014, Remote Sensing of Environment 148, 42-57): a map's pixel
counts are biased by its errors, so areas are estimated from a *stratified random sample* of
points whose true class a person (or a better reference) gives. The strata are the mapped
classes; with ``W_i`` the share of the area mapped as class ``i``, ``n_ij`` the sample points
mapped ``i`` whose reference is ``j``, and ``n_i`` the points of stratum ``i``:

- estimated area share of class ``j``: ``p_j = sum_i W_i n_ij / n_i`` (eq. 9), its standard
  error ``sqrt(sum_i W_i^2 (n_ij/n_i)(1 - n_ij/n_i) / (n_i - 1))`` (eq. 10);
- user's accuracy ``U_i = n_ii / n_i``, producer's ``P_j = W_j U_j / p_j``, overall
  ``O = sum_j W_j U_j``, with the variances of eq. 5-7;
- a 95% interval is the estimate +- 1.96 standard errors.

The map is counted, and the sample drawn, on one grid in an equal-area CRS
(:mod:`snakemap.evaluation.area_grid`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

#: the two-sided 95% quantile of the normal distribution, as the paper rounds it
Z95 = 1.96
#: the columns of a reference sample file (the map's class and the reference class, by name)
MAP_COLUMN, REFERENCE_COLUMN = "map_class", "reference"


def estimate(
    counts: np.ndarray, mapped: Sequence[float] | np.ndarray, classes: Sequence[str], unit_ha: float = 1.0
) -> pd.DataFrame:
    """Error-adjusted areas, user's and producer's accuracy with 95% intervals (eq. 2-10).

    Args:
        counts: ``(k, k)`` sample counts, rows the map's class, columns the reference class.
        mapped: per class the mapped area, in units of ``unit_ha`` hectares (pixels, say).
        classes: the ``k`` class names.
        unit_ha: hectares per unit of ``mapped``.

    Returns:
        One row per class (``class, mapped_ha, sample_points, area_ha, area_ci95_ha, area_low_ha,
        area_high_ha, users_accuracy, users_ci95, producers_accuracy, producers_ci95``) and a
        last row ``overall`` (the total mapped area, ``overall_accuracy`` and its ``overall_ci95``).

    Raises:
        ValueError: a class that is mapped but has no sample point, or shapes that disagree.
    """
    n = np.asarray(counts, dtype=np.float64)
    area = np.asarray(mapped, dtype=np.float64)
    k = len(classes)
    if n.shape != (k, k) or area.shape != (k,):
        raise ValueError(f"{k} classes need a {k} x {k} sample table and {k} mapped areas")
    n_i = n.sum(axis=1)
    short = [c for c, a, s in zip(classes, area, n_i, strict=True) if a > 0 and s < 1]
    if short:
        raise ValueError(
            f"classes {short} are mapped but have no reference point: their areas cannot be estimated; "
            "label points of them (snakemap sample draws at least min_per_class)"
        )
    # a stratum of one point (a class mapped on one pixel, sampled whole) adds no variance
    total = area.sum()
    w = area / total
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n_i[:, None] > 0, n / n_i[:, None], 0.0)  # n_ij / n_i
        var_term = np.where(n_i[:, None] > 1, share * (1 - share) / (n_i[:, None] - 1), 0.0)
        p = w[:, None] * share  # p_ij (eq. 4)
        p_j = p.sum(axis=0)
        se_share = np.sqrt((w[:, None] ** 2 * var_term).sum(axis=0))
        users = np.where(n_i > 0, np.diag(share), np.nan)  # undefined for a stratum without points
        users_var = np.where(n_i > 1, users * (1 - users) / (n_i - 1), np.nan)
        producers = np.where(p_j > 0, np.diag(p) / p_j, np.nan)
        # eq. 7, with the mapped areas as the N_i (the ratio does not depend on their unit)
        others = np.array([sum(area[i] ** 2 * var_term[i, j] for i in range(k) if i != j) for j in range(k)])
        n_hat_j = (area[:, None] * share).sum(axis=0)
        producers_var = (
            area**2 * (1 - producers) ** 2 * users * (1 - users) / np.maximum(n_i - 1, 1)
            + producers**2 * others
        ) / n_hat_j**2
    overall = float(np.nansum(w * users))
    overall_se = math.sqrt(
        float(np.nansum(w**2 * np.where(n_i > 1, users * (1 - users) / np.maximum(n_i - 1, 1), 0.0)))
    )
    ha = total * unit_ha
    rows = [
        {
            "class": c,
            "mapped_ha": area[j] * unit_ha,
            "sample_points": int(n_i[j]),
            "area_ha": p_j[j] * ha,
            "area_ci95_ha": Z95 * se_share[j] * ha,
            "area_low_ha": (p_j[j] - Z95 * se_share[j]) * ha,
            "area_high_ha": (p_j[j] + Z95 * se_share[j]) * ha,
            "users_accuracy": users[j],
            "users_ci95": Z95 * math.sqrt(users_var[j]) if np.isfinite(users_var[j]) else np.nan,
            "producers_accuracy": producers[j],
            "producers_ci95": Z95 * math.sqrt(producers_var[j]) if np.isfinite(producers_var[j]) else np.nan,
        }
        for j, c in enumerate(classes)
    ]
    rows.append(
        {
            "class": "overall",
            "mapped_ha": ha,
            "sample_points": int(n.sum()),
            "area_ha": ha,
            "overall_accuracy": overall,
            "overall_ci95": Z95 * overall_se,
        }
    )
    return pd.DataFrame(rows)


def sample_sizes(
    mapped: Sequence[float] | np.ndarray,
    users_accuracy: Sequence[float],
    target_se: float = 0.01,
    min_per_class: int = 50,
) -> np.ndarray:
    """Points per stratum: the total from the target standard error of overall accuracy (eq. 13,
    ``n = (sum_i W_i S_i / SE)^2`` with ``S_i = sqrt(U_i (1 - U_i))`` from the expected user's
    accuracies), shared in proportion to the mapped areas, at least ``min_per_class`` per mapped
    class and at most its pixels."""
    area = np.asarray(mapped, dtype=np.float64)
    w = area / area.sum()
    u = np.asarray(users_accuracy, dtype=np.float64)
    total = (np.sum(w * np.sqrt(u * (1 - u))) / target_se) ** 2
    sizes = np.where(area > 0, np.maximum(np.rint(total * w), min_per_class), 0)
    return np.minimum(sizes, area).astype(np.int64)


def sample_counts(table: pd.DataFrame, classes: Sequence[str], source: str) -> np.ndarray:
    """``(k, k)`` counts of the labelled points, map class by reference class.

    Raises:
        ValueError: naming the points: an unlabelled point, or a class the map does not have.
    """
    index = {c: i for i, c in enumerate(classes)}
    for column in (MAP_COLUMN, REFERENCE_COLUMN):
        values = table[column].fillna("").astype(str)
        bad = table.loc[~values.isin(list(classes)), "point" if "point" in table else column]
        if len(bad):
            what = (
                "unlabelled or of a class the map does not have"
                if column == REFERENCE_COLUMN
                else "of no map class"
            )
            raise ValueError(
                f"{source}: points {bad.tolist()[:10]} have a {column} {what} ({', '.join(classes)})"
            )
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(counts, (table[MAP_COLUMN].map(index), table[REFERENCE_COLUMN].map(index)), 1)
    return counts
