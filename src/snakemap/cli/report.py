"""The report steps: calval and training figures, a site's preview, the winners table."""

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
    )
    return 0


def _report_winners(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation.winners import write_winners

    print(write_winners(args.summary, args.out).to_string(index=False))
    return 0


def _report_ensembles(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation.winners import write_out_of_fold_winners

    if len(args.names) != len(args.winners):
        raise ConfigError(f"{len(args.names)} --names for {len(args.winners)} winners.json files")
    files = dict(zip(args.names, args.winners, strict=True))
    print(write_out_of_fold_winners(files, args.out).to_string(index=False))
    return 0


def _report_sites(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation.sites import write_sites

    threshold = build("shift", cfg.get("shift")).threshold
    print(write_sites(args.clean, args.stats, args.metrics, threshold, args.out).to_string(index=False))
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
    p.set_defaults(func=_report_winners)

    p = sub.add_parser("report-sites", parents=[common], help="calval sites: shift score and best scores")
    p.add_argument("--clean", nargs="+", type=Path, required=True, help="each calval site's clean folder")
    p.add_argument("--stats", type=Path, required=True, help="bands.json of the training scenes")
    p.add_argument("--metrics", nargs="+", type=Path, required=True, help="calval metrics.json files")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_report_sites)

    p = sub.add_parser(
        "report-ensembles", parents=[common], help="per-class ensembles: each class's out-of-fold winner"
    )
    p.add_argument("winners", nargs="+", type=Path, help="results/ensembles/{name}/winners.json files")
    p.add_argument("--names", nargs="+", required=True, help="the ensembles' names, in the same order")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_report_ensembles)
