"""Global application: predict many scenes in shards, each scene once, restartable at any moment.

Layout under ``results/maps/{predictor}/``:

- ``scenes/{scene}.tif``: the class map (Cloud-Optimized, uint8, 255 nodata) on the scene's grid;
  ``scenes/probs/{scene}.tif`` with ``outputs: both``.
- ``scenes/{scene}.json``: the scene's sentinel (:class:`snakemap.core.status.SceneStatus`, the clean
  step's format), written last: ``status`` ok | empty | corrupt, the reason, the valid fraction,
  ``started``/``finished`` and timings under ``extra``. A scene with a sentinel is done; empty and
  corrupt ones are final unless ``retry_corrupt`` is set.
- ``shards/{shard}.json``: a shard's manifest, written when all its scenes are done: one entry per
  scene with its status, reason and finish time. ``shards/{shard}.lock`` is held (``flock``, so
  the kernel frees it when a job dies) while a job works on the shard.

A shard job killed at any point loses at most the scene in flight: every file is written under a
temporary name and renamed, and a rerun skips the scenes that have a sentinel. A config that no
scene could satisfy (``apply.mask.band`` or a checkpoint's bands not among the cleaned bands)
raises :class:`snakemap.core.config.ConfigError` before any scene is touched: only a scene's own data
makes it empty or corrupt.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio
from rasterio.enums import Interleaving
from rasterio.errors import RasterioError
from rasterio.windows import Window, from_bounds

from snakemap.core.config import ConfigError
from snakemap.core.io import read_json, write_cog, write_json
from snakemap.core.status import SceneError, SceneStatus, corrupt_reason
from snakemap.core.storage import AcquireOptions, gdal_options, gdal_path, is_remote, local_path
from snakemap.data.acquire import AcquireError, fetch
from snakemap.data.bands import BandOptions, cleaned_names
from snakemap.data.clean import Cleaned, CleanOptions, check_georeferenced, judge, judge_figures, read_clean
from snakemap.data.sensors import SensorOptions
from snakemap.inference.fields import DownscalingOptions, check_auxiliary, downscale_field, write_downscaled
from snakemap.inference.predict import Predictor, predict_scene, predict_staged
from snakemap.inference.readers import ArrayReader, CleaningReader, survey
from snakemap.inference.windows import PredictOptions
from snakemap.plan.shards import ApplyOptions, MaskOptions, check_mask

if TYPE_CHECKING:
    from snakemap.inference.writer import SceneOutputs
    from snakemap.tasks.downscaling import TrainedDownscaler

log = logging.getLogger(__name__)


@contextlib.contextmanager
def shard_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; fail at once if another live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(
                f"{path} is held by another running job: the shard is being applied already"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


class ShardRunner:
    """Applies one predictor to scenes, writing each scene's outputs and sentinel atomically.

    Each scene is cleaned like in the clean step, with its own sensor. With ``apply.buffer``, the
    neighbours in ``mosaic_vrt`` are read with the scene's sensor too (a VRT holds scenes of one
    band layout).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        predictor: Predictor | None,
        bands: BandOptions,
        clean: CleanOptions,
        predict: PredictOptions,
        apply: ApplyOptions,
        acquire: AcquireOptions | None = None,
        mosaic_vrt: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.predictor, self.bands, self.clean, self.predict = predictor, bands, clean, predict
        self.apply, self.acquire = apply, acquire or AcquireOptions()
        self.vrt = Path(mosaic_vrt) if mosaic_vrt else None
        self.scenes = self.root / "scenes"

    def sentinel(self, scene_id: str) -> Path:
        return self.scenes / f"{scene_id}.json"

    def is_done(self, scene_id: str) -> bool:
        """A scene with a sentinel is done, unless it is corrupt and corrupt scenes are retried."""
        path = self.sentinel(scene_id)
        if not path.exists():
            return False
        return not (self.apply.retry_corrupt and SceneStatus.read(path).status == "corrupt")

    def check(self, scenes: Sequence[SceneInput]) -> None:
        """Config mistakes that would make every scene corrupt, found before any scene is touched.

        Where the config alone fixes the cleaned bands of ``scenes`` (see
        :func:`snakemap.data.bands.cleaned_names`), ``apply.mask.band`` and every checkpoint's input
        bands must be among them; otherwise each scene is checked as it is read.

        Raises:
            ConfigError: naming the key or the checkpoint and the bands.
        """
        layouts: dict[str, list[str] | None] = {}
        for scene in scenes:
            if scene.sensor is None:
                layouts["bands.names"] = self.bands.names
            else:
                layouts[f"sensors.{scene.sensor_name or '?'}.bands"] = scene.sensor.bands
        cleaned = cleaned_names(self.bands, layouts, self.clean.qa_band)
        check_mask(self.apply.mask, cleaned)
        if cleaned is None:
            return
        for i, member in enumerate(self.predictor.members if self.predictor else [], start=1):
            missing = [b for b in member.bands if b not in cleaned]
            if missing:
                raise ConfigError(
                    f"checkpoint {member.source or f'(member {i})'} needs bands {missing} that "
                    f"bands.select/bands.indices do not produce (they produce {cleaned})"
                )

    def run_shard(self, shard: str, scenes: Sequence[SceneInput]) -> dict[str, Any]:
        """Apply every scene of a shard that is not done; write and return the shard's manifest.

        While one scene is predicted, the next ``apply.prefetch`` scenes are downloaded, opened
        and surveyed in threads, and the scene before it is published (its COGs compressed and
        renamed into place, then its sentinel): I/O and GDAL release the GIL, so the model does
        not wait on the network or the disk. Each scene still ends with its own sentinel, in
        shard order; a killed job loses at most the scenes in flight.

        Raises:
            ConfigError: see :meth:`check`, before any scene is touched.
        """
        self.check(scenes)
        with shard_lock(self.root / "shards" / f"{shard}.lock"):
            todo = [scene for scene in scenes if not self.is_done(scene.scene_id)]
            depth = max(1, self.apply.prefetch)
            with ThreadPoolExecutor(depth) as pool, ThreadPoolExecutor(1) as publisher:
                ahead: deque[Future[Prepared]] = deque()
                publishing: Future[SceneStatus] | None = None
                upcoming = iter(todo)
                for scene in itertools.islice(upcoming, depth):
                    ahead.append(pool.submit(self.prepare, scene))
                while ahead:
                    prepared = ahead.popleft().result()
                    following = next(upcoming, None)
                    if following is not None and self.apply.prefetch > 0:
                        ahead.append(pool.submit(self.prepare, following))
                    if publishing is not None and publishing.done():
                        self._log(publishing.result())  # a failed publication stops the job now
                        publishing = None
                    complete = self.finish(prepared)
                    if publishing is not None:
                        self._log(publishing.result())  # one scene published at a time, in order
                    if self.apply.prefetch > 0:
                        publishing = publisher.submit(complete)
                    else:
                        publishing = None
                        self._log(complete())
                        if following is not None:
                            ahead.append(pool.submit(self.prepare, following))
                if publishing is not None:
                    self._log(publishing.result())
            entries = [SceneStatus.read(self.sentinel(scene.scene_id)).summary() for scene in scenes]
            manifest = {
                "shard": shard,
                "scenes": entries,
                "processed": len(todo),
                "skipped": len(scenes) - len(todo),
            }
            write_json(self.root / "shards" / f"{shard}.json", manifest)
            return manifest

    def _remove_leftovers(self, scene_id: str) -> None:
        """Temporary files of this scene left by a killed job (we hold the shard's lock)."""
        # Temporary names start with ".{file name}." ({scene}.tif or {scene}.json): not
        # ".{scene}.*", which would also catch scene "{scene}.x"'s, published in a thread now.
        for folder in (self.scenes, self.scenes / "probs", self.root / ".scratch"):
            for name in (f"{scene_id}.tif", f"{scene_id}.json"):
                for leftover in folder.glob(f".{glob.escape(name)}.*"):
                    leftover.unlink(missing_ok=True)
        (self.root / ".scratch" / f"{scene_id}.tif").unlink(missing_ok=True)

    def streams(self) -> bool:
        """Whether scenes are read, cleaned and predicted in strips (bounded memory): not with a
        buffer (the neighbours' VRT) or a reprojection, which need the whole scene."""
        return not (self.apply.buffer and self.vrt) and not (self.clean.crs or self.clean.resolution)

    def prepare(self, scene: SceneInput) -> Prepared:
        """Acquire, open and judge one scene (a thread may do this while another scene predicts)."""
        self._remove_leftovers(scene.scene_id)
        prepared = Prepared(scene, time.time(), self.root / ".scratch" / f"{scene.scene_id}.tif")
        try:
            in_place = self._in_place(scene)
            path = in_place or self._acquire(scene, prepared.scratch, prepared.timings)
            env = gdal_options(scene.uri, self.acquire) if in_place else None
            t0 = time.perf_counter()
            if self.streams():
                prepared.reader = CleaningReader(
                    path, self.bands, self.clean, scene.sensor, env, needed_only=in_place is not None
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
                    self.clean,
                )
                if prepared.status.status == "ok" and mask is not None and not found.in_mask:
                    prepared.status.status = "empty"
                    prepared.status.reason = f"no pixel with {mask.band} in [{mask.min}, {mask.max}]"
            else:
                # never in place; the neighbours, through the VRT, may be remote
                with rasterio.Env(**(gdal_options(scene.uri, self.acquire) if is_remote(scene.uri) else {})):
                    prepared.cleaned, prepared.crop = self._read(Path(path), scene.sensor)
                prepared.status = judge(
                    scene.scene_id, _cropped(prepared.cleaned, prepared.crop), self.clean, None
                )
            prepared.timings["read_clean_s"] = time.perf_counter() - t0
        except ConfigError as exc:
            prepared.error = exc  # raised by finish, in shard order
        except (SceneError, RasterioError, OSError, ValueError) as exc:
            prepared.status = SceneStatus(scene.scene_id, "corrupt", reason=corrupt_reason(exc))
        return prepared

    @staticmethod
    def _log(status: SceneStatus) -> None:
        log.info("%s: %s %s", status.scene_id, status.status, status.reason)

    def finish(self, prepared: Prepared) -> Callable[[], SceneStatus]:
        """Predict a prepared scene if it is ok; return what ends it in exactly one state.

        The returned step publishes the scene's staged maps (COGs renamed into place) and then
        writes its sentinel; :meth:`run_shard` runs it in a thread while the next scene predicts.

        Raises:
            ConfigError: found while preparing or predicting (no scene state is written).
        """
        scene_id = prepared.scene.scene_id
        staged: SceneOutputs | None = None
        try:
            if prepared.error is not None:
                raise prepared.error  # the config's mistake, not the scene's: no final state
            status = prepared.status
            assert status is not None
            if status.status == "ok":
                if prepared.reader is not None:
                    staged = self._predict_stream(scene_id, prepared.reader, prepared.timings)
                else:
                    assert prepared.cleaned is not None
                    status = self._predict(
                        scene_id, prepared.cleaned, prepared.crop, status, prepared.timings
                    )
        except ConfigError:
            raise
        except (SceneError, RasterioError, OSError, ValueError) as exc:
            status = SceneStatus(scene_id, "corrupt", reason=corrupt_reason(exc))
        finally:
            if prepared.reader is not None:
                prepared.reader.close()
            prepared.scratch.unlink(missing_ok=True)

        def complete() -> SceneStatus:
            ended = status
            assert ended is not None
            if staged is not None:
                t0 = time.perf_counter()
                try:
                    staged.publish()
                except (RasterioError, OSError, ValueError) as exc:
                    ended = SceneStatus(scene_id, "corrupt", reason=corrupt_reason(exc))
                prepared.timings["publish_s"] = time.perf_counter() - t0
            ended.extra.update(prepared.timings)
            ended.started, ended.finished = prepared.start, time.time()
            ended.write(self.sentinel(scene_id))
            return ended

        return complete

    def _predict_stream(
        self, scene_id: str, reader: CleaningReader, timings: dict[str, float]
    ) -> SceneOutputs:
        """Predict a scene strip by strip into staged outputs (published by :meth:`finish`'s step)."""
        assert self.predictor is not None
        missing = sorted({b for m in self.predictor.members for b in m.bands} - set(reader.names))
        if missing:
            raise SceneError(f"the scene's cleaned bands {reader.names} lack {missing}, the model's input")
        out = self.scenes / f"{scene_id}.tif"
        probs = self.scenes / "probs" / f"{scene_id}.tif" if self.apply.outputs == "both" else None
        t0 = time.perf_counter()
        figures, staged = predict_staged(reader, self.predictor, self.predict, out, probs)
        timings["predict_s"] = time.perf_counter() - t0
        timings["model_s"] = figures.get("model_seconds", 0.0)
        return staged

    def _in_place(self, scene: SceneInput) -> str | None:
        """The GDAL path that reads a remote scene where it lies (``/vsis3/...``), only the bands
        that cleaning uses (:func:`snakemap.inference.readers.band_subset`), or None to download it: with
        ``acquire.read_in_place`` off, a sha256 to verify (that needs every byte), a whole-scene
        read (:meth:`streams`), or a file whose blocks hold every band (pixel-interleaved, as GDAL
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

    def _read(self, path: Path, sensor: SensorOptions | None) -> tuple[Cleaned, Window | None]:
        """The cleaned scene, with a buffer of neighbouring pixels when configured."""
        if not self.apply.buffer or self.vrt is None:
            return read_clean(path, None, self.bands, self.clean, None, sensor=sensor), None
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
        cleaned = read_clean(
            self.vrt, None, self.bands, self.clean, None, window=window, sensor=sensor, own=own
        )
        return cleaned, own

    def _predict(
        self,
        scene_id: str,
        cleaned: Cleaned,
        crop: Window | None,
        status: SceneStatus,
        timings: dict[str, float],
    ) -> SceneStatus:
        assert self.predictor is not None  # a FieldShardRunner predicts with its downscaler
        # Only where the files name the bands (else check() has seen to it): this scene's own bands.
        missing = sorted({b for m in self.predictor.members for b in m.bands} - set(cleaned.names))
        if missing:
            raise SceneError(f"the scene's cleaned bands {cleaned.names} lack {missing}, the model's input")
        mask = self.apply.mask
        if isinstance(mask, MaskOptions):
            view = _cropped(cleaned, crop)
            if mask.band not in view.names:
                raise SceneError(f"the scene's cleaned bands {view.names} lack apply.mask.band {mask.band!r}")
            band = view.image[view.names.index(mask.band)]
            if not ((band >= mask.min) & (band <= mask.max)).any():
                status.status, status.reason = (
                    "empty",
                    f"no pixel with {mask.band} in [{mask.min}, {mask.max}]",
                )
                return status
        out = self.scenes / f"{scene_id}.tif"
        probs = self.scenes / "probs" / f"{scene_id}.tif" if self.apply.outputs == "both" else None
        t0 = time.perf_counter()
        reader = ArrayReader(cleaned.image, cleaned.names, cleaned.crs, cleaned.transform)
        if crop is None:
            figures = predict_scene(reader, self.predictor, self.predict, out, probs)
        else:
            figures = self._predict_buffered(reader, crop, out, probs)
        timings["predict_s"] = time.perf_counter() - t0
        timings["model_s"] = figures.get("model_seconds", 0.0)
        return status

    def _predict_buffered(
        self, reader: ArrayReader, crop: Window, out: Path, probs: Path | None
    ) -> dict[str, Any]:
        """Predict the buffered area, then keep the scene's own window."""
        assert self.predictor is not None
        staged = [p.with_name(f".{p.name}.{os.getpid()}.buffered.tif") for p in (out, probs) if p is not None]
        try:
            figures = predict_scene(
                reader, self.predictor, self.predict, staged[0], staged[1] if probs else None
            )
            for src_path, dest in zip(staged, [p for p in (out, probs) if p is not None], strict=True):
                with rasterio.open(src_path) as src:
                    data = src.read(window=crop)
                    profile = {"crs": src.crs, "transform": src.window_transform(crop), "nodata": src.nodata}
                    scales = list(src.scales)
                write_cog(dest, data, profile, scales=scales)
            return figures
        finally:
            for p in staged:
                p.unlink(missing_ok=True)


