"""The area a class map gives each class, in hectares, on the ground.

A geographic map's pixels shrink toward the poles: each row is weighed by the area of its band of
latitude on the WGS84 ellipsoid, ``a^2 / 2 * dlon * (q(lat2) - q(lat1))``, with ``q`` the
authalic function of the ellipsoid (Snyder 1987, eq. 3-12). A projected map's cell (in its CRS's
linear unit, turned into metres) is divided by the projection's areal scale at each row's centre
(PROJ's factors): 1 within 0.1% in a UTM zone, 4 at 60 degrees in Web Mercator. Rows are taken
as the transform's (no rotation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from snakemap.core.io import NODATA_CLASS

#: the WGS84 ellipsoid: semi-major axis (metres) and eccentricity
WGS84_A = 6_378_137.0
WGS84_E = math.sqrt(2 / 298.257223563 - (1 / 298.257223563) ** 2)
#: hectares per square metre
HA = 1e-4
#: rows of the map read at a time
ROWS = 1024


def row_hectares(crs: CRS | None, transform: Affine, rows: int) -> np.ndarray | None:
    """``(rows,)`` the area of one pixel of each row, in hectares; None without a CRS (pixels with
    no place on the ground have no area)."""
    if crs is None:
        return None
    if crs.is_geographic:
        width = math.radians(abs(transform.a))
        edges = np.radians(np.clip(transform.f + transform.e * np.arange(rows + 1), -90, 90))
        band = np.abs(np.diff(_authalic_q(edges)))
        return np.asarray(WGS84_A**2 / 2 * width * band * HA, dtype=np.float64)
    unit = float(crs.linear_units_factor[1])
    area = abs(transform.a * transform.e - transform.b * transform.d) * unit**2 * HA
    return area / _areal_scale(crs, transform, rows)


def _areal_scale(crs: CRS, transform: Affine, rows: int) -> np.ndarray:
    """``(rows,)`` the projection's areal scale (map area / ground area) at each row's centre
    (1 where PROJ gives none)."""
    from pyproj import Proj, Transformer

    xs = np.full(rows, transform.c + transform.a * 0.5)  # the first column's centre: rows vary in y
    ys = transform.f + transform.e * (np.arange(rows) + 0.5)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    scale = np.asarray(Proj(crs).get_factors(lon, lat).areal_scale, dtype=np.float64)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def _authalic_q(lat: np.ndarray) -> np.ndarray:
    """Snyder's ``q`` of geodetic latitudes (radians) on WGS84: the area from the equator to each
    latitude, per radian of longitude, is ``a^2 / 2 * q``."""
    e, sin = WGS84_E, np.sin(lat)
    q = (1 - e**2) * (sin / (1 - (e * sin) ** 2) - np.log((1 - e * sin) / (1 + e * sin)) / (2 * e))
    return np.asarray(q, dtype=np.float64)


def class_hectares(path: str | os.PathLike[str], classes: Sequence[str]) -> dict[str, float] | None:
    """Hectares per class of the uint8 class map at ``path`` (nodata and values past the classes
    count for none); None for a map without a CRS."""
    k = len(classes)
    with rasterio.open(path) as src:
        per_row = row_hectares(src.crs, src.transform, src.height)
        if per_row is None:
            return None
        total = np.zeros(k, dtype=np.float64)
        for top in range(0, src.height, ROWS):
            n = min(ROWS, src.height - top)
            data = src.read(1, window=Window(0, top, src.width, n))
            valid = (data < k) & (data != NODATA_CLASS)
            rows = np.broadcast_to(np.arange(n)[:, None], data.shape)
            counts = np.bincount(rows[valid] * k + data[valid], minlength=n * k).reshape(n, k)
            total += (counts * per_row[top : top + n, None]).sum(axis=0)
    return {name: float(v) for name, v in zip(classes, total, strict=True)}
