"""The report's quicklook of an applied map: its overview in class colours with a legend of
mapped areas, beside a stretched image of the scenes it was made from, on the same grid.

The overview is read whole (at most :data:`PANEL_PIXELS` on its longer side). The image panel
is warped from the scenes themselves (:func:`image_overview`), at most :data:`MAX_IMAGE_SCENES`
of them, spread evenly over the run (the title says how many): a quicklook of a million scenes
reads a hundred, each from its coarsest overview that is still finer than the panel's pixels
where its file has overviews (a COG's), else at full resolution.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from affine import Affine
from matplotlib.patches import Rectangle
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform

from snakemap.core.io import NODATA_CLASS, atomic_path
from snakemap.core.palette import rgb
from snakemap.core.sections import AcquireOptions, SensorOptions
from snakemap.core.status import SceneError
from snakemap.core.storage import gdal_options, gdal_path, is_remote
from snakemap.data.stac_scenes import is_item, read_item, resolve, write_vrt
from snakemap.evaluation.report import NODATA_GREY, display_bands, stretch

log = logging.getLogger(__name__)
#: the panels' longer side at most, in pixels
PANEL_PIXELS = 1024
#: the scenes warped into the image panel at most
MAX_IMAGE_SCENES = 100


@dataclass
class Grid:
    """A panel's pixels on the ground: ``width`` x ``height`` of ``transform`` in ``crs``."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int


@dataclass
class SceneImage:
    """Where one scene's image is and how to read it: a manifest ``uri``, its band names in file
    order and, for a STAC Item, the sensor whose assets make its bands."""

    scene_id: str
    uri: str
    names: list[str | None]
    sensor: SensorOptions | None = None
    env: dict[str, str] = field(default_factory=dict)


def read_overview(path: str | os.PathLike[str]) -> tuple[np.ndarray, Grid, float | None]:
    """``(H, W)`` values of an overview, decimated to at most :data:`PANEL_PIXELS` a side
    (nearest: classes stay classes), its grid and nodata."""
    with rasterio.open(path) as src:
        scale = max(1.0, max(src.width, src.height) / PANEL_PIXELS)
        width, height = max(1, round(src.width / scale)), max(1, round(src.height / scale))
        data = src.read(1, out_shape=(height, width), resampling=Resampling.nearest)
        transform = src.transform @ Affine.scale(src.width / width, src.height / height)
        return data, Grid(src.crs, transform, width, height), src.nodata


def class_panel(classes: np.ndarray, colors: Sequence[str]) -> np.ndarray:
    """``(H, W, 4)`` RGBA in 0..1 of a class overview: class ``i`` in ``colors[i]``, transparent
    where there is no class (nodata, or a value past the classes)."""
    table = np.zeros((256, 4), dtype=np.float32)
    for i, color in enumerate(colors):
        table[i] = [*(v / 255 for v in rgb(color)), 1.0]
    table[NODATA_CLASS] = 0
    out: np.ndarray = table[classes]
    return out


def _source(
    scene: SceneImage, folder: Path, acquire: AcquireOptions
) -> tuple[str, dict[str, str], list[str | None]]:
    """The GDAL path of a scene's image, GDAL's settings to read it and its band names."""
    if is_item(scene.uri):
        from snakemap.data.acquire import fetch

        if scene.sensor is None:
            raise ValueError(f"{scene.uri} is a STAC Item without a sensor")
        item_file = folder / f"{scene.scene_id}.item.json"
        fetch(scene.uri, item_file, "", acquire)
        item = resolve(read_item(item_file.read_bytes(), scene.uri), scene.sensor)
        vrt = write_vrt(item, folder / f"{scene.scene_id}.vrt")
        env = {k: v for href in item.hrefs if is_remote(href) for k, v in gdal_options(href, acquire).items()}
        return str(vrt), env, list(item.bands)
    env = gdal_options(scene.uri, acquire) if is_remote(scene.uri) else {}
    return gdal_path(scene.uri, "."), env, list(scene.names)


def image_overview(
    scenes: Sequence[SceneImage], grid: Grid, acquire: AcquireOptions | None = None
) -> tuple[np.ndarray, list[str]]:
    """The scenes' red, green and blue (by name, else their first three bands; one band in grey)
    warped onto ``grid`` by averaging: ``(3, H, W)`` float32, NaN where no scene has a valid
    value; where scenes overlap, the first in ``scenes`` that has one. Also the scenes that could
    not be read, with why (they are left out, never an error: this is a picture)."""
    acquire = acquire or AcquireOptions()
    out = np.full((3, grid.height, grid.width), np.nan, dtype=np.float32)
    skipped: list[str] = []
    if grid.crs is None:
        return out, [f"{s.scene_id}: the overview has no CRS (no scene has one)" for s in scenes]
    with tempfile.TemporaryDirectory(prefix="quicklook-") as tmp:
        for scene in scenes:
            try:
                path, env, names = _source(scene, Path(tmp), acquire)
                with rasterio.Env(**env):
                    data = _warped(path, names, grid)
            except (RasterioError, OSError, ValueError, SceneError) as exc:  # AcquireError too
                skipped.append(f"{scene.scene_id}: {exc}")
                continue
            if data.shape[0] == 1:
                data = np.repeat(data, 3, axis=0)
            fill = np.isnan(out).all(axis=0) & np.isfinite(data).all(axis=0)
            out[:, fill] = data[:, fill]
    return out, skipped


