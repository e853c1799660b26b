"""The report steps: calval and training figures, a site's preview, the tables as pages, the
landing text, and the applied maps' quicklooks and page."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from snakemap.cli.common import step_options
from snakemap.core.config import ConfigError, build


def _report_plots(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation import report

    report.iou_bars(args.metrics, args.bars)
    report.pr_curves(args.metrics, args.pr)
    report.confusion_matrices(args.metrics, args.confusion)
    report.training_curves(args.training or [], args.training_out)
    return 0


def _preview(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation import report

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
        labels.palette,
    )
    return 0


def _swatches(cfg: dict[str, Any]) -> dict[str, str]:
    """Class name -> colour, for the tables' class cells (none without a ``labels`` section)."""
    if not cfg.get("labels"):
        return {}
    labels = build("labels", cfg["labels"])
    return dict(zip(labels.classes, labels.palette, strict=True))


def _html(args: argparse.Namespace, cfg: dict[str, Any], title: str) -> None:
    """The CSV just written at ``args.out`` as the report's page ``args.html``, where asked."""
    if getattr(args, "html", None):
        from snakemap.outputs.report_pages import table_page

        table_page(args.out, args.html, title, swatches=_swatches(cfg))


def _report_winners(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation.winners import write_winners

    print(write_winners(args.summary, args.out).to_string(index=False))
    _html(args, cfg, "Best predictor per class")
    return 0


def _report_table(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.outputs.report_pages import table_page

    table_page(args.csv, args.out, args.title, swatches=_swatches(cfg))
    return 0


def _report_landing(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.outputs.report_pages import landing

    landing(args.description, args.winners, args.out, _swatches(cfg))
    return 0


def _quicklook(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.io import read_json
    from snakemap.core.registry import task_named
    from snakemap.data.sensors import SceneTables, build_sensors
    from snakemap.outputs.quicklook import MAX_IMAGE_SCENES, SceneImage, quicklook, spread
    from snakemap.plan.manifest import read_manifest
    from snakemap.plan.manifest_cache import CACHE_DIR

    task = task_named(cfg.get("task"))
    bands = build("bands", cfg["bands"])
    tables = SceneTables(sensors=build_sensors(cfg.get("sensors"), bands))
    index = read_json(args.mosaic / "index.json")
    ok = sorted(s for zone in index["zones"].values() for s in zone["scene_ids"])
    picked = spread(ok, MAX_IMAGE_SCENES)
    manifest = read_manifest(args.manifest, labels_required=task.labels_required, cache=CACHE_DIR)
    rows = manifest.set_index("scene_id").loc[picked] if picked else manifest.iloc[:0]
    scenes = []
    for scene_id, row in zip(picked, rows.to_dict("records"), strict=True):
        sensor = tables.sensor(str(row.get("sensor") or "")) if row.get("sensor") else None
        names: list[str | None] = list(sensor.bands if sensor is not None else bands.names or [])
        scenes.append(SceneImage(scene_id, str(row["uri"]), names, sensor))
    progress = read_json(args.progress) if args.progress else {}
    labels = build("labels", cfg["labels"]) if task.maps == "classes" else None
    shown = quicklook(
        args.overview,
        scenes,
        labels.classes if labels else None,
        labels.palette if labels else None,
        f"{args.predictor}: {len(ok):,} ok scenes",
        args.out,
        mapped_ha=progress.get("mapped_ha"),
        total_scenes=len(ok),
        acquire=build("acquire", cfg.get("acquire")),
    )
    for reason in shown.skipped:
        print(f"not in the image panel: {reason}")
    return 0


def _report_maps(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.registry import task_named
    from snakemap.outputs.report_pages import maps_page

    if len(args.predictors) != len(args.progress):
        raise ConfigError(f"{len(args.predictors)} --predictors for {len(args.progress)} --progress files")
    if len(args.area_predictors or []) != len(args.areas or []):
        raise ConfigError("one --area-predictors name per --areas file")
    task = task_named(cfg.get("task"))
    labels = build("labels", cfg["labels"]) if task.maps == "classes" else None
    tables = maps_page(
        dict(zip(args.predictors, args.progress, strict=True)),
        dict(zip(args.area_predictors or [], args.areas or [], strict=True)),
        labels.classes if labels else None,
        labels.palette if labels else None,
        args.out,
    )
    print(tables["progress"].to_string(index=False))
    return 0


def _report_ensembles(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation.winners import write_out_of_fold_winners

    if len(args.names) != len(args.winners):
        raise ConfigError(f"{len(args.names)} --names for {len(args.winners)} winners.json files")
    files = dict(zip(args.names, args.winners, strict=True))
    print(write_out_of_fold_winners(files, args.out).to_string(index=False))
    _html(args, cfg, "Per-class ensembles: out-of-fold winners")
    return 0


def _report_sites(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation.sites import write_sites

    threshold = build("shift", cfg.get("shift")).threshold
    print(write_sites(args.clean, args.stats, args.metrics, threshold, args.out).to_string(index=False))
    _html(args, cfg, "Calval sites: shift and scores")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the report steps to the ``snakemap`` command."""
    common = step_options()

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
    p.add_argument("--html", type=Path, help="also the table as an HTML page for the report")
    p.set_defaults(func=_report_winners)

    p = sub.add_parser("report-table", parents=[common], help="a CSV table as an HTML page for the report")
    p.add_argument("csv", type=Path)
    p.add_argument("--title", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_report_table)

    p = sub.add_parser("report-landing", parents=[common], help="the text the report opens on")
    p.add_argument("--description", type=Path, required=True, help="the workflow's report/workflow.rst")
    p.add_argument("--winners", type=Path, help="best_by_class.csv, shown as a table")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_report_landing)

    p = sub.add_parser(
        "quicklook", parents=[common], help="an applied map's overview in class colours beside the image"
    )
    p.add_argument("overview", type=Path, help="results/maps/{predictor}/overview.tif")
    p.add_argument("--mosaic", type=Path, required=True, help="its mosaic folder (the ok scenes)")
    p.add_argument("--progress", type=Path, help="its progress.json (mapped areas for the legend)")
    p.add_argument("--manifest", type=Path, required=True, help="where the scenes' images are")
    p.add_argument("--predictor", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_quicklook)

    p = sub.add_parser("report-maps", parents=[common], help="the applied maps' progress and areas page")
    p.add_argument("--predictors", nargs="+", required=True)
    p.add_argument("--progress", nargs="+", type=Path, required=True, help="progress.json per predictor")
    p.add_argument("--area-predictors", nargs="*", help="the predictors that have --areas files")
    p.add_argument("--areas", nargs="*", type=Path, help="areas.csv per --area-predictors name")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_report_maps)

    p = sub.add_parser("report-sites", parents=[common], help="calval sites: shift score and best scores")
    p.add_argument("--clean", nargs="+", type=Path, required=True, help="each calval site's clean folder")
    p.add_argument("--stats", type=Path, required=True, help="bands.json of the training scenes")
    p.add_argument("--metrics", nargs="+", type=Path, required=True, help="calval metrics.json files")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--html", type=Path, help="also the table as an HTML page for the report")
    p.set_defaults(func=_report_sites)

    p = sub.add_parser(
        "report-ensembles", parents=[common], help="per-class ensembles: each class's out-of-fold winner"
    )
    p.add_argument("winners", nargs="+", type=Path, help="results/ensembles/{name}/winners.json files")
    p.add_argument("--names", nargs="+", required=True, help="the ensembles' names, in the same order")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--html", type=Path, help="also the table as an HTML page for the report")
    p.set_defaults(func=_report_ensembles)
