"""Cross-validation folds grouped by area of interest, so no AOI is in two folds.

With ``block_size`` set, the groups are square blocks of pixels within each AOI instead (by a
chip's top-left pixel), for data sets with fewer AOIs than folds, such as a single scene.

``results/splits/folds.parquet`` has one row per chip: ``scene_id, chip, aoi, group,
has_target, fold`` (fold in ``0..k-1``), in scene then chip order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from snakemap.core.io import atomic_path
from snakemap.core.sections import SplitOptions


def make_folds(chips: pd.DataFrame, aois: Mapping[str, str], options: SplitOptions) -> pd.DataFrame:
    """Assign every chip to a fold, all chips of one AOI to the same fold.

    Args:
        chips: chip tables concatenated (columns ``scene_id, chip, row, col, target_fraction``).
        aois: scene id -> AOI.
        options: k, method and seed.

    Raises:
        ValueError: with fewer AOIs than folds, or no chips at all.
    """
    if chips.empty:
        raise ValueError("no training chips: check chips.max_nodata_fraction and the labels")
    table = chips[["scene_id", "chip"]].copy()
    table["aoi"] = table["scene_id"].map(aois)
    table["group"] = table["aoi"]
    if options.block_size:
        block = (
            (chips["row"] // options.block_size).astype(str)
            + "_"
            + (chips["col"] // options.block_size).astype(str)
        )
        table["group"] = table["aoi"] + ":" + block.to_numpy()
    table["has_target"] = chips["target_fraction"].to_numpy() > 0
    n_groups = table["group"].nunique()
    if n_groups < options.folds:
        unit = f"blocks of {options.block_size} pixels" if options.block_size else "AOI(s)"
        raise ValueError(
            f"splits.folds is {options.folds} but the training chips come from only {n_groups} "
            f"{unit} ({', '.join(sorted(table['group'].unique())[:10])}); lower splits.folds, "
            "add AOIs or set splits.block_size"
        )
    if options.method == "stratified_group":
        splitter: GroupKFold | StratifiedGroupKFold = StratifiedGroupKFold(
            n_splits=options.folds, shuffle=True, random_state=options.seed
        )
    else:
        splitter = GroupKFold(n_splits=options.folds, shuffle=True, random_state=options.seed)
    fold = np.full(len(table), -1, dtype=np.int64)
    for k, (_, test) in enumerate(splitter.split(table, table["has_target"], groups=table["group"])):
        fold[test] = k
    table["fold"] = fold
    return table.reset_index(drop=True)


def write_folds(
    index_paths: Sequence[str | os.PathLike[str]],
    aois: Mapping[str, str],
    out: str | os.PathLike[str],
    options: SplitOptions,
) -> pd.DataFrame:
    """Read the chip tables, make the folds and write ``folds.parquet`` atomically."""
    tables = [t for t in (pd.read_parquet(p) for p in index_paths) if len(t)]
    chips = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    folds = make_folds(chips, aois, options)
    with atomic_path(out, suffix=".parquet") as tmp:
        folds.to_parquet(tmp, index=False)
    return folds
