"""The predictor of the applied maps as their STAC metadata names it: its id, its classes and
its model.

- :func:`collection_id`: the predictor as an id, e.g. ``models-arch-Unet-best``: the id of its
  collection (:mod:`snakemap.outputs.stac_collection`) and the ``mlm:name`` of its model.
- :func:`classifications`: the classes of a segmentation map as ``classification:classes`` (the
  map asset's, with the nodata value 255) and as the model's output classes.
- :class:`ModelInfo` and :func:`add_model`: the model with the machine-learning-model (MLM)
  extension: ``mlm:*`` fields in an item's properties, the checkpoints (and the ONNX bundle) as
  assets (``checkpoint``, ``bundle``) with the ``mlm:model`` role, and ``via`` links to them
  (``via``, not ``derived_from``: these are files, not STAC documents); :func:`model_files` gives
  their hrefs, relative to the item or the collection that links them.

This module writes no file: :mod:`snakemap.outputs.stac` writes the items
(``results/maps/{predictor}/scenes/{scene}.stac.json``) and
:mod:`snakemap.outputs.stac_collection` the collection (``results/maps/{predictor}/collection.json``)
that carry these fields.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.classification import Classification
from pystac.extensions.mlm import (
    AssetGeneralMLMExtension,
    Hyperparameters,
    InputStructure,
    MLMExtension,
    ModelInput,
    ModelOutput,
    ResultStructure,
    TaskType,
)
from pystac.extensions.raster import DataType, RasterExtension

from snakemap.core.io import NODATA_CLASS
from snakemap.core.status import SceneStatus

_CLASS_NAME_RE = re.compile(r"[^0-9A-Za-z_-]+")
_ID_RE = re.compile(r"[^0-9A-Za-z_.-]+")
#: media types and ``mlm:artifact_type`` of model files by suffix (MLM's recommendations)
_MEDIA_TYPES = {
    ".ckpt": "application/octet-stream; framework=pytorch",
    ".pt": "application/octet-stream; framework=pytorch",
    ".pth": "application/octet-stream; framework=pytorch",
    ".onnx": "application/octet-stream; framework=onnx",
    ".zip": "application/zip",
}
_ARTIFACT_TYPES = {
    ".ckpt": "torch.save",
    ".pt": "torch.save",
    ".pth": "torch.save",
    ".onnx": "onnx",
    ".zip": "snakemap bundle",
}


@dataclass
class ModelInfo:
    """The model that made the maps, as the MLM extension names it.

    ``checkpoints`` and ``bundle`` are paths (relative to the working directory, or absolute) or
    URLs; local paths become hrefs relative to each item.
    """

    #: the predictor, e.g. ``models/arch-Unet/best`` (made a valid ``mlm:name``)
    name: str
    #: the network's architecture, e.g. ``Unet`` or ``EDSR``
    architecture: str
    #: the checkpoint(s): one for a model, one per member for an ensemble
    checkpoints: list[str] = field(default_factory=list)
    #: the exported bundle (ONNX, or a booster's zip bundle), if any
    bundle: str | None = None
    framework: str = "PyTorch"
    framework_version: str | None = None
    #: the model's input bands, in order; None: the sentinel's cleaned bands
    bands: list[str] | None = None
    #: anything worth recording about training (names of letters, digits, ``_.-``)
    hyperparameters: dict[str, Any] | None = None


def collection_id(predictor: str) -> str:
    """A predictor as an id: ``models/arch-Unet/best`` -> ``models-arch-Unet-best``."""
    return _ID_RE.sub("-", predictor).strip("-._") or "maps"


def _class_table(classes: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    if classes is None:
        return {}
    return dict(classes) if isinstance(classes, Mapping) else dict(enumerate(classes))


def classifications(
    classes: Sequence[str] | Mapping[int, str] | None, nodata: bool = True
) -> list[Classification]:
    """Classification objects: ``name`` machine-readable (v2), ``description``/``title`` as given."""
    table = _class_table(classes)
    result = [
        Classification.create(
            value=int(value),
            name=_CLASS_NAME_RE.sub("_", name).strip("_") or f"class_{value}",
            title=name,
            description=name,
        )
        for value, name in sorted(table.items())
    ]
    if nodata and NODATA_CLASS not in table:
        result.append(
            Classification.create(value=NODATA_CLASS, name="nodata", description="no data", nodata=True)
        )
    return result


def model_files(info: ModelInfo, base: Path) -> list[tuple[str, str, str]]:
    """(asset key, title, href relative to ``base``) of the model's checkpoints and bundle."""
    files = [
        ("checkpoint" if len(info.checkpoints) == 1 else f"checkpoint-{i}", f"checkpoint {c}", c)
        for i, c in enumerate(info.checkpoints, start=1)
    ]
    if info.bundle:
        files.append(("bundle", f"bundle {info.bundle}", info.bundle))
    return [(key, title, _href(path, base)) for key, title, path in files]


