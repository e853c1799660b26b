"""Global application of a downscaling model: :class:`FieldShardRunner`, the shard runner of
:mod:`snakemap.inference.shard` (same layout, sentinels and manifests) that writes each scene's
downscaled field instead of a class map."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from snakemap.core.apply_sections import ApplyOptions, PredictOptions
from snakemap.core.config import ConfigError
from snakemap.core.model_sections import DownscalingOptions
from snakemap.core.sections import AcquireOptions, BandOptions, CleanOptions
from snakemap.core.status import SceneStatus
from snakemap.inference.fields import check_auxiliary, downscale_field, write_downscaled
from snakemap.inference.scenes import Prepared, SceneInput
from snakemap.inference.shard import ShardRunner

if TYPE_CHECKING:
    from snakemap.tasks.downscaling import TrainedDownscaler


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
        problem = self.apply.class_map_only()
        if problem:
            raise ConfigError(problem)

    def _predict(self, scene_id: str, prepared: Prepared, status: SceneStatus) -> SceneStatus:
        assert prepared.cleaned is not None
        cleaned, timings = prepared.cleaned, prepared.timings
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
