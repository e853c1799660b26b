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

import contextlib
import io
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from snakemap.core.io import atomic_path
from snakemap.core.paths import rebasable, rows_base
from snakemap.plan.manifest_cache import CACHE_ENTRY, cache_key, load_checked, store_checked
from snakemap.plan.manifest_fields import is_datetime, parse_bounds, parse_datetime

if TYPE_CHECKING:
    import pandas as pd

ROLES = ("train", "calval", "apply")
REQUIRED = ("scene_id", "uri", "role")
OPTIONAL = ("sha256", "label_uri", "label_sha256", "aoi", "sensor", "label_scheme", "bounds", "datetime")
#: A scene id becomes a file name: no separators, no leading dot or dash, no whitespace.
SCENE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
_SCENE_ID_RE = re.compile(SCENE_ID_PATTERN)
#: A checksum: 64 hexadecimal digits (the column may also be empty).
SHA256_PATTERN = r"[0-9a-fA-F]{64}"
_SHA256_RE = re.compile(SHA256_PATTERN)


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
    cache: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Read and check a manifest, returning it indexed by ``scene_id``.

    Args:
        sensors: the names of the config's ``sensors`` table; a row naming another sensor is an
            error. None: the ``sensor`` column is not checked.
        label_schemes: the same for the ``label_schemes`` table and the ``label_scheme`` column.
        labels_required: train and calval rows need a ``label_uri`` (segmentation).
        cache: a folder (e.g. :data:`snakemap.plan.manifest_cache.CACHE_DIR`) where the table,
            once its rows are checked, is kept as Parquet under the sha256 of the file's bytes
            (see :mod:`snakemap.plan.manifest_cache`): the next read of the same file loads it
            instead of parsing and checking every row again (a million rows: 0.3 s instead of
            2 s). Any change to the file is a new key; a damaged entry is rebuilt.
            What depends on the arguments (the tables' names, the labels) is checked on every
            read, column by column.

    Raises:
        ManifestError: naming the file and each bad row (by its line in a CSV, or its
            position in a Parquet file) with what is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest {path} does not exist")
    data = path.read_bytes()  # once: what is checked is what the key names, whatever edits the file
    args = (str(path), *_where(path), sensors, label_schemes, labels_required)
    if cache is None:
        return _rebased(check_manifest(_read(path, data), *args), path)
    entry = Path(cache) / f"{cache_key(path, data)}.parquet"
    checked = _rebased(_cached(path, data, entry, args), path)
    # where derived tables of this content may be kept too (snakemap.plan.shards.ShardTable)
    checked.attrs[CACHE_ENTRY] = str(entry)
    return checked


def _rebased(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``df`` with its relative ``uri`` and ``label_uri`` paths as the workdir sees them: relative
    to the manifest's folder, else to the launch folder (:func:`snakemap.core.paths.rows_base`);
    the prefix each column got is in ``df.attrs`` (``uri_prefix``)."""
    for column in ("uri", "label_uri"):
        values = df[column]
        relative = rebasable(values)
        if not relative.any():
            continue
        prefix = rows_base(path, str(values[relative].iloc[0]))
        if prefix is not None:
            df.loc[relative, column] = prefix + "/" + values[relative]
            df.attrs[f"{column}_prefix"] = prefix  # what shard fingerprints take off again
    return df


def _cached(path: Path, data: bytes, entry: Path, args: tuple[Any, ...]) -> pd.DataFrame:
    """The checked table of ``data`` from the cache ``entry``, or checked now and kept there. The
    rows' references to the tables and labels (``args``) are checked on every read: they only
    reject rows, so the kept table does not depend on them."""
    try:
        checked = load_checked(entry, REQUIRED, OPTIONAL)
    except (OSError, ValueError):  # not kept yet, or damaged: read and check the file
        checked = check_manifest(_read(path, data), *args)
        store_checked(checked, entry, OPTIONAL)
        return checked
    name, where, first, sensors, label_schemes, labels_required = args
    known = _known(sensors, label_schemes)
    suspect = _reference_suspects(checked, labels_required, known)
    _raise_for(checked, name, where, first, suspect, labels_required, known)
    return checked


def _read(path: Path, data: bytes) -> pd.DataFrame:
    """The manifest's bytes (from ``path``) as a table of text."""
    import pandas as pd  # not at import: `snakemap progress` reads the cached ids without it

    if is_parquet(path):
        return pd.read_parquet(io.BytesIO(data))
    options: dict[str, Any] = {"dtype": str, "keep_default_na": False, "skipinitialspace": False}
    df: pd.DataFrame
    try:  # Arrow's reader: a million rows in a third of the time of pandas' own
        df = pd.read_csv(io.BytesIO(data), engine="pyarrow", **options)
        return df
    except ValueError:  # a short row or a line of blanks, which pandas' own reader takes
        pass
    try:
        df = pd.read_csv(io.BytesIO(data), **options)
    except ValueError as exc:
        raise ManifestError(f"manifest {path} is not a readable CSV table: {exc}") from None
    if not isinstance(df.index, pd.RangeIndex):  # pandas put a longer row's extra cells in the index
        raise ManifestError(
            f"manifest {path} is not a readable CSV table: a row has more cells than the header"
        )
    return df


def is_parquet(path: Path) -> bool:
    """A Parquet manifest (else CSV), by its suffix."""
    return path.suffix.lower() in (".parquet", ".pq")


def _where(path: Path) -> tuple[str, int]:
    """How messages name a row, and the number of the first: CSV lines (the header is line 1) or
    Parquet rows."""
    return ("row {}", 1) if is_parquet(path) else ("line {}", 2)


def apply_scene_ids(path: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> list[str]:
    """The ids of the manifest's apply scenes in manifest order.

    The rows are checked as by :func:`read_manifest` (ids, roles, duplicates); what they name in
    the config's tables is the workflow's to check. With ``cache``, the ids are kept beside the
    checked table as ``{key}.apply.txt`` (one per line): a million then load in a tenth of a
    second, without pandas (``snakemap progress``).

    Raises:
        ManifestError: see :func:`read_manifest`.
    """
    path = Path(path)
    if cache is None or not path.exists():
        return scenes_with_role(read_manifest(path, labels_required=False), "apply")
    data = path.read_bytes()
    key = cache_key(path, data)
    listing = Path(cache) / f"{key}.apply.txt"
    with contextlib.suppress(OSError):
        return listing.read_text().split("\n")[:-1]
    args = (str(path), *_where(path), None, None, False)
    ids = scenes_with_role(_cached(path, data, Path(cache) / f"{key}.parquet", args), "apply")
    with contextlib.suppress(OSError), atomic_path(listing) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids))
    return ids


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
    known = _known(sensors, label_schemes)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"{name}: missing column(s) {', '.join(missing)}")
    # other columns (a STAC search's cloud_cover, a user's notes) are ignored: see extra_columns()
    df = df[[c for c in df.columns if c in REQUIRED + OPTIONAL]].copy()
    missing = [col for col in OPTIONAL if col not in df.columns]
    if missing:  # one column of empty text, of the ids' own type, shared (df[col] = "" is 20x slower)
        empty = df["scene_id"].astype(str).str.slice(0, 0)
        for col in missing:
            df[col] = empty
    # empty cells: "" whatever the reader made of them (NaN, None; pandas 3 keeps NaN in astype)
    df = df.fillna("").astype({c: str for c in REQUIRED + OPTIONAL}).replace({"nan": "", "None": ""})
    # Whole-column checks find the rows that may be bad (a million rows in about a second); only
    # those are then looked at one by one, for their messages.
    # (an index's uniqueness is a hash pass, 20x faster than marking each duplicate)
    import pandas as pd

    unique = pd.Index(df["scene_id"]).is_unique
    repeated = np.zeros(len(df), dtype=bool) if unique else df["scene_id"].duplicated(keep=False).to_numpy()
    _raise_for(df, name, where, first, _suspect(df, labels_required, known), labels_required, known, repeated)
    no_aoi = (df["aoi"] == "").to_numpy(bool)
    if no_aoi.all():  # (a whole column copied at once: where() takes 0.6 s on a million rows)
        df["aoi"] = df["scene_id"]
    elif no_aoi.any():
        df["aoi"] = df["aoi"].where(~no_aoi, df["scene_id"])
    return df[list(REQUIRED + OPTIONAL)].set_index("scene_id", drop=False)


