"""The scene manifest: one row per scene, read from CSV or Parquet and checked before any job.

Columns:

=========== ========= ===========================================================
scene_id    required  safe file name: letters, digits, ``.``, ``_``, ``-``; unique
uri         required  local path, ``file://``, ``http(s)://``, ``s3://`` or ``gs://``
role        required  ``train``, ``calval`` or ``apply``
sha256      optional  expected checksum of the file at ``uri``
label_uri   optional  the label raster; required for train and calval rows
label_sha256 optional expected checksum of the label file
aoi         optional  area of interest, the group for cross-validation folds;
                      defaults to the scene id
sensor      optional  an entry of the config's ``sensors`` table (band names,
                      scale and offset, nodata); empty: ``bands.names``
label_scheme optional an entry of the config's ``label_schemes`` table (a remap
                      table); empty: ``labels.remap``
datetime    optional  the scene's acquisition time (ISO 8601, e.g. ``2024-05-01T10:30:00Z``):
                      the STAC item of its map says it
bounds      optional  ``minx,miny,maxx,maxy`` in the scene's CRS: a train or calval
                      scene uses only this part of its file (e.g. a calval site cut
                      from the grid that the training scenes come from)
=========== ========= ===========================================================

``label_uri`` is required for train and calval rows of segmentation (``labels_required``);
downscaling learns from the fields themselves.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

import pandas as pd

ROLES = ("train", "calval", "apply")
REQUIRED = ("scene_id", "uri", "role")
OPTIONAL = ("sha256", "label_uri", "label_sha256", "aoi", "sensor", "label_scheme", "bounds", "datetime")
#: A scene id becomes a file name: no separators, no leading dot or dash, no whitespace.
SCENE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
_SCENE_ID_RE = re.compile(rf"^{SCENE_ID_PATTERN}$")
#: A checksum: 64 hexadecimal digits (the column may also be empty).
SHA256_PATTERN = r"[0-9a-fA-F]{64}"
_SHA256_RE = re.compile(rf"^{SHA256_PATTERN}$")


class ManifestError(ValueError):
    """The manifest has rows that cannot be used; the message lists each one."""


class ManifestRow(NamedTuple):
    """One row of a checked manifest: every column as text (``""`` where empty)."""

    scene_id: str
    uri: str
    role: str
    sha256: str
    label_uri: str
    label_sha256: str
    aoi: str
    sensor: str
    label_scheme: str
    bounds: str
    datetime: str


def manifest_rows(manifest: pd.DataFrame) -> list[ManifestRow]:
    """The rows of a manifest whose columns are all text, as :func:`check_manifest` returns it."""
    columns = manifest[list(ManifestRow._fields)]
    return [ManifestRow(*map(str, values)) for values in columns.itertuples(index=False, name=None)]


def read_manifest(
    path: str | os.PathLike[str],
    sensors: Collection[str] | None = None,
    label_schemes: Collection[str] | None = None,
    labels_required: bool = True,
) -> pd.DataFrame:
    """Read and check a manifest, returning it indexed by ``scene_id``.

    Args:
        sensors: the names of the config's ``sensors`` table; a row naming another sensor is an
            error. None: the ``sensor`` column is not checked.
        label_schemes: the same for the ``label_schemes`` table and the ``label_scheme`` column.
        labels_required: train and calval rows need a ``label_uri`` (segmentation).

    Raises:
        ManifestError: naming the file and each bad row (by its line in a CSV, or its
            position in a Parquet file) with what is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
        where = "row {}"
        first = 1
    else:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=False)
        where = "line {}"
        first = 2  # the header is line 1
    return check_manifest(df, str(path), where, first, sensors, label_schemes, labels_required)


