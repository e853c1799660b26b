"""Scenes as STAC Items: separate band assets (COGs at 10, 20, 60 m), read where they lie.

A manifest ``uri`` ending in ``.json``, or an item's URL on a STAC API, is a STAC Item (a local
path or an http(s)/s3 URL). Its
row's sensor entry names the assets of its bands (``sensors.{name}.assets``: band -> asset key,
the band's own name where unset) and optionally a mask asset (``sensors.{name}.mask``). The
scene becomes a GDAL VRT (``image.vrt``) that stacks the band assets, in the sensor's band order,
on the grid of the finest of them (nearest neighbour: a 20 m pixel becomes four 10 m pixels with
its stored value), then the mask asset as a last band named :data:`MASK_BAND`; every later step
reads that VRT window by window like a multi-band GeoTIFF. Each asset's ``raster:bands`` scale,
offset and nodata apply unless the sensor entry sets its own.

Relative hrefs resolve against the item's own URL. An item fetched over http(s) or from a bucket
never makes the workflow read a local file: ``file://`` and absolute local hrefs are refused.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import rasterio

from snakemap.core.io import atomic_path
from snakemap.core.sections import AcquireOptions, CleanOptions, QAOptions, SensorOptions
from snakemap.core.status import SceneError
from snakemap.core.storage import gdal_options, gdal_path, is_remote

#: the cleaned scene's name of the mask asset's band (never one of the cleaned bands)
MASK_BAND = "stac_mask"
#: the sidecar beside ``image.vrt`` with what cleaning needs to know of the item
SIDECAR = "stac.json"


#: a STAC API's URL of one item (what ``snakemap search`` writes)
_API_ITEM = re.compile(r"/collections/[^/]+/items/[^/]+/?$")


def is_item(uri: str | os.PathLike[str]) -> bool:
    """Whether a manifest ``uri`` is a STAC Item: a ``.json`` file, or an item's URL on a STAC
    API (``.../collections/{id}/items/{id}``)."""
    path = str(uri).split("?")[0]
    return path.lower().endswith(".json") or bool(_API_ITEM.search(path))


@dataclass
class ItemScene:
    """A STAC Item resolved for one sensor entry: per band of the sensor its asset's GDAL path
    and ``(scale, offset)``, the assets' nodata, the mask asset's path (or None)."""

    item_id: str
    bands: list[str]
    paths: list[str]
    scaling: list[tuple[float, float]]
    nodata: float | None
    mask_path: str | None
    checksums: dict[str, str]
    #: the assets' absolute hrefs (their schemes decide GDAL's settings)
    hrefs: list[str]

    def sidecar(self, env: dict[str, str] | None = None) -> dict[str, Any]:
        """``stac.json``: what cleaning needs of the item, and GDAL's settings for its assets."""
        return {
            "item": self.item_id,
            "bands": self.bands,
            "scaling": self.scaling,
            "nodata": self.nodata,
            "env": env or {},
        }


def read_item(data: bytes, uri: str) -> Any:
    """The item in ``data`` (read from ``uri``), as pystac reads it.

    Raises:
        SceneError: naming the URI, for a file that is no STAC Item.
    """
    import pystac

    try:
        item = pystac.Item.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError, pystac.STACError) as exc:
        raise SceneError(f"{uri} is not a STAC Item: {type(exc).__name__}: {exc}") from None
    item.set_self_href(uri if is_remote(uri) or "://" in uri else str(Path(uri).absolute()))
    return item


