"""The config, typed: one loader for the workflow and for every ``snakemap`` command.

:class:`Config` is the whole file (``config/config.yaml`` or an example), made of the section
classes of :mod:`snakemap.core.sections` and :mod:`snakemap.core.model_sections`, which are the
only place where a key, a default or a constraint is written. The Snakefile replaces its
``config`` with :func:`resolve`'s result (so ``--config key=value`` overrides go through the same
checks), steps get the sections they need as JSON and :func:`build` them, and a command run by
hand with ``--config`` loads the file through :func:`load_sections`. ``snakemap config-schema``
prints the JSON schema generated from these classes (``workflow/schemas/config.schema.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from snakemap.core.apply_sections import ApplyOptions, PredictOptions, ShiftOptions
from snakemap.core.calval_sections import CalvalOptions, rule_baseline
from snakemap.core.config_messages import error_lines, unwrap
from snakemap.core.label_sections import LabelOptions
from snakemap.core.model_sections import ID_PATTERN, DownscalingOptions, ModelsSection
from snakemap.core.output_sections import AreaOptions, VectorizeOptions
from snakemap.core.registry import DEFAULT_TASK, TASKS, task_named
from snakemap.core.section_base import Section
from snakemap.core.sections import (
    AcquireOptions,
    BandOptions,
    CatalogOptions,
    ChipOptions,
    CleanOptions,
    DemoOptions,
    ResourceOptions,
    SensorOptions,
    SplitOptions,
)

Id = Annotated[str, Field(pattern=f"^{ID_PATTERN}$")]
#: a remap key: a raster's value, or a vector label's class value
LabelValue = int | Annotated[str, Field(min_length=1)]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the section and the key."""


