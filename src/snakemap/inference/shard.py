"""Global application: predict many scenes in shards, each scene once, restartable at any moment.

Layout under ``results/maps/{predictor}/``:

- ``scenes/{scene}.tif``: the class map (Cloud-Optimized, uint8, 255 nodata) on the scene's grid;
  ``scenes/probs/{scene}.tif`` with ``outputs: both``.
- ``scenes/{scene}.json``: the scene's sentinel (:class:`snakemap.core.status.SceneStatus`, the clean
  step's format), written last: ``status`` ok | empty | corrupt, the reason, the valid fraction,
  ``started``/``finished`` and timings under ``extra``. A scene with a sentinel is done; empty and
  corrupt ones are final unless ``retry_corrupt`` is set.
- ``polygons/{scene}.fgb`` and ``polygons/parts/{shard}.parquet`` with ``vectorize``
  (:mod:`snakemap.outputs.polygons`), written before the sentinel and the manifest.
- ``shards/{shard}.json``: a shard's manifest, written when all its scenes are done: one entry per
  scene with its status, reason and finish time. ``shards/{shard}.lock`` is held (``flock``, so
  the kernel frees it when a job dies) while a job works on the shard.

A shard job killed at any point loses at most the scene in flight: every file is written under a
temporary name and renamed, and a rerun skips the scenes that have a sentinel. A config that no
scene could satisfy (``apply.mask.band`` or a checkpoint's bands not among the cleaned bands)
raises :class:`snakemap.core.config.ConfigError` before any scene is touched: only a scene's own data
makes it empty or corrupt.

Holds :class:`ShardRunner` (it predicts and publishes the scenes that
:mod:`snakemap.inference.scenes` prepares); the shard's lock and the reading of finished shards'
manifests are in :mod:`snakemap.inference.shard_files`, the runner of downscaling models in
:mod:`snakemap.inference.field_shard`.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rasterio.errors import CRSError, RasterioError

from snakemap.core.apply_sections import ApplyOptions, MaskOptions, PredictOptions
from snakemap.core.config import ConfigError
from snakemap.core.countdown import Countdown
from snakemap.core.io import read_json, write_json
from snakemap.core.sections import AcquireOptions, BandOptions, CleanOptions
from snakemap.core.status import SceneError, SceneStatus, corrupt_reason
from snakemap.data.bands import cleaned_names
from snakemap.inference.class_areas import class_hectares
from snakemap.inference.predict import predict_cropped, predict_scene, predict_staged
from snakemap.inference.predictor import Predictor
from snakemap.inference.readers import ArrayReader
from snakemap.inference.scenes import Prepared, SceneInput, ScenePreparer, cropped
from snakemap.inference.shard_files import shard_lock
from snakemap.inference.shift import shift_score
from snakemap.plan.shards import check_mask

if TYPE_CHECKING:
    from snakemap.inference.writer import SceneOutputs

log = logging.getLogger(__name__)


class Vectorizer(Protocol):
    """What makes polygons of the maps (:class:`snakemap.outputs.polygons.Vectorizer`)."""

    def scene(self, class_map: Path, probs: Path | None, scene_id: str, out: Path) -> None:
        """Write one scene's polygons to ``out``."""

    def part(self, paths: Sequence[Path], out: Path) -> int:
        """Write a shard's part from its scenes' polygons; return how many there are."""

    def fingerprint(self) -> str:
        """What the polygons depend on (the options, the classes): a scene's polygons made with
        another are made again."""


