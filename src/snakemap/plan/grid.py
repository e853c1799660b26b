"""Experiment grids: a base model config plus lists of values, expanded into model ids.

``models:`` in the config::

    models:
      base: {arch: Unet, encoder_name: resnet18, lr: 0.001, epochs: 10}
      grid: {arch: [Unet, DeepLabV3Plus], lr: [0.001, 0.0001]}   # keys may be dotted: loss.dice
      list:                                                        # optional, each with a name
        - {name: unet-long, epochs: 50}

The grid expands in a fixed order (keys sorted, values in the order given) into ids made of the
keys that vary, e.g. ``arch-Unet_lr-0.001``: readable, stable when the YAML keys are reordered, and
distinct for distinct parameters (a value that is not file-name safe gets a short hash).
``folds: all`` or ``folds: [0, 2]`` in a model makes one training job per fold:
``{id}/fold{k}``.
"""

from __future__ import annotations

import copy
import itertools
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

#: short names for common keys in ids
SHORT = {"batch_size": "bs", "encoder_name": "enc", "encoder_weights": "weights", "weight_decay": "wd"}
_SAFE = re.compile(r"[^A-Za-z0-9.+-]")
#: ids of models, ensembles, baselines, sensors and label schemes (the schemas check the same)
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
#: a training job below ``results/models/``: ``id`` or ``id/fold{k}``
MODEL_KEY_PATTERN = rf"{ID_PATTERN}(/fold[0-9]+)?"
#: predictors that predict scenes: a model's checkpoint or an ensemble
APPLIED_PATTERN = rf"(models/{MODEL_KEY_PATTERN}/(best|last)|ensembles/{ID_PATTERN})"
#: every predictor scored at calval: models' checkpoints, ensembles and baselines
PREDICTOR_PATTERN = rf"(models/{MODEL_KEY_PATTERN}/(best|last)|ensembles/{ID_PATTERN}|baselines/{ID_PATTERN})"
#: the downscaling networks (:mod:`snakemap.tasks.srnets`)
DOWNSCALING_ARCHS = ("SRCNN", "RecurrentSRCNN", "EDSR", "RCAN")
#: model parameters that size a job (its resources) and never change what it learns: changing
#: them neither reruns a finished job nor restarts a running one
RESOURCE_KEYS = ("gpus", "cpus", "mem_mb", "runtime")


@dataclass
class ModelOptions:
    """One model's parameters; mirrors ``models.base`` (plus grid values) in the config."""

    #: segmentation-models-pytorch architecture: Unet, UnetPlusPlus, FPN, DeepLabV3Plus, ...;
    #: downscaling: SRCNN, RecurrentSRCNN, EDSR, RCAN (:mod:`snakemap.tasks.srnets`)
    arch: str = "Unet"
    #: smp encoder name, e.g. resnet18, resnet34, efficientnet-b0
    encoder_name: str = "resnet18"
    #: path of a local weights file for the encoder, or None (from scratch)
    encoder_weights: str | None = None
    #: input bands by name (a subset of the cleaned bands and indices) or a name from
    #: ``models.band_sets``; None uses all
    bands: list[str] | str | None = None
    #: loss terms and their weights: ce (cross-entropy), dice, focal; downscaling: l1, mse (the
    #: segmentation default means ``{l1: 1.0}`` there)
    loss: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})
    #: downscaling: the scale factor s (an LR cell is s x s HR cells)
    scale: int = 4
    #: downscaling: the network's width (feature maps)
    features: int = 64
    #: downscaling: EDSR/RCAN residual blocks
    blocks: int = 8
    #: per-class weights of the cross-entropy, in class order
    class_weights: list[float] | None = None
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    #: learning-rate schedule over the epochs
    scheduler: Literal["none", "cosine", "step", "plateau"] = "cosine"
    batch_size: int = 16
    epochs: int = 10
    #: training samples drawn per epoch (with replacement); None: one pass over the training chips.
    #: Small datasets need it: a few dozen chips give a few optimiser steps per epoch.
    samples_per_epoch: int | None = None
    #: input normalisation: ``dataset`` (the training scenes' band statistics) or ``scene`` (each
    #: scene standardised by its own band statistics, in training and prediction alike, which
    #: removes a sensor's per-band gain and offset)
    normalize: Literal["dataset", "scene"] = "dataset"
    #: random flips, 90-degree rotations, brightness/contrast jitter (0 = off), per-band ``gain``
    #: and ``offset`` jitter (another sensor's calibration) and ``rescale: [min, max]`` zoom
    #: factors (another resolution); see :func:`snakemap.tasks.augment.augment`
    augment: dict[str, Any] = field(default_factory=lambda: {"flips": True, "rot90": True, "jitter": 0.0})
    #: expected share of training samples whose chip has target (weighted sampling); None = uniform
    balance: float | None = None
    #: metric that picks best.ckpt: val_iou (macro), val_iou_<class>, val_f1, val_loss;
    #: downscaling: val_rmse (what the default val_iou means there), val_ratio, val_loss
    monitor: str = "val_iou"
    #: stop after this many epochs without improvement; None = never
    early_stopping: int | None = None
    #: validate on a held-out fold (``fold``), or, as an opt-in whose calval figures are then no
    #: independent test (the report marks them "selected on calval"), on the calval scenes' chips
    validation: Literal["fold", "calval"] = "fold"
    #: None: one model, fold 0 held out; ``all`` or a list: one model per held-out fold
    folds: str | list[int] | None = None
    #: after an unreadable last.ckpt, resume from ``best`` (when readable) or from ``scratch``
    resume_fallback: Literal["best", "scratch"] = "best"
    #: GPUs per job (2+ trains with DDP); 0 trains on the CPU
    gpus: int = 0
    #: CPU cores per job (and DataLoader workers - 1)
    cpus: int = 2
    #: memory per job, MB (doubled on each retry)
    mem_mb: int = 8000
    #: wall time per job, minutes
    runtime: int = 120
    seed: int = 0


