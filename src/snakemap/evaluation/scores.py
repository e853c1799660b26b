"""The files of every predictor's scores, whatever the task: ``metrics.json`` (the result as
scored), ``sites.csv`` (one row per site and ``overall``, per class for class maps)). Both are
written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from snakemap.core.io import write_csv, write_json

if TYPE_CHECKING:
    import pandas as pd


def write_scores(
    result: Mapping[str, Any],
    sites: pd.DataFrame,
    json_path: str | os.PathLike[str],
    csv_path: str | os.PathLike[str],
) -> None:
    """Write a predictor's ``result`` as ``metrics.json`` and its ``sites`` table as ``sites.csv``."""
    write_json(json_path, result)
    write_csv(sites, csv_path)
