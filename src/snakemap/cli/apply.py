"""The apply steps: predict a scene, apply a predictor to a shard of scenes (the maps' mosaics,
STAC and progress are in :mod:`snakemap.cli.maps`)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snakemap.cli.common import (
    add_image,
    fallback,
    input_image,
    member_weights,
    model_options,
    onnx_members,
    per_class,
    rule_member,
    step_options,
    tuned_weights,
)
from snakemap.core.config import ConfigError, build
from snakemap.core.palette import class_colors
from snakemap.core.registry import task_named
from snakemap.plan.manifest import manifest_rows, read_manifest
from snakemap.plan.manifest_cache import CACHE_DIR

if TYPE_CHECKING:
    from snakemap.inference.predictor import Predictor
    from snakemap.inference.shard import ShardRunner


def cpu_threads(args: argparse.Namespace) -> None:
    """torch's CPU threads from --threads (the job's `threads`); all cores without it. Called
    once at the start of `predict` and `apply-shard`."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _make_predictor(args: argparse.Namespace, cfg: dict[str, Any]) -> Predictor:
    """The Predictor of --checkpoint/--weight/--threshold/--target/--gpus."""
    import torch

    from snakemap.inference.predictor import Member, Predictor
    from snakemap.tasks.networks import load_trained

    device = torch.device("cuda" if args.gpus and torch.cuda.is_available() else "cpu")
    weights = member_weights(args)
    models = [load_trained(c, device) for c in args.checkpoint]
    classes = models[0].classes
    for c, m in zip(args.checkpoint, models, strict=True):
        if m.classes != classes:
            raise ConfigError(f"{c} predicts classes {m.classes}, the first member {classes}")
    target = classes.index(args.target) if args.target else None
    threshold = args.threshold
    if args.threshold_from:
        from snakemap.core.io import read_json

        tuned = read_json(args.threshold_from)
        threshold = tuned["threshold"]
        logging.info("threshold %.3f tuned on %s (%s)", threshold, tuned["tuned_on"], args.threshold_from)
    loaded = zip(args.checkpoint, models, weights, strict=True)
    members = [Member.from_trained(m, w, str(c)) for c, m, w in loaded]
    onnx_members(args, members)
    members += [rule_member(text, classes) for text in args.rule]
    if args.weights_from:
        members = tuned_weights(args.weights_from, members, classes)
    winners = per_class(args.winners_from, members, classes) if args.winners_from else None
    tta = build("predict", cfg.get("predict")).tta
    predictor = Predictor(members, classes, device, tta, threshold, target, winners, fallback(args, members))
    # the maps' colour tables: a rule passes `colors` alone; by hand, the config's labels.colors
    predictor.colors = class_colors(classes, cfg.get("colors") or (cfg.get("labels") or {}).get("colors"))
    return predictor