class Config(Section):
    """The workflow's config file. ``manifest`` and ``bands`` are required, and ``labels`` too for
    a task that learns from labels (not ``downscaling``, which learns from the fields themselves)."""

    OMIT_UNSET: ClassVar[frozenset[str]] = frozenset({"demo", "labels", "models"})

    #: the task (:data:`snakemap.core.registry.TASKS`): segmentation or downscaling
    task: str = Field(
        DEFAULT_TASK,
        description="; ".join(f"{t.name}: {t.description}" for t in TASKS.values()),
    )
    downscaling: DownscalingOptions = Field(
        default_factory=DownscalingOptions, description="task: downscaling only"
    )
    #: apply shards try their corrupt scenes again
    retry_corrupt: bool = Field(
        False,
        description="apply shards try their corrupt scenes again: snakemake --forcerun apply_shard "
        "--config retry_corrupt=true",
    )
    #: path of the scene manifest (CSV or Parquet): relative to the config file, else to the
    #: folder snakemake runs in (see :mod:`snakemap.core.paths`)
    manifest: str = Field(
        description="path of the scene manifest (CSV or Parquet): relative to the config file's folder, "
        "else to the folder snakemake runs in"
    )
    #: the folder the run writes into (resources/, results/, logs/), relative to the folder
    #: snakemake runs in; None: that folder itself. ``--directory`` wins over it.
    workdir: str | None = Field(
        None,
        description="the folder the run writes into (resources/, results/, logs/, benchmarks/), "
        "relative to the folder snakemake runs in (null: that folder); examples set their own",
    )
    catalog: CatalogOptions | None = Field(
        None,
        description="examples only: a rule writes these scenes under resources/catalog/ as STAC Items of "
        "per-band COG assets with polygon labels",
    )
    demo: DemoOptions | None = Field(
        None,
        description="present only in the embedded demo: a rule then writes the synthetic scenes under "
        "resources/demo/ that the demo manifest points at",
    )
    bands: BandOptions
    sensors: dict[Id, SensorOptions] = Field(
        default_factory=dict,
        description="how each sensor's files are stored, for manifest rows whose `sensor` column names "
        "it (rows without one use bands.names): every scene then cleans to bands.select (by name) plus "
        "bands.indices, in reflectance",
    )
    acquire: AcquireOptions = Field(default_factory=AcquireOptions)
    clean: CleanOptions = Field(default_factory=CleanOptions)
    labels: LabelOptions | None = None
    label_schemes: dict[Id, dict[LabelValue, str]] = Field(
        default_factory=dict,
        description="remap tables like labels.remap, for manifest rows whose `label_scheme` column names "
        "one (rows without one use labels.remap); classes and ignore_index are the labels section's",
    )
    chips: ChipOptions = Field(default_factory=ChipOptions)
    splits: SplitOptions = Field(default_factory=SplitOptions)
    resources: ResourceOptions = Field(
        default_factory=ResourceOptions, description="what the heavier jobs ask of the executor"
    )
    models: ModelsSection | None = Field(
        None, description="a base model, a grid of values expanded over it, and/or an explicit list"
    )
    predict: PredictOptions = Field(
        default_factory=PredictOptions, description="how scenes are predicted (calval and application)"
    )
    calval: CalvalOptions = Field(
        default_factory=CalvalOptions,
        description="scoring models, ensembles and baselines at the calval sites",
    )
    shift: ShiftOptions = Field(
        default_factory=ShiftOptions, description="when an applied scene counts as unlike the training data"
    )
    apply: ApplyOptions = Field(
        default_factory=ApplyOptions,
        description="applying predictors to the manifest's apply scenes, in shards",
    )
    vectorize: VectorizeOptions | None = Field(
        None, description="each applied scene's class map as polygons, merged per predictor"
    )
    areas: AreaOptions | None = Field(
        None, description="error-adjusted areas with 95% confidence intervals from a reference sample"
    )

    @field_validator("task")
    @classmethod
    def _task(cls, name: str) -> str:
        task_named(name)
        return name

    @model_validator(mode="after")
    def _labels_if_the_task_needs_them(self) -> Config:
        if task_named(self.task).labels_required and self.labels is None:
            raise ValueError(f"labels: required (the classes and the remap table) for task {self.task}")
        if self.label_schemes and self.labels is None:
            raise ValueError("label_schemes: needs the labels section (its classes)")
        for name, remap in self.label_schemes.items():
            assert self.labels is not None
            self.labels.with_scheme(name, remap)  # a ValueError names label_schemes.<name>
        return self

    @model_validator(mode="after")
    def _onnxruntime_for_class_maps(self) -> Config:
        if self.predict.backend != "onnxruntime":
            return self
        if self.task != DEFAULT_TASK:
            raise ValueError(
                f"predict.backend: onnxruntime runs the networks of class maps (task {DEFAULT_TASK}); "
                f"task {self.task} predicts with torch: set predict.backend: torch"
            )
        for key, gpus in (("calval.gpus", self.calval.gpus), ("apply.gpus", self.apply.gpus)):
            if gpus:
                raise ValueError(
                    f"predict.backend: onnxruntime runs on the CPU, and {key} is {gpus}: set {key}: 0, "
                    "or predict.backend: torch for the GPU"
                )
        return self

    @model_validator(mode="after")
    def _ensembles_name_rule_baselines(self) -> Config:
        for name, ensemble in self.calval.ensembles.items():
            rules = [m for m in ensemble.members if rule_baseline(m) is not None]
            for member in rules:
                baseline = self.calval.baselines.get(str(rule_baseline(member)))
                if baseline is None or baseline.rule_list() is None:
                    raise ValueError(
                        f"calval.ensembles.{name}.members: {member} is no rule baseline of calval.baselines"
                    )
            if len(rules) == len(ensemble.members):
                raise ValueError(
                    f"calval.ensembles.{name}.members: an ensemble needs a model besides its rules"
                )
            if rules and ensemble.threshold == "tune":
                raise ValueError(
                    f"calval.ensembles.{name}.threshold: tune is for ensembles of models alone; give a "
                    "number or null"
                )
            if ensemble.combine == "per_class" and ensemble.threshold is not None:
                raise ValueError(
                    f"calval.ensembles.{name}.threshold: combine: per_class maps each class by its winner; "
                    "leave threshold out"
                )
            if ensemble.weights == "tune" and ensemble.fallback is not None:
                raise ValueError(
                    f"calval.ensembles.{name}.fallback: not with weights: tune, which may weigh the "
                    "fallback members 0 and leave them out of the predictor; give the weights"
                )
            if ensemble.weights == "tune" and (ensemble.combine != "mean" or ensemble.threshold is not None):
                raise ValueError(
                    f"calval.ensembles.{name}.weights: tune is for combine: mean without a threshold (the "
                    "weights are chosen for the most probable class; a per-class ensemble uses none)"
                )
            if ensemble.weights == "tune" and len({m.split("/fold")[0] for m in ensemble.members}) < 2:
                raise ValueError(
                    f"calval.ensembles.{name}.weights: tune weighs models and rules against each other; "
                    "these members are the folds of one model: add another model or a rule"
                )
            if ensemble.precedence is not None:
                if ensemble.combine != "per_class":
                    raise ValueError(f"calval.ensembles.{name}.precedence: only for combine: per_class")
                classes = self.labels.classes if self.labels is not None else []
                if sorted(ensemble.precedence) != sorted(classes):
                    raise ValueError(
                        f"calval.ensembles.{name}.precedence: list every class of labels.classes once "
                        f"({', '.join(classes)})"
                    )
        return self

    @model_validator(mode="after")
    def _polygons_of_classes(self) -> Config:
        if self.vectorize is None:
            return self
        if task_named(self.task).maps != "classes" or self.labels is None:
            raise ValueError("vectorize: makes polygons of classes; this task maps no classes")
        unknown = sorted(set(self.vectorize.classes or []) - set(self.labels.classes))
        if unknown:
            raise ValueError(
                f"vectorize.classes: {unknown} are not in labels.classes ({', '.join(self.labels.classes)})"
            )
        return self

    @model_validator(mode="after")
    def _areas_of_applied_class_maps(self) -> Config:
        if self.areas is None:
            return self
        if task_named(self.task).maps != "classes" or self.labels is None:
            raise ValueError("areas: estimates the areas of classes; this task maps no classes")
        if not self.apply.predictors:
            raise ValueError("areas: estimates the areas of applied maps, and apply.predictors is empty")
        drawn = [p for p, path in self.areas.reference.items() if path.endswith(f"{p}/sample.gpkg")]
        if drawn:
            raise ValueError(
                f"areas.reference: {drawn} name the drawn sample itself, which a rerun replaces: "
                "label a copy (results/maps/.../sample.gpkg -> reference/...gpkg) and name that"
            )
        unknown = sorted(set(self.areas.reference) - set(self.apply.predictors))
        if unknown:
            raise ValueError(
                f"areas.reference: {unknown} are not in apply.predictors ({', '.join(self.apply.predictors)})"
            )
        try:
            self.areas.sample.expected(self.labels.classes)
        except ValueError as exc:
            raise ValueError(f"areas.sample.{exc}") from None
        return self

    @model_validator(mode="after")
    def _downscaling_options_only_downscale(self) -> Config:
        if task_named(self.task).maps != "classes" or self.models is None:
            return self
        models = self.models
        entries = [("models.base", models.base.model_dump(exclude_unset=True))]
        entries += [
            (f"models.list[{i}]", e.model_dump(exclude_unset=True)) for i, e in enumerate(models.list_)
        ]
        for where, entry in entries:
            if entry.get("normalize") == "patch" or entry.get("consistency"):
                raise ValueError(f"{where}: normalize: patch and consistency are for task: downscaling")
        if "patch" in models.grid.get("normalize", []) or True in models.grid.get("consistency", []):
            raise ValueError("models.grid: normalize: patch and consistency are for task: downscaling")
        return self

    @model_validator(mode="after")
    def _baselines_map_to_the_labels_classes(self) -> Config:
        classes = self.labels.classes if self.labels is not None else []
        for name, baseline in self.calval.baselines.items():
            unknown = sorted(baseline.class_names() - set(classes))
            if unknown:
                raise ValueError(
                    f"calval.baselines.{name}: {', '.join(map(repr, unknown))} not in labels.classes "
                    f"({', '.join(classes) or 'none'})"
                )
        return self


