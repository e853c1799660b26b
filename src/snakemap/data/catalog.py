"""An example STAC catalogue written from labelled GeoTIFFs (the ``catalog`` section): data as a
STAC API and a QGIS user hand it over, for the examples and their tests.

``resources/catalog/{scene}/``:

- ``{asset}.tif``: one Cloud-Optimized GeoTIFF per band, uint16 ``(reflectance - offset) /
  scale`` (0 = nodata), the ``coarse_bands`` at twice the pixel size (2 x 2 means);
- ``{mask_asset}.tif`` (default ``QA``): uint8 at the coarse pixel size, 1 where a band has no data;
- ``item.json``: the STAC Item, its assets with ``raster:bands`` (scale, offset, nodata) and
  ``file:checksum`` (sha2-256 multihash), hrefs relative to it;
- ``labels.gpkg``: the label raster as polygons in EPSG:4326, its value in field ``code``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.features import shapes
from rasterio.warp import transform_bounds

from snakemap.core.io import atomic_path, write_cog
from snakemap.core.sections import CatalogOptions, CatalogSceneOptions

#: the default key of the mask asset
MASK_ASSET = "QA"


def write_catalog_scene(
    name: str, scene: CatalogSceneOptions, options: CatalogOptions, out: str | os.PathLike[str]
) -> Path:
    """Write one scene of the catalogue into ``out`` (see the module docstring); the item's path."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(scene.image) as src:
        data = src.read(out_dtype="float32")
        names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
        crs, transform = src.crs, src.transform
        if src.nodata is not None:
            data[data == src.nodata] = np.nan
    invalid = ~np.isfinite(data).all(axis=0)
    assets: dict[str, Any] = {}
    for i, band in enumerate(names):
        key = (scene.assets or {}).get(band, band)
        values = data[i]
        coarse = band in options.coarse_bands
        if coarse:
            values = _halve(values)
        stored = np.where(
            np.isfinite(values), np.clip(np.rint((values - options.offset) / options.scale), 1, 65535), 0
        ).astype(np.uint16)
        path = folder / f"{key}.tif"
        write_cog(path, stored[None], _profile(crs, transform, 2 if coarse else 1, 0), descriptions=[band])
        assets[key] = _asset(
            path, band, {"nodata": 0, "scale": options.scale, "offset": options.offset, "data_type": "uint16"}
        )
    mask_key = scene.mask_asset or MASK_ASSET
    mask = (_halve(invalid.astype(np.float32)) > 0).astype(np.uint8)
    write_cog(
        folder / f"{mask_key}.tif", mask[None], _profile(crs, transform, 2, None), descriptions=["invalid"]
    )
    assets[mask_key] = _asset(
        folder / f"{mask_key}.tif", "mask: 1 where a band has no data", {"data_type": "uint8"}
    )
    west, south, east, north = transform_bounds(
        crs, "EPSG:4326", *rasterio.transform.array_bounds(data.shape[1], data.shape[2], transform)
    )
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/file/v2.1.0/schema.json",
        ],
        "id": name,
        "bbox": [west, south, east, north],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        },
        "properties": {"datetime": scene.datetime, "proj:code": crs.to_string()},
        "assets": assets,
        "links": [],
    }
    _write_labels(Path(scene.label), folder / "labels.gpkg")
    with atomic_path(folder / "item.json", suffix=".json") as tmp:
        tmp.write_text(json.dumps(item, indent=1))
    return folder / "item.json"


def _halve(values: np.ndarray) -> np.ndarray:
    """2 x 2 means (NaN where any is NaN): the band at twice the pixel size."""
    rows, cols = values.shape[0] // 2 * 2, values.shape[1] // 2 * 2
    blocks = values[:rows, :cols].reshape(rows // 2, 2, cols // 2, 2)
    out: np.ndarray = blocks.mean(axis=(1, 3))
    return out


def _profile(crs: Any, transform: Any, factor: int, nodata: float | None) -> dict[str, Any]:
    return {"crs": crs, "transform": transform @ transform.scale(factor), "nodata": nodata}


def _asset(path: Path, title: str, band: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "href": f"./{path.name}",
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["data"],
        "title": title,
        "raster:bands": [band],
        "file:checksum": "1220" + digest,
    }


def _write_labels(label: Path, out: Path) -> None:
    """The label raster's patches as polygons (field ``code``) in EPSG:4326, atomically."""
    import geopandas as gpd
    from shapely.geometry import shape

    with rasterio.open(label) as src:
        data = src.read(1)
        mask = data != src.nodata if src.nodata is not None else None
        found = [(shape(g), int(v)) for g, v in shapes(data, mask=mask, transform=src.transform)]
        crs = src.crs
    frame = gpd.GeoDataFrame({"code": [v for _, v in found]}, geometry=[g for g, _ in found], crs=crs)
    with atomic_path(out, suffix=".gpkg") as tmp:
        frame.to_crs("EPSG:4326").to_file(tmp, layer="labels", driver="GPKG")
