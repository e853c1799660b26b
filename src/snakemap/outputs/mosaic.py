"""Mosaics of the ok scenes: a VRT over their maps per CRS and a downsampled overview COG of all
of them in one CRS (see :func:`build_mosaic`); and the VRT of all apply scenes that
``apply.buffer`` reads neighbouring pixels from.

GDAL's command-line tools build them (Debian's ``gdal-bin``, or conda's ``gdal``).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import math
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import calculate_default_transform, transform_bounds

from snakemap.core.apply_sections import PolarOptions
from snakemap.core.config import ConfigError
from snakemap.core.io import NODATA_CLASS, atomic_path, write_cog, write_json
from snakemap.core.storage import gdal_path

log = logging.getLogger(__name__)
#: GDAL's virtual file systems for the remote schemes that scenes come from
#: the mosaic folder's listing of its zones (see :func:`build_mosaic`)
INDEX_FILE = "index.json"
#: the overview's longer side at most, in pixels: a run across the globe still gives a quick look
OVERVIEW_MAX_PIXELS = 8192
#: points along each side of a zone's bounds when they are reprojected
EDGE_POINTS = 21


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} not found: install GDAL's command-line tools ('apt-get install gdal-bin')"
        )
    return path


def build_mosaic(
    maps: Sequence[str | os.PathLike[str]],
    folder: str | os.PathLike[str],
    overview: str | os.PathLike[str],
    factor: int = 8,
    resampling: str = "mode",
    overview_crs: str = "EPSG:4326",
    polar: Mapping[str, str | os.PathLike[str]] | None = None,
    polar_options: PolarOptions | None = None,
) -> dict[str, Any]:
    """Write the mosaics of ``maps``, one VRT per CRS, and ``overview``, a COG of them all; with
    ``polar`` (side -> path), also the polar overviews of ``polar_options`` (:func:`_write_polar`).

    Layout of ``folder`` (``results/maps/{predictor}/mosaic/``)::

        {epsg}.vrt     the maps in one CRS (e.g. 32618.vrt); crs-{hash}.vrt for a CRS without an
                       EPSG code
        index.json     {"scenes": N, "zones": {"EPSG:32618": {"vrt", "scenes", "scene_ids",
                       "bounds" (in the zone's CRS), "bbox" (WGS84)}}, "unreferenced": [scene ids],
                       "overview": {"path", "crs", "bounds", "resolution", "shape"}}

    One VRT cannot hold two CRSs (gdalbuildvrt leaves out every map whose CRS differs from the
    first's), hence one per zone; a VRT that still lacks a map of its zone is an error. The
    overview is warped from every zone into ``overview_crs`` (see :func:`overview_grid`) with
    GDAL's ``resampling`` (``mode`` for class maps, ``average`` for fields). A map without a CRS
    has no place on the ground: it is listed under ``unreferenced``, with a warning, and is in no
    VRT nor the overview.

    Paths inside the VRTs are relative, so the results folder can move. ``folder`` is written
    whole beside itself and then moved into place. With no map at all the overview is 1 x 1 pixel
    of nodata, so that the run completes.

    Returns:
        The index.

    Raises:
        ConfigError: naming ``apply.overview_crs``, for a CRS that is none.
        RuntimeError: naming the maps, when GDAL leaves a map out of its zone's VRT.
    """
    # absolute: GDAL runs in the VRTs' folder
    folder, overview = Path(folder).absolute(), Path(overview).absolute()
    target = parse_overview_crs(overview_crs)
    zones, unreferenced = group_by_crs(maps)
    for path in unreferenced:
        log.warning("%s has no CRS: it is in no mosaic and not in the overview", path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # what a killed mosaic job left (it held no lock: a rule's outputs have one writer at a time)
    for leftover in folder.parent.glob(f".{glob.escape(folder.name)}.*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    # mkdir (not mkdtemp, which makes it private) gives the folder the umask's mode
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        index: dict[str, Any] = {
            "scenes": len(maps),
            "zones": {key: _zone_vrt(zone, tmp / zone.vrt) for key, zone in sorted(zones.items())},
            "unreferenced": sorted(Path(p).stem for p in unreferenced),
        }
        index["overview"] = _write_overview(list(zones.values()), tmp, overview, target, factor, resampling)
        if polar:
            opts = polar_options or PolarOptions()
            index["polar"] = {
                side: _write_polar(list(zones.values()), side, Path(path), tmp, opts, factor, resampling)
                for side, path in polar.items()
            }
        write_json(tmp / INDEX_FILE, index)
        # A folder cannot be renamed onto a non-empty one: the old mosaic is renamed aside first
        # (whole, at once), the new one takes its name, then the old one is removed.
        old = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:12]}.old.tmp"
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return index


@dataclass
class Zone:
    """The maps that share one CRS."""

    crs: CRS
    #: the VRT's file name: ``{epsg}.vrt``, or ``crs-{hash}.vrt`` for a CRS without an EPSG code
    vrt: str
    maps: list[Path] = field(default_factory=list)
    #: (left, bottom, right, top) of the maps, in ``crs``
    bounds: tuple[float, float, float, float] = (math.inf, math.inf, -math.inf, -math.inf)
    #: the finest pixel size of the maps, in ``crs``'s units
    resolution: float = math.inf
    #: per map (in :attr:`maps`' order): its centre's latitude and its own bounds
    latitudes: list[float] = field(default_factory=list)
    map_bounds: list[tuple[float, float, float, float]] = field(default_factory=list)


def group_by_crs(maps: Sequence[str | os.PathLike[str]]) -> tuple[dict[str, Zone], list[Path]]:
    """The maps by CRS (``EPSG:32618``, or ``crs-{hash}``), and those without a CRS."""
    zones: dict[str, Zone] = {}
    unreferenced: list[Path] = []
    for path in map(Path, maps):
        with rasterio.open(path) as src:
            crs, bounds, res = src.crs, src.bounds, min(src.res)
        if crs is None:
            unreferenced.append(path)
            continue
        key, name = _zone_name(crs)
        zone = zones.setdefault(key, Zone(crs, name))
        zone.maps.append(path)
        _, south, _, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=EDGE_POINTS)
        zone.latitudes.append((south + north) / 2)
        zone.map_bounds.append(tuple(bounds))
        b = zone.bounds
        zone.bounds = (min(b[0], bounds[0]), min(b[1], bounds[1]), max(b[2], bounds[2]), max(b[3], bounds[3]))
        zone.resolution = min(zone.resolution, res)
    return zones, unreferenced


def parse_overview_crs(text: str) -> CRS:
    """``apply.overview_crs`` as a CRS (``EPSG:4326``, a WKT or PROJ string).

    Raises:
        ConfigError: naming the key and the value.
    """
    try:
        return CRS.from_user_input(text)
    except CRSError as exc:
        raise ConfigError(f"apply.overview_crs {text!r} is not a CRS: {exc}") from exc


def overview_grid(
    zones: Sequence[Zone], crs: CRS, factor: int
) -> tuple[tuple[float, float, float, float], float]:
    """The overview's bounds in ``crs`` and its pixel size.

    The bounds hold every zone's footprint (densified, so that curved edges are inside) and are a
    whole number of pixels. The pixel size is ``factor`` times the finest zone's once warped
    (GDAL's suggestion), coarser if the longer side would exceed :data:`OVERVIEW_MAX_PIXELS`
    (zones far apart, e.g. a global run).
    """
    boxes, sizes = [], []
    for zone in zones:
        width = max(1, round((zone.bounds[2] - zone.bounds[0]) / zone.resolution))
        height = max(1, round((zone.bounds[3] - zone.bounds[1]) / zone.resolution))
        transform, _, _ = calculate_default_transform(zone.crs, crs, width, height, *zone.bounds)
        sizes.append(abs(transform.a))
        boxes.append(transform_bounds(zone.crs, crs, *zone.bounds, densify_pts=EDGE_POINTS))
    left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, top = max(b[2] for b in boxes), max(b[3] for b in boxes)
    if crs.is_geographic:
        left, right = longitudes([(b[0], b[2]) for b in boxes])
    res = max(min(sizes) * factor, max(right - left, top - bottom) / OVERVIEW_MAX_PIXELS)
    width, height = math.ceil((right - left) / res), math.ceil((top - bottom) / res)
    return (left, top - height * res, left + width * res, top), res


def longitudes(spans: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The narrowest longitude interval holding every ``(west, east)`` span (one that crosses
    the antimeridian has west > east): in -180..180, or, where scenes lie on both sides of the
    antimeridian and that is narrower, in 0..360 (east of 180 where the interval crosses it)."""
    plain = (min(w for w, _ in spans), max(e if e >= w else e + 360 for w, e in spans))
    shifted_spans = [(w % 360, (e % 360) + (360 if e % 360 < w % 360 else 0)) for w, e in spans]
    shifted = (min(w for w, _ in shifted_spans), max(e for _, e in shifted_spans))
    crosses = any(e < w for w, e in spans)
    if crosses or shifted[1] - shifted[0] < plain[1] - plain[0]:
        return shifted
    return plain


def _zone_name(crs: CRS) -> tuple[str, str]:
    """A CRS's key in the index and its VRT's file name."""
    epsg = crs.to_epsg()
    if epsg is not None:
        return f"EPSG:{epsg}", f"{epsg}.vrt"
    digest = hashlib.sha1(crs.to_wkt().encode()).hexdigest()[:10]
    return f"crs-{digest}", f"crs-{digest}.vrt"


def _zone_vrt(zone: Zone, vrt: Path) -> dict[str, Any]:
    """Write the VRT of one zone; its entry in the index.

    Raises:
        RuntimeError: naming the maps GDAL left out (another band count, say).
    """
    _build_vrt([os.path.relpath(m, vrt.parent) for m in zone.maps], vrt)
    with rasterio.open(vrt) as src:
        listed = {os.path.normpath(os.path.join(vrt.parent, f)) for f in src.files[1:]}
    missing = [str(m) for m in zone.maps if os.path.normpath(os.path.abspath(m)) not in listed]
    if missing:
        raise RuntimeError(f"GDAL left {len(missing)} map(s) out of {vrt.name}: {', '.join(missing)}")
    left, bottom, right, top = zone.bounds
    return {
        "vrt": zone.vrt,
        "scenes": len(zone.maps),
        "scene_ids": sorted(m.stem for m in zone.maps),
        "bounds": list(zone.bounds),
        "bbox": list(
            transform_bounds(zone.crs, "EPSG:4326", left, bottom, right, top, densify_pts=EDGE_POINTS)
        ),
    }


def _write_overview(
    zones: Sequence[Zone], folder: Path, overview: Path, crs: CRS, factor: int, resampling: str
) -> dict[str, Any]:
    """Warp the zones' VRTs (in ``folder``) into one COG; its entry in the index."""
    path = os.path.relpath(overview.absolute(), folder.absolute())
    if not zones:
        _empty(overview)
        return {"path": path, "crs": None, "bounds": None, "resolution": None, "shape": [1, 1]}
    bounds, res = overview_grid(zones, crs, factor)
    if crs.is_geographic and bounds[2] > 180:  # across the antimeridian: longitudes 0..360
        crs = CRS.from_proj4(crs.to_proj4() + " +lon_wrap=180")
    with atomic_path(overview, suffix=".tif") as tmp:
        command = [
            _tool("gdalwarp"), "-q", "-overwrite",
            "-t_srs", crs.to_proj4() if "lon_wrap" in crs.to_proj4() else crs.to_wkt(),
            "-te", *(f"{v!r}" for v in bounds),
            "-tr", f"{res!r}", f"{res!r}",
            "-r", resampling,
            "-of", "COG", "-co", "COMPRESS=DEFLATE",
            *(str((folder / z.vrt).absolute()) for z in zones),
            str(tmp.absolute()),
        ]  # fmt: skip
        subprocess.run(command, check=True)
        with rasterio.open(tmp) as src:
            shape, out_bounds = [src.height, src.width], list(src.bounds)
    return {
        "path": path,
        "crs": crs.to_string(),
        "bounds": out_bounds,
        "resolution": res,
        "shape": shape,
        # scenes on both sides of the antimeridian: one grid whose longitudes run past 180
        "longitudes": "0..360" if "lon_wrap" in crs.to_proj4() else "-180..180",
    }


def _write_polar(
    zones: Sequence[Zone],
    side: str,
    overview: Path,
    folder: Path,
    opts: PolarOptions,
    factor: int,
    resampling: str,
) -> dict[str, Any]:
    """The overview of the maps whose centre lies poleward of ``opts.latitude`` on ``side``
    (``south`` or ``north``), warped into that side's polar CRS; a 1 x 1 nodata file where there
    are none (the rule's outputs are fixed). Its entry in the index."""
    crs = parse_overview_crs(getattr(opts, side))
    poleward: list[Zone] = []
    for zone in zones:
        picked = [
            i
            for i, lat in enumerate(zone.latitudes)
            if (lat <= -opts.latitude if side == "south" else lat >= opts.latitude)
        ]
        if picked:
            part = Zone(zone.crs, zone.vrt, [zone.maps[i] for i in picked], resolution=zone.resolution)
            boxes = [zone.map_bounds[i] for i in picked]
            part.bounds = (
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            )
            poleward.append(part)
    scenes = sum(len(z.maps) for z in poleward)
    path = os.path.relpath(overview.absolute(), folder.absolute())
    if not poleward:
        _empty(overview)
        return {"path": path, "crs": None, "bounds": None, "scenes": 0, "shape": [1, 1]}
    bounds, res = overview_grid(poleward, crs, factor)
    listing = folder / f"{side}.maps.txt"  # inside the mosaic's temporary folder
    with atomic_path(overview, suffix=".tif") as tmp:
        command = [
            _tool("gdalwarp"), "-q", "-overwrite",
            "-t_srs", crs.to_wkt(),
            "-te", *(f"{v!r}" for v in bounds),
            "-tr", f"{res!r}", f"{res!r}",
            "-r", resampling,
            "-of", "COG", "-co", "COMPRESS=DEFLATE",
            "--optfile", str(listing.absolute()),
            str(tmp.absolute()),
        ]  # fmt: skip
        listing.write_text("".join(f'"{Path(m).absolute()}"\n' for z in poleward for m in z.maps))
        try:
            subprocess.run(command, check=True)
        finally:
            listing.unlink(missing_ok=True)
        with rasterio.open(tmp) as src:
            shape, out_bounds = [src.height, src.width], list(src.bounds)
    return {
        "path": str(overview),
        "crs": crs.to_string(),
        "bounds": out_bounds,
        "scenes": scenes,
        "shape": shape,
    }


def _build_vrt(paths: Sequence[str], vrt: Path, env: Mapping[str, str] | None = None) -> None:
    """Run gdalbuildvrt into ``vrt`` (absolute) over ``paths``, as GDAL opens them from its folder,
    with GDAL config options ``env`` (where remote scenes are: endpoint, region, signing)."""
    listing = vrt.with_suffix(".txt")
    try:
        listing.write_text("".join(f"{p}\n" for p in paths))
        command = [_tool("gdalbuildvrt"), "-q", "-overwrite", "-input_file_list", str(listing), str(vrt)]
        subprocess.run(command, check=True, cwd=vrt.parent, env={**os.environ, **(env or {})})
    finally:
        listing.unlink(missing_ok=True)


def build_inputs_vrt(
    uris: Sequence[str], vrt: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> None:
    """Write ``vrt`` over the scenes at ``uris`` (the apply scenes, quads tiling the ground),
    reading remote ones with GDAL config options ``env`` (:func:`snakemap.core.storage.gdal_options`).

    A scene GDAL cannot add (unreadable, another band count or CRS) is left out with a warning
    in the log: its neighbours then predict without its context.
    """
    vrt = Path(vrt)
    paths = [gdal_path(u, vrt.parent) for u in uris]
    with atomic_path(vrt, suffix=".vrt") as tmp:
        _build_vrt(paths, tmp, env)
        with rasterio.open(tmp) as src:
            listed = {os.path.normpath(os.path.join(tmp.parent, f)) for f in src.files[1:]}
    for uri, path in zip(uris, paths, strict=True):
        if os.path.normpath(os.path.join(vrt.parent.absolute(), path)) not in listed:
            log.warning("%s is not in %s (GDAL could not add it): its neighbours lack its context", uri, vrt)


def _empty(overview: Path) -> None:
    """No ok scene: a 1 x 1 nodata overview, so that the run completes."""
    write_cog(
        overview,
        np.full((1, 1, 1), NODATA_CLASS, dtype=np.uint8),
        {"crs": None, "transform": Affine.identity(), "nodata": NODATA_CLASS},
    )
