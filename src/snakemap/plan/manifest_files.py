"""What ``snakemap check-manifest`` looks at beyond the rows' fields: the columns a manifest
file has that snakemap ignores, and the local files its rows name that do not exist."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from snakemap.core.storage import local_path
from snakemap.plan.manifest import OPTIONAL, REQUIRED, is_parquet

if TYPE_CHECKING:
    import pandas as pd


def extra_columns(path: str | os.PathLike[str]) -> list[str]:
    """The columns of the manifest at ``path`` that snakemap does not read (kept in the file,
    ignored), from its header alone."""
    import pandas as pd

    path = Path(path)
    if is_parquet(path):
        import pyarrow.parquet as pq

        names = list(pq.read_schema(path).names)
    else:
        names = list(pd.read_csv(path, nrows=0).columns)
    return [str(c) for c in names if c not in REQUIRED + OPTIONAL and not str(c).startswith("__index")]


def missing_local_files(df: pd.DataFrame) -> list[str]:
    """``scene_id: column path`` of each local ``uri`` or ``label_uri`` (a path, ``file://``)
    that does not exist, relative to the working directory (remote ones are not looked up)."""
    missing = []
    for column in ("uri", "label_uri"):
        for scene, uri in zip(df["scene_id"], df[column], strict=True):
            path = local_path(uri) if uri else None
            if path is not None and not path.exists():
                missing.append(f"{scene}: {column} {uri}")
    return missing
