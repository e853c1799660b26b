"""Vector labels: polygons, lines and points (GeoPackage, Shapefile, GeoJSON, FlatGeobuf,
GeoParquet) rasterized onto a scene's grid.

A feature's class is its ``labels.field`` value: a class name is that class, other values go
through ``labels.remap`` (or the row's label scheme). Features are read within the scene's bounds
only, reprojected to its CRS and burnt in file order (a later feature wins where two overlap):
polygons where they hold a pixel's centre (every pixel they touch with ``labels.all_touched``),
points and lines on the pixels they fall on, or widened by ``labels.buffer_m`` metres (in a
local metric CRS, so a scene in degrees works too). Pixels under no feature are
``ignore_index``, or ``labels.background``'s class. One label file may serve many scenes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import array_bounds
from rasterio.warp import transform_bounds

from snakemap.core.label_sections import LabelOptions
from snakemap.core.status import SceneError
from snakemap.data.labels import LISTED_VALUES, Unmapped

log = logging.getLogger(__name__)

#: the file name suffixes of the vector formats a label may be in
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet", ".geoparquet")
#: a Shapefile's other files: the first two are required
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg")


def is_vector(uri: str | os.PathLike[str]) -> bool:
    """Whether a label URI is a vector file (by its suffix)."""
    return str(uri).lower().split("?")[0].endswith(VECTOR_SUFFIXES)


def vector_suffix(uri: str) -> str:
    """The suffix a vector label keeps when it is acquired (``.gpkg``, ``.shp``...)."""
    path = str(uri).lower().split("?")[0]
    return next(s for s in VECTOR_SUFFIXES if path.endswith(s))


def read_features(path: str | os.PathLike[str], crs: CRS, bounds: tuple[float, float, float, float]) -> Any:
    """The features of ``path`` within ``bounds`` (in ``crs``), reprojected to ``crs``.

    Raises:
        SceneError: naming the file, for one without a CRS or that cannot be read.
    """
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    try:
        whole = None  # GeoParquet is read whole (pyarrow), the OGR formats within the bounds
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            whole = gpd.read_parquet(path)
        file_crs = whole.crs if whole is not None else pyogrio.read_info(path)["crs"]
        if file_crs is None:
            raise SceneError(f"label {path.name} has no CRS")
        box = transform_bounds(crs, CRS.from_user_input(file_crs), *bounds, densify_pts=21)
        frame = gpd.read_file(path, bbox=box) if whole is None else whole.cx[box[0] : box[2], box[1] : box[3]]
    except SceneError:
        raise
    except Exception as exc:  # pyogrio, arrow and OGR errors alike: the label is unreadable
        raise SceneError(f"label {path.name} cannot be read: {type(exc).__name__}: {exc}") from exc
    return frame.to_crs(crs) if len(frame) else frame.set_crs(crs, allow_override=True)


def rasterize_labels(
    path: str | os.PathLike[str],
    labels: LabelOptions,
    crs: CRS,
    transform: Any,
    shape: tuple[int, int],
) -> tuple[np.ndarray, Unmapped]:
    """A vector label as ``(rows, cols)`` uint8 class indices on a scene's grid (see the module
    docstring), and its class values that ``remap`` lacks (counted in features).

    Raises:
        SceneError: naming the file and features: no ``labels.field``, or features with invalid
            geometries. A label with no feature over the scene gives an all-``background`` (or
            unlabelled, so empty) scene.
    """
    name = Path(path).name
    if labels.field is None:
        raise SceneError(f"label {name} is a vector file: labels.field must name its class column")
    bounds = array_bounds(shape[0], shape[1], transform)
    bounds = (bounds[0], bounds[1], bounds[2], bounds[3])
    features = read_features(path, crs, bounds)
    if labels.field not in features.columns:
        raise SceneError(
            f"label {name} has no column {labels.field!r} (labels.field); it has "
            f"{', '.join(c for c in features.columns if c != 'geometry')}"
        )
    # no geometry, or no class value (a NULL in the field): nothing to label with
    features = features[
        ~features.geometry.is_empty & features.geometry.notna() & features[labels.field].notna()
    ]
    invalid = features.index[~features.geometry.is_valid]
    if len(invalid):
        raise SceneError(
            f"label {name}: features {list(invalid[:LISTED_VALUES])} have invalid geometries "
            "(self-intersecting rings, say); repair them (QGIS: Fix geometries; shapely.make_valid)"
        )
    fill = labels.classes.index(labels.background) if labels.background else labels.ignore_index
    if not len(features):
        # all background (a scene without burns, say), or unlabelled: the scene ends empty
        log.warning("label %s has no feature over the scene", name)
        return np.full(shape, fill, dtype=np.uint8), Unmapped([], 0, 0, "features")
    classes = [labels.vector_class(v) for v in features[labels.field]]
    missing = Counter(str(v) for v, k in zip(features[labels.field], classes, strict=True) if k is None)
    unmapped = Unmapped(
        [v for v, _ in missing.most_common(LISTED_VALUES)], sum(missing.values()), len(features), "features"
    )
    geometries = _widened(features, labels.buffer_m, crs)
    shapes = [(g, k) for g, k in zip(geometries, classes, strict=True) if k is not None]
    if not shapes:
        return np.full(shape, fill, dtype=np.uint8), unmapped
    burnt = rasterize(
        shapes,
        out_shape=shape,
        transform=transform,
        fill=fill,
        all_touched=labels.all_touched,
        dtype="uint8",
    )
    return burnt, unmapped


def _widened(features: Any, buffer_m: float, crs: CRS) -> list[Any]:
    """The geometries, points and lines buffered by ``buffer_m`` metres (polygons as they are),
    in a local UTM CRS where ``crs`` is not in metres."""
    geometries = features.geometry
    if not buffer_m:
        return list(geometries)
    thin = geometries.geom_type.isin(["Point", "MultiPoint", "LineString", "MultiLineString"])
    if not thin.any():
        return list(geometries)
    metric = crs if crs.is_projected and crs.linear_units_factor[1] == 1.0 else features.estimate_utm_crs()
    widened = geometries[thin].to_crs(metric).buffer(buffer_m).to_crs(crs)
    out = geometries.copy()
    out[thin] = widened
    return list(out)
