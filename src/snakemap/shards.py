"""Application settings and shards: fixed slices of the apply scenes in manifest order, one job each.

Kept free of heavy imports: the workflow and ``snakemap progress`` read it often."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from snakemap.config import ConfigError

#: shard ids: shard-00000, shard-00001, ...
SHARD_PATTERN = r"shard-[0-9]{5}"


def shard_ids(n_scenes: int, size: int) -> list[str]:
    """The ids of the shards of ``n_scenes`` scenes in manifest order."""
    return [f"shard-{k:05d}" for k in range((n_scenes + size - 1) // size)]


def shard_members(scene_ids: Sequence[str], shard: str, size: int) -> list[str]:
    """The scenes of one shard: a fixed slice of the apply scenes in manifest order."""
    k = int(shard.split("-")[1])
    return list(scene_ids[k * size : (k + 1) * size])


@dataclass
class MaskOptions:
    """Where there is something to map: pixels whose ``band`` lies within ``[min, max]``."""

    band: str
    min: float = float("-inf")
    max: float = float("inf")


@dataclass
class ApplyOptions:
    """How scenes are applied; mirrors the ``apply`` config section."""

    #: predictors to apply: ``models/{id}/{best|last}`` or ``ensembles/{name}``
    predictors: list[str] = field(default_factory=list)
    #: scenes per shard (one job each)
    shard_size: int = 500
    #: ``classes`` (class maps) or ``both`` (class maps and probabilities)
    outputs: str = "classes"
    #: a scene with no pixel inside this mask is empty (no model runs); None = no mask
    mask: MaskOptions | dict[str, Any] | None = None
    #: pixels of context read from neighbouring scenes (through a VRT of all inputs), then cropped
    buffer: int = 0
    #: scenes downloaded, opened and surveyed ahead while one predicts (0: one after another)
    prefetch: int = 1
    #: GDAL's block cache per shard job, MB (GDAL's own default is 5% of the machine's memory,
    #: which a job's memory request does not count on); a GDAL_CACHEMAX in the environment wins
    gdal_cache_mb: int = 128
    #: try corrupt scenes again on a rerun (the config's top-level ``retry_corrupt``)
    retry_corrupt: bool = field(default=False, init=False)
    #: GPUs, memory (MB) and wall time (minutes) per shard job
    gpus: int = 0
    mem_mb: int = 8000
    runtime: int = 240
    #: downsampling factor of the mosaic's overview COG
    overview_factor: int = 8
    #: the overview's CRS, into which every zone's maps are warped (EPSG code, WKT or PROJ string)
    overview_crs: str = "EPSG:4326"

    def __post_init__(self) -> None:
        if isinstance(self.mask, dict):
            self.mask = MaskOptions(**self.mask)


def check_mask(mask: MaskOptions | dict[str, Any] | None, cleaned: list[str] | None) -> None:
    """``apply.mask.band`` must be one of the cleaned bands (see :func:`snakemap.bands.cleaned_names`).

    Args:
        cleaned: the cleaned band names; None when only the files know them (nothing is checked).

    Raises:
        ConfigError: naming ``apply.mask.band`` and the cleaned bands.
    """
    band = mask.band if isinstance(mask, MaskOptions) else (mask or {}).get("band")
    if band is not None and cleaned is not None and band not in cleaned:
        raise ConfigError(
            f"apply.mask.band {band!r} is not among the cleaned bands {cleaned} (bands.select, bands.indices)"
        )
