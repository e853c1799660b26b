"""The tasks: what each one changes in the workflow, and where its implementations are.

A task changes the model, the loss, the metrics, the baselines, how a scene is predicted and what
a bundle holds, not the stages: each :class:`Task` names the workflow's rule files that score and
show its calval sites, and its *hooks*, ``"module:attribute"`` of the functions and classes that
implement it, imported by the stage that calls them (so planning a run imports none of them, and
no stage asks a task's name). The config's ``task`` key names an entry of :data:`TASKS`.

A new task is a module of its own in :mod:`snakemap.tasks` (its networks and Lightning module),
plus one entry here; the README's layout section shows it. The hooks, by stage:

=====================  ===========================================================================
``model_options``      ``(opts: ModelOptions) -> ModelOptions``: a model's options as the task
                       reads them, or a ``ConfigError`` naming the key (training)
``lightning_module``   ``(opts, classes, bands, mean, std, ignore_index, chip_size) ->
                       LightningModule``: the network, its loss and validation metrics (training)
``trained_from``       ``(hyper_parameters, state) -> model``: a trained model from a checkpoint's
                       or a bundle's hyper-parameters and weights (bundles, ONNX export)
``trained_around``     ``(network, hyper_parameters) -> model``: the same around another network,
                       an ONNX Runtime session (standalone prediction)
``predict_raw``        ``(meta, model, image, out, sensor, auxiliary, probs_out) -> dict``: a raw
                       scene predicted with a bundle (:func:`snakemap.outputs.bundle.predict_raw`)
``onnx_graph``         ``(bundle) -> OnnxGraph``: the module and example inputs to export
``shard_runner``       ``(args, cfg, apply, bands) -> ShardRunner``: what applies the task's
                       predictor to a shard of scenes (``snakemap apply-shard``)
``after_clean``        ``(clean_dir, cfg) -> SceneStatus``: optional; more bands for a cleaned
                       scene (downscaling's auxiliary fields)
=====================  ===========================================================================
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: what a task's maps hold: class indices (with probabilities) or a continuous field
MapKind = Literal["classes", "field"]


@dataclass(frozen=True)
class Task:
    """One task: what the workflow does differently for it, and where its implementations are."""

    #: the config's ``task`` value
    name: str
    #: one line for the schema and ``--help``
    description: str
    #: the train and calval scenes have labels (a ``labels`` section and ``label_uri`` columns)
    labels_required: bool
    #: what its maps hold
    maps: MapKind
    #: the workflow's rule files (relative to ``workflow/``) that predict, score and show the
    #: calval sites; they define ``task_baselines()``, ``report_outputs()`` and ``PREVIEWS``
    rules: tuple[str, ...]
    #: how a mosaic's overview resamples the maps (``mode`` keeps classes, ``average`` fields)
    overview_resampling: str
    #: hook name -> ``"module:attribute"`` (see the module docstring)
    hooks: Mapping[str, str] = field(default_factory=dict)
    #: the training job's resolved config (and so its resume fingerprint) names the task; the
    #: first task's jobs never did, and keep their fingerprints
    recorded: bool = True

    def hook(self, name: str) -> Any:
        """The implementation of hook ``name``, imported now.

        Raises:
            KeyError: naming the task and the hook, for a hook the task does not have.
        """
        if name not in self.hooks:
            raise KeyError(f"task {self.name} has no {name!r} hook (it has {', '.join(sorted(self.hooks))})")
        module, _, attribute = self.hooks[name].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def has(self, name: str) -> bool:
        """Whether the task has hook ``name`` (the optional ones)."""
        return name in self.hooks


SEGMENTATION = Task(
    name="segmentation",
    description="class maps from labelled scenes",
    labels_required=True,
    maps="classes",
    rules=("rules/task_segmentation.smk", "rules/calval.smk", "rules/report.smk"),
    overview_resampling="mode",
    hooks={
        "model_options": "snakemap.tasks.segmentation:model_options",
        "lightning_module": "snakemap.tasks.segmentation:lightning_module",
        "trained_from": "snakemap.tasks.networks:trained_from",
        "trained_around": "snakemap.tasks.networks:trained_around",
        "predict_raw": "snakemap.outputs.bundle:predict_classes",
        "onnx_graph": "snakemap.outputs.export:class_graph",
        "shard_runner": "snakemap.cli.apply:class_runner",
    },
    recorded=False,
)

DOWNSCALING = Task(
    name="downscaling",
    description="a gridded field (band 1 of each scene) at `scale` times the resolution, learnt by "
    "degrading the scenes themselves",
    labels_required=False,
    maps="field",
    rules=("rules/task_downscaling.smk", "rules/downscaling.smk"),
    overview_resampling="average",
    hooks={
        "model_options": "snakemap.tasks.downscaling:model_options",
        "lightning_module": "snakemap.tasks.downscaling:lightning_module",
        "trained_from": "snakemap.tasks.downscaling:downscaler_from",
        "trained_around": "snakemap.tasks.downscaling:downscaler_around",
        "predict_raw": "snakemap.outputs.bundle:predict_field",
        "onnx_graph": "snakemap.outputs.export:field_graph",
        "shard_runner": "snakemap.cli.apply:field_runner",
        "after_clean": "snakemap.inference.fields:auxiliary_after_clean",
    },
)

#: every task by name; the first is the config's default
TASKS: dict[str, Task] = {task.name: task for task in (SEGMENTATION, DOWNSCALING)}
DEFAULT_TASK = next(iter(TASKS))


def task_named(name: str | None) -> Task:
    """The task the config's ``task`` names (None: the default).

    Raises:
        ValueError: naming the tasks there are.
    """
    key = DEFAULT_TASK if name is None else name
    if key not in TASKS:
        raise ValueError(f"{key!r} is no task; known: {', '.join(TASKS)}")
    return TASKS[key]
