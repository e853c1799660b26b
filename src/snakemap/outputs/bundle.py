"""Model bundles: one zip file with what a trained model needs to predict anywhere, and its ONNX
export.

``results/bundles/{model}.zip`` holds two members:

- ``bundle.json``: ``format_version`` (:data:`FORMAT_VERSION`), ``snakemap_version``, ``task``
  (``segmentation`` or ``downscaling``), ``model`` (the checkpoint's hyperparameters: architecture,
  band names in input order, their normalisation (``mean``, ``std``, ``normalize``), the classes,
  or the scale factor and auxiliary fields), ``config`` (the job's resolved ``config.yaml``) and
  ``sections``: the ``bands``, ``clean``, ``sensors``, ``labels``, ``predict`` and ``downscaling``
  config sections, which clean a raw scene into the model's input bands and predict it as the
  workflow's calval step does.
- ``weights.pt``: the network's state dict (``torch.save``; read back with ``weights_only=True``;
  empty for a booster).
- ``booster.txt``: a booster's (``family: lightgbm``) LightGBM text model, only there; in memory
  it is ``meta["model"]["booster"]``, as in a checkpoint's hyper-parameters.
- ``model.onnx``: with ``predict.backend: onnxruntime``, the network's ONNX export that the
  workflow predicted with (its int8 quantization with ``predict.quantize: int8``), which
  ``snakemap predict --bundle`` then runs in ONNX Runtime as well.

A bundle is read without extracting anything to disk: a member whose path is absolute or
escapes the archive's folder, a missing or unexpected member, a truncated archive or a format
version newer than this snakemap reads is refused with a :class:`BundleError`.

``results/bundles/{model}.onnx``: the network alone (normalised input to logits, or LR field and
auxiliary fields to the downscaled field), batch and window size dynamic, with ``bundle.json``
in the model's metadata (key ``snakemap``), so a runtime without torch can read the band names,
statistics and classes.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from snakemap import __version__
from snakemap.core.io import atomic_path
from snakemap.core.registry import DEFAULT_TASK, task_named

#: the newest bundle format this snakemap reads; it writes 1, or 2 for a bundle with
#: ``model.onnx`` (which a snakemap that reads 1 alone refuses: "upgrade snakemap")
FORMAT_VERSION = 2
MEMBERS = ("bundle.json", "weights.pt")
#: members only some bundles have
OPTIONAL_MEMBERS = ("booster.txt", "model.onnx")
#: the config sections a bundle carries
SECTIONS = ("bands", "clean", "sensors", "labels", "predict", "downscaling")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and what is wrong."""


@dataclass
class Bundle:
    """A read bundle: its ``bundle.json`` and the network's state dict."""

    meta: dict[str, Any]
    state: dict[str, torch.Tensor]
    #: ``model.onnx``'s bytes where the bundle holds one (``predict.backend: onnxruntime``)
    onnx: bytes | None = None

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def hyper_parameters(self) -> dict[str, Any]:
        hp: dict[str, Any] = self.meta["model"]
        return hp

    def section(self, name: str) -> dict[str, Any]:
        """A bundled config section (empty when the workflow had none)."""
        found: dict[str, Any] = self.meta["sections"].get(name) or {}
        return found


