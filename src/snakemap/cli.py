"""The ``snakemap`` command: one sub-command per workflow step, each runnable by hand.

Every step takes its settings from ``--config config/config.yaml`` (the workflow's own file)
and/or ``--options '{"section": {...}}'`` (JSON, as the workflow's rules pass them).
Each sub-command imports its modules inside its function: start-up stays light, and only the
steps that need torch import it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snakemap import __version__
from snakemap.config import ConfigError, build, load_sections
from snakemap.manifest import ManifestError, manifest_rows, read_manifest

if TYPE_CHECKING:
    from snakemap.predict import Predictor


def _demo_scene(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.demo import write_demo_scene

    write_demo_scene(args.name, args.image, args.label, build("demo", cfg.get("demo")), args.empty)
    return 0


def _acquire(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.acquire import acquire_scene

    acquire_scene(
        args.scene,
        args.uri,
        args.out,
        sha256=args.sha256,
        label_uri=args.label_uri,
        label_sha256=args.label_sha256,
        options=build("acquire", cfg.get("acquire")),
    )
    return 0


def _clean(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.clean import clean_scene
    from snakemap.sensors import SceneTables

    tables = SceneTables.from_config(cfg)
    bands, clean = build("bands", cfg.get("bands")), build("clean", cfg.get("clean"))
    tables.cleaned_bands(bands, clean.qa_band, [args.sensor])  # config mistakes: exit 2, no state
    status = clean_scene(
        args.scene,
        args.acquired,
        args.out,
        bands,
        clean,
        tables.scene_labels(args.label_scheme),
        tables.sensor(args.sensor),
    )
    logging.info("scene %s: %s %s", args.scene, status.status, status.reason)
    return 0


def _analyze(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.stats import write_band_statistics

    write_band_statistics(args.clean_dirs, args.out)
    return 0


def _chips(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.chips import ChipPaths, write_chips

    labels = build("labels", cfg["labels"])
    n = write_chips(
        args.clean,
        ChipPaths(args.image, args.label, args.index),
        build("chips", cfg.get("chips")),
        labels.target_indices,
        labels.ignore_index,
    )
    logging.info("scene %s: %d chips", args.scene, n)
    return 0


def _folds(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.splits import write_folds

    manifest = read_manifest(args.manifest)
    aoi = {str(scene): str(area) for scene, area in manifest["aoi"].items()}
    folds = write_folds(args.indexes, aoi, args.out, build("splits", cfg.get("splits")))
    logging.info("%d chips in %d folds", len(folds), folds["fold"].nunique())
    return 0


def _train(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import json

    from snakemap.train import JobData, train_job

    job = json.loads(args.job)
    labels = build("labels", cfg["labels"])
    data = JobData(args.train_indexes, args.calval_indexes or [], args.folds, args.stats)
    train_job(
        args.out, job["params"], job["fold"], labels.classes, labels.ignore_index, data, args.gpus, args.cpus
    )
    return 0


def _models_table(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import pandas as pd

    from snakemap.grid import expand, jobs_table
    from snakemap.io import atomic_path

    jobs = expand(cfg["models"], build("splits", cfg.get("splits")).folds)
    with atomic_path(args.out, suffix=".tsv") as tmp:
        pd.DataFrame(jobs_table(jobs)).to_csv(tmp, sep="\t", index=False)
    return 0


def _weights(args: argparse.Namespace) -> list[float]:
    """One --weight per --checkpoint (all 1 when none is given)."""
    weights = args.weight or [1.0] * len(args.checkpoint)
    if len(weights) != len(args.checkpoint):
        raise ConfigError(f"{len(args.checkpoint)} checkpoints but {len(weights)} weights")
    return list(weights)


def _make_predictor(args: argparse.Namespace, cfg: dict[str, Any]) -> Predictor:
    """The Predictor of --checkpoint/--weight/--threshold/--target/--gpus."""
    import torch

    from snakemap.models import load_trained
    from snakemap.predict import Member, Predictor

    device = torch.device("cuda" if args.gpus and torch.cuda.is_available() else "cpu")
    weights = _weights(args)
    models = [load_trained(c, device) for c in args.checkpoint]
    classes = models[0].classes
    for c, m in zip(args.checkpoint, models, strict=True):
        if m.classes != classes:
            raise ConfigError(f"{c} predicts classes {m.classes}, the first member {classes}")
    target = classes.index(args.target) if args.target else None
    threshold = args.threshold
    if args.threshold_from:
        from snakemap.io import read_json

        tuned = read_json(args.threshold_from)
        threshold = tuned["threshold"]
        logging.info("threshold %.3f tuned on %s (%s)", threshold, tuned["tuned_on"], args.threshold_from)
    loaded = zip(args.checkpoint, models, weights, strict=True)
    members = [Member.from_trained(m, w, str(c)) for c, m, w in loaded]
    return Predictor(members, classes, device, build("predict", cfg.get("predict")).tta, threshold, target)


def _image(args: argparse.Namespace, *outputs: Path | None) -> Path | None:
    """--image, or the image of the calval site in --clean; None (with empty ``outputs``) when
    that site's clean did not end ok."""
    if args.clean is None:
        image: Path | None = args.image
        return image
    from snakemap.calval import site_image

    return site_image(args.clean, [p for p in outputs if p is not None])