def _predict(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.inference.predict import predict_scene
    from snakemap.inference.readers import CleanImageReader

    cpu_threads(args)
    if args.bundle or args.onnx:
        return _predict_standalone(args)
    if not args.checkpoint or (args.image is None and args.clean is None) or args.classes_out is None:
        raise ConfigError(
            "predict needs --checkpoint, --image or --clean and --classes-out "
            "(or --bundle/--onnx with a raw scene IN.tif and OUT.tif)"
        )
    image = input_image(args, args.classes_out, args.probs_out)
    if image is None:
        return 0
    predictor = _make_predictor(args, cfg)
    reader = CleanImageReader(image)
    try:
        figures = predict_scene(
            reader,
            predictor,
            build("predict", cfg.get("predict")),
            args.classes_out,
            args.probs_out,
        )
    finally:
        reader.close()
    logging.info("predicted %s: %s", image, figures)
    return 0


def _predict_standalone(args: argparse.Namespace) -> int:
    """A raw scene with a bundle (torch) or an ONNX export (onnxruntime), no workflow needed."""
    from snakemap.outputs.bundle import bundled_model, predict_raw, read_bundle

    if args.input is None or args.output is None:
        raise ConfigError("predict --bundle/--onnx needs a raw scene IN.tif and the map OUT.tif")
    if bool(args.bundle) == bool(args.onnx) or args.checkpoint:
        raise ConfigError("predict takes one of --bundle, --onnx or --checkpoint")
    auxiliary = dict(a.split("=", 1) for a in args.auxiliary)
    if args.bundle:
        bundle = read_bundle(args.bundle)
        backend = (bundle.meta["sections"].get("predict") or {}).get("backend", "torch")
        if backend == "onnxruntime" and bundle.onnx is not None:  # as the workflow predicted
            from snakemap.outputs.export import OnnxNetwork

            network = OnnxNetwork(bundle.onnx, args.threads, source=f"{args.bundle}: model.onnx")
            meta, model = bundle.meta, bundled_model(bundle.meta, network=network)
        else:
            meta, model = bundle.meta, bundled_model(bundle.meta, bundle.state)
    else:
        from snakemap.outputs.export import OnnxNetwork

        network = OnnxNetwork(args.onnx, args.threads)
        meta, model = network.meta, bundled_model(network.meta, network=network)
    figures = predict_raw(meta, model, args.input, args.output, args.sensor, auxiliary, args.probs_out)
    logging.info("predicted %s with %s: %s", args.input, args.bundle or args.onnx, figures)
    return 0


def _apply_shard(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import time

    started = time.time()  # the job's, its models' loading included (the run's rate counts it)
    from snakemap.data.sensors import SceneTables, build_sensors
    from snakemap.inference.scenes import SceneInput
    from snakemap.plan.shards import ShardTable

    apply = build("apply", cfg.get("apply"))
    apply.retry_corrupt = args.retry_corrupt.lower() in ("true", "1")
    # Read by GDAL when its block cache is first used, which is after this.
    os.environ.setdefault("GDAL_CACHEMAX", str(apply.gdal_cache_mb))
    bands = build("bands", cfg.get("bands"))
    # The workflow passes the sensors of the shard's scenes only: each is looked up here, before any work.
    tables = SceneTables(sensors=build_sensors(cfg.get("sensors"), bands))
    task = task_named(cfg.get("task"))
    manifest = read_manifest(args.manifest, labels_required=task.labels_required, cache=CACHE_DIR)
    # Only the shard's rows become objects: a million-row manifest is sliced, not walked.
    rows = manifest.loc[ShardTable(manifest, apply.shard_size).members(args.shard)]
    scenes = [
        SceneInput(r.scene_id, r.uri, r.sha256, tables.sensor(r.sensor), r.sensor)
        for r in manifest_rows(rows)
    ]
    cpu_threads(args)  # every task's runner: the job's threads
    runner: ShardRunner = task.hook("shard_runner")(args, cfg, apply, bands)
    result = runner.run_shard(args.shard, scenes, started=started)
    logging.info(
        "%s: %d scenes processed, %d already done", args.shard, result["processed"], result["skipped"]
    )
    return 0


def class_runner(args: argparse.Namespace, cfg: dict[str, Any], apply: Any, bands: Any) -> ShardRunner:
    """Segmentation's shard runner (the ``shard_runner`` hook): class maps by the predictor that
    ``--checkpoint`` (with weights and a threshold for an ensemble) makes."""
    from snakemap.inference.shard import ShardRunner

    return ShardRunner(
        args.root,
        _make_predictor(args, cfg),
        bands,
        build("clean", cfg.get("clean")),
        build("predict", cfg.get("predict")),
        apply,
        build("acquire", cfg.get("acquire")),
        args.vrt,
        _vectorizer(cfg),
    )


def _vectorizer(cfg: dict[str, Any]) -> Any:
    """The maker of polygons of ``vectorize:`` (None without it)."""
    if not cfg.get("vectorize"):
        return None
    from snakemap.outputs.polygons import Vectorizer

    if not cfg.get("labels"):
        raise ConfigError("vectorize needs the labels section (the classes' names)")
    return Vectorizer(build("vectorize", cfg["vectorize"]), build("labels", cfg["labels"]).classes)


def field_runner(args: argparse.Namespace, cfg: dict[str, Any], apply: Any, bands: Any) -> ShardRunner:
    """Downscaling's shard runner (the ``shard_runner`` hook): each scene's field downscaled by the
    model of ``--checkpoint``."""
    import torch

    from snakemap.inference.field_shard import FieldShardRunner
    from snakemap.tasks.downscaling import load_downscaler

    device = torch.device("cuda" if args.gpus and torch.cuda.is_available() else "cpu")
    predict = build("predict", cfg.get("predict"))
    return FieldShardRunner(
        args.root,
        load_downscaler(args.checkpoint[0], device, predict.tta),
        bands,
        build("clean", cfg.get("clean")),
        predict,
        apply,
        build("downscaling", cfg.get("downscaling")),
        build("acquire", cfg.get("acquire")),
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the apply steps to the ``snakemap`` command."""
    common, models = step_options(), model_options()

    p = sub.add_parser(
        "predict",
        parents=[common, model_options(required=False)],
        help="predict a cleaned scene with models/an ensemble, or a raw scene with a bundle",
        description="snakemap predict --checkpoint C [--checkpoint ...] (--image I | --clean D) "
        "--classes-out O, or: snakemap predict (--bundle X.zip | --onnx X.onnx) IN.tif OUT.tif",
    )
    add_image(p, required=False)
    p.add_argument("--classes-out", type=Path)
    p.add_argument("--probs-out", type=Path)
    p.add_argument("--bundle", type=Path, help="a model bundle (results/bundles/{model}.zip)")
    p.add_argument("--onnx", type=Path, help="a model's ONNX export, run with onnxruntime")
    p.add_argument("--sensor", default="", help="the bundled sensors entry the raw scene comes from")
    p.add_argument("--auxiliary", action="append", default=[], help="downscaling: name=raster, per field")
    p.add_argument("input", nargs="?", type=Path, help="with --bundle/--onnx: a raw scene")
    p.add_argument("output", nargs="?", type=Path, help="with --bundle/--onnx: the map to write")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "apply-shard", parents=[common, models], help="apply a predictor to one shard of scenes"
    )
    p.add_argument("shard")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True, help="results/maps/{predictor}")
    p.add_argument("--retry-corrupt", choices=["True", "False", "true", "false", "1", "0"], default="false")
    p.add_argument("--vrt", type=Path, help="VRT of all inputs, for apply.buffer")
    p.set_defaults(func=_apply_shard)