@dataclass(frozen=True)
class ModelJob:
    """One training job: a model id, its resolved parameters, and the held-out fold if any."""

    #: the model id, e.g. ``arch-Unet_lr-0.001``
    model_id: str
    #: ``None`` for a model trained once, else the fold held out for validation
    fold: int | None
    #: the resolved parameters (base, then grid values or list overrides)
    params: dict[str, Any]

    @property
    def key(self) -> str:
        """Path of the job below ``results/models/``: ``id`` or ``id/fold{k}``."""
        return self.model_id if self.fold is None else f"{self.model_id}/fold{self.fold}"


def learning_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without the :data:`RESOURCE_KEYS`: what reruns or restarts a training job."""
    return {k: v for k, v in params.items() if k not in RESOURCE_KEYS}


def _format(value: Any) -> str:
    text = format(value, "g") if isinstance(value, float) else str(value)
    safe = _SAFE.sub("", text)
    if safe != text or not safe:
        safe = f"{safe[:12]}{zlib.crc32(text.encode()):08x}"
    return safe


def set_dotted(params: dict[str, Any], key: str, value: Any) -> None:
    """Set ``params[a][b] = value`` for ``key = "a.b"``, creating the inner dicts."""
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = copy.deepcopy(value)


def model_id(varying: dict[str, Any]) -> str:
    """The id of a model from the values of the keys that vary across the grid."""
    if not varying:
        return "base"
    parts = [f"{SHORT.get(k, k.replace('.', '-'))}-{_format(varying[k])}" for k in sorted(varying)]
    return "_".join(parts)


def expand(models: dict[str, Any], n_folds: int) -> list[ModelJob]:
    """Expand ``models`` (base, grid, list) into training jobs, in a fixed order.

    A ``bands`` value that names one of ``models.band_sets`` is replaced by its list (the id
    keeps the name).

    Args:
        models: the ``models`` config section.
        n_folds: the number of folds (``splits.folds``), for ``folds: all``.

    Raises:
        ValueError: naming the key: two models with one id, an empty grid list, a list entry
            without a name, an unknown parameter or band set.
    """
    base = models.get("base") or {}
    grid = models.get("grid") or {}
    known = {f.name for f in fields(ModelOptions)}
    for where, keys in [("base", base), ("grid", grid)] + [
        (f"list[{i}]", {k: v for k, v in e.items() if k != "name"})
        for i, e in enumerate(models.get("list") or [])
    ]:
        unknown = sorted(k for k in keys if k.split(".")[0] not in known)
        if unknown:
            raise ValueError(f"models.{where}: unknown parameter(s) {', '.join(unknown)}")
    specs: list[tuple[str, dict[str, Any]]] = []
    keys = sorted(grid)
    for key in keys:
        if not isinstance(grid[key], list) or not grid[key]:
            raise ValueError(f"models.grid.{key} must be a non-empty list of values")
    if grid or not models.get("list"):
        for values in itertools.product(*(grid[k] for k in keys)):
            params = copy.deepcopy(base)
            for key, value in zip(keys, values, strict=True):
                set_dotted(params, key, value)
            specs.append((model_id(dict(zip(keys, values, strict=True))), params))
    for i, entry in enumerate(models.get("list") or []):
        entry = dict(entry)
        name = entry.pop("name", None)
        if not name or not re.fullmatch(ID_PATTERN, str(name)):
            raise ValueError(f"models.list[{i}] needs a name that is a safe file name, got {name!r}")
        params = copy.deepcopy(base)
        for key, value in entry.items():
            set_dotted(params, key, value)
        specs.append((str(name), params))
    seen: dict[str, dict[str, Any]] = {}
    for mid, params in specs:
        if mid in seen:
            raise ValueError(f"two models share the id {mid!r}; give list entries distinct names")
        seen[mid] = params
    band_sets = models.get("band_sets") or {}
    for mid, params in specs:
        if isinstance(params.get("bands"), str):
            if params["bands"] not in band_sets:
                raise ValueError(f"model {mid}: bands {params['bands']!r} is not in models.band_sets")
            chosen = band_sets[params["bands"]]
            params["bands"] = None if chosen is None else list(chosen)
    return [job for mid, params in specs for job in _fold_jobs(mid, params, n_folds)]


def _fold_jobs(mid: str, params: dict[str, Any], n_folds: int) -> Iterable[ModelJob]:
    folds = params.get("folds")
    if folds is None:
        yield ModelJob(mid, None, params)
        return
    if folds == "all":
        folds = list(range(n_folds))
    for k in folds:
        if not 0 <= int(k) < n_folds:
            raise ValueError(f"model {mid}: fold {k} does not exist (splits.folds is {n_folds})")
        yield ModelJob(mid, int(k), params)


def jobs_table(jobs: list[ModelJob]) -> list[dict[str, Any]]:
    """One row per training job: key, model id, fold and the flattened parameters."""
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"key": job.key, "model_id": job.model_id, "fold": job.fold}
        for name, value in sorted(job.params.items()):
            if isinstance(value, dict):
                row.update({f"{name}.{k}": v for k, v in sorted(value.items())})
            else:
                row[name] = value
        rows.append(row)
    return rows


def split_predictor(predictor: str) -> tuple[str, str]:
    """``models/arch-Unet/best`` -> ``("models", "arch-Unet/best")``; the same for ensembles and baselines."""
    kind, _, name = predictor.partition("/")
    return kind, name


def check_downscaling(config: dict[str, Any], jobs: Iterable[ModelJob]) -> list[int]:
    """The scale factors of a ``task: downscaling`` config's models, sorted, after checking what
    the schema cannot: each model is a downscaling network whose scale divides ``chips.size`` (a
    power of 2 for RecurrentSRCNN), and no section asks for what only segmentation has.

    Raises:
        ConfigError: naming the key (and the model).
    """
    from snakemap.core.config import ConfigError

    size = int(config.get("chips", {}).get("size", 64))
    scales = set()
    for job in jobs:
        opts = ModelOptions(**job.params)
        if opts.arch not in DOWNSCALING_ARCHS:
            raise ConfigError(
                f"model {job.model_id}: arch {opts.arch!r} is not a downscaling network "
                f"({', '.join(DOWNSCALING_ARCHS)})"
            )
        if size % opts.scale:
            raise ConfigError(
                f"chips.size {size} is not a multiple of model {job.model_id}'s scale {opts.scale}"
            )
        if opts.arch == "RecurrentSRCNN" and opts.scale & (opts.scale - 1):
            raise ConfigError(f"model {job.model_id}: RecurrentSRCNN needs a scale that is a power of 2")
        scales.add(opts.scale)
    calval, apply = config.get("calval", {}), config.get("apply", {})
    if calval.get("ensembles") or calval.get("baselines"):
        raise ConfigError(
            "calval.ensembles and calval.baselines are for segmentation: downscaling scores the "
            "interpolations of downscaling.baselines"
        )
    if apply.get("mask") or apply.get("buffer"):
        raise ConfigError(
            "apply.mask and apply.buffer are for segmentation: leave them unset for downscaling"
        )
    for predictor in apply.get("predictors", []):
        if not predictor.startswith("models/"):
            raise ConfigError(f"apply.predictors: {predictor!r}: downscaling applies models only")
    return sorted(scales)
