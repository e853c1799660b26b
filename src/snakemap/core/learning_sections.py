"""The sub-sections of one model's options (:class:`snakemap.core.model_sections.ModelOptions`):
its loss terms, its augmentation, and the gradient-boosting family's settings. Each is checked
where the model's options are, and is the only place of its keys, defaults and constraints.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from snakemap.core.section_base import Fraction, NonNegative, Number, Positive, Section, Unique


class LossWeights(Section):
    """Loss terms and their weights (``models.base.loss``): only the terms given are used."""

    OMIT_UNSET = frozenset({"ce", "dice", "focal", "l1", "mse"})

    ce: Number | None = None
    dice: Number | None = None
    focal: Number | None = None
    l1: Number | None = None
    mse: Number | None = None


class AugmentOptions(Section):
    """Augmentation of training batches (``models.base.augment``): only the keys given are used."""

    OMIT_UNSET = frozenset({"flips", "rot90", "jitter", "gain", "offset", "rescale"})

    flips: bool | None = None
    rot90: bool | None = None
    jitter: NonNegative | None = Field(
        None, description="contrast 1 +- jitter and brightness +- jitter, all bands alike"
    )
    gain: Fraction | None = Field(
        None, description="per-band gain in 1 +- gain (another sensor's calibration)"
    )
    offset: NonNegative | None = Field(None, description="per-band offset in +- offset standard deviations")
    rescale: Annotated[list[Positive], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[min, max] zoom factor per batch (another resolution), e.g. [0.5, 2.0]"
    )


class BoostingOptions(Section):
    """The gradient-boosting pixel family's settings (``models.base.boosting``, ``family:
    lightgbm``): only the keys given are passed on, the others keep these defaults."""

    OMIT_UNSET = frozenset(
        {"rounds", "learning_rate", "num_leaves", "min_child_samples", "feature_fraction", "scales", "pixels"}
    )

    #: boosting rounds; the round whose validation ``monitor`` is best makes ``best.ckpt``
    rounds: int = Field(300, ge=1, description="boosting rounds (best.ckpt: the best round by monitor)")
    learning_rate: Positive = 0.05
    #: leaves per tree
    num_leaves: int = Field(31, ge=2, description="leaves per tree")
    #: pixels a leaf needs at least
    min_child_samples: int = Field(100, ge=1, description="pixels a leaf needs at least")
    #: share of the features each tree sees
    feature_fraction: Fraction = Field(0.8, gt=0, description="share of the features each tree sees")
    #: sides (pixels, odd) of the square neighbourhoods whose per-band mean and standard
    #: deviation (a texture) are features beside the bands themselves
    scales: Unique[Annotated[int, Field(ge=3)]] = Field(
        default_factory=lambda: [5, 15],
        description="sides in pixels of the neighbourhoods whose band means and standard deviations are "
        "features",
    )
    #: training pixels drawn from the training chips (per-class weights as ``class_weights``)
    pixels: int = Field(300_000, ge=100, description="training pixels drawn from the training chips")

    @field_validator("scales")
    @classmethod
    def _odd(cls, scales: list[int]) -> list[int]:
        even = [s for s in scales if s % 2 == 0]
        if even:
            raise ValueError(f"neighbourhood sides must be odd (centred on the pixel): {even}")
        return scales
