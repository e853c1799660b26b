"""The cache of checked manifests: each kept as Parquet under the sha256 of the file's bytes, so
that the next read of the same file loads it instead of parsing and checking every row again.

:func:`snakemap.plan.manifest.read_manifest` and :func:`snakemap.plan.manifest.apply_scene_ids`
use it (with ``cache=``, e.g. :data:`CACHE_DIR`); this module only names, keeps and loads the
entries, and knows nothing of the checks.

Layout of the cache folder (:data:`CACHE_DIR` in the workflow and ``snakemap progress``):

- ``{key}.parquet``: a checked manifest (:func:`store_checked`), without the columns that are
  empty in every row (and ``aoi`` where it is the scene id): :func:`load_checked` restores them.
  ``{key}`` is :func:`cache_key`: any change to the file, its format or :data:`CACHE_VERSION` is
  a new key.
- ``{key}.apply.txt``: the ids of its apply scenes, one a line
  (:func:`snakemap.plan.manifest.apply_scene_ids`).
- ``{key}.shards-{size}.json``: its shards (:class:`snakemap.plan.shards.ShardTable`, which finds
  the entry under the table's ``attrs[CACHE_ENTRY]``).

Every file is written under a temporary name, then renamed; the folder keeps the
``2 * CACHE_KEEP`` most recently written files, and a damaged entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from snakemap.core.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Where the workflow and ``snakemap progress`` keep checked manifests, relative to the project
#: (beside Snakemake's own records; safe to delete).
CACHE_DIR = ".snakemake/snakemap/manifests"
#: Bump when the checked table's columns or checks change: older entries are then not used.
CACHE_VERSION = 4
#: checked manifests kept in the cache folder, the most recently written ones
CACHE_KEEP = 8
#: the key of a cached table's ``attrs`` naming its cache entry (``{folder}/{sha256}.parquet``)
CACHE_ENTRY = "snakemap_cache_entry"


def cache_key(path: Path, data: bytes) -> str:
    """The sha256 of the manifest's bytes, its format and the cache's version."""
    digest = hashlib.sha256(data)
    digest.update(json.dumps([CACHE_VERSION, path.suffix.lower()]).encode())
    return digest.hexdigest()


def load_checked(cached: Path, required: Sequence[str], optional: Sequence[str]) -> pd.DataFrame:
    """A checked manifest kept by :func:`store_checked`, with every column: the ``required`` ones,
    then the ``optional`` ones (see :data:`snakemap.plan.manifest.REQUIRED` and ``OPTIONAL``)."""
    import pandas as pd

    df = pd.read_parquet(cached)
    for col in optional:
        if col not in df.columns:
            df[col] = df["scene_id"] if col == "aoi" else ""
    return df[[*required, *optional]].set_index("scene_id", drop=False)


def store_checked(checked: pd.DataFrame, cached: Path, optional: Sequence[str]) -> None:
    """Keep a checked manifest (written under a temporary name, then renamed); ``optional``: its
    columns that may be left out when empty."""
    try:
        with atomic_path(cached) as tmp:
            # Columns empty in every row (most optional ones, in a big apply manifest) are left
            # out and come back empty, as is ``aoi`` where it is the scene id (its default): a
            # third less to load.
            empty = [c for c in optional if not (checked[c] != "").any()]
            if (checked["aoi"] == checked["scene_id"]).all():
                empty.append("aoi")
            checked.drop(columns=empty).reset_index(drop=True).to_parquet(tmp, index=False)
        # A handful of manifests (the project's, a test config's) at most: drop the oldest.
        # (not the dot-named temporaries of other writers)
        entries = [p for p in cached.parent.glob("*.*") if not p.name.startswith(".")]
        kept = sorted(entries, key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[2 * CACHE_KEEP :]:
            old.unlink(missing_ok=True)
    except OSError as exc:  # a read-only project still plans, only without the cache
        log.warning("could not keep the checked manifest in %s: %s", cached, exc)