def _warped(path: str, names: list[str | None], grid: Grid) -> np.ndarray:
    """A scene's display bands on ``grid``: ``(1 or 3, H, W)`` float32, NaN off the scene and
    where it has no data (an alpha band marks its footprint, nodata or not), read from the
    coarsest overview still finer than the grid's pixels."""
    with rasterio.open(path) as src:
        bands = display_bands(names if len(names) == src.count else src.descriptions, src.count)
        factors = src.overviews(1)
        level = None
        if factors and src.crs is not None:
            native, _, _ = calculate_default_transform(src.crs, grid.crs, src.width, src.height, *src.bounds)
            ratio = abs(grid.transform.a) / abs(native.a)  # source pixels per panel pixel
            fine = [i for i, f in enumerate(factors) if f <= ratio]
            level = fine[-1] if fine else None
    opened = rasterio.open(path, overview_level=level) if level is not None else rasterio.open(path)
    with (
        opened as src,
        WarpedVRT(
            src,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=Resampling.average,
            add_alpha=True,
        ) as vrt,
    ):
        data: np.ndarray = vrt.read(bands, out_dtype="float32", masked=True).filled(np.nan)
    return data


def spread(items: Sequence[str], most: int) -> list[str]:
    """At most ``most`` of ``items``, evenly spread over them (first and last included)."""
    if len(items) <= most:
        return list(items)
    step = (len(items) - 1) / (most - 1)
    return [items[round(i * step)] for i in range(most)]


def _area(ha: float) -> str:
    return f"{ha / 100:,.1f} km²" if ha >= 100 else f"{ha:,.1f} ha"


@dataclass
class Shown:
    """What a quicklook shows: the panels' ``grid``, the scenes in the image panel, those left
    out with why, and the classes present in the overview."""

    grid: Grid
    scenes: int
    skipped: list[str]
    classes: list[str]


def quicklook(
    overview: str | os.PathLike[str],
    scenes: Sequence[SceneImage],
    classes: Sequence[str] | None,
    colors: Sequence[str] | None,
    title: str,
    out: str | os.PathLike[str],
    mapped_ha: Mapping[str, float] | None = None,
    total_scenes: int | None = None,
    acquire: AcquireOptions | None = None,
) -> Shown:
    """Write the quicklook PNG: the overview (classes in ``colors`` with a legend of their
    mapped areas; a field, ``classes`` None, in viridis with a colour bar) beside the image.

    Returns:
        What it shows.
    """
    data, grid, nodata = read_overview(overview)
    images, skipped = image_overview(scenes, grid, acquire) if scenes else (None, [])
    # panels about 6 inches on their longer side, the legend below them
    aspect = grid.height / grid.width
    height = min(8.0, max(3.0, 6.0 * aspect))
    width = min(6.5, max(3.5, height / aspect))
    fig, axes = plt.subplots(1, 2, figsize=(2 * width + 1.0, height + 1.6))
    shown: list[str] = []
    if classes is not None:
        assert colors is not None
        axes[0].set_facecolor(NODATA_GREY)
        axes[0].imshow(class_panel(data, colors), interpolation="nearest")
        present = set(np.unique(data).tolist())
        shown = [c for i, c in enumerate(classes) if i in present]
        total = sum((mapped_ha or {}).values())
        labels = []
        for c in classes:
            ha = (mapped_ha or {}).get(c)
            labels.append(f"{c}: {_area(ha)} ({100 * ha / total:.1f}%)" if ha and total else c)
        handles = [Rectangle((0, 0), 1, 1, facecolor=col, edgecolor="0.3") for col in colors]
        axes[0].legend(
            handles, labels, loc="upper left", bbox_to_anchor=(0, -0.02), ncol=2, fontsize=8, frameon=False
        )
        axes[0].set_title("map (grey: no map)", fontsize=10)
    else:
        values = np.ma.masked_invalid(np.where(data == nodata, np.nan, data).astype(np.float32))
        shown_im = axes[0].imshow(values, cmap="viridis", interpolation="nearest")
        fig.colorbar(shown_im, ax=axes[0], fraction=0.046)
        axes[0].set_title("field", fontsize=10)
    axes[1].set_facecolor(NODATA_GREY)
    if images is not None and np.isfinite(images).any():
        rgb_image = stretch(images)
        valid = np.isfinite(rgb_image).all(axis=-1)
        axes[1].imshow(np.dstack([np.nan_to_num(rgb_image), valid]), interpolation="nearest")
    n = len(scenes) - len(skipped)
    of = f" of {total_scenes}" if total_scenes and total_scenes > n else ""
    axes[1].set_title(f"image of {n}{of} scenes (2-98%)", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Shown(grid, n, skipped, shown)