class FieldShardRunner(ShardRunner):
    """Applies a downscaling model to scenes: each scene's field (band 1, cleaned like in the clean
    step) becomes ``scenes/{scene}.tif``, float32 with NaN nodata, ``s`` times its rows and
    columns on the same bounds; the auxiliary fields are resampled onto that grid."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        downscaler: TrainedDownscaler,
        bands: BandOptions,
        clean: CleanOptions,
        predict: PredictOptions,
        apply: ApplyOptions,
        downscaling: DownscalingOptions,
        acquire: AcquireOptions | None = None,
    ) -> None:
        super().__init__(root, None, bands, clean, predict, apply, acquire)
        self.downscaler, self.downscaling = downscaler, downscaling

    def streams(self) -> bool:
        """A field is downscaled whole (its gaps are filled from neighbours across the grid)."""
        return False

    def check(self, scenes: Sequence[SceneInput]) -> None:
        """The model's auxiliary fields are the config's, in order; no mask, no buffer.

        Raises:
            ConfigError: naming the key.
        """
        check_auxiliary("the model", self.downscaler.band_names, self.downscaling.auxiliary)
        if self.apply.mask is not None or self.apply.buffer:
            raise ConfigError(
                "apply.mask and apply.buffer are for segmentation: leave them unset for downscaling"
            )

    def _predict(
        self,
        scene_id: str,
        cleaned: Cleaned,
        crop: Window | None,
        status: SceneStatus,
        timings: dict[str, float],
    ) -> SceneStatus:
        t0 = time.perf_counter()
        opts = self.downscaling
        pred, transform = downscale_field(
            cleaned.image[0],
            cleaned.crs,
            cleaned.transform,
            self.downscaler,
            self.downscaler.scale,
            opts.auxiliary,
            opts.window,
            opts.overlap,
            self.predict.batch_size,
        )
        write_downscaled(self.scenes / f"{scene_id}.tif", pred, cleaned.crs, transform)
        timings["predict_s"] = time.perf_counter() - t0
        status.extra["scale"] = self.downscaler.scale
        return status


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
    #: the strip-by-strip reader (:meth:`ShardRunner.streams`), or the whole cleaned scene
    reader: CleaningReader | None = None
    cleaned: Cleaned | None = None
    crop: Window | None = None
    #: a config mistake found while preparing, raised when the scene's turn comes
    error: ConfigError | None = None


def _cropped(cleaned: Cleaned, crop: Window | None) -> Cleaned:
    """The scene's own pixels of a buffered read (its all-zero flag was judged on those already)."""
    if crop is None:
        return cleaned
    r, c, h, w = int(crop.row_off), int(crop.col_off), int(crop.height), int(crop.width)
    image = cleaned.image[:, r : r + h, c : c + w]
    return Cleaned(image, cleaned.names, None, cleaned.crs, cleaned.transform, cleaned.all_zero)


def ok_scene_maps(shard_manifests: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The class maps of the ok scenes listed in shard manifests (in ``{root}/scenes/``)."""
    maps = []
    for path in map(Path, shard_manifests):
        scenes = path.parent.parent / "scenes"
        maps += [scenes / f"{e['scene_id']}.tif" for e in read_json(path)["scenes"] if e["status"] == "ok"]
    return maps
