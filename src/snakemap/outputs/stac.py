"""STAC items of the applied maps: one per ok scene, and their offline validation.

Layout under ``results/maps/{predictor}/`` (beside what :mod:`snakemap.inference.shard` and
:mod:`snakemap.outputs.mosaic` write; :mod:`snakemap.outputs.stac_collection` adds the
predictor's ``collection.json``, linking every item):

- ``scenes/{scene}.stac.json``: the scene's STAC item, beside its sentinel ``scenes/{scene}.json``
  and its map ``scenes/{scene}.tif``. Only ok scenes get one: an empty or corrupt scene's sentinel
  says why it has no map (and a stale item of such a scene is removed).

Every href is relative, so the results folder can move; every file is written atomically (see
:func:`snakemap.core.io.atomic_path`) and rewriting them is safe.

An item's ``geometry`` is the map's footprint in WGS84: the raster's bounds densified
(:data:`EDGE_POINTS` a side) and reprojected, so a UTM scene's curved edges are followed; ``bbox``
is that geometry's extent. Its ``datetime`` is the one given (e.g. from the manifest), else the
map's TIFF ``DATETIME`` tag, else null with ``start_datetime``/``end_datetime`` the sentinel's
``started``/``finished`` (the processing time: the best we know). The ``map`` asset carries the
projection extension (``proj:code``, ``proj:shape``, ``proj:transform``, ``proj:bbox``) and
``raster:bands`` (data type, nodata), plus ``classification:classes`` for a segmentation map; a
downscaling map (float32, NaN nodata) has ``raster:bands`` only, with its unit where known. With
``outputs: both`` the probabilities (``scenes/probs/{scene}.tif``) are the ``probabilities`` asset.
With a :class:`~snakemap.outputs.stac_model.ModelInfo` the item also names the model with the
machine-learning-model (MLM) extension (see :mod:`snakemap.outputs.stac_model`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import antimeridian
import numpy as np
import pystac
import rasterio
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension
from pystac.validation.local_validator import get_local_schema_cache
from rasterio.warp import transform
from shapely.geometry import Polygon, mapping, shape

from snakemap.core.io import write_json
from snakemap.core.status import SceneStatus
from snakemap.outputs.stac_model import ModelInfo, add_model, classifications

log = logging.getLogger(__name__)

#: points along each side of a map's bounds when its footprint is reprojected
EDGE_POINTS = 21
#: the item file beside a scene's sentinel ``{scene}.json``
ITEM_SUFFIX = ".stac.json"


def item_path(map_path: str | os.PathLike[str]) -> Path:
    """Where the item of the map ``scenes/{scene}.tif`` goes: ``scenes/{scene}.stac.json``."""
    path = Path(map_path)
    return path.with_name(path.stem + ITEM_SUFFIX)


def scene_item(
    map_path: str | os.PathLike[str],
    status: SceneStatus,
    predictor: str,
    classes: Sequence[str] | Mapping[int, str] | None = None,
    scale: int | None = None,
    model_info: ModelInfo | None = None,
    datetime: dt.datetime | None = None,
    unit: str | None = None,
) -> pystac.Item:
    """The STAC item of one ok scene's map; its self href is :func:`item_path` (not written yet).

    Args:
        map_path: the scene's map, ``scenes/{scene}.tif``.
        status: the scene's sentinel; must be ok.
        predictor: the applied predictor, e.g. ``models/arch-Unet/best``.
        classes: class names by value (a list: value = index) of a segmentation map; the nodata
            value 255 is added. None: only the nodata class is described.
        scale: the downscaling factor; None: ``status.extra["scale"]``. A map with a scale, or
            of a floating data type, is a downscaled field; otherwise a class map.
        model_info: the model, for the MLM fields; None: no MLM fields.
        datetime: the scene's acquisition time (naive: UTC); None: see the module docstring.
        unit: the unit of a downscaled field's values, if known.

    Raises:
        ValueError: naming the scene, for a sentinel that is not ok or a map without a CRS.
        FileNotFoundError: naming the scene, for a missing map.
    """
    map_path = Path(map_path)
    scene = status.scene_id
    if status.status != "ok":
        raise ValueError(f"scene {scene}: its sentinel says {status.status} ({status.reason}): no map")
    if not map_path.is_file():
        raise FileNotFoundError(f"scene {scene}: its sentinel says ok but its map {map_path} is missing")
    if scale is None and status.extra.get("scale") is not None:
        scale = int(status.extra["scale"])
    with rasterio.open(map_path) as src:
        if src.crs is None:
            raise ValueError(f"scene {scene}: its map {map_path} has no CRS")
        geometry = _footprint(src.crs, src.bounds)
        when = datetime or _tiff_datetime(src.tags().get("TIFFTAG_DATETIME"))
        crs, shape, transform = src.crs, [src.height, src.width], list(src.transform)[:6]
        bounds, res = list(src.bounds), float(src.res[0])
        dtype, nodata = src.dtypes[0], src.nodata
    downscaling = scale is not None or np.issubdtype(np.dtype(dtype), np.floating)

    started, finished = _utc(status.started), _utc(status.finished)
    if when is None and (started is None or finished is None):
        # a sentinel that predates started/finished: the map's own time is what is left
        started = finished = dt.datetime.fromtimestamp(map_path.stat().st_mtime, dt.UTC)
    properties: dict[str, Any] = {}
    if finished is not None:
        properties["created"] = pystac.utils.datetime_to_str(finished)
    if isinstance(status.extra.get("shift"), dict):
        # how unlike the training scenes it is (snakemap.inference.shift), per band and overall
        properties["snakemap:shift"] = status.extra["shift"]["score"]
        properties["snakemap:shift_bands"] = status.extra["shift"]["bands"]
        if status.extra["shift"].get("fallback"):  # mapped by the ensemble's fallback members alone
            properties["snakemap:fallback"] = status.extra["shift"]["fallback"]
    item = pystac.Item(
        id=scene,
        geometry=geometry,
        bbox=_bbox(geometry),
        datetime=_as_utc(when),
        properties=properties,
        start_datetime=None if when else started,
        end_datetime=None if when else finished,
        href=str(item_path(map_path)),
    )
    item.common_metadata.description = (
        f"{'Downscaled field' if downscaling else 'Class map'} of scene {scene} by {predictor}"
    )

    asset = pystac.Asset(
        href=map_path.name,
        media_type=pystac.MediaType.COG,
        roles=["data"],
        title="downscaled field" if downscaling else "class map",
    )
    item.add_asset("map", asset)
    proj = ProjectionExtension.ext(asset, add_if_missing=True)
    epsg = crs.to_epsg()
    proj.apply(
        code=f"EPSG:{epsg}" if epsg else None,
        wkt2=None if epsg else crs.to_wkt(),
        shape=shape,
        transform=transform,
        bbox=bounds,
    )
    band = RasterBand.create(
        data_type=DataType(dtype),
        nodata=_nodata(nodata),
        spatial_resolution=res,
        unit=unit if downscaling else None,
    )
    RasterExtension.ext(asset, add_if_missing=True).bands = [band]
    if not downscaling:
        ClassificationExtension.ext(asset, add_if_missing=True).classes = classifications(classes)
    _add_probabilities(item, map_path)
    _add_polygons(item, map_path)
    if model_info is not None:
        base = Path(_require(item.get_self_href(), item.id)).parent
        add_model(item, status, model_info, classes, downscaling, scale, base)
    return item


def write_item(item: pystac.Item, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``item`` atomically to ``path`` (default: its self href) as relocatable JSON.

    Hrefs are written as they are (relative), without a ``self`` link.
    """
    dest = Path(path) if path is not None else Path(_require(item.get_self_href(), item.id))
    write_json(dest, item.to_dict(include_self_link=False, transform_hrefs=False))
    return dest


