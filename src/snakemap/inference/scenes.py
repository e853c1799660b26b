"""Apply's scenes before their model: one scene of a shard's manifest (:class:`SceneInput`) made
ready to predict (:class:`Prepared`) by :class:`ScenePreparer`, which fetches it or reads it in
place, opens it and judges it (ok, empty or corrupt), strip by strip or whole.

:class:`snakemap.inference.shard.ShardRunner` owns a preparer and runs it in threads ahead of the
scene it predicts.
"""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
from rasterio.enums import Interleaving
from rasterio.errors import RasterioError
from rasterio.windows import Window, from_bounds

from snakemap.core.apply_sections import ApplyOptions, MaskOptions
from snakemap.core.config import ConfigError
from snakemap.core.sections import AcquireOptions, BandOptions, CleanOptions, SensorOptions
from snakemap.core.status import SceneError, SceneStatus, corrupt_reason
from snakemap.core.storage import gdal_options, gdal_path, is_remote, local_path
from snakemap.data.acquire import AcquireError, fetch, verify_checksums
from snakemap.data.clean import Cleaned, check_georeferenced, judge, judge_figures, read_clean
from snakemap.data.stac_scenes import (
    environment,
    is_item,
    read_item,
    resolve,
    scene_options,
    write_vrt,
)
from snakemap.inference.readers import CleaningReader, survey
from snakemap.inference.shift import BandMoments

log = logging.getLogger(__name__)


@dataclass
class SceneInput:
    """One apply scene from the manifest."""

    scene_id: str
    uri: str
    sha256: str = ""
    #: the scene's sensor (its manifest row's entry of the ``sensors`` table); None: ``bands.names``
    sensor: SensorOptions | None = None
    #: the name of that entry, for messages
    sensor_name: str = ""


@dataclass
class Prepared:
    """A scene made ready for its model: acquired, opened and judged, or already ended."""

    scene: SceneInput
    #: when the work on it began (seconds since the epoch)
    start: float
    #: where a download goes (removed when the scene ends)
    scratch: Path
    timings: dict[str, float] = field(default_factory=dict)
    #: ok (to predict), or the scene's final empty or corrupt state
    status: SceneStatus | None = None
    #: the strip-by-strip reader (:meth:`snakemap.inference.shard.ShardRunner.streams`), or the
    #: whole cleaned scene
    reader: CleaningReader | None = None
    cleaned: Cleaned | None = None
    crop: Window | None = None
    #: a config mistake found while preparing, raised when the scene's turn comes
    error: ConfigError | None = None
    #: the cleaned bands' moments over the valid pixels (its shift score)
    moments: BandMoments | None = None