class ShardRunner:
    """Applies one predictor to scenes, writing each scene's outputs and sentinel atomically.

    Its :attr:`preparer` (:class:`snakemap.inference.scenes.ScenePreparer`) acquires, cleans and
    judges each scene like in the clean step, with its own sensor. With ``apply.buffer``, the
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
        vectorize: Vectorizer | None = None,
    ) -> None:
        self.root = Path(root)
        self.predictor, self.bands, self.clean, self.predict = predictor, bands, clean, predict
        self.apply, self.acquire = apply, acquire or AcquireOptions()
        self.vectorize = vectorize
        self.counted = Countdown(0, "scenes")  # each shard's, in run_shard
        self.vrt = Path(mosaic_vrt) if mosaic_vrt else None
        self.scenes = self.root / "scenes"
        self.preparer = ScenePreparer(self.root, bands, clean, apply, self.acquire, self.vrt, self.streams)

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

    def run_shard(
        self, shard: str, scenes: Sequence[SceneInput], started: float | None = None
    ) -> dict[str, Any]:
        """Apply every scene of a shard that is not done; write and return the shard's manifest.

        While one scene is predicted, the next ``apply.prefetch`` scenes are downloaded, opened
        and surveyed in threads, and the scene before it is published (its COGs compressed and
        renamed into place, then its sentinel): I/O and GDAL release the GIL, so the model does
        not wait on the network or the disk. Each scene still ends with its own sentinel, in
        shard order; a killed job loses at most the scenes in flight.

        ``started``: when the job began (its models' loading included), written into the
        manifest for the run's rate (:func:`snakemap.outputs.progress.progress`); default now.

        Raises:
            ConfigError: see :meth:`check`, before any scene is touched.
        """
        begun = time.time()
        self.check(scenes)
        with shard_lock(self.root / "shards" / f"{shard}.lock"):
            todo = [scene for scene in scenes if not self.is_done(scene.scene_id)]
            self.counted = Countdown(len(todo), f"scenes of {shard}")
            depth = max(1, self.apply.prefetch)
            with ThreadPoolExecutor(depth) as pool, ThreadPoolExecutor(1) as publisher:
                ahead: deque[Future[Prepared]] = deque()
                publishing: Future[SceneStatus] | None = None
                upcoming = iter(todo)
                for scene in itertools.islice(upcoming, depth):
                    ahead.append(pool.submit(self.preparer.prepare, scene))
                while ahead:
                    prepared = ahead.popleft().result()
                    following = next(upcoming, None)
                    if following is not None and self.apply.prefetch > 0:
                        ahead.append(pool.submit(self.preparer.prepare, following))
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
                            ahead.append(pool.submit(self.preparer.prepare, following))
                if publishing is not None:
                    self._log(publishing.result())
            entries = [SceneStatus.read(self.sentinel(scene.scene_id)).summary() for scene in scenes]
            if self.vectorize is not None:
                self._write_part(shard, [e["scene_id"] for e in entries if e["status"] == "ok"])
            manifest = {
                "shard": shard,
                "scenes": entries,
                "processed": len(todo),
                "skipped": len(scenes) - len(todo),
                "started": started if started is not None else begun,  # the job's start, for rates
            }
            write_json(self.root / "shards" / f"{shard}.json", manifest)
            return manifest

    def polygons_path(self, scene_id: str) -> Path:
        """A scene's polygons (``vectorize:``), beside the scenes' maps."""
        return self.root / "polygons" / f"{scene_id}.fgb"

    def _probs_path(self, scene_id: str) -> Path | None:
        """Where a scene's probabilities go: published with ``outputs: both``; a scratch file that
        the polygons' mean probabilities read with ``vectorize`` alone; else none."""
        if self.apply.outputs == "both":
            return self.scenes / "probs" / f"{scene_id}.tif"
        if self.vectorize is not None:
            return self.scenes / f".{scene_id}.vectorize-probs.tif"
        return None

    def _vectorize(self, scene_id: str) -> None:
        """Write a scene's polygons from its published map (and probabilities, where there are)."""
        assert self.vectorize is not None
        probs = self._probs_path(scene_id)
        out = self.polygons_path(scene_id)
        self.vectorize.scene(
            self.scenes / f"{scene_id}.tif",
            probs if probs is not None and probs.exists() else None,
            scene_id,
            out,
        )
        write_json(out.with_suffix(".json"), {"options": self.vectorize.fingerprint()})

    def _write_part(self, shard: str, ok_scenes: Sequence[str]) -> None:
        """The shard's polygons in one part; ok scenes mapped before ``vectorize`` was set, or
        with other options, get theirs first (from their maps)."""
        assert self.vectorize is not None
        wanted = self.vectorize.fingerprint()
        for scene_id in ok_scenes:
            made = self.polygons_path(scene_id).with_suffix(".json")
            if not made.exists() or read_json(made).get("options") != wanted:
                self._vectorize(scene_id)  # new, or made with other options (or classes)
        part = self.root / "polygons" / "parts" / f"{shard}.parquet"
        count = self.vectorize.part([self.polygons_path(s) for s in ok_scenes], part)
        log.info("%s: %d polygons of %d ok scenes", shard, count, len(ok_scenes))

    def streams(self) -> bool:
        """Whether scenes are read, cleaned and predicted in strips (bounded memory): not with a
        buffer (the neighbours' VRT) or a reprojection, which need the whole scene."""
        return not (self.apply.buffer and self.vrt) and not (self.clean.crs or self.clean.resolution)

    def _log(self, status: SceneStatus) -> None:
        log.info("%s: %s %s", status.scene_id, status.status, status.reason)
        self.counted.step()

    def finish(self, prepared: Prepared) -> Callable[[], SceneStatus]:
        """Predict a prepared scene if it is ok; return what ends it in exactly one state.

        The returned step publishes the scene's staged maps (COGs renamed into place) and then
        writes its sentinel; :meth:`run_shard` runs it in a thread while the next scene predicts.

        Raises:
            ConfigError: found while preparing or predicting (no scene state is written).
        """
        scene_id = prepared.scene.scene_id
        staged: SceneOutputs | None = None
        if self.predictor is not None:  # this scene's own, once fitted (not the scene before's)
            self.predictor.fell_back = False
        try:
            if prepared.error is not None:
                raise prepared.error  # the config's mistake, not the scene's: no final state
            status = prepared.status
            assert status is not None
            if status.status == "ok":
                if self.predictor is not None and prepared.moments is not None:
                    shift = shift_score(prepared.moments, self.predictor.reference())
                    if shift is not None:
                        status.extra["shift"] = shift
                if prepared.reader is not None:
                    staged = self._predict_stream(scene_id, prepared)
                else:
                    assert prepared.cleaned is not None
                    status = self._predict(scene_id, prepared, status)
                if self.predictor is not None and self.predictor.fell_back and "shift" in status.extra:
                    # unlike the training data: mapped by the ensemble's fallback members alone
                    status.extra["shift"]["fallback"] = self.predictor.fallback_names()
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
            if self.vectorize is not None and ended.status == "ok":
                t0 = time.perf_counter()
                try:
                    self._vectorize(scene_id)
                except (RasterioError, OSError, ValueError) as exc:
                    ended = SceneStatus(scene_id, "corrupt", reason=f"polygons: {corrupt_reason(exc)}")
                prepared.timings["vectorize_s"] = time.perf_counter() - t0
            if self.predictor is not None and ended.status == "ok":  # for progress and the report
                try:
                    hectares = class_hectares(self.scenes / f"{scene_id}.tif", self.predictor.classes)
                except (RasterioError, OSError, ValueError, CRSError) as exc:  # the map stays ok
                    log.warning("%s: no class areas (%s)", scene_id, corrupt_reason(exc))
                else:
                    if hectares is not None:
                        ended.extra["class_ha"] = hectares
            if self.apply.outputs != "both" and (scratch := self._probs_path(scene_id)) is not None:
                scratch.unlink(missing_ok=True)
            ended.extra.update(prepared.timings)
            ended.started, ended.finished = prepared.start, time.time()
            ended.write(self.sentinel(scene_id))
            return ended

        return complete

    def _predict_stream(self, scene_id: str, prepared: Prepared) -> SceneOutputs:
        """Predict a scene strip by strip into staged outputs (published by :meth:`finish`'s step)."""
        assert self.predictor is not None and prepared.reader is not None
        reader, timings = prepared.reader, prepared.timings
        missing = sorted({b for m in self.predictor.members for b in m.bands} - set(reader.names))
        if missing:
            raise SceneError(f"the scene's cleaned bands {reader.names} lack {missing}, the model's input")
        out = self.scenes / f"{scene_id}.tif"
        probs = self._probs_path(scene_id)
        t0 = time.perf_counter()
        figures, staged = predict_staged(reader, self.predictor, self.predict, out, probs, prepared.moments)
        timings["predict_s"] = time.perf_counter() - t0
        timings["model_s"] = figures.get("model_seconds", 0.0)
        return staged

    def _predict(self, scene_id: str, prepared: Prepared, status: SceneStatus) -> SceneStatus:
        # a FieldShardRunner predicts with its downscaler
        assert self.predictor is not None and prepared.cleaned is not None
        cleaned, crop, timings = prepared.cleaned, prepared.crop, prepared.timings
        # Only where the files name the bands (else check() has seen to it): this scene's own bands.
        missing = sorted({b for m in self.predictor.members for b in m.bands} - set(cleaned.names))
        if missing:
            raise SceneError(f"the scene's cleaned bands {cleaned.names} lack {missing}, the model's input")
        mask = self.apply.mask
        if isinstance(mask, MaskOptions):
            view = cropped(cleaned, crop)
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
        probs = self._probs_path(scene_id)
        t0 = time.perf_counter()
        reader = ArrayReader(cleaned.image, cleaned.names, cleaned.crs, cleaned.transform)
        if crop is None:
            figures = predict_scene(reader, self.predictor, self.predict, out, probs, prepared.moments)
        else:
            figures = predict_cropped(
                reader, self.predictor, self.predict, crop, out, probs, prepared.moments
            )
        timings["predict_s"] = time.perf_counter() - t0
        timings["model_s"] = figures.get("model_seconds", 0.0)
        return status