def _known(
    sensors: Collection[str] | None, label_schemes: Collection[str] | None
) -> dict[str, tuple[str, Collection[str] | None]]:
    """Column -> (the config table it names, that table's names; None: not checked)."""
    return {"sensor": ("sensors", sensors), "label_scheme": ("label_schemes", label_schemes)}


def _raise_for(
    df: pd.DataFrame,
    name: str,
    where: str,
    first: int,
    suspect: np.ndarray,
    labels_required: bool,
    known: dict[str, tuple[str, Collection[str] | None]],
    repeated: np.ndarray | None = None,
) -> None:
    """Look at the ``suspect`` rows (and ``repeated`` ids) one by one; raise naming each bad one.

    Raises:
        ManifestError: with a line per mistake, in row order.
    """
    ids = df["scene_id"]
    repeated = np.zeros(len(df), dtype=bool) if repeated is None else repeated
    firsts: dict[str, int] = {}
    for pos in np.flatnonzero(repeated).tolist():
        firsts.setdefault(str(ids.iat[pos]), pos)
    errors: list[str] = []
    positions = np.flatnonzero(suspect | repeated).tolist()
    if not positions:  # (even an empty iloc copies every column of a million rows)
        return
    for pos, row in zip(positions, manifest_rows(df.iloc[positions]), strict=True):
        loc = where.format(pos + first)
        errors += [f"{name} {loc}: {e}" for e in _row_errors(row, labels_required) + _name_errors(row, known)]
        if firsts.get(row.scene_id, pos) != pos:
            errors.append(
                f"{name} {loc}: duplicate scene_id {row.scene_id!r} "
                f"(first at {where.format(firsts[row.scene_id] + first)})"
            )
    if errors:
        raise ManifestError("\n".join(errors))


