"""File input and output: atomic writes, JSON sentinels and Cloud-Optimized GeoTIFFs.

Every file snakemap writes goes through :func:`atomic_path`: the data is written to a temporary
name in the destination folder and renamed into place, so a killed job never leaves a
half-written file that a later run would take for done.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported by the callers that have tables, not by every light step
    import pandas as pd

#: The class maps' nodata value (uint8 class indices elsewhere); also the probabilities' nodata.
NODATA_CLASS = 255
#: uint8 probabilities are stored as ``round(p * PROB_SCALE)``: 0..250, 255 nodata.
PROB_SCALE = 250

#: Creation options of every Cloud-Optimized GeoTIFF snakemap writes.
COG_OPTIONS: dict[str, Any] = {
    "driver": "COG",
    "compress": "DEFLATE",
    "blocksize": 256,
    "overviews": "AUTO",
    "bigtiff": "IF_SAFER",
}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name starts with ``.`` and ends with ``.tmp`` (plus ``suffix``, so that
    drivers that look at extensions still work). On any exception the temporary file is removed
    and ``path`` is left as it was.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=".tmp" + (suffix or dest.suffix), dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); results get the usual umask-derived mode.
        tmp.chmod(0o666 & ~_UMASK)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_csv(table: pd.DataFrame, path: str | os.PathLike[str], sep: str = ",") -> pd.DataFrame:
    """Write ``table`` as CSV (or TSV, ``sep="\\t"``) without its index, atomically; return it."""
    suffix = ".tsv" if sep == "\t" else ".csv"
    with atomic_path(path, suffix=suffix) as tmp:
        table.to_csv(tmp, sep=sep, index=False)
    return table


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_cog(
    path: str | os.PathLike[str],
    data: np.ndarray,
    profile: dict[str, Any],
    descriptions: list[str] | None = None,
    tags: dict[str, str] | None = None,
    scales: list[float] | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> None:
    """Write a ``(bands, rows, cols)`` array as a tiled, compressed Cloud-Optimized GeoTIFF.

    Args:
        path: destination; written atomically.
        data: array of shape ``(bands, rows, cols)``.
        profile: rasterio profile giving at least ``crs``, ``transform`` and ``nodata``.
        descriptions: optional band names, one per band.
        tags: optional dataset-level metadata tags.
        scales: optional per-band scale factors (value * scale is the quantity).
        colormap: optional colour table of band 1 (value -> RGBA), for a uint8 class map.
    """
    # rasterio loads GDAL (a quarter of a second): only the steps that write rasters pay for it,
    # not those that read sentinels (`snakemap progress`).
    import rasterio.shutil
    from rasterio.io import MemoryFile

    if data.ndim != 3:
        raise ValueError(f"write_cog needs (bands, rows, cols), got shape {data.shape}")
    count, height, width = data.shape
    mem_profile = {
        "driver": "GTiff",
        "count": count,
        "height": height,
        "width": width,
        "dtype": data.dtype.name,
        "crs": profile.get("crs"),
        "transform": profile["transform"],
        "nodata": profile.get("nodata"),
    }
    # The COG driver only supports CreateCopy: build the dataset in memory, then copy it out.
    with MemoryFile() as mem:
        with mem.open(**mem_profile) as dst:
            dst.write(data)
            for i, name in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, name)
            if tags:
                dst.update_tags(**tags)
            if scales:
                dst.scales = scales
            if colormap:
                dst.write_colormap(1, colormap)
        with mem.open() as src, atomic_path(path, suffix=".tif") as tmp:
            rasterio.shutil.copy(src, tmp, **COG_OPTIONS)