def resolve(item: Any, sensor: SensorOptions, sensor_name: str = "") -> ItemScene:
    """The item's assets for ``sensor`` (see the module docstring).

    Raises:
        SceneError: naming the item and the asset: a mapped asset the item lacks, or a local href
            in an item that came over the network.
    """
    remote = is_remote(item.get_self_href() or "")
    where = f"sensors.{sensor_name}" if sensor_name else "the sensor"
    paths, scaling, nodata = [], [], None
    checksums: dict[str, str] = {}
    hrefs: list[str] = []
    for band in sensor.bands:
        key = sensor.asset_key(band)
        asset = item.assets.get(key)
        if asset is None:
            raise SceneError(
                f"STAC item {item.id} has no asset {key!r} for band {band} ({where}.assets); it has "
                f"{', '.join(sorted(item.assets))}"
            )
        paths.append(_asset_path(item, key, asset.get_absolute_href(), remote))
        hrefs.append(asset.get_absolute_href())
        # raster:bands as written (STAC 1.1 may also put them on the asset as "bands")
        raster = asset.extra_fields.get("raster:bands") or asset.extra_fields.get("bands") or [{}]
        first = raster[0] if isinstance(raster[0], dict) else {}
        scale = first.get("scale", first.get("raster:scale"))
        offset = first.get("offset", first.get("raster:offset"))
        scaling.append((float(1.0 if scale is None else scale), float(0.0 if offset is None else offset)))
        if first.get("nodata") is not None and nodata is None:
            nodata = float(first["nodata"])
        if "file:checksum" in asset.extra_fields:
            checksums[key] = str(asset.extra_fields["file:checksum"])
    mask_path = None
    if sensor.mask is not None:
        asset = item.assets.get(sensor.mask.asset)
        if asset is None:
            raise SceneError(f"STAC item {item.id} has no mask asset {sensor.mask.asset!r} ({where}.mask)")
        mask_path = _asset_path(item, sensor.mask.asset, asset.get_absolute_href(), remote)
        hrefs.append(asset.get_absolute_href())
        if "file:checksum" in asset.extra_fields:
            checksums[sensor.mask.asset] = str(asset.extra_fields["file:checksum"])
    return ItemScene(item.id, list(sensor.bands), paths, scaling, nodata, mask_path, checksums, hrefs)


def _asset_path(item: Any, key: str, href: str, remote: bool) -> str:
    """The GDAL path of an asset's absolute href; local files refused for a remote item (a
    ``file://`` href, or an absolute path as written, which is no URL of the item's server)."""
    written = item.assets[key].href
    scheme = urllib.parse.urlparse(href).scheme.lower()
    if remote and (scheme in ("", "file") or written.startswith(("/", "file:"))):
        href = written
        raise SceneError(
            f"STAC item {item.id}: asset {key} points at a local file ({href}), and the item came over "
            "the network: refused"
        )
    try:
        return gdal_path(href, ".")  # hrefs are absolute here
    except ValueError as exc:  # a scheme GDAL cannot read
        raise SceneError(f"STAC item {item.id}: asset {key}: {exc}") from None


