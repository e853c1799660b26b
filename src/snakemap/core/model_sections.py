"""The typed sections of the config that describe models: the grid of models and the downscaling
task's own settings (how scenes are predicted and applied is in :mod:`snakemap.core.apply_sections`,
what is scored at the calval sites in :mod:`snakemap.core.calval_sections`).

As in :mod:`snakemap.core.sections`, each class is the only place where its keys, defaults and
constraints are written.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from snakemap.core.learning_sections import AugmentOptions, BoostingOptions, LossWeights
from snakemap.core.section_base import (
    NAME_PATTERN,
    Fraction,
    NonNegative,
    Number,
    Positive,
    Section,
    Unique,
)

#: ids of models, ensembles, baselines, sensors and label schemes
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
#: a training job below ``results/models/``: ``id`` or ``id/fold{k}``
MODEL_KEY_PATTERN = rf"{ID_PATTERN}(/fold[0-9]+)?"
#: predictors that predict scenes: a model's checkpoint or an ensemble
APPLIED_PATTERN = rf"(models/{MODEL_KEY_PATTERN}/(best|last)|ensembles/{ID_PATTERN})"
Id = Annotated[str, Field(pattern=f"^{ID_PATTERN}$")]
#: the downscaling networks (:mod:`snakemap.tasks.srnets`)
DOWNSCALING_ARCHS = ("SRCNN", "RecurrentSRCNN", "EDSR", "RCAN")
Interpolation = Literal["bicubic", "bilinear", "nearest"]


class ModelOptions(Section):
    """One model's parameters: ``models.base``, and a resolved model (base plus grid values)."""

    OMIT_UNSET = frozenset({"family", "boosting", "consistency"})

    #: what learns: a ``network`` (``arch``, trained with Lightning) or ``lightgbm``, a gradient-
    #: boosted per-pixel classifier on bands, indices and neighbourhood features (``boosting``);
    #: one grid may hold both (``grid: {family: [network, lightgbm]}``)
    family: Literal["network", "lightgbm"] = Field(
        "network",
        description="network (arch, trained with Lightning) or lightgbm (per-pixel gradient boosting on "
        "bands, indices and neighbourhood features; segmentation only)",
    )
    #: the ``lightgbm`` family's settings (:class:`BoostingOptions`)
    boosting: dict[str, Any] = Field(
        default_factory=dict,
        description="family lightgbm: rounds, learning_rate, num_leaves, "
        "min_child_samples, feature_fraction, scales, pixels",
    )

    #: segmentation-models-pytorch architecture: Unet, UnetPlusPlus, FPN, DeepLabV3Plus, ...;
    #: downscaling: SRCNN, RecurrentSRCNN, EDSR, RCAN (:mod:`snakemap.tasks.srnets`)
    arch: str = Field(
        "Unet",
        description="segmentation-models-pytorch architecture (Unet, FPN, DeepLabV3Plus, ...); "
        "downscaling: SRCNN, RecurrentSRCNN, EDSR or RCAN",
    )
    #: smp encoder name, e.g. resnet18, resnet34, efficientnet-b0
    encoder_name: str = Field("resnet18", description="smp encoder name")
    #: path of a local weights file for the encoder, or None (from scratch)
    encoder_weights: str | None = Field(
        None, description="path of a local weights file; nothing is downloaded"
    )
    #: input bands by name (a subset of the cleaned bands and indices) or a name from
    #: ``models.band_sets``; None uses all
    bands: list[str] | str | None = Field(None, description="input bands by name, or a band set's name")
    #: loss terms and their weights: ce (cross-entropy), dice, focal; downscaling: l1, mse (the
    #: segmentation default means ``{l1: 1.0}`` there)
    loss: dict[str, Number] = Field(
        default_factory=lambda: {"ce": 1.0},
        description="segmentation: ce, dice, focal; downscaling: l1, mse (default {l1: 1.0})",
    )
    #: downscaling: the scale factor s (an LR cell is s x s HR cells)
    scale: int = Field(
        4, ge=2, description="downscaling: the scale factor s; a power of 2 for RecurrentSRCNN"
    )
    #: downscaling: the network's width (feature maps)
    features: int = Field(64, ge=2, description="downscaling: the network's width")
    #: downscaling: EDSR/RCAN residual blocks
    blocks: int = Field(8, ge=1, description="downscaling: EDSR/RCAN residual blocks")
    #: per-class weights of the cross-entropy, in class order
    class_weights: list[Number] | None = None
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: Positive = 0.001
    weight_decay: NonNegative = 0.0001
    #: learning-rate schedule over the epochs
    scheduler: Literal["none", "cosine", "step", "plateau"] = "cosine"
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(10, ge=1)
    #: training samples drawn per epoch (with replacement); None: one pass over the training chips.
    #: Small datasets need it: a few dozen chips give a few optimiser steps per epoch.
    samples_per_epoch: int | None = Field(
        None,
        ge=1,
        description="training samples drawn per epoch (with replacement); null: one pass over the chips",
    )
    #: input normalisation: ``dataset`` (the training scenes' band statistics) or ``scene`` (each
    #: scene standardised by its own band statistics, in training and prediction alike, which
    #: removes a sensor's per-band gain and offset)
    normalize: Literal["dataset", "scene", "patch"] = Field(
        "dataset",
        description="band statistics of the training scenes, or of each scene itself (training and "
        "prediction alike); downscaling: patch (each window standardised by its own mean and spread)",
    )
    #: downscaling: correct each prediction so that its block means equal the LR input
    consistency: bool = Field(
        False, description="downscaling: the output, averaged back down, equals the input (enforced)"
    )
    #: random flips, 90-degree rotations, brightness/contrast jitter (0 = off), per-band ``gain``
    #: and ``offset`` jitter (another sensor's calibration) and ``rescale: [min, max]`` zoom
    #: factors (another resolution); see :func:`snakemap.tasks.augment.augment`
    augment: dict[str, Any] = Field(default_factory=lambda: {"flips": True, "rot90": True, "jitter": 0.0})
    #: expected share of training samples whose chip has target (weighted sampling); None = uniform
    balance: Fraction | None = Field(None, description="expected share of samples with target")
    #: metric that picks best.ckpt: val_iou (macro), val_iou_<class>, val_f1, val_loss;
    #: downscaling: val_rmse (what the default val_iou means there), val_ratio, val_loss
    monitor: str = Field(
        "val_iou",
        pattern="^val_",
        description="val_iou, val_iou_<class>, val_f1, val_loss; downscaling: val_rmse (what val_iou "
        "means there), val_ratio (to bicubic), val_loss",
    )

    @field_validator("loss")
    @classmethod
    def _loss(cls, loss: dict[str, float]) -> dict[str, float]:
        LossWeights(**loss)  # the known terms, numbers
        return loss

    @field_validator("boosting")
    @classmethod
    def _boosting(cls, boosting: dict[str, Any]) -> dict[str, Any]:
        BoostingOptions(**boosting)  # the known keys, in range
        return boosting

    @field_validator("augment")
    @classmethod
    def _augment(cls, augment: dict[str, Any]) -> dict[str, Any]:
        AugmentOptions(**augment)  # the known keys, in range
        return augment

    #: stop after this many epochs without improvement; None = never
    early_stopping: int | None = Field(None, ge=1)
    #: validate on a held-out fold (``fold``), or, as an opt-in whose calval figures are then no
    #: independent test (the report marks them "selected on calval"), on the calval scenes' chips
    validation: Literal["fold", "calval"] = Field(
        "fold",
        description="fold: best.ckpt is chosen on a held-out fold of the training scenes; calval "
        "(opt-in): on the calval scenes' chips, and the report marks its figures selected on calval",
    )
    #: None: one model, fold 0 held out; ``all`` or a list: one model per held-out fold
    folds: Literal["all"] | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = Field(
        None, description="null: one model validated on fold 0; all or a list: one model per held-out fold"
    )
    #: after an unreadable last.ckpt, resume from ``best`` (when readable) or from ``scratch``
    resume_fallback: Literal["best", "scratch"] = "best"
    #: GPUs per job (2+ trains with DDP); 0 trains on the CPU
    gpus: int = Field(0, ge=0)
    #: CPU cores per job (and DataLoader workers - 1)
    cpus: int = Field(2, ge=1)
    #: memory per job, MB (doubled on each retry)
    mem_mb: int = Field(8000, ge=100)
    #: wall time per job, minutes
    runtime: int = Field(120, ge=1, description="minutes")
    seed: int = 0


