"""Polygons of the mapped classes: what a user reports, not pixels.

Per applied scene (``vectorize:``), inside the shard job that maps it:
``results/maps/{predictor}/polygons/{scene}.fgb`` (FlatGeobuf, the scene's CRS). Patches smaller
than ``min_area_m2`` are first merged into their largest neighbour (GDAL's sieve, the minimum
mapping unit), then every connected patch of a class in ``vectorize.classes`` becomes one valid
polygon (simplified by ``simplify_m``, topology kept) with these columns:

    scene_id, class, area_m2 (in an equal-area CRS, EPSG:6933), mean_probability (of its class
    over its pixels), touches_edge (true where it reaches the scene's border or nodata: a patch
    that may continue in the next scene), geometry

Each shard job also writes ``polygons/parts/{shard}.parquet``: its ok scenes' polygons in
EPSG:4326; ``merge_polygons`` joins the parts into ``polygons.parquet`` (GeoParquet) and its
GeoPackage twin ``polygons.gpkg``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.features import shapes, sieve
from scipy import ndimage

from snakemap.core.io import NODATA_CLASS, atomic_path
from snakemap.core.output_sections import VectorizeOptions

#: the CRS areas are measured in (equal-area, global)
AREA_CRS = "EPSG:6933"
#: the CRS of the merged polygons of scenes in many CRSs
MERGED_CRS = "EPSG:4326"
#: the columns of every polygon table, geometry last
COLUMNS = ["scene_id", "class", "area_m2", "mean_probability", "touches_edge"]
#: metres per degree of latitude (to turn metres into degrees for scenes in a geographic CRS)
METRES_PER_DEGREE = 111_320.0


def scene_polygons(
    class_map: str | os.PathLike[str],
    probs: str | os.PathLike[str] | None,
    scene_id: str,
    classes: Sequence[str],
    options: VectorizeOptions,
) -> Any:
    """The polygons of one scene's class map (see the module docstring) as a GeoDataFrame in the
    map's CRS; ``probs``: its probabilities (None: ``mean_probability`` is empty)."""
    import geopandas as gpd

    with rasterio.open(class_map) as src:
        mapped = src.read(1)
        transform, crs = src.transform, src.crs
    valid = mapped != NODATA_CLASS
    metres = _metres_per_unit(crs, transform, mapped.shape)
    pixel_m2 = abs(transform.a * transform.e) * metres**2
    smallest = math.ceil(options.min_area_m2 / pixel_m2) if options.min_area_m2 else 0
    if smallest > 1:
        # sieve merges patches below the size into their largest neighbour; nodata stays
        mapped = np.where(valid, sieve(mapped, smallest, mask=valid, connectivity=4), NODATA_CLASS).astype(
            np.uint8
        )
    wanted = [classes.index(c) for c in (options.classes or classes)]
    edge = np.zeros(mapped.shape, dtype=bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    edge |= ndimage.binary_dilation(~valid)
    probabilities = _read_probabilities(probs) if probs is not None else None
    rows: list[dict[str, Any]] = []
    geometries: list[Any] = []
    from shapely.geometry import shape

    for k in wanted:
        patches, n = ndimage.label(mapped == k)
        if not n:
            continue
        ids = np.arange(1, n + 1)
        touching = set(np.unique(patches[edge & (patches > 0)]).tolist())
        means = (
            ndimage.mean(probabilities[k], labels=patches, index=ids)
            if probabilities is not None
            else np.full(n, np.nan)
        )
        for geometry, patch in shapes(patches.astype(np.int32), mask=patches > 0, transform=transform):
            patch = int(patch)
            geometries.append(shape(geometry))
            rows.append(
                {
                    "scene_id": scene_id,
                    "class": classes[k],
                    "mean_probability": float(means[patch - 1]),
                    "touches_edge": patch in touching,
                }
            )
    frame = gpd.GeoDataFrame(
        rows, geometry=geometries, crs=crs, columns=[c for c in COLUMNS if c != "area_m2"]
    )
    if options.simplify_m and len(frame):
        frame["geometry"] = frame.geometry.simplify(options.simplify_m / metres, preserve_topology=True)
    if len(frame):
        frame["geometry"] = frame.geometry.make_valid()
    frame["area_m2"] = frame.geometry.to_crs(AREA_CRS).area if len(frame) else []
    return frame[[*COLUMNS, "geometry"]]


@dataclass
class Vectorizer:
    """The shard runner's maker of polygons (:class:`snakemap.inference.shard.Vectorizer`)."""

    options: VectorizeOptions
    classes: list[str]

    def scene(self, class_map: Path, probs: Path | None, scene_id: str, out: Path) -> None:
        write_scene_polygons(scene_polygons(class_map, probs, scene_id, self.classes, self.options), out)

    def part(self, paths: Sequence[Path], out: Path) -> int:
        return write_part(paths, out)

    def fingerprint(self) -> str:
        import json

        return json.dumps({"options": self.options.resolved(), "classes": self.classes}, sort_keys=True)


def write_scene_polygons(frame: Any, path: str | os.PathLike[str]) -> None:
    """One scene's polygons as FlatGeobuf, atomically (an empty layer where there are none)."""
    with atomic_path(path, suffix=".fgb") as tmp:
        frame.to_file(tmp, driver="FlatGeobuf")


def write_part(paths: Sequence[Path], out: str | os.PathLike[str]) -> int:
    """A shard's part: the polygons of its scenes' FlatGeobuf files in EPSG:4326, GeoParquet,
    atomically. Returns the number of polygons."""
    frame = _concat([_read(p).to_crs(MERGED_CRS) for p in paths])
    with atomic_path(out, suffix=".parquet") as tmp:
        frame.to_parquet(tmp)
    return len(frame)


def merge_polygons(
    parts: Sequence[str | os.PathLike[str]], parquet: str | os.PathLike[str], gpkg: str | os.PathLike[str]
) -> int:
    """Every shard's part in one GeoParquet file and its GeoPackage twin (layer ``polygons``),
    atomically. Returns the number of polygons."""
    import geopandas as gpd

    frame = _concat([gpd.read_parquet(p) for p in parts])
    with atomic_path(parquet, suffix=".parquet") as tmp:
        frame.to_parquet(tmp)
    with atomic_path(gpkg, suffix=".gpkg") as tmp:
        frame.to_file(tmp, layer="polygons", driver="GPKG")
    return len(frame)


def _concat(frames: Sequence[Any]) -> Any:
    import geopandas as gpd
    import pandas as pd

    found = [f for f in frames if len(f)]
    if not found:
        return gpd.GeoDataFrame({c: [] for c in COLUMNS}, geometry=[], crs=MERGED_CRS)
    return gpd.GeoDataFrame(pd.concat(found, ignore_index=True), crs=MERGED_CRS)


def _read(path: Path) -> Any:
    import geopandas as gpd

    return gpd.read_file(path)


def _read_probabilities(path: str | os.PathLike[str]) -> np.ndarray:
    from snakemap.inference.writer import read_probabilities

    return read_probabilities(path)


def _metres_per_unit(crs: Any, transform: Any, shape: tuple[int, int]) -> float:
    """Metres per CRS unit: 1 for a metric CRS; for degrees, those of a degree of longitude at
    the scene's centre latitude and of latitude, averaged (their geometric mean)."""
    if crs is None or not crs.is_geographic:
        return float(crs.linear_units_factor[1]) if crs is not None and crs.is_projected else 1.0
    lat = transform.f + transform.e * shape[0] / 2
    return METRES_PER_DEGREE * math.sqrt(max(math.cos(math.radians(lat)), 1e-6))
