"""STAC metadata for the applied maps: one item per ok scene, one collection per applied predictor.

Layout under ``results/maps/{predictor}/`` (beside what :mod:`snakemap.inference.shard` and
:mod:`snakemap.outputs.mosaic` write):

- ``scenes/{scene}.stac.json``: the scene's STAC item, beside its sentinel ``scenes/{scene}.json``
  and its map ``scenes/{scene}.tif``. Only ok scenes get one: an empty or corrupt scene's sentinel
  says why it has no map (and a stale item of such a scene is removed).
- ``collection.json``: the predictor's collection, linking every item and holding as collection
  assets the mosaic of each CRS (``mosaic-{epsg}``: ``mosaic/{epsg}.vrt``, with its ``proj:code``),
  their index (``mosaic-index``: ``mosaic/index.json``) and the overview (``overview.tif``, with
  the ``proj:code`` it was warped to); the CRSs are the ``proj:code`` summary.

Every href between these files is relative, so the results folder can move; every file is written
atomically (see :func:`snakemap.core.io.atomic_path`) and rewriting them is safe.

An item's ``geometry`` is the map's footprint in WGS84: the raster's bounds densified
(:data:`EDGE_POINTS` a side) and reprojected, so a UTM scene's curved edges are followed; ``bbox``
is that geometry's extent. Its ``datetime`` is the one given (e.g. from the manifest), else the
map's TIFF ``DATETIME`` tag, else null with ``start_datetime``/``end_datetime`` the sentinel's
``started``/``finished`` (the processing time: the best we know). The ``map`` asset carries the
projection extension (``proj:code``, ``proj:shape``, ``proj:transform``, ``proj:bbox``) and
``raster:bands`` (data type, nodata), plus ``classification:classes`` for a segmentation map; a
downscaling map (float32, NaN nodata) has ``raster:bands`` only, with its unit where known. With
``outputs: both`` the probabilities (``scenes/probs/{scene}.tif``) are the ``probabilities`` asset.
With a :class:`ModelInfo` the item also names the model with the machine-learning-model (MLM)
extension: ``mlm:*`` fields in the item's properties, the checkpoints (and the ONNX bundle) as
assets (``checkpoint``, ``bundle``) with the ``mlm:model`` role, and ``via`` links to
them (``via``, not ``derived_from``: these are files, not STAC documents).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.mlm import (
    AssetGeneralMLMExtension,
    Hyperparameters,
    InputStructure,
    MLMExtension,
    ModelInput,
    ModelOutput,
    ResultStructure,
    TaskType,
)
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension
from pystac.validation.local_validator import get_local_schema_cache
from rasterio.warp import transform_geom

from snakemap.core.io import NODATA_CLASS, read_json, write_json
from snakemap.core.status import SceneStatus

log = logging.getLogger(__name__)

#: points along each side of a map's bounds when its footprint is reprojected
EDGE_POINTS = 21
#: the item file beside a scene's sentinel ``{scene}.json``
ITEM_SUFFIX = ".stac.json"
COLLECTION_FILE = "collection.json"
#: the licence of the maps (STAC 1.1: ``other`` for anything without an SPDX identifier)
LICENSE = "other"
_CLASS_NAME_RE = re.compile(r"[^0-9A-Za-z_-]+")
_ID_RE = re.compile(r"[^0-9A-Za-z_.-]+")
#: media types and ``mlm:artifact_type`` of model files by suffix (MLM's recommendations)
_MEDIA_TYPES = {
    ".ckpt": "application/octet-stream; framework=pytorch",
    ".pt": "application/octet-stream; framework=pytorch",
    ".pth": "application/octet-stream; framework=pytorch",
    ".onnx": "application/octet-stream; framework=onnx",
}
_ARTIFACT_TYPES = {".ckpt": "torch.save", ".pt": "torch.save", ".pth": "torch.save", ".onnx": "onnx"}


@dataclass
class ModelInfo:
    """The model that made the maps, as the MLM extension names it.

    ``checkpoints`` and ``bundle`` are paths (relative to the working directory, or absolute) or
    URLs; local paths become hrefs relative to each item.
    """

    #: the predictor, e.g. ``models/arch-Unet/best`` (made a valid ``mlm:name``)
    name: str
    #: the network's architecture, e.g. ``Unet`` or ``EDSR``
    architecture: str
    #: the checkpoint(s): one for a model, one per member for an ensemble
    checkpoints: list[str] = field(default_factory=list)
    #: the exported bundle (ONNX), if any
    bundle: str | None = None
    framework: str = "PyTorch"
    framework_version: str | None = None
    #: the model's input bands, in order; None: the sentinel's cleaned bands
    bands: list[str] | None = None
    #: anything worth recording about training (names of letters, digits, ``_.-``)
    hyperparameters: dict[str, Any] | None = None


def collection_id(predictor: str) -> str:
    """A predictor as an id: ``models/arch-Unet/best`` -> ``models-arch-Unet-best``."""
    return _ID_RE.sub("-", predictor).strip("-._") or "maps"


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
        ClassificationExtension.ext(asset, add_if_missing=True).classes = _classes(classes)
    _add_probabilities(item, map_path)
    if model_info is not None:
        _add_model(item, status, model_info, classes, downscaling, scale)
    return item


def write_item(item: pystac.Item, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``item`` atomically to ``path`` (default: its self href) as relocatable JSON.

    Hrefs are written as they are (relative), without a ``self`` link.
    """
    dest = Path(path) if path is not None else Path(_require(item.get_self_href(), item.id))
    write_json(dest, item.to_dict(include_self_link=False, transform_hrefs=False))
    return dest