def _href(path: str, base: Path) -> str:
    """A relative local path (from the working directory) relative to ``base``; an absolute one
    or a URL as it is."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) or Path(path).is_absolute():
        return path
    return Path(os.path.relpath(Path(path).absolute(), base.absolute())).as_posix()


def media_type(href: str) -> str:
    """The media type of a model file, by its suffix."""
    return _MEDIA_TYPES.get(Path(href).suffix.lower(), "application/octet-stream")


def add_model(
    item: pystac.Item,
    status: SceneStatus,
    info: ModelInfo,
    classes: Sequence[str] | Mapping[int, str] | None,
    downscaling: bool,
    scale: int | None,
    base: Path,
) -> None:
    """The MLM fields in the item's properties, the model files as ``mlm:model`` assets (the MLM
    schema asks for at least one) and ``via`` links to them, relative to ``base`` (the item's
    folder).

    ``classes``, ``downscaling`` and ``scale`` are the map's (see
    :func:`snakemap.outputs.stac.scene_item`); ``status`` is its scene's sentinel."""
    bands = list(info.bands if info.bands is not None else status.bands)
    table = _class_table(classes)
    task = TaskType.SUPER_RESOLUTION if downscaling else TaskType.SEMANTIC_SEGMENTATION
    model_input = ModelInput.create(
        name="bands",
        bands=bands,
        input=InputStructure.create(
            shape=[-1, len(bands) or -1, -1, -1],
            dim_order=["batch", "channel", "height", "width"],
            data_type=DataType.FLOAT32,
        ),
        description="the scene's cleaned bands (snakemap clean), normalised as in training",
    )
    if downscaling:
        output = ModelOutput.create(
            name="field",
            tasks=[task],
            result=ResultStructure.create(
                shape=[-1, 1, -1, -1],
                dim_order=["batch", "channel", "height", "width"],
                data_type=DataType.FLOAT32,
            ),
            description=f"the field on a grid {scale or '?'} times finer",
        )
    else:
        output = ModelOutput.create(
            name="classes",
            tasks=[task],
            result=ResultStructure.create(
                shape=[-1, len(table) or -1, -1, -1],
                dim_order=["batch", "class", "height", "width"],
                data_type=DataType.FLOAT32,
            ),
            description="class probabilities; the map holds the most probable class",
            classes=classifications(classes, nodata=False) or None,
        )
    MLMExtension.ext(item, add_if_missing=True).apply(
        name=collection_id(info.name),
        architecture=info.architecture,
        tasks=[task],
        input=[model_input],
        output=[output],
        framework=info.framework,
        framework_version=info.framework_version,
        hyperparameters=Hyperparameters.create(**info.hyperparameters) if info.hyperparameters else None,
    )
    # pystac writes these as null, which claims "no accelerator" and "trained from scratch"
    for unknown in ("mlm:accelerator", "mlm:pretrained_source"):
        if item.properties.get(unknown, "") is None:
            del item.properties[unknown]
    for key, title, href in model_files(info, base):
        suffix = Path(href).suffix.lower()
        role = "mlm:compiled" if key == "bundle" else "mlm:checkpoint"
        asset = pystac.Asset(href, title=title, media_type=media_type(href), roles=["mlm:model", role])
        item.add_asset(key, asset)
        artifact = _ARTIFACT_TYPES.get(suffix, suffix.lstrip(".") or "unknown")
        AssetGeneralMLMExtension.ext(asset, add_if_missing=True).apply(artifact_type=artifact)
        # the MLM schema wants the input bands described where the model is (raster:bands names)
        asset.extra_fields["raster:bands"] = [{"name": b} for b in bands]
        RasterExtension.ext(asset, add_if_missing=True)
        item.add_link(pystac.Link("via", href, media_type(href), title=title))
