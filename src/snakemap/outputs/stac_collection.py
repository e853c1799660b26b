"""The STAC collection of an applied predictor: its items written and linked, with the mosaics,
their index and the overview as its assets.

Layout under ``results/maps/{predictor}/`` (beside what :mod:`snakemap.inference.shard` and
:mod:`snakemap.outputs.mosaic` write):

- ``scenes/{scene}.stac.json``: the item of each ok scene (:mod:`snakemap.outputs.stac`), written
  by :func:`write_collection` with links to the collection.
- ``collection.json``: the predictor's collection, linking every item and holding as collection
  assets the mosaic of each CRS (``mosaic-{epsg}``: ``mosaic/{epsg}.vrt``, with its ``proj:code``),
  their index (``mosaic-index``: ``mosaic/index.json``) and the overview (``overview.tif``, with
  the ``proj:code`` it was warped to); the CRSs are the ``proj:code`` summary. With a
  :class:`~snakemap.outputs.stac_model.ModelInfo` it also has ``via`` links to the model's files.
  Its extent is the union of the items' bboxes and times.

Every href between these files is relative, so the results folder can move; every file is written
atomically (see :func:`snakemap.core.io.atomic_path`) and rewriting them is safe.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pystac
from pystac.extensions.projection import ProjectionExtension

from snakemap.core.io import read_json, write_json
from snakemap.core.status import SceneStatus
from snakemap.outputs.stac import GEOPACKAGE, PARQUET, item_path, scene_item, write_item
from snakemap.outputs.stac_model import ModelInfo, collection_id, media_type, model_files

COLLECTION_FILE = "collection.json"
#: the licence of the maps (STAC 1.1: ``other`` for anything without an SPDX identifier)
LICENSE = "other"


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
        model_info, classes, unit: see :func:`snakemap.outputs.stac.scene_item`.
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
        for _, title, href in model_files(model_info, root):
            collection.add_link(pystac.Link("via", href, media_type(href), title=title))
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
    for name, kind, what in (
        ("polygons.parquet", PARQUET, "GeoParquet"),
        ("polygons.gpkg", GEOPACKAGE, "GeoPackage"),
    ):
        if (root / name).is_file():
            key = "polygons" if name.endswith(".parquet") else "polygons-gpkg"
            title = f"polygons of the mapped classes of every ok scene, EPSG:4326 ({what})"
            collection.add_asset(key, pystac.Asset(f"./{name}", title=title, media_type=kind, roles=["data"]))
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
    for side, entry in sorted(index.get("polar", {}).items()):
        if entry.get("crs") and (root / f"overview_{side}.tif").is_file():
            asset = pystac.Asset(
                f"./overview_{side}.tif",
                title=f"downsampled mosaic of the {entry['scenes']} maps poleward of the {side}ern limit",
                media_type=pystac.MediaType.COG,
                roles=["overview", "visual"],
            )
            collection.add_asset(f"overview-{side}", asset)
            _asset_crs(asset, entry["crs"])
    if [c for c in codes if ":" in c]:
        collection.summaries.add("proj:code", [c for c in codes if ":" in c])


def _asset_crs(asset: pystac.Asset, code: str) -> None:
    """``proj:code`` of a collection asset: an authority code as it is, else none (a hash key)."""
    if ":" in code:
        ProjectionExtension.ext(asset, add_if_missing=True).code = code


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