def build(section: str, values: Mapping[str, Any] | None) -> Any:
    """The typed options of ``section`` from its dict; a :class:`ConfigError` names the key."""
    try:
        return SECTIONS[section].model_validate(dict(values or {}))
    except ValidationError as exc:
        raise ConfigError(message(exc, (section,))) from None


def check_baseline_bands(calval: Mapping[str, Any], cleaned: list[str] | None) -> None:
    """Every band and index that the rule baselines of a ``calval`` section read is among the
    calval sites' ``cleaned`` bands (None: only the files know them, nothing is checked).

    Raises:
        ConfigError: naming the baseline and the bands it lacks.
    """
    if cleaned is None:
        return
    for name, baseline in build("calval", calval).baselines.items():
        missing = sorted(baseline.band_names() - set(cleaned))
        if missing:
            raise ConfigError(
                f"calval.baselines.{name}: reads {', '.join(missing)}, not among the cleaned bands "
                f"{cleaned} (bands.select, bands.indices)"
            )


def load_config(data: Mapping[str, Any]) -> Config:
    """The typed config of a config dict (a YAML file's, with ``--config`` overrides merged in).

    Raises:
        ConfigError: naming every bad key, with its section, before any job runs.
    """
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(message(exc)) from None


def resolve(data: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the workflow uses it: checked, defaults filled in, values as given."""
    return load_config(data).resolved()


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and :func:`resolve` a config YAML file."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return resolve(data)


def load_sections(
    config_file: str | os.PathLike[str] | None = None, options_json: str | None = None
) -> dict[str, Any]:
    """The config file's sections (checked, defaults filled in), overlaid with the JSON sections
    a rule passes (each checked when a step builds it)."""
    data: dict[str, Any] = read_config(config_file) if config_file else {}
    if options_json:
        data.update(json.loads(options_json))
    return data


def config_schema() -> dict[str, Any]:
    """The JSON schema of the config, generated from :class:`Config` (for editors and docs)."""
    schema = Config.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def message(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """One line per bad key of a pydantic error in the config, each naming its dotted key (see
    :func:`snakemap.core.config_messages.error_lines`)."""
    return error_lines(exc, Config, prefix)


#: config section -> its options class (``X`` of a field ``X`` or ``X | None``), for :func:`build`
SECTIONS: dict[str, type[Section]] = {
    name: section
    for name, info in Config.model_fields.items()
    if isinstance(section := unwrap(info.annotation), type) and issubclass(section, Section)
}