def _reference_suspects(
    df: pd.DataFrame, labels_required: bool, known: dict[str, tuple[str, Collection[str] | None]]
) -> np.ndarray:
    """Rows whose labels or names the caller's arguments may reject, column by column."""
    bad = np.zeros(len(df), dtype=bool)
    if labels_required:
        bad |= (df["role"].isin(["train", "calval"]) & (df["label_uri"].str.strip() == "")).to_numpy(bool)
    for col, (_, names) in known.items():
        if names is not None:
            bad |= ((df[col] != "") & ~df[col].isin(list(names))).to_numpy(bool)
    return bad


def _suspect(
    df: pd.DataFrame, labels_required: bool, known: dict[str, tuple[str, Collection[str] | None]]
) -> np.ndarray:
    """Rows that :func:`_row_errors` or :func:`_name_errors` may find fault with, column by column
    (a superset: bounds and datetimes are parsed row by row only where given)."""
    bad = ~df["scene_id"].str.fullmatch(SCENE_ID_PATTERN) | ~df["role"].isin(ROLES)
    bad |= df["uri"].str.strip() == ""
    for col in ("sha256", "label_sha256"):
        bad |= (df[col] != "") & ~df[col].str.fullmatch(SHA256_PATTERN)
    bad |= df["bounds"].str.strip() != ""
    given = df["datetime"] != ""
    if given.any():
        parsed = [is_datetime(t) for t in df.loc[given, "datetime"]]
        bad.loc[given] |= ~np.array(parsed, dtype=bool)
    suspect: np.ndarray = bad.to_numpy(dtype=bool) | _reference_suspects(df, labels_required, known)
    return suspect


def _row_errors(row: ManifestRow, labels_required: bool = True) -> list[str]:
    scene_id = row.scene_id
    errors = []
    if not _SCENE_ID_RE.fullmatch(scene_id):  # not .match with $: it allows a final newline
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
        if value and not _SHA256_RE.fullmatch(value):
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