def write_collection(
    root: str | os.PathLike[str],
    predictor: str,
    shard_manifests: Sequence[str | os.PathLike[str]],
    model_info: ModelInfo | None = None,
    classes: Sequence[str] | Mapping[int, str] | None = None,
    datetimes: Mapping[str, dt.datetime] | None = None,
    unit: str | None = None,
) -> Path:
    """Write the item of every ok scene of ``shard_manifests`` and ``root/collection.json``.

    Args:
        root: the predictor's folder, ``results/maps/{predictor}``.
        predictor: the applied predictor, e.g. ``models/arch-Unet/best``.
        shard_manifests: ``shards/{shard}.json`` of ``root``, as :mod:`snakemap.inference.shard` writes them.
        model_info, classes, unit: see :func:`scene_item`.
        datetimes: acquisition times by scene id (e.g. the manifest's), where known.

    Returns:
        The collection's path.

    Raises:
        FileNotFoundError: naming the scene, for a scene that the manifest lists without a
            sentinel, or an ok scene without its map.
    """
    root = Path(root)
    cid = collection_id(predictor)
    collection_path = root / COLLECTION_FILE
    items: list[tuple[pystac.Item, Path]] = []
    seen: set[str] = set()
    for manifest in map(Path, shard_manifests):
        scenes = manifest.parent.parent / "scenes"
        for entry in read_json(manifest)["scenes"]:
            scene = str(entry["scene_id"])
            if scene in seen:
                continue
            seen.add(scene)
            sentinel = scenes / f"{scene}.json"
            if not sentinel.is_file():
                raise FileNotFoundError(
                    f"scene {scene}: listed in {manifest} but its sentinel {sentinel} is missing"
                )
            status = SceneStatus.read(sentinel)
            map_path = scenes / f"{scene}.tif"
            if status.status != "ok":
                item_path(map_path).unlink(missing_ok=True)  # a stale item from an earlier run
                continue
            when = (datetimes or {}).get(scene)
            item = scene_item(map_path, status, predictor, classes, None, model_info, when, unit)
            item.collection_id = cid
            href = os.path.relpath(collection_path, item_path(map_path).parent)
            for rel in (pystac.RelType.COLLECTION, pystac.RelType.PARENT, pystac.RelType.ROOT):
                item.add_link(pystac.Link(rel, href, pystac.MediaType.JSON))
            write_item(item)
            items.append((item, item_path(map_path)))

    collection = pystac.Collection(
        id=cid,
        description=f"Maps of the apply scenes by {predictor}: one item per ok scene, and their mosaic.",
        extent=_extent([item for item, _ in items]),
        title=f"snakemap maps: {predictor}",
        license=LICENSE,
        href=str(collection_path),
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    collection.remove_links(pystac.RelType.ROOT)  # pystac's is absolute: the file must move
    collection.add_link(pystac.Link(pystac.RelType.ROOT, f"./{COLLECTION_FILE}", pystac.MediaType.JSON))
    for item, path in items:
        href = "./" + Path(os.path.relpath(path, root)).as_posix()
        collection.add_link(pystac.Link(pystac.RelType.ITEM, href, pystac.MediaType.GEOJSON, title=item.id))
    _add_mosaics(collection, root)
    if model_info is not None:
        for _, title, href in _model_files(model_info, root):
            collection.add_link(pystac.Link("via", href, _media_type(href), title=title))
    write_json(collection_path, collection.to_dict(include_self_link=False, transform_hrefs=False))
    return collection_path


def _add_mosaics(collection: pystac.Collection, root: Path) -> None:
    """The mosaic of each CRS (``mosaic-{epsg}``), their index (``mosaic-index``) and the overview
    as collection assets, each mosaic and the overview with its ``proj:code``; and the CRSs under
    the ``proj:code`` summary. Only what exists is added (no mosaic yet: no asset)."""
    index_path = root / "mosaic" / "index.json"
    index = read_json(index_path) if index_path.is_file() else {"zones": {}}
    codes = []
    for key, zone in sorted(index["zones"].items()):
        name = Path(zone["vrt"]).stem
        asset = pystac.Asset(
            f"./mosaic/{zone['vrt']}",
            title=f"mosaic of the {zone['scenes']} maps in {key} (GDAL VRT)",
            media_type=pystac.MediaType.XML,
            roles=["data"],
        )
        collection.add_asset(f"mosaic-{name}", asset)
        _asset_crs(asset, key)
        codes.append(key)
    if index_path.is_file():
        collection.add_asset(
            "mosaic-index",
            pystac.Asset(
                "./mosaic/index.json",
                title="the mosaics: CRS, VRT, scenes and bounds of each",
                media_type=pystac.MediaType.JSON,
                roles=["metadata"],
            ),
        )
    if (root / "overview.tif").is_file():
        asset = pystac.Asset(
            "./overview.tif",
            title="downsampled mosaic of all maps, in one CRS",
            media_type=pystac.MediaType.COG,
            roles=["overview", "visual"],
        )
        collection.add_asset("overview", asset)
        if index.get("overview", {}).get("crs"):
            _asset_crs(asset, index["overview"]["crs"])
    if [c for c in codes if ":" in c]:
        collection.summaries.add("proj:code", [c for c in codes if ":" in c])


def _asset_crs(asset: pystac.Asset, code: str) -> None:
    """``proj:code`` of a collection asset: an authority code as it is, else none (a hash key)."""
    if ":" in code:
        ProjectionExtension.ext(asset, add_if_missing=True).code = code


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
    polygon = {"type": "Polygon", "coordinates": [[(float(x), float(y)) for x, y in ring]]}
    geometry: dict[str, Any] = json.loads(json.dumps(transform_geom(crs, "EPSG:4326", polygon)))
    return geometry


def _bbox(geometry: dict[str, Any]) -> list[float]:
    """``[west, south, east, north]`` of a (Multi)Polygon's coordinates."""
    points = np.array(_points(geometry["coordinates"]), dtype=float)
    return [*points.min(0).tolist(), *points.max(0).tolist()]


def _points(coords: Any) -> list[list[float]]:
    if coords and isinstance(coords[0], (int, float)):
        return [list(coords)]
    return [p for c in coords for p in _points(c)]


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


def _class_table(classes: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    if classes is None:
        return {}
    return dict(classes) if isinstance(classes, Mapping) else dict(enumerate(classes))


def _classes(classes: Sequence[str] | Mapping[int, str] | None, nodata: bool = True) -> list[Classification]:
    """Classification objects: ``name`` machine-readable (v2), ``description``/``title`` as given."""
    table = _class_table(classes)
    result = [
        Classification.create(
            value=int(value),
            name=_CLASS_NAME_RE.sub("_", name).strip("_") or f"class_{value}",
            title=name,
            description=name,
        )
        for value, name in sorted(table.items())
    ]
    if nodata and NODATA_CLASS not in table:
        result.append(
            Classification.create(value=NODATA_CLASS, name="nodata", description="no data", nodata=True)
        )
    return result


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


def _model_files(info: ModelInfo, base: Path) -> list[tuple[str, str, str]]:
    """(asset key, title, href relative to ``base``) of the model's checkpoints and bundle."""
    files = [
        ("checkpoint" if len(info.checkpoints) == 1 else f"checkpoint-{i}", f"checkpoint {c}", c)
        for i, c in enumerate(info.checkpoints, start=1)
    ]
    if info.bundle:
        files.append(("bundle", f"bundle {info.bundle}", info.bundle))
    return [(key, title, _href(path, base)) for key, title, path in files]


def _href(path: str, base: Path) -> str:
    """A relative local path (from the working directory) relative to ``base``; an absolute one
    or a URL as it is."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) or Path(path).is_absolute():
        return path
    return Path(os.path.relpath(Path(path).absolute(), base.absolute())).as_posix()


def _media_type(href: str) -> str:
    return _MEDIA_TYPES.get(Path(href).suffix.lower(), "application/octet-stream")


def _add_model(
    item: pystac.Item,
    status: SceneStatus,
    info: ModelInfo,
    classes: Sequence[str] | Mapping[int, str] | None,
    downscaling: bool,
    scale: int | None,
) -> None:
    """The MLM fields in the item's properties, the model files as ``mlm:model`` assets (the MLM
    schema asks for at least one) and ``via`` links to them."""
    bands = list(info.bands if info.bands is not None else status.bands)
    table = _class_table(classes)
    task = TaskType.SUPER_RESOLUTION if downscaling else TaskType.SEMANTIC_SEGMENTATION
    model_input = ModelInput.create(
        name="bands",
        bands=bands,
        input=InputStructure.create(
            shape=[-1, len(bands) or -1, -1, -1],
            dim_order=["batch", "channel", "height", "width"],
            data_type=DataType.FLOAT32,
        ),
        description="the scene's cleaned bands (snakemap clean), normalised as in training",
    )
    if downscaling:
        output = ModelOutput.create(
            name="field",
            tasks=[task],
            result=ResultStructure.create(
                shape=[-1, 1, -1, -1],
                dim_order=["batch", "channel", "height", "width"],
                data_type=DataType.FLOAT32,
            ),
            description=f"the field on a grid {scale or '?'} times finer",
        )
    else:
        output = ModelOutput.create(
            name="classes",
            tasks=[task],
            result=ResultStructure.create(
                shape=[-1, len(table) or -1, -1, -1],
                dim_order=["batch", "class", "height", "width"],
                data_type=DataType.FLOAT32,
            ),
            description="class probabilities; the map holds the most probable class",
            classes=_classes(classes, nodata=False) or None,
        )
    MLMExtension.ext(item, add_if_missing=True).apply(
        name=collection_id(info.name),
        architecture=info.architecture,
        tasks=[task],
        input=[model_input],
        output=[output],
        framework=info.framework,
        framework_version=info.framework_version,
        hyperparameters=Hyperparameters.create(**info.hyperparameters) if info.hyperparameters else None,
    )
    # pystac writes these as null, which claims "no accelerator" and "trained from scratch"
    for unknown in ("mlm:accelerator", "mlm:pretrained_source"):
        if item.properties.get(unknown, "") is None:
            del item.properties[unknown]
    base = Path(_require(item.get_self_href(), item.id)).parent
    for key, title, href in _model_files(info, base):
        suffix = Path(href).suffix.lower()
        role = "mlm:compiled" if key == "bundle" else "mlm:checkpoint"
        asset = pystac.Asset(href, title=title, media_type=_media_type(href), roles=["mlm:model", role])
        item.add_asset(key, asset)
        artifact = _ARTIFACT_TYPES.get(suffix, suffix.lstrip(".") or "unknown")
        AssetGeneralMLMExtension.ext(asset, add_if_missing=True).apply(artifact_type=artifact)
        # the MLM schema wants the input bands described where the model is (raster:bands names)
        asset.extra_fields["raster:bands"] = [{"name": b} for b in bands]
        RasterExtension.ext(asset, add_if_missing=True)
        item.add_link(pystac.Link("via", href, _media_type(href), title=title))


def _extent(items: Sequence[pystac.Item]) -> pystac.Extent:
    """The union of the items' bboxes and times; the whole world and an open interval if none."""
    if not items:
        unknown: list[list[dt.datetime | None]] = [[None, None]]
        return pystac.Extent(
            pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]), pystac.TemporalExtent(unknown)
        )
    boxes = np.array([item.bbox for item in items], dtype=float)
    bbox = [*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist()]
    times = [
        t
        for item in items
        for t in (item.datetime, item.common_metadata.start_datetime, item.common_metadata.end_datetime)
        if t is not None
    ]
    return pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[min(times), max(times)]]))


def _require(href: str | None, what: str) -> str:
    if href is None:
        raise ValueError(f"{what}: the item has no self href; give the path to write it to")
    return href