def check_manifest(
    df: pd.DataFrame,
    name: str = "manifest",
    where: str = "row {}",
    first: int = 1,
    sensors: Collection[str] | None = None,
    label_schemes: Collection[str] | None = None,
    labels_required: bool = True,
) -> pd.DataFrame:
    """Check a manifest table; see :func:`read_manifest`."""
    known = {"sensor": ("sensors", sensors), "label_scheme": ("label_schemes", label_schemes)}
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"{name}: missing column(s) {', '.join(missing)}")
    unknown = [c for c in df.columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise ManifestError(
            f"{name}: unknown column(s) {', '.join(map(str, unknown))}; "
            f"expected {', '.join(REQUIRED + OPTIONAL)}"
        )
    df = df.copy()
    for col in OPTIONAL:
        if col not in df.columns:
            df[col] = ""
    df = df.astype({c: str for c in REQUIRED + OPTIONAL}).replace({"nan": "", "None": ""})
    errors: list[str] = []
    seen: dict[str, int] = {}
    for pos, row in enumerate(manifest_rows(df)):
        loc = where.format(pos + first)
        errors += [f"{name} {loc}: {e}" for e in _row_errors(row, labels_required) + _name_errors(row, known)]
        if row.scene_id in seen:
            errors.append(
                f"{name} {loc}: duplicate scene_id {row.scene_id!r} "
                f"(first at {where.format(seen[row.scene_id] + first)})"
            )
        else:
            seen[row.scene_id] = pos
    if errors:
        raise ManifestError("\n".join(errors))
    df["aoi"] = df["aoi"].where(df["aoi"] != "", df["scene_id"])
    return df.set_index("scene_id", drop=False)


def parse_datetime(text: str) -> dt.datetime:
    """An ISO 8601 time as an aware datetime (UTC where the text gives no zone).

    Raises:
        ValueError: for text that is not ISO 8601.
    """
    when = dt.datetime.fromisoformat(text.strip())
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def parse_bounds(text: str) -> tuple[float, float, float, float] | None:
    """A ``bounds`` cell as ``(minx, miny, maxx, maxy)``; None when empty.

    Raises:
        ValueError: for anything but four numbers with ``minx < maxx`` and ``miny < maxy``.
    """
    if not text.strip():
        return None
    try:
        minx, miny, maxx, maxy = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"bounds {text!r} is not minx,miny,maxx,maxy") from None
    if not (minx < maxx and miny < maxy):
        raise ValueError(f"bounds {text!r} needs minx < maxx and miny < maxy")
    return minx, miny, maxx, maxy


def _row_errors(row: ManifestRow, labels_required: bool = True) -> list[str]:
    scene_id = row.scene_id
    errors = []
    if not _SCENE_ID_RE.match(scene_id):
        errors.append(
            f"scene_id {scene_id!r} is not a safe file name "
            "(letters, digits, '.', '_', '-'; starting with a letter or digit; no '/' or spaces)"
        )
    role = row.role
    if role not in ROLES:
        errors.append(f"scene {scene_id!r}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not row.uri.strip():
        errors.append(f"scene {scene_id!r}: empty uri")
    if labels_required and role in ("train", "calval") and not row.label_uri.strip():
        errors.append(f"scene {scene_id!r}: role {role} needs a label_uri")
    try:
        if parse_bounds(row.bounds) is not None and role == "apply":
            errors.append(f"scene {scene_id!r}: bounds are for train and calval rows, not apply")
    except ValueError as exc:
        errors.append(f"scene {scene_id!r}: {exc}")
    if row.datetime:
        try:
            parse_datetime(row.datetime)
        except ValueError:
            errors.append(f"scene {scene_id!r}: datetime {row.datetime!r} is not ISO 8601")
    for col in ("sha256", "label_sha256"):
        value = getattr(row, col)
        if value and not _SHA256_RE.match(value):
            errors.append(f"scene {scene_id!r}: {col} {value!r} is not 64 hex digits")
    return errors


def _name_errors(row: ManifestRow, known: dict[str, tuple[str, Collection[str] | None]]) -> list[str]:
    """A ``sensor`` or ``label_scheme`` that names no entry of its config table."""
    scene_id = row.scene_id
    errors = []
    for col, (table, names) in known.items():
        value = getattr(row, col)
        if names is not None and value and value not in names:
            errors.append(
                f"scene {scene_id!r}: {col} {value!r} is not in the config's {table} "
                f"({', '.join(names) or 'none defined'})"
            )
    return errors


def scenes_with_role(manifest: pd.DataFrame, *roles: str) -> list[str]:
    """Scene ids whose role is one of ``roles``, in manifest order."""
    return manifest.loc[manifest["role"].isin(roles), "scene_id"].tolist()
