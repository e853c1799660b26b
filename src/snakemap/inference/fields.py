"""Downscaling's files: auxiliary fields resampled onto a scene's grid, calval sites predicted from
their own degraded field (by a model or an interpolation baseline), and scenes downscaled whole
(their scores: :mod:`snakemap.evaluation.field_scores`).

A calval site's cleaned ``image.tif`` holds the high-resolution field (band 1) and the auxiliary
fields (bands 2..). A predictor sees the field degraded by its scale factor ``s`` (block means;
the site is first cut to a multiple of ``s`` rows and columns from its top-left corner) and is
scored against the field itself. Its map ``results/calval/{predictor}/{site}.tif`` is float32, NaN
where there is no data, on the cut site grid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject

from snakemap.core.config import build
from snakemap.core.io import write_cog
from snakemap.core.status import SceneStatus, status_path, write_no_map

if TYPE_CHECKING:  # torch is imported where a model runs, not by the light steps (clean, scores)
    from snakemap.tasks.fieldops import Downscaler, Method

log = logging.getLogger(__name__)


def check_auxiliary(source: str, band_names: Sequence[str], auxiliary: Mapping[str, str]) -> None:
    """A downscaling model's inputs (the field, then its auxiliary fields) against the config's.

    Raises:
        ConfigError: naming ``downscaling.auxiliary`` and the model, before any scene is read.
    """
    from snakemap.core.config import ConfigError

    if list(band_names[1:]) != list(auxiliary):
        raise ConfigError(
            f"{source} takes auxiliary fields {list(band_names[1:])}; "
            f"downscaling.auxiliary gives {list(auxiliary)}"
        )


def reproject_onto(
    path: str | os.PathLike[str], crs: Any, transform: Affine, shape: tuple[int, int]
) -> np.ndarray:
    """Band 1 of a raster resampled (bilinear) onto a grid: ``(rows, cols)`` float32, NaN where the
    source has no data or does not reach."""
    out = np.full(shape, np.nan, dtype=np.float32)
    with rasterio.open(path) as src:
        if src.crs is None:
            raise ValueError(f"auxiliary field {path} has no CRS")
        reproject(
            rasterio.band(src, 1),
            out,
            src_nodata=src.nodata,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
    return out


def add_auxiliary(clean_dir: str | os.PathLike[str], auxiliary: Mapping[str, str]) -> SceneStatus:
    """Append the auxiliary fields, resampled onto the cleaned scene's grid, to its ``image.tif``.

    A scene that is not ok is left as it is. The status records the new band names.
    """
    clean_dir = Path(clean_dir)
    status = SceneStatus.read(status_path(clean_dir))
    if status.status != "ok" or not auxiliary:
        return status
    image_path = clean_dir / "image.tif"
    with rasterio.open(image_path) as src:
        image, crs, transform = src.read().astype(np.float32), src.crs, src.transform
        names = [d or f"band{i}" for i, d in enumerate(src.descriptions, start=1)]
    extra = [reproject_onto(p, crs, transform, image.shape[1:]) for p in auxiliary.values()]
    names += list(auxiliary)
    profile = {"crs": crs, "transform": transform, "nodata": float("nan")}
    write_cog(image_path, np.concatenate([image, np.stack(extra)]), profile, descriptions=names)
    status.bands, status.band_count = names, len(names)
    status.write(status_path(clean_dir))
    return status


def downscaled_transform(transform: Affine, scale: int) -> Affine:
    """The transform of a grid ``scale`` times finer with the same origin (and bounds)."""
    return transform @ Affine.scale(1 / scale)


def predict_site(
    clean_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    scale: int,
    model: Downscaler | None = None,
    method: Method = "bicubic",
    window: int = 64,
    overlap: int = 8,
    batch_size: int = 8,
) -> Path | None:
    """Degrade a calval site's field by ``scale`` and predict it back with ``model`` (or, without
    one, by interpolation with ``method``); write the map; return it (None for a site that is not
    ok, which gets an empty file)."""
    from snakemap.tasks.fieldops import degrade, downscale_grid, interpolate_grid

    status = SceneStatus.read(status_path(clean_dir))
    if status.status != "ok":
        write_no_map(status, [out])
        return None
    with rasterio.open(Path(clean_dir) / "image.tif") as src:
        image, crs, transform = src.read().astype(np.float32), src.crs, src.transform
    h, w = image.shape[1] // scale * scale, image.shape[2] // scale * scale
    if h == 0 or w == 0:
        raise ValueError(
            f"site {status.scene_id} ({image.shape[1]}x{image.shape[2]}) is smaller than x{scale}"
        )
    lr = degrade(image[0, :h, :w], scale)
    if model is None:
        pred = interpolate_grid(lr, scale, method)
    else:
        aux = image[1:, :h, :w]
        pred = downscale_grid(
            lr, scale, model, aux if len(aux) else None, None, None, window, overlap, batch_size
        )
    write_downscaled(out, pred, crs, transform)
    return Path(out)


def downscale_field(
    lr: np.ndarray,
    crs: Any,
    transform: Affine,
    model: Downscaler,
    scale: int,
    auxiliary: Mapping[str, str] | None = None,
    window: int = 64,
    overlap: int = 8,
    batch_size: int = 8,
) -> tuple[np.ndarray, Affine]:
    """Downscale an LR field ``(rows, cols)`` (NaN gaps) on the grid ``crs, transform`` with the
    auxiliary fields resampled onto the output grid; return ``(rows*s, cols*s)`` and its transform
    (the same bounds, 1/s of the cell size). Each grid is normalised by its own statistics."""
    from snakemap.tasks.fieldops import GridStats, downscale_grid

    hr_transform = downscaled_transform(transform, scale)
    shape = (lr.shape[0] * scale, lr.shape[1] * scale)
    aux = None
    if auxiliary:
        aux = np.stack([reproject_onto(p, crs, hr_transform, shape) for p in auxiliary.values()])
    pred = downscale_grid(lr, scale, model, aux, GridStats.of(lr), None, window, overlap, batch_size)
    return pred, hr_transform


def downscale_raster(
    src_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model: Downscaler,
    scale: int,
    auxiliary: Mapping[str, str] | None = None,
    window: int = 64,
    overlap: int = 8,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Downscale band 1 of a raster of any size (its nodata and non-finite values: no data) to
    ``scale`` times its rows and columns (:func:`downscale_field`); write a COG.

    Returns:
        Figures: input and output shape, valid cells.
    """
    with rasterio.open(src_path) as src:
        if src.crs is None or src.transform == Affine.identity():
            raise ValueError(f"{src_path}: no CRS / georeferencing")
        lr = src.read(1).astype(np.float32)
        if src.nodata is not None and not np.isnan(src.nodata):
            lr[lr == src.nodata] = np.nan
        crs, transform = src.crs, src.transform
    lr[~np.isfinite(lr)] = np.nan
    pred, hr_transform = downscale_field(
        lr, crs, transform, model, scale, auxiliary, window, overlap, batch_size
    )
    write_downscaled(out, pred, crs, hr_transform)
    return {
        "input_shape": list(lr.shape),
        "output_shape": list(pred.shape),
        "valid_cells": int(np.isfinite(pred).sum()),
    }


def write_downscaled(out: str | os.PathLike[str], pred: np.ndarray, crs: Any, transform: Affine) -> None:
    """Write a ``(rows, cols)`` prediction on the HR grid ``transform`` as a float32 COG, NaN nodata."""
    write_cog(
        out, pred[None].astype(np.float32), {"crs": crs, "transform": transform, "nodata": float("nan")}
    )


def auxiliary_after_clean(clean_dir: str | os.PathLike[str], cfg: Mapping[str, Any]) -> SceneStatus:
    """Downscaling's ``after_clean`` hook: the config's auxiliary fields (``downscaling.auxiliary``)
    added to a cleaned scene as extra bands (see :func:`add_auxiliary`)."""
    return add_auxiliary(clean_dir, build("downscaling", cfg.get("downscaling")).auxiliary)