def write_vrt(scene: ItemScene, path: str | os.PathLike[str], env: dict[str, Any] | None = None) -> Path:
    """Write the scene's VRT (see the module docstring), atomically.

    Raises:
        SceneError: naming the item and asset, for an asset that cannot be opened, has no CRS, or
            lies in another CRS than the others.
    """
    grids = []
    with rasterio.Env(**(env or {})):
        for band, source in zip([*scene.bands, MASK_BAND], [*scene.paths, scene.mask_path], strict=True):
            if source is None:
                continue
            try:
                with rasterio.open(source) as src:
                    grids.append((band, source, src.crs, src.transform, src.width, src.height, src.dtypes[0]))
            except rasterio.errors.RasterioError as exc:
                raise SceneError(
                    f"STAC item {scene.item_id}: band {band} ({source}) cannot be read: {exc}"
                ) from None
    crs = grids[0][2]
    for band, source, other, *_ in grids:
        if other is None:
            raise SceneError(f"STAC item {scene.item_id}: band {band} ({source}) has no CRS")
        if other != crs:
            raise SceneError(
                f"STAC item {scene.item_id}: band {band} is in {other}, band {grids[0][0]} in {crs}: "
                "assets on other grids without a common projection"
            )
    finest = min(grids, key=lambda g: abs(g[3].a))
    res_x, res_y = finest[3].a, finest[3].e
    west, north = finest[3].c, finest[3].f
    width, height = finest[4], finest[5]
    # one data type for every band (readers take a scene as one array): the wider where they differ
    kinds = {g[6] for g in grids}
    common = (
        kinds.pop()
        if len(kinds) == 1
        else ("float64" if kinds & {"int32", "uint32", "float64"} else "float32")
    )
    bands_xml = []
    for i, (band, source, _, transform, w, h, _dtype) in enumerate(grids, start=1):
        x_off = (transform.c - west) / res_x
        y_off = (transform.f - north) / res_y
        x_size = w * transform.a / res_x
        y_size = h * transform.e / res_y
        nodata = (
            ""
            if scene.nodata is None or band == MASK_BAND
            else f"<NoDataValue>{scene.nodata!r}</NoDataValue>"
        )
        bands_xml.append(
            f'  <VRTRasterBand dataType="{_gdal_type(common)}" band="{i}">\n'
            f"    <Description>{escape(band)}</Description>{nodata}\n"
            f'    <SimpleSource resampling="nearest">\n'
            f'      <SourceFilename relativeToVRT="0">{escape(source)}</SourceFilename>\n'
            f"      <SourceBand>1</SourceBand>\n"
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
            f'      <DstRect xOff="{x_off!r}" yOff="{y_off!r}" xSize="{x_size!r}" ySize="{y_size!r}"/>\n'
            f"    </SimpleSource>\n"
            f"  </VRTRasterBand>\n"
        )
    xml = (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
        f"  <SRS>{escape(crs.to_wkt())}</SRS>\n"
        f"  <GeoTransform>{west!r}, {res_x!r}, 0.0, {north!r}, 0.0, {res_y!r}</GeoTransform>\n"
        + "".join(bands_xml)
        + "</VRTDataset>\n"
    )
    with atomic_path(path, suffix=".vrt") as tmp:
        tmp.write_text(xml)
    return Path(path)


def _gdal_type(dtype: str) -> str:
    return {
        "uint8": "Byte",
        "int8": "Int8",
        "uint16": "UInt16",
        "int16": "Int16",
        "uint32": "UInt32",
        "int32": "Int32",
        "float32": "Float32",
        "float64": "Float64",
    }.get(dtype, "Float32")


def scene_options(
    sensor: SensorOptions, clean: CleanOptions, sidecar: dict[str, Any]
) -> tuple[SensorOptions, CleanOptions]:
    """The sensor and clean options of one STAC Item scene's VRT: its bands (then the mask band),
    the item's scaling where the entry sets none, its assets' nodata where neither the entry nor
    ``clean.nodata`` does, and the mask asset as the QA band (instead of ``clean.qa``)."""
    update: dict[str, Any] = {}
    if sensor.mask is not None:
        update["bands"] = [*sensor.bands, MASK_BAND]
        clean = clean.model_copy(
            update={"qa": QAOptions(band=MASK_BAND, values=sensor.mask.values, bits=sensor.mask.bits)}
        )
    if sensor.nodata is None and clean.nodata is None and sidecar.get("nodata") is not None:
        update["nodata"] = sidecar["nodata"]
    scene = sensor.model_copy(update=update)
    return scene.with_item_scaling([(float(a), float(b)) for a, b in sidecar["scaling"]]), clean


def acquired_image(folder: Path) -> Path:
    """The image acquire wrote: ``image.vrt`` for a STAC Item scene, else ``image.tif``."""
    return folder / "image.vrt" if (folder / "image.vrt").exists() else folder / "image.tif"


def environment(scene: ItemScene, options: AcquireOptions) -> dict[str, str]:
    """GDAL's settings to read the scene's remote assets (an s3 endpoint, timeouts): no secrets,
    so the sidecar keeps them for the steps that read the VRT later."""
    found: dict[str, str] = {}
    for href in scene.hrefs:
        if is_remote(href):
            found.update(gdal_options(href, options))
    return found
