"""Synthetic but realistic demo scenes: a reef coast seen by a six-band sensor.

Each scene is a uint16 GeoTIFF of surface reflectance x 10000 (Sentinel-2 L2A style) with bands
``blue, green, red, nir, swir16, swir22``, nodata 0, and a uint8 label GeoTIFF:

===== =============================================
value class
===== =============================================
0     land (vegetated)
1     deep water
2     shallow water
3     reef
4     cloud
255   nodata (outside the sensor's swath)
===== =============================================

The layout (coastline, depth, reef patches, clouds, a swath edge) is seeded by the scene name,
so the same name always gives the same scene.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

from snakemap.core.io import atomic_path
from snakemap.core.sections import DemoOptions

BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
#: Mean reflectance per class and band (rows: land, deep, shallow, reef, cloud).
SPECTRA = np.array(
    [
        [0.040, 0.080, 0.050, 0.350, 0.200, 0.100],
        [0.060, 0.040, 0.020, 0.010, 0.005, 0.003],
        [0.100, 0.120, 0.060, 0.020, 0.010, 0.005],
        [0.080, 0.100, 0.075, 0.035, 0.012, 0.006],
        [0.450, 0.460, 0.470, 0.480, 0.380, 0.280],
    ],
    dtype=np.float32,
)
LABEL_NODATA = 255


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    smooth: np.ndarray = (field - field.mean()) / (field.std() + 1e-9)
    return smooth


def synth_scene(name: str, size: int, empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Make one scene.

    Returns:
        ``(6, size, size)`` uint16 reflectance x 10000 (0 = nodata) and ``(size, size)`` uint8
        labels (see the module docstring).
    """
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    shape = (size, size)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)
    land = ramp * 4 + 0.6 * _smooth(rng, shape, size / 10) > rng.uniform(-0.6, 0.6)
    dist = ndimage.distance_transform_edt(~land)
    shallow = ~land & (dist + 8 * _smooth(rng, shape, size / 16) < size * 0.18)
    reef_field = _smooth(rng, shape, size / 40)
    reef = ~land & (dist > 4) & (dist < size * 0.3) & (reef_field > 1.0)
    cloud = _smooth(rng, shape, size / 12) > rng.uniform(1.3, 2.0)
    label = np.where(land, 0, np.where(reef, 3, np.where(shallow, 2, 1))).astype(np.uint8)
    label[cloud] = 4
    refl = SPECTRA[label].transpose(2, 0, 1).copy()
    # Depth darkens water, texture varies everything a little, cloud edges are translucent.
    depth = np.clip(dist / (size * 0.4), 0, 1)[None]
    water = (label == 1) | (label == 2) | (label == 3)
    refl[:, water] *= 1 - 0.5 * depth[:, water]
    refl *= 1 + 0.08 * _smooth(rng, shape, 3)[None]
    haze = np.clip(ndimage.gaussian_filter(cloud.astype(np.float32), 2), 0, 1)[None]
    refl = refl * (1 - haze) + SPECTRA[4][:, None, None] * haze
    refl += rng.normal(0, 0.004, size=refl.shape)
    dn = np.clip(refl * 10000, 1, 65535).astype(np.uint16)
    # A swath edge cuts one corner: no data there, as at the edge of a satellite's track.
    across = xx * np.cos(angle + 1) + yy * np.sin(angle + 1)
    edge = across > np.quantile(across, rng.uniform(0.8, 0.95))
    if empty:
        edge[:] = True
    dn[:, edge] = 0
    label[edge] = LABEL_NODATA
    return dn, label


def write_demo_scene(
    name: str,
    image_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
    options: DemoOptions,
    empty: bool = False,
) -> None:
    """Write one demo scene and its label as GeoTIFFs, placed by a hash of the name."""
    dn, label = synth_scene(name, options.size, empty)
    crc = zlib.crc32(name.encode())
    step = options.size * options.resolution
    west = 300000 + (crc % 40) * step
    north = 8200000 - ((crc // 40) % 40) * step
    profile = {
        "driver": "GTiff",
        "width": options.size,
        "height": options.size,
        "crs": options.crs,
        "transform": from_origin(west, north, options.resolution, options.resolution),
        "tiled": True,
        "compress": "deflate",
    }
    with (
        atomic_path(image_path, suffix=".tif") as tmp,
        rasterio.open(tmp, "w", count=6, dtype="uint16", nodata=0, **profile) as dst,
    ):
        dst.write(dn)
        for i, band in enumerate(BANDS, start=1):
            dst.set_band_description(i, band)
    with (
        atomic_path(label_path, suffix=".tif") as tmp,
        rasterio.open(tmp, "w", count=1, dtype="uint8", nodata=LABEL_NODATA, **profile) as dst,
    ):
        dst.write(label[None])
