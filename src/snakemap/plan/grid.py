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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from snakemap.core.apply_sections import ApplyOptions
from snakemap.core.calval_sections import RULE_MEMBER
from snakemap.core.config import ConfigError, message
from snakemap.core.model_sections import ID_PATTERN, MODEL_KEY_PATTERN, ModelOptions, field_model_errors

#: short names for common keys in ids
SHORT = {"batch_size": "bs", "encoder_name": "enc", "encoder_weights": "weights", "weight_decay": "wd"}
_SAFE = re.compile(r"[^A-Za-z0-9.+-]")


#: every predictor scored at calval: models' checkpoints, ensembles and baselines
PREDICTOR_PATTERN = rf"(models/{MODEL_KEY_PATTERN}/(best|last)|ensembles/{ID_PATTERN}|baselines/{ID_PATTERN})"
#: model parameters that size a job (its resources) and never change what it learns: changing
#: them neither reruns a finished job nor restarts a running one
RESOURCE_KEYS = ("gpus", "cpus", "mem_mb", "runtime")


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
    known = set(ModelOptions.model_fields)
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
    for mid, params in specs:  # every model's values checked now, not when its job starts
        try:
            ModelOptions.model_validate(params)
        except ValidationError as exc:
            raise ConfigError(f"model {mid}: {message(exc)}") from None
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
    no one section can: each model is a downscaling network whose scale divides ``chips.size`` (a
    power of 2 for RecurrentSRCNN), and no section asks for what only segmentation has.

    Raises:
        ConfigError: naming the key (and the model).
    """
    size = int(config.get("chips", {}).get("size", 64))
    scales = set()
    for job in jobs:
        opts = ModelOptions(**job.params)
        errors = field_model_errors(opts, size)
        if errors:
            raise ConfigError(f"model {job.model_id}: {errors[0]}")
        scales.add(opts.scale)
    calval, apply = config.get("calval", {}), config.get("apply", {})
    if calval.get("ensembles") or calval.get("baselines"):
        raise ConfigError(
            "calval.ensembles and calval.baselines are for segmentation: downscaling scores the "
            "interpolations of downscaling.baselines"
        )
    problem = ApplyOptions.model_validate(apply).class_map_only()
    if problem:
        raise ConfigError(problem)
    for predictor in apply.get("predictors", []):
        if not predictor.startswith("models/"):
            raise ConfigError(f"apply.predictors: {predictor!r}: downscaling applies models only")
    return sorted(scales)


def check_references(config: Mapping[str, Any], model_keys: Iterable[str]) -> None:
    """Every model an ensemble or ``apply.predictors`` names is one the grid makes (``model_keys``:
    ``{id}`` and ``{id}/fold{k}``), and every applied ensemble is in ``calval.ensembles``.

    Raises:
        ConfigError: naming the key and listing the valid names.
    """
    keys = set(model_keys)
    listing = ", ".join(sorted(keys)) or "none: the config has no models: section"
    ensembles = (config.get("calval") or {}).get("ensembles") or {}
    for name, ensemble in ensembles.items():
        for member in ensemble.get("members") or {}:
            if not member.startswith(RULE_MEMBER) and member not in keys:
                raise ConfigError(
                    f"calval.ensembles.{name}.members: {member!r} is no model of the grid (models: {listing})"
                )
    for predictor in (config.get("apply") or {}).get("predictors") or []:
        kind, name = split_predictor(predictor)
        if kind == "models" and name.rsplit("/", 1)[0] not in keys:
            raise ConfigError(
                f"apply.predictors: {predictor} names model {name.rsplit('/', 1)[0]!r}, which the grid "
                f"does not make (models: {listing})"
            )
        if kind == "ensembles" and name not in ensembles:
            known = ", ".join(ensembles) or "none"
            raise ConfigError(
                f"apply.predictors: {predictor}: no ensemble {name!r} in calval.ensembles ({known})"
            )