def write_bundle(
    checkpoint: str | os.PathLike[str],
    resolved: dict[str, Any],
    sections: dict[str, Any],
    out: str | os.PathLike[str],
    task: str = DEFAULT_TASK,
    onnx: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a bundle of a checkpoint (see the module docstring) atomically.

    Args:
        checkpoint: a training checkpoint, read with ``weights_only=True``.
        resolved: the job's resolved config (its ``config.yaml``).
        sections: the workflow's config sections; those in :data:`SECTIONS` are kept.
        onnx: the checkpoint's ONNX export (or its int8 quantization) to carry as ``model.onnx``.
    """
    bundle, booster = checkpoint_bundle(checkpoint, task)
    meta = {
        **bundle.meta,
        "config": resolved,
        "sections": {k: v for k, v in sections.items() if k in SECTIONS},
        "format_version": 1 if onnx is None else 2,
    }
    weights = io.BytesIO()
    torch.save(bundle.state, weights)
    with atomic_path(out, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bundle.json", json.dumps(meta, indent=1, sort_keys=True, default=str))
        zf.writestr("weights.pt", weights.getvalue())
        if booster is not None:
            zf.writestr("booster.txt", str(booster))
        if onnx is not None:
            zf.write(onnx, "model.onnx")
    return Path(out)


def checkpoint_bundle(
    checkpoint: str | os.PathLike[str], task: str = DEFAULT_TASK
) -> tuple[Bundle, str | None]:
    """A training checkpoint (read with ``weights_only=True``) as a bundle without config
    sections (what an ONNX export of the checkpoint needs), and a booster's text model (None for a
    network)."""
    from snakemap.tasks.networks import read_checkpoint

    model, state = read_checkpoint(checkpoint)
    booster = model.pop("booster", None)
    meta = {
        "format_version": 1,  # 2 where write_bundle adds model.onnx
        "snakemap_version": __version__,
        "task": task,
        "model": model,
        "config": {},
        "sections": {},
    }
    return Bundle(meta, state), None if booster is None else str(booster)


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts and not name.startswith("/")


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and check a bundle, in memory.

    Raises:
        BundleError: naming ``path``: not a zip or truncated, a member path that is absolute or
            escapes the archive, a missing or unexpected member, a newer format version, or
            weights that do not load with ``weights_only=True``.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            unsafe = [n for n in names if not _safe_name(n)]
            if unsafe:
                raise BundleError(f"bundle {path}: member path(s) {unsafe} escape the bundle's folder")
            missing = [m for m in MEMBERS if m not in names]
            if missing:
                raise BundleError(f"bundle {path}: missing member(s) {missing}")
            extra = sorted(set(names) - set(MEMBERS) - set(OPTIONAL_MEMBERS))
            if extra:
                raise BundleError(f"bundle {path}: unexpected member(s) {extra}")
            meta = json.loads(zf.read("bundle.json"))
            version = meta.get("format_version") if isinstance(meta, dict) else None
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise BundleError(
                    f"bundle {path}: format version {version!r} is not one this snakemap "
                    f"{__version__} reads (up to {FORMAT_VERSION}): upgrade snakemap"
                )
            state = torch.load(io.BytesIO(zf.read("weights.pt")), map_location="cpu", weights_only=True)
            booster = meta.get("model", {}).get("family") == "lightgbm"
            if booster != ("booster.txt" in names):
                raise BundleError(
                    f"bundle {path}: "
                    + ("a lightgbm model without booster.txt" if booster else "booster.txt beside a network")
                )
            if booster:
                meta["model"]["booster"] = zf.read("booster.txt").decode()
            onnx = zf.read("model.onnx") if "model.onnx" in names else None
    except BundleError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, RuntimeError) as exc:
        raise BundleError(f"bundle {path}: unreadable ({type(exc).__name__}: {exc})") from exc
    return Bundle(meta, state, onnx)


def bundled_model(
    meta: dict[str, Any], state: dict[str, torch.Tensor] | None = None, network: Any = None
) -> Any:
    """The model :func:`predict_raw` runs: built with torch from a bundle's ``state`` dict, or
    around ``network``, an ONNX session (:class:`snakemap.outputs.export.OnnxNetwork`) of the same model.

    Returns:
        A :class:`snakemap.tasks.networks.TrainedModel` (segmentation) or a
        :class:`snakemap.tasks.downscaling.TrainedDownscaler` (downscaling).
    """
    task = task_named(meta["task"])
    if network is None:
        return task.hook("trained_from")(meta["model"], state or {})
    return task.hook("trained_around")(network, meta["model"])


def predict_raw(
    meta: dict[str, Any],
    model: Any,
    image: str | os.PathLike[str],
    out: str | os.PathLike[str],
    sensor: str = "",
    auxiliary: dict[str, str] | None = None,
    probs_out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Predict a raw scene of any size with a bundled model, cleaning it with the bundled options.

    Args:
        meta: the bundle's ``bundle.json``.
        model: segmentation: a :class:`snakemap.tasks.networks.TrainedModel` (or one whose ``network`` is
            an ONNX session, :class:`snakemap.outputs.export.OnnxNetwork`); downscaling: a
            :class:`snakemap.tasks.downscaling.TrainedDownscaler` (its ``tta`` set from the bundled
            ``predict.tta``).
        sensor: an entry of the bundled ``sensors`` table the scene comes from ("": ``bands.names``).
        auxiliary: downscaling: name -> raster of each auxiliary field the model takes.

    Raises:
        BundleError: a sensor or auxiliary field the bundle does not know or lacks.
        SceneError: a scene that is empty or corrupt after cleaning (the reason says why).
    """
    predict = task_named(meta["task"]).hook("predict_raw")
    result: dict[str, Any] = predict(meta, model, image, out, sensor, auxiliary, probs_out)
    return result