class ScenePreparer:
    """Prepares apply scenes under ``root`` (``results/maps/{predictor}/``): removes a scene's
    leftovers, acquires it or reads it in place, opens, cleans and judges it.

    Each scene is cleaned like in the clean step, with its own sensor. With ``apply.buffer``, the
    neighbours in ``vrt`` are read with the scene's sensor too (a VRT holds scenes of one band
    layout).

    Args:
        streams: whether scenes are read, cleaned and predicted in strips
            (:meth:`snakemap.inference.shard.ShardRunner.streams`), asked for each scene.
    """

    def __init__(
        self,
        root: Path,
        bands: BandOptions,
        clean: CleanOptions,
        apply: ApplyOptions,
        acquire: AcquireOptions,
        vrt: Path | None,
        streams: Callable[[], bool],
    ) -> None:
        self.root, self.bands, self.clean, self.apply, self.acquire = root, bands, clean, apply, acquire
        self.vrt, self.streams = vrt, streams

    def _remove_leftovers(self, scene_id: str) -> None:
        """Temporary files of this scene left by a killed job (we hold the shard's lock)."""
        # Temporary names start with ".{file name}." ({scene}.tif or {scene}.json): not
        # ".{scene}.*", which would also catch scene "{scene}.x"'s, published in a thread now.
        scenes = self.root / "scenes"
        for folder in (scenes, scenes / "probs", self.root / ".scratch"):
            for name in (f"{scene_id}.tif", f"{scene_id}.json"):
                for leftover in folder.glob(f".{glob.escape(name)}.*"):
                    leftover.unlink(missing_ok=True)
        for scratch in (f"{scene_id}.tif", f"{scene_id}.vrt", f"{scene_id}.item.json"):
            (self.root / ".scratch" / scratch).unlink(missing_ok=True)

    def prepare(self, scene: SceneInput) -> Prepared:
        """Acquire, open and judge one scene (a thread may do this while another scene predicts)."""
        self._remove_leftovers(scene.scene_id)
        item = is_item(scene.uri)
        scratch = self.root / ".scratch" / f"{scene.scene_id}.{'vrt' if item else 'tif'}"
        prepared = Prepared(scene, time.time(), scratch)
        try:
            clean, sensor = self.clean, scene.sensor
            path: str | Path
            in_place: str | None
            env: dict[str, Any] | None
            if item:  # read where its assets lie, through a VRT
                vrt, sensor, clean, env = self._item(scene, prepared.scratch, prepared.timings)
                path = in_place = vrt
            else:
                in_place = self._in_place(scene)
                path = in_place or self._acquire(scene, prepared.scratch, prepared.timings)
                env = gdal_options(scene.uri, self.acquire) if in_place else None
            t0 = time.perf_counter()
            if self.streams():
                prepared.reader = CleaningReader(
                    path, self.bands, clean, sensor, env, needed_only=in_place is not None
                )
                mask = self.apply.mask if isinstance(self.apply.mask, MaskOptions) else None
                found = survey(prepared.reader, mask)
                prepared.status = judge_figures(
                    scene.scene_id,
                    found.valid_fraction,
                    found.all_zero,
                    prepared.reader.names,
                    prepared.reader.profile["crs"],
                    (prepared.reader.height, prepared.reader.width),
                    clean,
                )
                prepared.moments = found.moments
                if prepared.status.status == "ok" and mask is not None and not found.in_mask:
                    prepared.status.status = "empty"
                    prepared.status.reason = f"no pixel with {mask.band} in [{mask.min}, {mask.max}]"
            else:
                # never in place; the neighbours, through the VRT, may be remote
                remote = gdal_options(scene.uri, self.acquire) if is_remote(scene.uri) else {}
                with rasterio.Env(**(env if item and env else remote)):
                    prepared.cleaned, prepared.crop = self._read(Path(path), sensor, clean)
                own = cropped(prepared.cleaned, prepared.crop)
                prepared.status = judge(scene.scene_id, own, clean, None)
                prepared.moments = BandMoments(list(own.names))
                prepared.moments.add(own.image)
            prepared.timings["read_clean_s"] = time.perf_counter() - t0
        except ConfigError as exc:
            prepared.error = exc  # raised by finish, in shard order
        except (SceneError, RasterioError, OSError, ValueError) as exc:
            prepared.status = SceneStatus(scene.scene_id, "corrupt", reason=corrupt_reason(exc))
        return prepared

    def _in_place(self, scene: SceneInput) -> str | None:
        """The GDAL path that reads a remote scene where it lies (``/vsis3/...``), only the bands
        that cleaning uses (:func:`snakemap.inference.readers.band_subset`), or None to download it: with
        ``acquire.read_in_place`` off, a sha256 to verify (that needs every byte), a whole-scene
        read (:attr:`streams`), or a file whose blocks hold every band (pixel-interleaved, as GDAL
        3.10's COGs are: a band subset then saves nothing, and the many range requests cost more
        than one download). A file GDAL cannot open is downloaded too, so that a missing object
        or a server error ends with the download's reason, after its retries; the probe itself
        does not retry (the download does, ``acquire.retries`` times, not twice that)."""
        if not (self.acquire.read_in_place and is_remote(scene.uri) and not scene.sha256 and self.streams()):
            return None
        path = gdal_path(scene.uri, self.root)
        probe = {**gdal_options(scene.uri, self.acquire), "GDAL_HTTP_MAX_RETRY": "0"}
        try:
            with rasterio.Env(**probe), rasterio.open(path) as src:
                by_band = src.count == 1 or src.interleaving == Interleaving.band
        except RasterioError as exc:
            log.info("%s: not read in place (%s); downloading it", scene.uri, exc)
            return None
        if not by_band:
            log.info("%s: every block holds every band; downloading it", scene.uri)
        return path if by_band else None

    def _acquire(self, scene: SceneInput, scratch: Path, timings: dict[str, float]) -> Path:
        local = local_path(scene.uri)
        if local is not None and not scene.sha256:
            if not local.is_file():
                raise AcquireError(f"{scene.uri}: no such file")
            return local
        t0 = time.perf_counter()
        fetch(scene.uri, scratch, scene.sha256, self.acquire)
        timings["acquire_s"] = time.perf_counter() - t0
        return scratch

    def _item(
        self, scene: SceneInput, vrt: Path, timings: dict[str, float]
    ) -> tuple[str, SensorOptions, CleanOptions, dict[str, str]]:
        """A STAC Item scene's VRT (see :mod:`snakemap.data.stac_scenes`), its sensor and clean
        options; the item's JSON is read once and left nowhere."""
        t0 = time.perf_counter()
        if scene.sensor is None and not self.bands.names:
            raise SceneError(f"{scene.uri} is a STAC Item: its manifest row needs a sensor (its band assets)")
        sensor = scene.sensor or SensorOptions(bands=list(self.bands.names or []))
        item_file = vrt.with_suffix(".item.json")
        try:
            fetch(scene.uri, item_file, scene.sha256, self.acquire)
            item = read_item(item_file.read_bytes(), scene.uri)
        finally:
            item_file.unlink(missing_ok=True)
        resolved = resolve(item, sensor, scene.sensor_name)
        verify_checksums(resolved, item, self.acquire)
        env = environment(resolved, self.acquire)
        write_vrt(resolved, vrt, env)
        timings["acquire_s"] = time.perf_counter() - t0
        scene_sensor, clean = scene_options(sensor, self.clean, resolved.sidecar())
        return str(vrt), scene_sensor, clean, env

    def _read(
        self, path: Path, sensor: SensorOptions | None, clean: CleanOptions | None = None
    ) -> tuple[Cleaned, Window | None]:
        """The cleaned scene, with a buffer of neighbouring pixels when configured."""
        clean = clean or self.clean
        if not self.apply.buffer or self.vrt is None:
            return read_clean(path, None, self.bands, clean, None, sensor=sensor), None
        with rasterio.open(path) as src:
            check_georeferenced(src)
            res = src.res
            b = self.apply.buffer
            left, bottom, right, top = src.bounds
            height, width, count, crs = src.height, src.width, src.count, src.crs
        with rasterio.open(self.vrt) as vrt:
            # gdalbuildvrt leaves out a scene unlike the first (band count, CRS): read through
            # the VRT, its pixels would all be nodata and the scene would pass for empty.
            if (count, crs) != (vrt.count, vrt.crs):
                raise SceneError(
                    f"left out of the VRT of the apply scenes ({self.vrt}): {count} bands in {crs}, "
                    f"the VRT's scenes have {vrt.count} in {vrt.crs}"
                )
            window = (
                from_bounds(
                    left - b * res[0],
                    bottom - b * res[1],
                    right + b * res[0],
                    top + b * res[1],
                    vrt.transform,
                )
                .round_offsets()
                .round_lengths()
            )
        own = Window(b, b, width, height)
        cleaned = read_clean(self.vrt, None, self.bands, clean, None, window=window, sensor=sensor, own=own)
        return cleaned, own


def cropped(cleaned: Cleaned, crop: Window | None) -> Cleaned:
    """The scene's own pixels of a buffered read (its all-zero flag was judged on those already)."""
    if crop is None:
        return cleaned
    r, c, h, w = int(crop.row_off), int(crop.col_off), int(crop.height), int(crop.width)
    image = cleaned.image[:, r : r + h, c : c + w]
    return Cleaned(image, cleaned.names, None, cleaned.crs, cleaned.transform, cleaned.all_zero)
