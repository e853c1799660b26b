"""The data steps: demo scenes, acquire, clean, band statistics, chips, folds; and the manifest check."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from snakemap.cli.common import step_options
from snakemap.core.config import ConfigError, build
from snakemap.core.registry import task_named
from snakemap.plan.manifest import ManifestError, read_manifest
from snakemap.plan.manifest_fields import parse_bounds
from snakemap.plan.manifest_files import extra_columns, missing_local_files


def _demo_scene(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.data.demo import write_demo_scene

    write_demo_scene(args.name, args.image, args.label, build("demo", cfg.get("demo")), args.empty)
    return 0


def _search(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.plan.search import SearchError, search_manifest

    try:
        table = search_manifest(
            args.stac_api,
            args.collection,
            args.out,
            args.bbox,
            args.datetime,
            args.query,
            args.sensor,
            args.role,
            args.page_size,
            args.max_items,
        )
    except SearchError as exc:
        raise ConfigError(str(exc)) from None
    print(f"{len(table)} items: {args.out} (the query in {args.out}.search.json)")
    return 0


def _catalog_scene(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.data.catalog import write_catalog_scene

    catalog = build("catalog", cfg.get("catalog"))
    if args.scene not in catalog.scenes:
        raise ConfigError(f"catalog.scenes: no scene {args.scene!r} (known: {', '.join(catalog.scenes)})")
    item = write_catalog_scene(args.scene, catalog.scenes[args.scene], catalog, args.out)
    logging.info("STAC item %s: %s", args.scene, item)
    return 0


def _acquire(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.sections import SensorOptions
    from snakemap.data.acquire import acquire_scene
    from snakemap.data.sensors import SceneTables

    sensor = None  # only a STAC Item needs it: the assets of its bands
    if args.sensor:
        sensor = SceneTables.from_config(cfg).sensor(args.sensor)
    elif (cfg.get("bands") or {}).get("names"):
        sensor = SensorOptions(bands=cfg["bands"]["names"])
    acquire_scene(
        args.scene,
        args.uri,
        args.out,
        sha256=args.sha256,
        label_uri=args.label_uri,
        label_sha256=args.label_sha256,
        options=build("acquire", cfg.get("acquire")),
        sensor=sensor,
        sensor_name=args.sensor,
    )
    return 0


def _clean(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.data.clean import clean_scene
    from snakemap.data.sensors import SceneTables

    tables = SceneTables.from_config(cfg)
    bands, clean = build("bands", cfg.get("bands")), build("clean", cfg.get("clean"))
    tables.cleaned_bands(bands, clean.qa_band, [args.sensor])  # config mistakes: exit 2, no state
    task = task_named(cfg.get("task"))
    status = clean_scene(
        args.scene,
        args.acquired,
        args.out,
        bands,
        clean,
        tables.scene_labels(args.label_scheme) if task.labels_required else None,
        tables.sensor(args.sensor),
        parse_bounds(args.bounds or ""),
    )
    if task.has("after_clean"):  # e.g. downscaling's auxiliary fields join the field as extra bands
        status = task.hook("after_clean")(args.out, cfg)
    logging.info("scene %s: %s %s", args.scene, status.status, status.reason)
    return 0


def _analyze(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.data.stats import write_band_statistics

    write_band_statistics(args.clean_dirs, args.out)
    return 0


def _chips(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.data.chips import ChipPaths, write_chips

    paths, chips = ChipPaths(args.image, args.label, args.index), build("chips", cfg.get("chips"))
    if task_named(cfg.get("task")).labels_required:
        labels = build("labels", cfg["labels"])
        n = write_chips(args.clean, paths, chips, labels.target_indices, labels.ignore_index)
    else:  # the scene's own field is what the chips teach
        n = write_chips(args.clean, paths, chips, [], 255, field=True)
    logging.info("scene %s: %d chips", args.scene, n)
    return 0


def _folds(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.data.splits import write_folds

    manifest = read_manifest(args.manifest, labels_required=task_named(cfg.get("task")).labels_required)
    aoi = {str(scene): str(area) for scene, area in manifest["aoi"].items()}
    folds = write_folds(args.indexes, aoi, args.out, build("splits", cfg.get("splits")))
    logging.info("%d chips in %d folds", len(folds), folds["fold"].nunique())
    return 0


def _check_manifest(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    sensors: Collection[str] | None = None
    schemes: Collection[str] | None = None
    if cfg:  # with --config: the sensors and label schemes too, and that the rows name entries of them
        from snakemap.data.sensors import SceneTables

        tables = SceneTables.from_config(cfg)
        sensors, schemes = tables.sensors, tables.label_schemes
    labels = task_named(cfg.get("task")).labels_required
    manifest = read_manifest(args.manifest, sensors, schemes, labels_required=labels)
    missing = missing_local_files(manifest)
    if missing:
        shown = "\n".join(missing[:50]) + (f"\n... and {len(missing) - 50} more" if len(missing) > 50 else "")
        raise ManifestError(f"{args.manifest}: {len(missing)} local file(s) do not exist:\n{shown}")
    counts = manifest["role"].value_counts().to_dict()
    print(
        f"{args.manifest}: {len(manifest)} scenes " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    )
    extra = extra_columns(args.manifest)
    if extra:
        print(f"ignored column(s): {', '.join(extra)}")
    named = sorted({*manifest["sensor"], *manifest["label_scheme"]} - {""})
    if not cfg and named:
        print(
            f"not checked: the sensor and label_scheme entries the rows name ({', '.join(named)}) "
            "exist in a config: pass --config FILE"
        )
    return 0


def _config_schema(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import json

    from snakemap.core.config import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the data steps and the manifest check to the ``snakemap`` command."""
    common = step_options()

    p = sub.add_parser("demo-scene", parents=[common], help="write one synthetic demo scene")
    p.add_argument("name")
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--label", type=Path, required=True)
    p.add_argument("--empty", action="store_true", help="make the whole scene nodata")
    p.set_defaults(func=_demo_scene)

    p = sub.add_parser(
        "catalog-scene", parents=[common], help="write one scene of the example STAC catalogue (catalog:)"
    )
    p.add_argument("scene")
    p.add_argument("--out", type=Path, required=True, help="resources/catalog/{scene}")
    p.set_defaults(func=_catalog_scene)

    p = sub.add_parser("acquire", parents=[common], help="copy/download one scene, verified")
    p.add_argument("scene")
    p.add_argument("--uri", required=True)
    p.add_argument("--sha256", default="")
    p.add_argument("--label-uri", default="")
    p.add_argument("--label-sha256", default="")
    p.add_argument("--out", type=Path, required=True, help="the scene's folder")
    p.add_argument("--sensor", default="", help="a STAC Item's entry of sensors (its band assets)")
    p.set_defaults(func=_acquire)

    p = sub.add_parser("clean", parents=[common], help="clean one acquired scene")
    p.add_argument("scene")
    p.add_argument("--acquired", type=Path, required=True, help="the scene's acquire folder")
    p.add_argument("--out", type=Path, required=True, help="the scene's clean folder")
    p.add_argument("--sensor", default="", help="the scene's entry of sensors (default: bands.names)")
    p.add_argument(
        "--label-scheme", default="", help="the scene's entry of label_schemes (default: labels.remap)"
    )
    p.add_argument("--bounds", help="minx,miny,maxx,maxy in the scene's CRS: use only this part")
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

    p = sub.add_parser("check-manifest", parents=[common], help="check a scene manifest")
    p.add_argument("manifest", type=Path)
    p.set_defaults(func=_check_manifest)

    p = sub.add_parser("search", parents=[common], help="a STAC API search to a manifest of STAC Items")
    p.add_argument("--stac-api", required=True, help="the API's root URL")
    p.add_argument("--collection", action="append", required=True, help="repeat for several")
    p.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"), help="WGS84 degrees")
    p.add_argument("--datetime", help="an instant or an interval A/B (RFC 3339; .. for open)")
    p.add_argument("--query", action="append", default=[], help='e.g. "eo:cloud_cover<20" (repeatable)')
    p.add_argument("--sensor", default="", help="the sensors entry of the rows (its band assets)")
    p.add_argument("--role", default="apply", choices=["train", "calval", "apply"])
    p.add_argument("--page-size", type=int, default=100, help="items per page the API returns")
    p.add_argument("--max-items", type=int, help="stop after this many items")
    p.add_argument(
        "-o", "--out", type=Path, required=True, help="manifest.csv (and manifest.csv.search.json)"
    )
    p.set_defaults(func=_search)

    p = sub.add_parser(
        "config-schema",
        parents=[common],
        help="print the config's JSON schema (workflow/schemas/config.schema.json), made from its types",
    )
    p.set_defaults(func=_config_schema)
