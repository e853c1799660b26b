"""The grid an area estimate counts a predictor's maps on, and the reference sample drawn from
it (:mod:`snakemap.evaluation.areas` holds the estimator).

The maps are read on one grid in an equal-area CRS (EPSG:6933 by default), block by block, so
every pixel has the same area whatever the maps' own CRSs, and where maps overlap each place is
counted once: the first map that has a class there gives it. Samples are GeoPackages of points
with ``map_class`` and ``reference`` columns.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.transform import rowcol, xy
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.warp import transform as transform_points
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from snakemap.core.io import NODATA_CLASS, read_json
from snakemap.evaluation.areas import MAP_COLUMN, REFERENCE_COLUMN
from snakemap.inference.class_areas import HA

#: rows and columns of the equal-area grid read at a time
BLOCK = 1024


@dataclass
class AreaGrid:
    """One grid in an equal-area CRS over the area of interest: ``crs``, ``transform``,
    ``width`` x ``height`` pixels of ``resolution`` metres, and the AOI's geometries in ``crs``
    (None: every pixel of the grid)."""

    crs: CRS
    transform: Affine
    width: int
    height: int
    geometries: list[Any] | None

    @property
    def pixel_ha(self) -> float:
        return abs(self.transform.a * self.transform.e) * HA

    @classmethod
    def over(
        cls,
        maps: Sequence[Path],
        crs: str = "EPSG:6933",
        aoi: str | os.PathLike[str] | None = None,
        resolution: float | None = None,
    ) -> AreaGrid:
        """The grid over ``aoi`` (a vector file; None: the maps' union), at ``resolution`` metres
        (None: the finest of the maps' pixels once warped into ``crs``)."""
        target = CRS.from_user_input(crs)
        bounds, sizes = [], []
        for path in maps:
            with rasterio.open(path) as src:
                if src.crs is None:
                    raise ValueError(f"{path} has no CRS: its area is unknown")
                bounds.append(transform_bounds(src.crs, target, *src.bounds, densify_pts=21))
                t, _, _ = calculate_default_transform(src.crs, target, src.width, src.height, *src.bounds)
                sizes.append(abs(t.a))
        if not sizes:
            raise ValueError("no map to estimate areas from (no scene of the predictor ended ok)")
        geometries = None
        if aoi is not None:
            import geopandas as gpd

            shapes = gpd.read_file(aoi)
            if shapes.crs is None:
                raise ValueError(f"areas.aoi {aoi} has no CRS")
            shapes = shapes.to_crs(target)
            if shapes.empty or not shapes.is_valid.all():
                bad = [] if shapes.empty else list(shapes.index[~shapes.is_valid])
                raise ValueError(
                    f"areas.aoi {aoi}: no features"
                    if shapes.empty
                    else f"areas.aoi {aoi}: invalid features {bad}"
                )
            geometries = list(shapes.geometry)
            west, south, east, north = shapes.total_bounds
        else:
            if not bounds:
                raise ValueError("no map to estimate areas from")
            west, south = min(b[0] for b in bounds), min(b[1] for b in bounds)
            east, north = max(b[2] for b in bounds), max(b[3] for b in bounds)
        res = float(resolution or min(sizes))
        west, north = math.floor(west / res) * res, math.ceil(north / res) * res
        width = max(1, math.ceil((east - west) / res))
        height = max(1, math.ceil((north - south) / res))
        return cls(target, Affine(res, 0, west, 0, -res, north), width, height, geometries)

    def windows(self) -> Iterator[Window]:
        """Blocks of :data:`BLOCK` rows and columns, row by row: always in this order."""
        for row in range(0, self.height, BLOCK):
            for col in range(0, self.width, BLOCK):
                yield Window(col, row, min(BLOCK, self.width - col), min(BLOCK, self.height - row))

    def read(self, maps: Sequence[rasterio.DatasetReader], window: Window) -> np.ndarray:
        """``(rows, cols)`` uint8 classes of ``window``: the first map with a class at a pixel
        gives it; :data:`NODATA_CLASS` outside the AOI and where no map has one."""
        out = np.full((int(window.height), int(window.width)), NODATA_CLASS, dtype=np.uint8)
        for src in maps:
            with WarpedVRT(
                src,
                crs=self.crs,
                transform=self.transform,
                width=self.width,
                height=self.height,
                resampling=Resampling.nearest,
                nodata=NODATA_CLASS,
            ) as vrt:
                values = vrt.read(1, window=window)
            fill = (out == NODATA_CLASS) & (values != NODATA_CLASS)
            out[fill] = values[fill]
        if self.geometries is not None:
            outside = geometry_mask(
                self.geometries,
                out_shape=out.shape,
                transform=window_transform(window, self.transform),
            )
            out[outside] = NODATA_CLASS
        return out


def map_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The rasters of ``paths``: a mosaic folder (``index.json``) gives its zones' VRTs."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            index = read_json(path / "index.json")
            found += [path / zone["vrt"] for zone in index["zones"].values()]
        else:
            found.append(path)
    return found


def count_mapped(grid: AreaGrid, maps: Sequence[Path], n_classes: int) -> np.ndarray:
    """Pixels per class of the grid (each place once)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    with _opened(maps) as sources:
        for window in grid.windows():
            values = grid.read(sources, window)
            counts += np.bincount(values[values < n_classes], minlength=n_classes)[:n_classes]
    return counts


def draw_sample(
    grid: AreaGrid,
    maps: Sequence[Path],
    classes: Sequence[str],
    sizes: Sequence[int] | np.ndarray,
    seed: int = 0,
    counts: np.ndarray | None = None,
) -> pd.DataFrame:
    """A stratified random sample: ``sizes[i]`` distinct pixels mapped as class ``i``, drawn
    without replacement with ``seed``; each point at its pixel's centre in the grid's CRS.
    ``counts``: :func:`count_mapped`'s, where already known.

    Returns:
        ``point, x, y, map_class, reference`` (empty: for people to fill), strata in class order.
    """
    k = len(classes)
    counts = count_mapped(grid, maps, k) if counts is None else counts
    rng = np.random.default_rng(seed)
    chosen = [
        np.sort(rng.choice(int(counts[i]), size=int(sizes[i]), replace=False))
        if sizes[i]
        else np.array([], int)
        for i in range(k)
    ]
    seen = np.zeros(k, dtype=np.int64)
    found: list[list[tuple[float, float]]] = [[] for _ in range(k)]
    with _opened(maps) as sources:
        for window in grid.windows():
            values = grid.read(sources, window).ravel()
            for i in range(k):
                where = np.flatnonzero(values == i)
                ranks = chosen[i][(chosen[i] >= seen[i]) & (chosen[i] < seen[i] + len(where))] - seen[i]
                rows, cols = np.divmod(where[ranks], int(window.width))
                xs, ys = xy(grid.transform, rows + window.row_off, cols + window.col_off)
                found[i] += list(zip(np.atleast_1d(xs), np.atleast_1d(ys), strict=True))
                seen[i] += len(where)
    rows_out = [
        {"x": float(x), "y": float(y), MAP_COLUMN: classes[i], REFERENCE_COLUMN: ""}
        for i in range(k)
        for x, y in found[i]
    ]
    table = pd.DataFrame(rows_out, columns=["x", "y", MAP_COLUMN, REFERENCE_COLUMN])
    table.insert(0, "point", np.arange(len(table)))
    return table


def write_sample(table: pd.DataFrame, crs: CRS, path: str | os.PathLike[str]) -> None:
    """The sample as points in a GeoPackage (layer ``sample``), atomically."""
    import geopandas as gpd

    from snakemap.core.io import atomic_path

    points = gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(table["x"], table["y"]), crs=crs)
    with atomic_path(path, suffix=".gpkg") as tmp:
        points.to_file(tmp, layer="sample", driver="GPKG")


def read_sample(path: str | os.PathLike[str], crs: CRS) -> pd.DataFrame:
    """A labelled sample (GeoPackage or any OGR file of points with ``map_class`` and
    ``reference``), its points in ``crs`` (columns ``x, y``)."""
    import geopandas as gpd

    points = gpd.read_file(path)
    missing = {MAP_COLUMN, REFERENCE_COLUMN} - set(points.columns)
    if missing:
        raise ValueError(f"{path}: the reference sample needs the columns {sorted(missing)}")
    if points.crs is None:
        raise ValueError(f"{path}: the reference sample has no CRS")
    points = points.to_crs(crs)
    table = pd.DataFrame(points.drop(columns="geometry"))
    table["x"], table["y"] = points.geometry.x.to_numpy(), points.geometry.y.to_numpy()
    return table


def check_strata(
    table: pd.DataFrame, grid: AreaGrid, maps: Sequence[Path], classes: Sequence[str], source: str
) -> None:
    """The points' ``map_class`` must be what the map says there: a sample drawn from another
    map (or before the map changed) would bias every estimate."""
    rows, cols = rowcol(grid.transform, table["x"].to_numpy(), table["y"].to_numpy())
    rows, cols = np.asarray(rows), np.asarray(cols)
    mapped = np.full(len(table), NODATA_CLASS, dtype=np.int64)
    inside = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    with _opened(maps) as sources:
        for window in grid.windows():  # each block with points read once
            hit = inside & (rows >= window.row_off) & (rows < window.row_off + window.height)
            hit &= (cols >= window.col_off) & (cols < window.col_off + window.width)
            if hit.any():
                block = grid.read(sources, window)
                mapped[hit] = block[rows[hit] - window.row_off, cols[hit] - window.col_off]
    names = np.array([*classes, *["nodata"] * (NODATA_CLASS + 1 - len(classes))])[mapped]
    stale = table.index[names != table[MAP_COLUMN].astype(str).to_numpy()]
    if len(stale):
        raise ValueError(
            f"{source}: points {table.loc[stale, 'point' if 'point' in table else MAP_COLUMN].tolist()[:10]} "
            "are not of the class the map gives them now: the sample was drawn from another map; draw "
            "it again (snakemap sample)"
        )


def label_from_raster(
    table: pd.DataFrame,
    crs: CRS,
    rasters: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    classes_of: Any,
) -> pd.DataFrame:
    """The sample with ``reference`` read at each point from reference class rasters (the first
    with a value there gives it; ``classes_of``: float raster values, NaN for none, -> class
    names or None for no class); points where none has a class (outside them, their nodata, a
    value of no class) are dropped."""
    values = np.full(len(table), np.nan)
    for raster in [rasters] if isinstance(rasters, str | os.PathLike) else rasters:
        with rasterio.open(raster) as src:
            xs, ys = transform_points(crs, src.crs, table["x"].tolist(), table["y"].tolist())
            rows, cols = (np.asarray(a) for a in rowcol(src.transform, xs, ys))
            todo = np.isnan(values) & (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
            points = list(zip(np.asarray(xs)[todo], np.asarray(ys)[todo], strict=True))
            found = np.array([v[0] for v in src.sample(points, masked=False)], dtype=np.float64)
            if src.nodata is not None and len(found):
                found[found == src.nodata] = np.nan
            values[todo] = found if len(found) else values[todo]
    names = np.asarray(classes_of(values), dtype=object)
    labelled = table.copy()
    labelled[REFERENCE_COLUMN] = names
    keep = pd.notna(names) & np.isfinite(values)
    kept: pd.DataFrame = labelled[keep].reset_index(drop=True)
    return kept


class _opened:
    """The maps opened for reading, closed on exit."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = paths
        self.sources: list[rasterio.DatasetReader] = []

    def __enter__(self) -> list[rasterio.DatasetReader]:
        self.sources = [rasterio.open(p) for p in self.paths]
        return self.sources

    def __exit__(self, *exc: object) -> None:
        for src in self.sources:
            src.close()