def _predict(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.predict import CleanImageReader, predict_scene

    image = _image(args, args.classes_out, args.probs_out)
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


def _apply_shard(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.apply import SceneInput, ShardRunner
    from snakemap.sensors import SceneTables, build_sensors
    from snakemap.shards import shard_members

    apply = build("apply", cfg.get("apply"))
    apply.retry_corrupt = args.retry_corrupt.lower() == "true"
    bands = build("bands", cfg.get("bands"))
    # The workflow passes the sensors of the shard's scenes only: each is looked up here, before any work.
    tables = SceneTables(sensors=build_sensors(cfg.get("sensors"), bands))
    manifest = read_manifest(args.manifest)
    rows = manifest[manifest["role"] == "apply"]
    members = set(shard_members(rows["scene_id"].tolist(), args.shard, apply.shard_size))
    scenes = [
        SceneInput(r.scene_id, r.uri, r.sha256, tables.sensor(r.sensor), r.sensor)
        for r in manifest_rows(rows)
        if r.scene_id in members
    ]
    runner = ShardRunner(
        args.root,
        _make_predictor(args, cfg),
        bands,
        build("clean", cfg.get("clean")),
        build("predict", cfg.get("predict")),
        apply,
        build("acquire", cfg.get("acquire")),
        args.vrt,
    )
    result = runner.run_shard(args.shard, scenes)
    logging.info(
        "%s: %d scenes processed, %d already done", args.shard, result["processed"], result["skipped"]
    )
    return 0


def _inputs_vrt(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.mosaic import build_inputs_vrt

    manifest = read_manifest(args.manifest)
    uris = manifest.loc[manifest["role"] == "apply", "uri"].tolist()
    build_inputs_vrt(uris, args.out)
    logging.info("VRT of %d apply scenes: %s", len(uris), args.out)
    return 0


def _mosaic(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.apply import ok_scene_maps
    from snakemap.mosaic import build_mosaic

    maps = ok_scene_maps(args.shards)
    build_mosaic(maps, args.vrt, args.overview, build("apply", cfg.get("apply")).overview_factor)
    logging.info("mosaic of %d scenes: %s", len(maps), args.vrt)
    return 0


#: the config a step reads inside a project when given neither --config nor --options, as snakemake does
PROJECT_CONFIG = Path("config/config.yaml")


def _project_config(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg``, or, given neither --config nor --options, the project's ``config/config.yaml`` if any."""
    if args.config is not None or args.options is not None or not PROJECT_CONFIG.is_file():
        return cfg
    return load_sections(PROJECT_CONFIG)


def _progress(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import json

    from snakemap.io import write_json
    from snakemap.progress import format_progress, progress

    cfg = _project_config(args, cfg)
    apply = build("apply", cfg.get("apply"))
    if args.manifest is None and not cfg.get("manifest"):
        raise ConfigError(
            f"no manifest: run inside a project (with {PROJECT_CONFIG}), or pass --config FILE "
            "(or --manifest FILE and --predictor NAME)"
        )
    predictors = args.predictor or apply.predictors
    if not predictors:
        raise ConfigError("no predictor: pass --predictor NAME, or a config with apply.predictors")
    manifest = read_manifest(cfg["manifest"] if args.manifest is None else args.manifest)
    scene_ids = manifest.loc[manifest["role"] == "apply", "scene_id"].tolist()
    results = {p: progress(args.results / "maps" / p, scene_ids, apply.shard_size) for p in predictors}
    if args.out:
        write_json(args.out, next(iter(results.values())) if len(results) == 1 else results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(format_progress(p, r) for p, r in results.items()))
    return 0


def _baseline(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import json

    from snakemap.calval import BaselineSpec, baseline_map

    labels = build("labels", cfg["labels"])
    image = _image(args, args.out)
    if image is not None:
        spec = BaselineSpec.from_config(json.loads(args.spec))
        baseline_map(spec, args.site, image, labels.classes, args.out)
    return 0


def _calval_metrics(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.calval import score_predictor, site_files, write_scores
    from snakemap.io import read_json

    labels = build("labels", cfg["labels"])
    files, skipped = site_files(args.clean, args.maps, args.probs)
    target = labels.target_indices[0] if len(labels.target_indices) == 1 else None
    tuned = read_json(args.threshold_from) if args.threshold_from else None
    result = score_predictor(
        args.predictor, files, labels.classes, labels.ignore_index, target, tuned, args.selection, skipped
    )
    write_scores(result, args.out_json, args.out_csv)
    return 0


def _tune_threshold(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.io import write_json
    from snakemap.tuning import TuningMember, tune_threshold

    if not args.target:
        raise ConfigError("tune-threshold needs --target, the class whose threshold is tuned")
    weights = _weights(args)
    members = [TuningMember.from_checkpoint(c, w) for c, w in zip(args.checkpoint, weights, strict=True)]
    result = tune_threshold(members, args.indexes, args.folds, args.stats, args.target)
    write_json(args.out, result)
    logging.info(
        "threshold %.3f (F1 %.3f) over %d out-of-fold chips",
        result["threshold"],
        result["f1"],
        result["chips"],
    )
    return 0


def _calval_summary(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.calval import write_summary

    print(write_summary(args.metrics, args.out).to_string(index=False))
    return 0


def _report_plots(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap import report

    report.iou_bars(args.metrics, args.bars)
    report.pr_curves(args.metrics, args.pr)
    report.confusion_matrices(args.metrics, args.confusion)
    report.training_curves(args.training or [], args.training_out)
    return 0


def _preview(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap import report

    labels = build("labels", cfg["labels"])
    best = report.best_predictor(args.summary)
    name = best["predictor"]
    maps = dict(zip(args.predictors, args.maps, strict=True))
    if name not in maps:
        raise ConfigError(f"the best predictor in {args.summary}, {name}, is not among --predictors")
    prediction = maps[name]
    title = f"{args.site}: {name} (macro IoU {best['macro_iou']:.3f} over all sites)"
    report.preview(
        args.clean / "image.tif",
        args.clean / "label.tif",
        prediction,
        labels.classes,
        title,
        args.out,
        labels.ignore_index,
    )
    return 0


def _report_winners(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.winners import write_winners

    print(write_winners(args.summary, args.out).to_string(index=False))
    return 0


def _check_manifest(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    names: dict[str, Collection[str]] = {}
    if cfg:  # with --config: the sensors and label schemes too, and that the rows name entries of them
        from snakemap.sensors import SceneTables

        tables = SceneTables.from_config(cfg)
        names = {"sensors": tables.sensors, "label_schemes": tables.label_schemes}
    manifest = read_manifest(args.manifest, **names)
    counts = manifest["role"].value_counts().to_dict()
    print(
        f"{args.manifest}: {len(manifest)} scenes " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    )
    return 0


def _add_image(p: argparse.ArgumentParser) -> None:
    """--image, or --clean for a calval site: the two ways predict and baseline take a scene."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", type=Path, help="a cleaned image.tif")
    where.add_argument("--clean", type=Path, help="a calval site's clean folder (not ok: empty outputs)")


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``snakemap`` command."""
    top = argparse.ArgumentParser(prog="snakemap", description=__doc__)
    top.add_argument("--version", action="version", version=f"snakemap {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="the workflow's config YAML")
    common.add_argument("--options", help="config sections as JSON, overriding --config")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # What makes a predictor: one checkpoint, or several (an ensemble) with weights.
    models = argparse.ArgumentParser(add_help=False)
    models.add_argument(
        "--checkpoint", action="append", required=True, type=Path, help="repeat for an ensemble"
    )
    models.add_argument("--weight", action="append", type=float, help="one per checkpoint (default 1)")
    models.add_argument("--threshold", type=float, help="probability from which a pixel is --target")
    models.add_argument("--target", help="the class --threshold applies to")
    models.add_argument(
        "--threshold-from", type=Path, help="threshold.json (tune-threshold) whose threshold to use"
    )
    models.add_argument("--gpus", type=int, default=0)
    sub = top.add_subparsers(dest="step", required=True)

    p = sub.add_parser("demo-scene", parents=[common], help="write one synthetic demo scene")
    p.add_argument("name")
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--label", type=Path, required=True)
    p.add_argument("--empty", action="store_true", help="make the whole scene nodata")
    p.set_defaults(func=_demo_scene)

    p = sub.add_parser("acquire", parents=[common], help="copy/download one scene, verified")
    p.add_argument("scene")
    p.add_argument("--uri", required=True)
    p.add_argument("--sha256", default="")
    p.add_argument("--label-uri", default="")
    p.add_argument("--label-sha256", default="")
    p.add_argument("--out", type=Path, required=True, help="the scene's folder")
    p.set_defaults(func=_acquire)

    p = sub.add_parser("clean", parents=[common], help="clean one acquired scene")
    p.add_argument("scene")
    p.add_argument("--acquired", type=Path, required=True, help="the scene's acquire folder")
    p.add_argument("--out", type=Path, required=True, help="the scene's clean folder")
    p.add_argument("--sensor", default="", help="the scene's entry of sensors (default: bands.names)")
    p.add_argument(
        "--label-scheme", default="", help="the scene's entry of label_schemes (default: labels.remap)"
    )
    p.set_defaults(func=_clean)

    p = sub.add_parser("analyze", parents=[common], help="per-band statistics of clean scenes")
    p.add_argument("clean_dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_analyze)

    p = sub.add_parser("chips", parents=[common], help="cut the training chips of one scene")
    p.add_argument("scene")
    p.add_argument("--clean", type=Path, required=True, help="the scene's clean folder")
    p.add_argument("--image", type=Path, required=True, help="(chips, bands, size, size) .npy")
    p.add_argument("--label", type=Path, required=True, help="(chips, size, size) .npy")
    p.add_argument("--index", type=Path, required=True, help="chip table .parquet")
    p.set_defaults(func=_chips)

    p = sub.add_parser("folds", parents=[common], help="AOI-grouped cross-validation folds")
    p.add_argument("indexes", nargs="+", type=Path, help="the scenes' chip index tables")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_folds)

    p = sub.add_parser("train", parents=[common], help="train one model (one fold)")
    p.add_argument("--job", required=True, help='JSON: {"params": {...}, "fold": k or null}')
    p.add_argument("--train-indexes", nargs="+", type=Path, required=True, help="chip tables of train scenes")
    p.add_argument("--calval-indexes", nargs="*", type=Path, help="chip tables of calval scenes")
    p.add_argument("--folds", type=Path, required=True)
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the job's folder")
    p.add_argument("--gpus", type=int, help="GPUs given to the job (default: the model's gpus)")
    p.add_argument("--cpus", type=int, help="CPU cores given to the job (default: the model's cpus)")
    p.set_defaults(func=_train)

    p = sub.add_parser("models-table", parents=[common], help="list the models of the grid")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_models_table)

    p = sub.add_parser(
        "predict", parents=[common, models], help="predict a cleaned scene with models/an ensemble"
    )
    _add_image(p)
    p.add_argument("--classes-out", type=Path, required=True)
    p.add_argument("--probs-out", type=Path)
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "apply-shard", parents=[common, models], help="apply a predictor to one shard of scenes"
    )
    p.add_argument("shard")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True, help="results/maps/{predictor}")
    p.add_argument("--retry-corrupt", choices=["True", "False", "true", "false"], default="false")
    p.add_argument("--vrt", type=Path, help="VRT of all inputs, for apply.buffer")
    p.set_defaults(func=_apply_shard)

    p = sub.add_parser("inputs-vrt", parents=[common], help="VRT of all apply scenes, for apply.buffer")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_inputs_vrt)

    p = sub.add_parser("mosaic", parents=[common], help="VRT and overview of the ok scenes")
    p.add_argument("shards", nargs="+", type=Path, help="shard manifests")
    p.add_argument("--vrt", type=Path, required=True)
    p.add_argument("--overview", type=Path, required=True)
    p.set_defaults(func=_mosaic)

    p = sub.add_parser(
        "progress",
        parents=[common],
        help="scenes done, empty, corrupt, pending; ETA (default: ./config/config.yaml)",
    )
    p.add_argument("--manifest", type=Path, help="default: the config's")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--predictor", action="append", help="default: the config's apply.predictors")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path, help="also write the figures as JSON here")
    p.set_defaults(func=_progress)

    p = sub.add_parser("baseline", parents=[common], help="a baseline's class map of one site")
    p.add_argument("site")
    p.add_argument("--spec", required=True, help="the baseline's config as JSON")
    _add_image(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_baseline)

    p = sub.add_parser("calval-metrics", parents=[common], help="score one predictor over its sites")
    p.add_argument("--predictor", required=True)
    p.add_argument("--clean", nargs="+", type=Path, required=True, help="per site: its clean folder")
    p.add_argument("--maps", nargs="+", type=Path, required=True, help="class map per site")
    p.add_argument("--probs", nargs="*", type=Path, help="probabilities per site")
    p.add_argument("--threshold-from", type=Path, help="the threshold.json whose threshold made the maps")
    p.add_argument("--selection", default="", help="how the checkpoint was chosen: held-out fold | calval")
    p.add_argument("--out-json", type=Path, required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    p.set_defaults(func=_calval_metrics)

    p = sub.add_parser(
        "tune-threshold", parents=[common, models], help="an ensemble's threshold, tuned out of fold"
    )
    p.add_argument(
        "--indexes", nargs="+", type=Path, required=True, help="chip tables of the training scenes"
    )
    p.add_argument("--folds", type=Path, required=True)
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="threshold.json")
    p.set_defaults(func=_tune_threshold)

    p = sub.add_parser("calval-summary", parents=[common], help="one row per predictor")
    p.add_argument("metrics", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_calval_summary)

    p = sub.add_parser("report-plots", parents=[common], help="calval and training figures")
    p.add_argument("--metrics", nargs="+", type=Path, required=True, help="calval metrics.json files")
    p.add_argument("--training", nargs="*", type=Path, help="training metrics.csv files")
    p.add_argument("--bars", type=Path, required=True)
    p.add_argument("--pr", type=Path, required=True)
    p.add_argument("--confusion", type=Path, required=True)
    p.add_argument("--training-out", type=Path, required=True)
    p.set_defaults(func=_report_plots)

    p = sub.add_parser("preview", parents=[common], help="image | reference | prediction | errors of a site")
    p.add_argument("site")
    p.add_argument("--clean", type=Path, required=True, help="the site's clean folder")
    p.add_argument(
        "--summary", type=Path, required=True, help="calval summary.csv (picks the best predictor)"
    )
    p.add_argument("--predictors", nargs="+", required=True, help="the predictors the summary may pick")
    p.add_argument("--maps", nargs="+", type=Path, required=True, help="the site's class map per predictor")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_preview)

    p = sub.add_parser("report-winners", parents=[common], help="best predictor per class vs baselines")
    p.add_argument("summary", type=Path, help="calval summary.csv")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_report_winners)

    p = sub.add_parser("check-manifest", parents=[common], help="check a scene manifest")
    p.add_argument("manifest", type=Path)
    p.set_defaults(func=_check_manifest)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; a bad config or manifest exits with 2 and a message naming the culprit."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args, load_sections(args.config, args.options)))
    except (ConfigError, ManifestError) as exc:
        print(f"snakemap {args.step}: {exc}", file=sys.stderr)
        return 2