def field_model_errors(opts: ModelOptions, chip_size: int | None = None) -> list[str]:
    """Why a model cannot downscale: it is no downscaling network, its scale does not divide the
    chips' side ``chip_size`` (when given), or RecurrentSRCNN's scale is no power of 2."""
    errors = []
    if opts.family != "network":
        errors.append(f"family {opts.family!r} maps classes: downscaling trains networks")
    if opts.arch not in DOWNSCALING_ARCHS:
        errors.append(f"arch {opts.arch!r} is not a downscaling network ({', '.join(DOWNSCALING_ARCHS)})")
    if chip_size is not None and chip_size % opts.scale:
        errors.append(f"chips.size {chip_size} is not a multiple of its scale {opts.scale}")
    if opts.arch == "RecurrentSRCNN" and opts.scale & (opts.scale - 1):
        errors.append("RecurrentSRCNN needs a scale that is a power of 2")
    return errors


class ModelListEntry(Section):
    """One entry of ``models.list``: a name and the parameters that differ from ``models.base``."""

    model_config = Section.model_config | {"extra": "allow"}

    name: Id


class ModelsSection(Section):
    """The ``models`` section: a base model, a grid of values expanded over it, an explicit list."""

    base: ModelOptions = Field(default_factory=ModelOptions)
    #: parameter (dotted for loss.dice and the like) -> list of values
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict, description="parameter (dotted for loss.dice and the like) -> list of values"
    )
    list_: list[ModelListEntry] = Field(default_factory=list, alias="list")
    #: named input band lists, e.g. ``{truecolor: [red, green, blue]}``; None = all bands
    band_sets: dict[str, list[str] | None] = Field(
        default_factory=dict,
        description="named input band lists, e.g. {truecolor: [red, green, blue]}; null = all bands",
    )


