"""The steps after apply: a predictor's maps as STAC items, the VRT of all apply inputs, the
mosaics and overviews, the polygons, and `snakemap progress`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from snakemap.cli.common import step_options
from snakemap.core.config import ConfigError, build, load_sections
from snakemap.core.registry import task_named
from snakemap.plan.manifest import apply_scene_ids, read_manifest
from snakemap.plan.manifest_cache import CACHE_DIR


def _architecture(params: dict[str, Any]) -> str:
    """A model's architecture as its STAC item names it: the network's, or ``LightGBM``."""
    return "LightGBM" if params.get("family") == "lightgbm" else str(params["arch"])


def _stac(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import yaml

    from snakemap.outputs.stac_collection import write_collection
    from snakemap.outputs.stac_model import ModelInfo
    from snakemap.plan.manifest_fields import parse_datetime

    task = task_named(cfg.get("task"))
    manifest = read_manifest(args.manifest, labels_required=task.labels_required, cache=CACHE_DIR)
    rows = manifest[(manifest["role"] == "apply") & (manifest["datetime"] != "")]
    datetimes = {
        str(s): parse_datetime(str(t)) for s, t in zip(rows["scene_id"], rows["datetime"], strict=True)
    }
    # the architecture from each checkpoint's resolved config.yaml beside it (no torch needed)
    archs = sorted(
        {
            _architecture(yaml.safe_load((c.parent / "config.yaml").read_text())["params"])
            for c in args.checkpoint
        }
    )
    predict = build("predict", cfg.get("predict"))
    runtime = "PyTorch"
    if predict.backend == "onnxruntime":  # the networks ran in ONNX Runtime (int8 where quantized)
        runtime = "ONNX Runtime" + (" int8" if predict.quantize == "int8" else "")
    frameworks = sorted({"LightGBM" if arch == "LightGBM" else runtime for arch in archs})
    info = ModelInfo(
        args.predictor,
        "+".join(archs),
        [str(c) for c in args.checkpoint],
        str(args.bundle) if args.bundle else None,
        framework="+".join(frameworks),
    )
    classes = cfg["labels"]["classes"] if task.maps == "classes" and cfg.get("labels") else None
    path = write_collection(args.root, args.predictor, args.shards, info, classes, datetimes)
    logging.info("STAC collection of %s: %s", args.predictor, path)
    return 0


def _inputs_vrt(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.storage import gdal_options, is_remote
    from snakemap.outputs.mosaic import build_inputs_vrt

    manifest = read_manifest(
        args.manifest, labels_required=task_named(cfg.get("task")).labels_required, cache=CACHE_DIR
    )
    uris = manifest.loc[manifest["role"] == "apply", "uri"].tolist()
    acquire = build("acquire", cfg.get("acquire"))
    # acquire's storage options for each remote scheme of the scenes (one URI stands for each)
    schemes = {u.split("://", 1)[0]: u for u in uris if is_remote(u)}
    env = {k: v for u in schemes.values() for k, v in gdal_options(u, acquire).items()}
    build_inputs_vrt(uris, args.out, env)
    logging.info("VRT of %d apply scenes: %s", len(uris), args.out)
    return 0


def _mosaic(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.inference.shard_files import ok_scene_maps
    from snakemap.outputs.mosaic import build_mosaic

    maps = ok_scene_maps(args.shards)
    apply = build("apply", cfg.get("apply"))
    resampling = task_named(cfg.get("task")).overview_resampling
    polar = dict(zip(("south", "north"), args.polar, strict=True)) if args.polar else None
    index = build_mosaic(
        maps,
        args.out,
        args.overview,
        apply.overview_factor,
        resampling,
        apply.overview_crs,
        polar,
        apply.polar,
    )
    for side, entry in index.get("polar", {}).items():
        logging.info(
            "%s polar overview of %d scenes in %s: %s", side, entry["scenes"], entry["crs"], entry["path"]
        )
    for key, zone in index["zones"].items():
        logging.info("%s: %d scenes in %s", key, zone["scenes"], args.out / zone["vrt"])
    logging.info("overview of %d scenes in %s: %s", len(maps), apply.overview_crs, args.overview)
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

    from snakemap.core.io import write_json
    from snakemap.core.paths import config_paths
    from snakemap.outputs.progress import format_progress, progress

    cfg = _project_config(args, cfg)
    source = args.config or (PROJECT_CONFIG if args.options is None and PROJECT_CONFIG.is_file() else None)
    if source is not None:  # its paths, as the workflow resolves them
        cfg = config_paths(cfg, Path(source).absolute().parent)
    root = args.results if args.results is not None else Path(cfg.get("workdir") or ".") / "results"
    apply = build("apply", cfg.get("apply"))
    if args.manifest is None and not cfg.get("manifest"):
        raise ConfigError(
            f"no manifest: run inside a project (with {PROJECT_CONFIG}), or pass --config FILE "
            "(or --manifest FILE and --predictor NAME)"
        )
    predictors = args.predictor or apply.predictors
    if not predictors:
        raise ConfigError("no predictor: pass --predictor NAME, or a config with apply.predictors")
    cache = Path(cfg.get("workdir") or ".") / CACHE_DIR  # the run's own, beside its results
    scene_ids = apply_scene_ids(cfg["manifest"] if args.manifest is None else args.manifest, cache)
    threshold = build("shift", cfg.get("shift")).threshold
    results = {
        p: progress(root / "maps" / p, scene_ids, apply.shard_size, shift_threshold=threshold)
        for p in predictors
    }
    if args.out:
        write_json(args.out, next(iter(results.values())) if len(results) == 1 else results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(format_progress(p, r) for p, r in results.items()))
    return 0


def _polygons(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.outputs.polygons import merge_polygons

    count = merge_polygons(args.parts, args.parquet, args.gpkg)
    logging.info("%d polygons of %d shards: %s, %s", count, len(args.parts), args.parquet, args.gpkg)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the steps after apply to the ``snakemap`` command."""
    common = step_options()

    p = sub.add_parser("stac", parents=[common], help="STAC items of a predictor's maps and its collection")
    p.add_argument("shards", nargs="+", type=Path, help="shard manifests")
    p.add_argument("--predictor", required=True)
    p.add_argument("--root", type=Path, required=True, help="results/maps/{predictor}")
    p.add_argument("--manifest", type=Path, required=True, help="the scene manifest (its datetime column)")
    p.add_argument(
        "--checkpoint", action="append", type=Path, required=True, help="the model's checkpoint(s)"
    )
    p.add_argument("--bundle", type=Path, help="the model's ONNX export or bundle")
    p.set_defaults(func=_stac)

    p = sub.add_parser("inputs-vrt", parents=[common], help="VRT of all apply scenes, for apply.buffer")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_inputs_vrt)

    p = sub.add_parser("mosaic", parents=[common], help="VRTs (one per CRS) and overview of the ok scenes")
    p.add_argument("shards", nargs="+", type=Path, help="shard manifests")
    p.add_argument(
        "--out", type=Path, required=True, help="the folder of VRTs: results/maps/{predictor}/mosaic"
    )
    p.add_argument("--overview", type=Path, required=True)
    p.add_argument(
        "--polar", nargs=2, type=Path, metavar=("SOUTH", "NORTH"), help="the polar overviews (apply.polar)"
    )
    p.set_defaults(func=_mosaic)

    p = sub.add_parser(
        "polygons", parents=[common], help="the shards' polygons in one GeoParquet and GeoPackage"
    )
    p.add_argument("parts", nargs="*", type=Path, help="polygons/parts/{shard}.parquet")
    p.add_argument("--parquet", type=Path, required=True, help="results/maps/{predictor}/polygons.parquet")
    p.add_argument("--gpkg", type=Path, required=True, help="its GeoPackage twin")
    p.set_defaults(func=_polygons)

    p = sub.add_parser(
        "progress",
        parents=[common],
        help="scenes done, empty, corrupt, pending; ETA (default: ./config/config.yaml)",
    )
    p.add_argument("--manifest", type=Path, help="default: the config's")
    p.add_argument("--results", type=Path, help="the results folder (default: the config's workdir/results)")
    p.add_argument("--predictor", action="append", help="default: the config's apply.predictors")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path, help="also write the figures as JSON here")
    p.set_defaults(func=_progress)