def validate_offline(obj: pystac.STACObject | dict[str, Any]) -> list[str]:
    """Validate a STAC object against the core JSON schemas shipped with pystac, offline.

    The item, collection and catalog schemas of pystac's STAC version (and the GeoJSON and
    common-metadata schemas they refer to) are in ``pystac/validation/jsonschemas``; nothing is
    fetched. The extension schemas (projection, raster, classification, MLM) are not shipped, so
    they are skipped, not fetched: their fields are checked only as far as the core schemas do.

    Returns:
        The extension schema URIs that were skipped.

    Raises:
        pystac.STACValidationError: with the best-matching violation, and all of them in
            ``source``.
        ValueError: for an object of a STAC version or type whose schema pystac does not ship.
    """
    from jsonschema import Draft7Validator  # type: ignore[import-untyped]
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
    from referencing import Registry, Resource

    data = obj if isinstance(obj, dict) else obj.to_dict(include_self_link=False, transform_hrefs=False)
    kind = {"Feature": "item", "Collection": "collection", "Catalog": "catalog"}.get(data.get("type", ""))
    version = data.get("stac_version")
    cache = get_local_schema_cache()
    uri = f"https://schemas.stacspec.org/v{version}/{kind}-spec/json-schema/{kind}.json"
    if kind is None or uri not in cache:
        raise ValueError(
            f"{data.get('id')!r}: no offline schema for a STAC {version} {data.get('type')!r} "
            f"(pystac ships {pystac.get_stac_version()} items, collections and catalogs)"
        )

    # A Registry without ``retrieve`` fails on any schema it was not given: nothing is fetched.
    registry = Registry().with_resources([(k, Resource.from_contents(v)) for k, v in cache.items()])
    errors = list(Draft7Validator(cache[uri], registry=registry).iter_errors(data))
    if errors:
        raise pystac.STACValidationError(
            f"{kind} {data.get('id')!r} violates {uri}:\n{best_match(errors)}", source=errors
        )
    return [str(e) for e in data.get("stac_extensions", [])]


