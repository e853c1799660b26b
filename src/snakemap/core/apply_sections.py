"""The typed sections of the config that say how scenes are predicted and applied: windows,
backends and threads (``predict``), shards, masks, buffers and overviews (``apply``), and when an
applied scene counts as unlike the training data (``shift``).

As in :mod:`snakemap.core.sections`, each class is the only place where its keys, defaults and
constraints are written.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, PrivateAttr, model_validator

from snakemap.core.model_sections import APPLIED_PATTERN
from snakemap.core.section_base import AnyNumber, NonNegative, Section


class PredictOptions(Section):
    """Windows, batches and outputs of the predictor; the ``predict`` section."""

    #: written out only where given: a project that never set them plans the jobs it planned
    OMIT_UNSET = frozenset({"backend", "quantize", "threads"})

    #: window side in pixels (the model's input)
    window: int = Field(256, ge=16, description="window side in pixels")
    #: context pixels: cropped from each side (centre crop) or blended between neighbours
    overlap: int = Field(32, ge=0, description="context cropped (or blended) at each side")
    #: blend overlapping windows instead of keeping each window's centre
    blend: bool = Field(False, description="blend overlapping windows instead of keeping centres")
    #: windows per model call
    batch_size: int = Field(8, ge=1)
    #: test-time augmentation: each window predicted as it is and flipped horizontally, vertically
    #: and both ways, the four predictions flipped back and averaged (four times the networks'
    #: time; rules and boosters map a flipped window the same way and run once); class maps and
    #: downscaled fields alike, and the ensembles' tuning scores the same averages
    tta: bool = Field(
        False,
        description="average each window's predictions over its four flips (4x the networks' time)",
    )
    #: how probabilities are stored
    prob_dtype: Literal["uint8", "float32"] = "uint8"
    #: compile the networks with ``torch.compile`` before the first scene (minutes of compiling
    #: that pay off over many scenes on a GPU; the maps are the same to float tolerance)
    compile: bool = Field(
        False,
        description="compile the networks with torch.compile before the first scene (pays off over many "
        "scenes on a GPU)",
    )

    #: what runs the networks on the CPU: torch eager, or ONNX Runtime on each model's ONNX export
    #: (``results/models/{model}/{checkpoint}.onnx``, a rule output); a booster runs in LightGBM
    backend: Literal["torch", "onnxruntime"] = Field(
        "torch",
        description="torch: eager PyTorch; onnxruntime: each network's ONNX export in ONNX Runtime (CPU; "
        "boosters run in LightGBM either way)",
    )
    #: ``int8``: ONNX Runtime runs each network's static int8 quantization, calibrated once per
    #: model on its training chips (``{checkpoint}.int8.onnx``); needs ``backend: onnxruntime``
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="int8: ONNX Runtime runs each network quantized to int8 (calibrated on its training "
        "chips); needs backend: onnxruntime",
    )
    #: CPU threads of each prediction job (calval and apply shards declare them; torch and ONNX
    #: Runtime use them)
    threads: int = Field(2, ge=1, description="CPU threads of each prediction job (calval, apply shards)")

    @model_validator(mode="after")
    def _int8_in_onnxruntime(self) -> PredictOptions:
        if self.quantize != "none" and self.backend != "onnxruntime":
            raise ValueError(f"quantize: {self.quantize} runs in ONNX Runtime: set backend: onnxruntime")
        return self

    def fitted(self, height: int, width: int, multiple: int = 32) -> PredictOptions:
        """The same options with the window shrunk, as far as it helps, to tile this scene evenly.

        The number of windows per axis stays what ``window`` needs; each is made just large enough
        (a multiple of ``multiple``, as encoder-decoder networks need) so that less padding
        beyond the scene's edge is computed. A small scene gets one small window.
        """
        pad, stride = self.geometry()
        context = self.window - stride
        core = 0
        for length in (height, width):
            n = max(1, -(-length // stride))  # windows this axis needs
            core = max(core, -(-length // n))
        window = min(self.window, -(-(core + context) // multiple) * multiple)
        return self.model_copy(update={"window": max(window, context + 1)})

    def geometry(self) -> tuple[int, int]:
        """``(pad, stride)`` of the windows."""
        if self.blend:
            stride, pad = self.window - self.overlap, self.overlap // 2
        else:
            stride, pad = self.window - 2 * self.overlap, self.overlap
        if stride <= 0:
            raise ValueError(f"predict.overlap {self.overlap} leaves no stride in a window of {self.window}")
        return pad, stride

    def weights(self) -> np.ndarray:
        """``(window, window)`` float32 weight of each window pixel."""
        w, o = self.window, self.overlap
        if self.blend:
            ramp = np.minimum(np.arange(w) + 0.5, np.arange(w)[::-1] + 0.5) / max(o, 1)
            line = np.clip(ramp, 1e-3, 1.0)
        else:
            line = np.zeros(w, dtype=np.float32)
            line[o : w - o] = 1.0
        return np.outer(line, line).astype(np.float32)


class MaskOptions(Section):
    """Where there is something to map: pixels whose ``band`` lies within ``[min, max]``."""

    OMIT_UNSET = frozenset({"min", "max"})

    band: str
    min: AnyNumber = float("-inf")
    max: AnyNumber = float("inf")


class PolarOptions(Section):
    """Polar overviews (``apply.polar``): scenes poleward of ``latitude`` also go into an overview
    in a polar CRS per hemisphere, where a global one in degrees stretches them badly."""

    latitude: float = Field(60.0, ge=0, le=90, description="scenes whose centre lies poleward of it")
    south: str = Field("EPSG:3031", min_length=1, description="the southern overview's CRS")
    north: str = Field("EPSG:3413", min_length=1, description="the northern overview's CRS")


class ApplyOptions(Section):
    """How scenes are applied; the ``apply`` section."""

    #: predictors to apply: ``models/{id}/{best|last}`` or ``ensembles/{name}``
    predictors: list[Annotated[str, Field(pattern=f"^{APPLIED_PATTERN}$")]] = Field(
        default_factory=list, description="models/{id}/{best|last} or ensembles/{name}"
    )
    #: scenes per shard (one job each)
    shard_size: int = Field(500, ge=1, description="scenes per shard job")
    #: ``classes`` (class maps) or ``both`` (class maps and probabilities)
    outputs: Literal["classes", "both"] = "classes"
    #: a scene with no pixel inside this mask is empty (no model runs); None = no mask
    mask: MaskOptions | None = Field(
        None, description="a scene with no pixel of band within [min, max] is empty"
    )
    #: pixels of context read from neighbouring scenes (through a VRT of all inputs), then cropped
    buffer: int = Field(0, ge=0, description="pixels of context from neighbouring scenes")
    #: scenes downloaded, opened and surveyed ahead while one predicts (0: one after another)
    prefetch: int = Field(
        1,
        ge=0,
        description="scenes downloaded, opened and surveyed ahead while one predicts (0: one after another)",
    )
    #: GDAL's block cache per shard job, MB (GDAL's own default is 5% of the machine's memory,
    #: which a job's memory request does not count on); a GDAL_CACHEMAX in the environment wins
    gdal_cache_mb: int = Field(
        128, ge=8, description="GDAL's block cache per shard job, MB (GDAL_CACHEMAX in the environment wins)"
    )
    #: GPUs, memory (MB) and wall time (minutes) per shard job
    gpus: int = Field(0, ge=0)
    mem_mb: int = Field(8000, ge=100)
    runtime: int = Field(240, ge=1, description="minutes")
    #: downsampling factor of the mosaic's overview COG
    overview_factor: int = Field(8, ge=1)
    #: the overview's CRS, into which every zone's maps are warped (EPSG code, WKT or PROJ string)
    overview_crs: str = Field(
        "EPSG:4326",
        min_length=1,
        description="the overview COG's CRS, into which the maps of every CRS are warped",
    )
    #: the polar overviews beside it (``overview_south.tif``, ``overview_north.tif``)
    polar: PolarOptions = Field(default_factory=PolarOptions)
    _retry_corrupt: bool = PrivateAttr(False)

    def class_map_only(self) -> str | None:
        """What of this section only class maps have (a mask, a buffer), as a message; None if
        nothing (a task that maps a field checks it)."""
        if self.mask is not None or self.buffer:
            return "apply.mask and apply.buffer are for class maps: leave them unset for downscaling"
        return None

    @property
    def retry_corrupt(self) -> bool:
        """Try corrupt scenes again on a rerun (the config's top-level ``retry_corrupt``)."""
        return self._retry_corrupt

    @retry_corrupt.setter
    def retry_corrupt(self, value: bool) -> None:
        self._retry_corrupt = value


class ShiftOptions(Section):
    """The ``shift`` section: when an applied scene counts as unlike the training data."""

    #: a scene whose shift score (:mod:`snakemap.inference.shift`: its bands' distance from the
    #: training scenes', in training standard deviations) is above this is listed by
    #: ``snakemap progress`` as unlike the training data
    threshold: NonNegative = Field(
        1.0,
        description="scenes whose shift score (the bands' distance from the training scenes', in training "
        "standard deviations) is above this are listed as unlike the training data",
    )