def predict_classes(
    meta: dict[str, Any],
    model: Any,
    image: str | os.PathLike[str],
    out: str | os.PathLike[str],
    sensor: str = "",
    auxiliary: dict[str, str] | None = None,
    probs_out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Segmentation's :func:`predict_raw`: the scene cleaned with the bundled options, then
    predicted in windows into a class map (and probabilities)."""
    from snakemap.core.apply_sections import PredictOptions
    from snakemap.core.palette import class_colors
    from snakemap.core.status import SceneError
    from snakemap.data.clean import judge, read_clean
    from snakemap.inference.predict import predict_scene
    from snakemap.inference.predictor import Member, Predictor
    from snakemap.inference.readers import ArrayReader

    sections = meta["sections"]
    bands, clean, sensors = _cleaning(meta, sensor)
    try:
        cleaned = read_clean(Path(image), None, bands, clean, None, sensor=sensors.get(sensor))
    except SceneError as exc:
        if not str(exc).startswith("wrong band count"):
            raise
        raise BundleError(_band_count_message(image, bands.names, sensors, sensor)) from None
    status = judge(Path(image).stem, cleaned, clean, None)
    if status.status != "ok":
        raise SceneError(f"{image} is {status.status}: {status.reason}")
    options = PredictOptions(**(sections.get("predict") or {}))
    member = Member.from_trained(model, 1.0, "bundle")
    predictor = Predictor([member], list(model.classes), tta=options.tta)
    predictor.colors = class_colors(list(model.classes), (sections.get("labels") or {}).get("colors"))
    reader = ArrayReader(cleaned.image, cleaned.names, cleaned.crs, cleaned.transform)
    return predict_scene(reader, predictor, options, out, probs_out)


def predict_field(
    meta: dict[str, Any],
    model: Any,
    image: str | os.PathLike[str],
    out: str | os.PathLike[str],
    sensor: str = "",
    auxiliary: dict[str, str] | None = None,
    probs_out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Downscaling's :func:`predict_raw`: the field (band 1) and the auxiliary fields given,
    downscaled window by window (``probs_out`` is not used)."""
    from snakemap.core.apply_sections import PredictOptions
    from snakemap.core.model_sections import DownscalingOptions
    from snakemap.inference.fields import check_auxiliary, downscale_raster

    _cleaning(meta, sensor)  # an unknown sensor is a BundleError here too (the field is not cleaned)
    sections = meta["sections"]
    opts = DownscalingOptions(**(sections.get("downscaling") or {}))
    names = list(meta["model"]["band_names"])
    given = {n: (auxiliary or {})[n] for n in names[1:] if n in (auxiliary or {})}
    try:
        check_auxiliary("the bundle's model", names, given)
    except ValueError as exc:
        raise BundleError(f"{exc}: pass --auxiliary name=raster for each") from exc
    predict = PredictOptions(**(sections.get("predict") or {}))
    model = replace(model, tta=predict.tta)
    return downscale_raster(
        image, out, model, model.scale, given, opts.window, opts.overlap, predict.batch_size
    )


def _band_count_message(
    image: str | os.PathLike[str], names: list[str] | None, sensors: dict[str, Any], sensor: str
) -> str:
    """What to do about a scene whose band count is not the bundle's (or its sensor's)."""
    import rasterio

    with rasterio.open(image) as src:
        count = src.count
    expected = list(sensors[sensor].bands) if sensor else list(names or [])
    reads = f"{len(expected)} bands ({', '.join(expected)})" + (f" as sensor {sensor}" if sensor else "")
    if sensors:
        hint = f"pass --sensor with one of the bundle's sensors ({', '.join(sensors)})"
    else:
        hint = "give a scene with those bands in that order (the bundle has no sensors table for --sensor)"
    return f"{image} has {count} bands and the bundle's model reads {reads}: {hint}"


def _cleaning(meta: dict[str, Any], sensor: str) -> tuple[Any, Any, dict[str, Any]]:
    """The bundled ``bands`` and ``clean`` options and ``sensors`` table.

    Raises:
        BundleError: for a ``sensor`` the bundle's table does not have.
    """
    from snakemap.core.sections import BandOptions, CleanOptions
    from snakemap.data.sensors import build_sensors

    sections = meta["sections"]
    bands = BandOptions(**(sections.get("bands") or {}))
    clean = CleanOptions(**(sections.get("clean") or {}))
    sensors = build_sensors(sections.get("sensors"), bands)
    if sensor and sensor not in sensors:
        if sensors:
            raise BundleError(f"--sensor {sensor}: not among the bundle's sensors ({', '.join(sensors)})")
        raise BundleError(
            f"--sensor {sensor}: the bundle has no sensors table; leave --sensor out and give a scene "
            f"with its bands ({', '.join(bands.names or [])})"
        )
    return bands, clean, sensors


def describe(meta: dict[str, Any]) -> list[str]:
    """What a bundle holds, as lines for people (``snakemap inspect``): task, model, its input
    bands and their statistics, classes with their colours (or the scale), the raw bands a scene
    must have and the sensors it may be, the prediction options and where it comes from."""
    from snakemap.core.palette import class_colors

    model, sections = meta["model"], meta.get("sections") or {}
    arch = model.get("arch") or model.get("family", "?")
    encoder = f" / {model['encoder_name']}" if model.get("encoder_name") else ""
    lines = [
        f"task: {meta.get('task', DEFAULT_TASK)}",
        f"model: {arch}{encoder}" + (f" (family {model['family']})" if model.get("family") else ""),
    ]
    names, mean, std = model.get("band_names") or [], model.get("mean") or [], model.get("std") or []
    lines.append(f"input bands ({len(names)}), normalised {model.get('normalize', 'dataset')}:")
    for i, name in enumerate(names):
        stats = f"mean {mean[i]:.6g}, std {std[i]:.6g}" if i < len(mean) and i < len(std) else ""
        lines.append(f"  {i + 1}. {name}  {stats}".rstrip())
    if model.get("classes"):
        colors = class_colors(model["classes"], (sections.get("labels") or {}).get("colors"))
        lines.append("classes (value: name colour):")
        lines += [
            f"  {i}: {c} {col}" for i, (c, col) in enumerate(zip(model["classes"], colors, strict=True))
        ]
    if model.get("scale"):
        lines.append(f"scale: x{model['scale']}")
    bands = sections.get("bands") or {}
    if bands.get("names"):
        lines.append(f"raw scene bands, in file order: {', '.join(bands['names'])}")
    sensors = sections.get("sensors") or {}
    lines.append("sensors (--sensor): " + (", ".join(sensors) if sensors else "none"))
    for name, entry in sensors.items():
        lines.append(f"  {name}: bands {', '.join(entry.get('bands') or [])}")
    predict = sections.get("predict") or {}
    if predict:
        lines.append("predict: " + ", ".join(f"{k} {v}" for k, v in sorted(predict.items())))
    config = meta.get("config") or {}
    fold = config.get("fold")
    lines.append(
        f"made by snakemap {meta.get('snakemap_version', '?')}, bundle format {meta.get('format_version')}"
        + (f", held-out fold {fold}" if fold is not None else ", trained on every fold")
    )
    return lines
