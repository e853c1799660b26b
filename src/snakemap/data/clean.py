"""Clean: turn an acquired scene into analysis-ready rasters and a status sentinel.

Output layout of one scene, ``results/clean/{scene}/``:

- ``status.json``: always (see :mod:`snakemap.core.status`).
- ``image.tif``: only when ok. float32 Cloud-Optimized GeoTIFF of shape
  ``(selected bands + indices, rows, cols)``, band descriptions set, NaN where invalid; with a
  sensor (:mod:`snakemap.data.sensors`), in reflectance (stored value * scale + offset).
- ``label.tif``: only when ok and the scene has a label. uint8 class indices on the image's
  grid, ``ignore_index`` (also the nodata value) for unlabelled, ignored and invalid pixels.

Holds reading a scene (image and label, windowed, reprojected), judging its state and writing its
outputs; the masks, scaling and indices applied to its pixels live in :mod:`snakemap.data.masks`,
the ``clean`` section's options in :mod:`snakemap.core.sections`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError, WindowError
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window, from_bounds

from snakemap.core.config import ConfigError
from snakemap.core.io import read_json, write_cog
from snakemap.core.label_sections import LabelOptions
from snakemap.core.sections import BandOptions, CleanOptions, SensorOptions
from snakemap.core.status import SceneError, SceneStatus, corrupt_reason, status_path
from snakemap.data.acquire import RECORD
from snakemap.data.bands import cleaned_names, source_names
from snakemap.data.labels import Unmapped, remap_labels
from snakemap.data.masks import clean_array, is_all_zero, qa_position
from snakemap.data.stac_scenes import SIDECAR, acquired_image, scene_options
from snakemap.data.vector_labels import VECTOR_SUFFIXES, is_vector, rasterize_labels

log = logging.getLogger(__name__)


#: the reason of a scene without a CRS or a geotransform
NO_CRS = "no CRS / georeferencing"
#: the reason of a scene whose every source band is 0 at every valid pixel
ALL_ZERO = "every band is 0 at every pixel: no data (whatever clean.zero_is_nodata says)"


@dataclass
class Cleaned:
    """A cleaned scene in memory."""

    #: ``(bands, rows, cols)`` float32, NaN where invalid
    image: np.ndarray
    #: band names, one per band of ``image``
    names: list[str]
    #: ``(rows, cols)`` uint8 class indices, or None
    label: np.ndarray | None
    crs: CRS
    transform: rasterio.Affine
    #: every source band (but a QA band) was exactly 0 at every valid pixel: a scene without data
    all_zero: bool = False
    #: source label values missing from the remap table; None without a label
    unmapped: Unmapped | None = None


def clean_scene(
    scene_id: str,
    acquired_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    bands: BandOptions,
    clean: CleanOptions,
    labels: LabelOptions | None,
    sensor: SensorOptions | None = None,
    bounds: tuple[float, float, float, float] | None = None,
) -> SceneStatus:
    """Clean one acquired scene into ``out_dir`` and return its status.

    Args:
        labels: the classes and the remap table of the scene (its label scheme's, if any).
        sensor: the scene's sensor; None reads it with ``bands.names`` and no scaling.
        bounds: ``(minx, miny, maxx, maxy)`` in the scene's CRS: clean only this part of it.

    Never raises for a bad scene: an unreadable, truncated or mis-shaped scene, one without a
    CRS or geotransform, one whose label holds values missing from the remap table (see
    ``labels.unmapped``), or one whose acquisition failed, ends as ``corrupt``; one without enough
    valid pixels, or whose bands are all 0, as ``empty``.

    Raises:
        ConfigError: before the scene is touched, for a config that no scene could satisfy (a
            selected band, an index's band or the QA band missing from ``bands.names``).
    """
    if sensor is None:
        cleaned_names(bands, {"bands.names": bands.names}, clean.qa_band)
    started = time.time()
    src_dir, out = Path(acquired_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("image.tif", "label.tif"):
        (out / stale).unlink(missing_ok=True)
    try:
        record = read_json(src_dir / RECORD)
        if record["status"] != "ok":
            raise SceneError(f"acquire failed: {record['reason']}")
        image, env = acquired_image(src_dir), {}
        if (src_dir / SIDECAR).exists():  # a STAC Item: its VRT, scaling, mask and GDAL settings
            own = sensor or SensorOptions(bands=list(bands.names or []))
            sidecar = read_json(src_dir / SIDECAR)
            sensor, clean = scene_options(own, clean, sidecar)
            env = sidecar.get("env", {})
        with rasterio.Env(**env):
            cleaned = read_clean(
                image,
                acquired_label(src_dir),
                bands,
                clean,
                labels,
                window=None if bounds is None else bounds_window(image, bounds),
                sensor=sensor,
            )
    except ConfigError:
        raise  # the config's mistake, not the scene's: no final state
    except (SceneError, RasterioError, OSError, ValueError) as exc:
        status = SceneStatus(scene_id, "corrupt", reason=corrupt_reason(exc))
        log.warning("scene %s is corrupt: %s", scene_id, status.reason)
        status.started, status.finished = started, time.time()
        status.write(status_path(out))
        return status
    status = judge(scene_id, cleaned, clean, labels)
    if status.status == "ok":
        profile = {"crs": cleaned.crs, "transform": cleaned.transform, "nodata": float("nan")}
        write_cog(out / "image.tif", cleaned.image, profile, descriptions=cleaned.names)
        if cleaned.label is not None and labels is not None:
            label_profile = dict(profile, nodata=labels.ignore_index)
            write_cog(out / "label.tif", cleaned.label[None], label_profile, descriptions=["label"])
    status.started, status.finished = started, time.time()
    status.write(status_path(out))
    return status


def judge(scene_id: str, cleaned: Cleaned, clean: CleanOptions, labels: LabelOptions | None) -> SceneStatus:
    """The state of a cleaned scene: its figures, and why it is empty or corrupt if it is.

    Corrupt: label values missing from the remap table (:meth:`snakemap.data.labels.Unmapped.problem`).
    Empty: all bands 0, no valid pixel or fewer than ``clean.min_valid_fraction``, or no
    labelled pixel on valid data. ``extra`` gets ``class_pixels`` and, with a label,
    ``unmapped_fraction`` and ``unmapped_values``.
    """
    valid = np.isfinite(cleaned.image).all(axis=0)
    fraction = float(valid.mean()) if valid.size else 0.0
    status = judge_figures(
        scene_id, fraction, cleaned.all_zero, cleaned.names, cleaned.crs, valid.shape, clean
    )
    problem = _judge_unmapped(status, cleaned.unmapped, labels)
    if problem:
        status.status, status.reason = "corrupt", problem
    elif status.status == "ok" and cleaned.label is not None and labels is not None:
        counts = np.bincount(cleaned.label.ravel(), minlength=256)
        status.extra["class_pixels"] = {name: int(counts[i]) for i, name in enumerate(labels.classes)}
        if sum(status.extra["class_pixels"].values()) == 0:
            status.status, status.reason = "empty", "no labelled pixels on valid data"
    return status


def judge_figures(
    scene_id: str,
    fraction: float,
    all_zero: bool,
    names: list[str],
    crs: CRS | None,
    shape: tuple[int, ...],
    clean: CleanOptions,
) -> SceneStatus:
    """The state of a scene from its figures alone (its valid fraction and all-zero flag, as a
    whole scene or a pass over its strips gives them): empty when all 0 or too little is valid."""
    status = SceneStatus(
        scene_id,
        "ok",
        valid_fraction=round(fraction, 6),
        band_count=len(names),
        bands=names,
        crs=crs.to_string() if crs else None,
        shape=list(shape),
    )
    if all_zero:
        status.status, status.reason = "empty", ALL_ZERO
    elif fraction == 0 or fraction < clean.min_valid_fraction:
        status.status = "empty"
        status.reason = (
            f"valid fraction {fraction:.4f} is below clean.min_valid_fraction {clean.min_valid_fraction}"
            if fraction
            else "no valid pixels"
        )
    return status


def _judge_unmapped(status: SceneStatus, unmapped: Unmapped | None, labels: LabelOptions | None) -> str:
    """Record the label's unmapped values in ``status.extra``, warn of any; the corrupt reason or ``""``."""
    if unmapped is None or labels is None:
        return ""
    status.extra["unmapped_fraction"] = round(unmapped.fraction, 6)
    status.extra["unmapped_values"] = unmapped.values
    if unmapped.pixels:
        share = f"{100 * unmapped.fraction:.2f}% of the labelled {unmapped.unit}"
        log.warning(
            "scene %s: label values %s (%s) are not in %s",
            status.scene_id,
            unmapped.values,
            share,
            labels.remap_key,
        )
    return unmapped.problem(labels)


def read_clean(
    image_path: Path,
    label_path: Path | None,
    bands: BandOptions,
    clean: CleanOptions,
    labels: LabelOptions | None,
    window: Window | None = None,
    sensor: SensorOptions | None = None,
    own: Window | None = None,
) -> Cleaned:
    """Read, mask, select, add indices, remap labels and optionally reproject one scene.

    Args:
        window: read only this window of the image (pixels outside the file are nodata); the
            result's transform is the window's.
        sensor: the scene's sensor: its band names, nodata (before ``clean.nodata`` and the
            file's own) and scale and offset to reflectance. None: ``bands.names``, no scaling.
        own: the scene's own pixels within ``window`` when that adds neighbours' context: the
            all-zero test looks at these alone.

    Raises:
        SceneError, RasterioError, OSError: for a scene that is corrupt (:data:`NO_CRS` for one
            without a CRS or with an identity geotransform).
    """
    with rasterio.open(image_path) as src:
        check_georeferenced(src)
        names = source_names(src.descriptions, bands if sensor is None else BandOptions(names=sensor.bands))
        given = (sensor.nodata if sensor else None, clean.nodata, src.nodata)
        nodata = next((v for v in given if v is not None), None)
        fill = nodata if nodata is not None else np.nan
        data = src.read(out_dtype="float32", window=window, boundless=window is not None, fill_value=fill)
        crs = src.crs
        transform = src.window_transform(window) if window is not None else src.transform
    r, c = (int(own.row_off), int(own.col_off)) if own is not None else (0, 0)
    h, w = (int(own.height), int(own.width)) if own is not None else data.shape[1:]
    all_zero = is_all_zero(data[:, r : r + h, c : c + w], nodata, qa_position(names, clean.qa_band))
    image, out_names = clean_array(data, names, nodata, bands, clean.qa_options, clean.zero_is_nodata, sensor)
    label, unmapped = None, None
    if label_path is not None and labels is not None:
        label, unmapped = _read_label(label_path, labels, crs, transform, image.shape[1:])
        label[~np.isfinite(image).all(axis=0)] = labels.ignore_index
    if clean.crs or clean.resolution:
        image, label, crs, transform = _reproject(image, label, crs, transform, clean, labels)
    return Cleaned(image, out_names, label, crs, transform, all_zero, unmapped)


def bounds_window(image_path: Path, bounds: tuple[float, float, float, float]) -> Window:
    """The pixel window of ``bounds`` (in the image's CRS) within the image.

    Raises:
        SceneError: when the bounds miss the image.
    """
    with rasterio.open(image_path) as src:
        check_georeferenced(src)
        window = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
        try:
            return window.intersection(Window(0, 0, src.width, src.height))
        except WindowError:
            raise SceneError(f"bounds {bounds} do not overlap the scene {src.bounds}") from None


def check_georeferenced(src: rasterio.io.DatasetReader) -> None:
    """Raise ``SceneError(NO_CRS)`` for an open file without a CRS or with an identity geotransform."""
    if src.crs is None or src.transform.is_identity:
        raise SceneError(NO_CRS)


def acquired_label(folder: Path) -> Path | None:
    """The label acquire wrote into a scene's folder: ``label.tif``, or a vector file
    ``label.{gpkg,shp,...}``; None for a scene without one."""
    for suffix in (".tif", *VECTOR_SUFFIXES):
        if (folder / f"label{suffix}").exists():
            return folder / f"label{suffix}"
    return None


def _read_label(
    path: Path, labels: LabelOptions, crs: CRS, transform: rasterio.Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, Unmapped]:
    """Read a label, remap it and bring it onto the image's grid (nearest neighbour); a vector
    label is rasterized onto it (:mod:`snakemap.data.vector_labels`).

    Returns:
        ``(rows, cols)`` uint8 class indices on the image's grid, and the source values that
        the remap table lacks (counted on the label's own grid, or in features).
    """
    if is_vector(path):
        return rasterize_labels(path, labels, crs, transform, shape)
    with rasterio.open(path) as src:
        if src.count != 1:
            raise SceneError(f"label has {src.count} bands, expected 1")
        raw = src.read(1)
        mapped, unmapped = remap_labels(raw, labels, src.nodata)
        if src.shape == shape and src.transform.almost_equals(transform):
            if src.crs and crs and src.crs != crs:
                log.info("label CRS %s differs from the image's %s on the same grid", src.crs, crs)
            return mapped, unmapped
        out = np.full(shape, labels.ignore_index, dtype=np.uint8)
        reproject(
            mapped,
            out,
            src_transform=src.transform,
            src_crs=src.crs or crs,
            src_nodata=labels.ignore_index,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=labels.ignore_index,
            resampling=Resampling.nearest,
        )
        return out, unmapped


def _reproject(
    image: np.ndarray,
    label: np.ndarray | None,
    crs: CRS,
    transform: rasterio.Affine,
    clean: CleanOptions,
    labels: LabelOptions | None,
) -> tuple[np.ndarray, np.ndarray | None, CRS, rasterio.Affine]:
    """Warp the image (configured resampling) and label (nearest) to the target CRS/resolution."""
    dst_crs = CRS.from_user_input(clean.crs) if clean.crs else crs
    height, width = image.shape[1:]
    dst_transform, dst_w, dst_h = calculate_default_transform(
        crs, dst_crs, width, height, *array_bounds(height, width, transform), resolution=clean.resolution
    )
    out = np.full((image.shape[0], dst_h, dst_w), np.nan, dtype=np.float32)
    reproject(
        image,
        out,
        src_transform=transform,
        src_crs=crs,
        src_nodata=np.nan,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
        dst_nodata=np.nan,
        resampling=Resampling[clean.resampling],
    )
    out_label = None
    if label is not None and labels is not None:
        out_label = np.full((dst_h, dst_w), labels.ignore_index, dtype=np.uint8)
        reproject(
            label,
            out_label,
            src_transform=transform,
            src_crs=crs,
            src_nodata=labels.ignore_index,
            dst_transform=dst_transform,
            dst_crs=dst_crs,
            dst_nodata=labels.ignore_index,
            resampling=Resampling.nearest,
        )
        out_label[~np.isfinite(out).all(axis=0)] = labels.ignore_index
    return out, out_label, dst_crs, dst_transform