class DownscalingOptions(Section):
    """The ``downscaling`` section (``task: downscaling`` only)."""

    #: name -> raster of a co-registered high-resolution field, an extra input channel
    auxiliary: dict[Annotated[str, Field(pattern=NAME_PATTERN)], str] = Field(
        default_factory=dict,
        description="name -> raster of a co-registered high-resolution field (e.g. surface elevation "
        "under an ice-thickness map), resampled onto every scene's grid as an extra input channel",
    )
    #: interpolation baselines scored at the calval sites at every model's scale
    baselines: Unique[Interpolation] = Field(
        default_factory=lambda: list[Interpolation](["bicubic", "bilinear", "nearest"]),
        description="interpolation baselines scored at the calval sites at every model's scale",
    )
    #: low-resolution cells per prediction window side, and of context cropped at inner edges
    window: int = Field(64, ge=4, description="low-resolution cells per prediction window side")
    overlap: int = Field(
        8, ge=0, description="low-resolution cells of context cropped at each inner window edge"
    )

    @model_validator(mode="after")
    def _window_keeps_cells(self) -> DownscalingOptions:
        if self.window <= 2 * self.overlap:
            raise ValueError(
                f"overlap {self.overlap} crops a window of {self.window} cells away at both edges: "
                f"give a window above {2 * self.overlap} or a smaller overlap"
            )
        return self