def _footprint(crs: Any, bounds: Any) -> dict[str, Any]:
    """The polygon of ``bounds`` in ``crs``, densified and reprojected to EPSG:4326."""
    left, bottom, right, top = bounds
    xs, ys = np.linspace(left, right, EDGE_POINTS), np.linspace(bottom, top, EDGE_POINTS)
    # counter-clockwise (RFC 7946): bottom, right, top, left side
    ring = (
        [(x, bottom) for x in xs]
        + [(right, y) for y in ys[1:]]
        + [(x, top) for x in xs[-2::-1]]
        + [(left, y) for y in ys[-2::-1]]
    )
    # the ring's points reprojected as they are, then cut where it crosses the antimeridian
    # (RFC 7946: a MultiPolygon) by the antimeridian package, which also knows a pole inside it
    lons, lats = transform(crs, "EPSG:4326", [x for x, _ in ring], [y for _, y in ring])
    fixed = antimeridian.fix_polygon(Polygon(zip(lons, lats, strict=True)))
    geometry: dict[str, Any] = json.loads(json.dumps(mapping(fixed)))
    return geometry


def _bbox(geometry: dict[str, Any]) -> list[float]:
    """``[west, south, east, north]`` of a (Multi)Polygon; west > east where it crosses the
    antimeridian (RFC 7946)."""
    return [float(v) for v in antimeridian.bbox(shape(geometry))]


def _tiff_datetime(text: str | None) -> dt.datetime | None:
    """A TIFF ``DATETIME`` tag (``YYYY:MM:DD HH:MM:SS``, taken as UTC); None if absent or garbled."""
    if not text:
        return None
    try:
        return dt.datetime.strptime(text.strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        log.warning("ignoring the TIFF datetime %r: not YYYY:MM:DD HH:MM:SS", text)
        return None


def _utc(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


def _as_utc(when: dt.datetime | None) -> dt.datetime | None:
    """A naive time taken as UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=dt.UTC)


def _nodata(value: float | None) -> float | NoDataStrings | None:
    """A nodata value as the raster extension writes it (NaN as the string ``nan``)."""
    if value is None:
        return None
    if math.isnan(value):
        return NoDataStrings.NAN
    if math.isinf(value):
        return NoDataStrings.INF if value > 0 else NoDataStrings.NINF
    return int(value) if float(value).is_integer() else value


def _add_probabilities(item: pystac.Item, map_path: Path) -> None:
    """``scenes/probs/{scene}.tif`` (``outputs: both``), one band per class, as an asset."""
    probs = map_path.parent / "probs" / map_path.name
    if not probs.is_file():
        return
    with rasterio.open(probs) as src:
        bands = [
            RasterBand.create(
                data_type=DataType(src.dtypes[i]),
                nodata=_nodata(src.nodata),
                scale=src.scales[i] if src.scales[i] != 1 else None,
            )
            for i in range(src.count)
        ]
    asset = pystac.Asset(
        href=f"probs/{probs.name}",
        media_type=pystac.MediaType.COG,
        roles=["data"],
        title="class probabilities",
        description="one band per class; value x scale is the probability",
    )
    item.add_asset("probabilities", asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = bands


#: the media types of the polygon files (FlatGeobuf's and GeoPackage's registered ones)
FLATGEOBUF, GEOPACKAGE, PARQUET = (
    "application/vnd.flatgeobuf",
    "application/geopackage+sqlite3",
    "application/vnd.apache.parquet",
)


def _add_polygons(item: pystac.Item, map_path: Path) -> None:
    """``polygons/{scene}.fgb`` (``vectorize:``), the scene's polygons, as an asset."""
    polygons = map_path.parent.parent / "polygons" / f"{map_path.stem}.fgb"
    if polygons.is_file():
        item.add_asset(
            "polygons",
            pystac.Asset(
                href=f"../polygons/{polygons.name}",
                media_type=FLATGEOBUF,
                roles=["data"],
                title="polygons of the mapped classes",
                description="one per patch: class, area_m2, mean_probability, touches_edge",
            ),
        )


def _require(href: str | None, what: str) -> str:
    if href is None:
        raise ValueError(f"{what}: the item has no self href; give the path to write it to")
    return href
