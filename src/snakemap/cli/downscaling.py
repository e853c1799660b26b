"""The downscaling steps: downscale a calval site or a raster (with a model or by interpolation),
a predictor's errors over the sites, the summary with the ratios to the baselines, the figures."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from snakemap.cli.common import step_options
from snakemap.core.config import ConfigError, build


def _downscale(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import torch

    from snakemap.inference.fields import check_auxiliary, downscale_raster, predict_site
    from snakemap.tasks.downscaling import load_downscaler

    opts = build("downscaling", cfg.get("downscaling"))
    predict = build("predict", cfg.get("predict"))
    if (args.checkpoint is None) == (args.method is None):
        raise ConfigError("downscale needs --checkpoint (a model) or --method (a baseline), not both")
    model, scale = None, args.scale
    if args.checkpoint is not None:
        device = torch.device("cuda" if args.gpus and torch.cuda.is_available() else "cpu")
        model = load_downscaler(args.checkpoint, device, predict.tta)
        scale = model.scale
    if scale is None:
        raise ConfigError("downscale --method needs --scale")
    if args.clean is not None:
        predict_site(
            args.clean,
            args.out,
            scale,
            model,
            args.method or "bicubic",
            opts.window,
            opts.overlap,
            predict.batch_size,
        )
    else:
        if model is None:
            raise ConfigError("downscale --input needs --checkpoint")
        check_auxiliary(str(args.checkpoint), model.band_names, opts.auxiliary)
        figures = downscale_raster(
            args.input, args.out, model, scale, opts.auxiliary, opts.window, opts.overlap, predict.batch_size
        )
        logging.info("downscaled %s x%d: %s", args.input, scale, figures)
    return 0


def _downscale_metrics(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation.field_scores import score_sites, sites_table
    from snakemap.evaluation.scores import write_scores

    result = score_sites(args.predictor, args.clean, args.maps, args.scale, args.method, args.selection)
    write_scores(result, sites_table(result), args.out_json, args.out_csv)
    return 0


def _downscale_summary(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.io import write_csv
    from snakemap.evaluation.field_scores import summary

    table = write_csv(summary(args.metrics), args.out)
    for scale in args.scales:
        write_csv(table[table["scale"] == scale], args.tables / f"scale_x{scale}.csv")
    print(table.to_string(index=False))
    return 0


def _downscale_figure(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import pandas as pd

    from snakemap.evaluation.calval import site_image
    from snakemap.evaluation.report import downscaling_figure

    image = site_image(args.clean, [args.out])
    if image is None:
        return 0
    table = pd.read_csv(args.summary)
    panels = []
    for scale, rows in table.groupby("scale"):  # one row of panels per scale
        models = rows[rows["kind"] == "model"]
        if models.empty:
            continue
        best = str(models.sort_values("rmse").iloc[0]["predictor"])
        site = args.clean.name
        panels.append(
            (
                int(str(scale)),
                best,
                args.calval / best / f"{site}.tif",
                args.calval / "baselines" / f"bicubic-x{scale}" / f"{site}.tif",
            )
        )
    downscaling_figure(
        image, panels, f"{args.clean.name}: the best model per scale against bicubic", args.out
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the downscaling steps to the ``snakemap`` command."""
    common = step_options()

    p = sub.add_parser("downscale", parents=[common], help="downscale a calval site or a raster")
    p.add_argument("--checkpoint", type=Path, help="a downscaling model's checkpoint")
    p.add_argument("--method", choices=["bicubic", "bilinear", "nearest"], help="an interpolation baseline")
    p.add_argument("--scale", type=int, help="the baseline's scale factor")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--clean", type=Path, help="a calval site's clean folder: its field degraded, then predicted"
    )
    where.add_argument("--input", type=Path, help="a low-resolution raster (band 1) to downscale")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpus", type=int, default=0)
    p.set_defaults(func=_downscale)

    p = sub.add_parser(
        "downscale-metrics", parents=[common], help="a downscaling predictor's errors over the sites"
    )
    p.add_argument("--predictor", required=True)
    p.add_argument("--clean", nargs="+", type=Path, required=True, help="the sites' clean folders")
    p.add_argument("--maps", nargs="+", type=Path, required=True, help="the predictor's maps, in site order")
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--method", help="the interpolation of a baseline")
    p.add_argument("--selection", default="", help="how the checkpoint was chosen")
    p.add_argument("--out-json", type=Path, required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    p.set_defaults(func=_downscale_metrics)

    p = sub.add_parser(
        "downscale-summary", parents=[common], help="errors and ratios to the baselines per predictor"
    )
    p.add_argument("metrics", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tables", type=Path, required=True, help="folder of the per-scale tables scale_x{s}.csv")
    p.add_argument("--scales", nargs="*", type=int, default=[])
    p.set_defaults(func=_downscale_summary)

    p = sub.add_parser(
        "downscale-figure", parents=[common], help="a site's maps, errors and scatter per scale"
    )
    p.add_argument("--clean", type=Path, required=True)
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument(
        "--calval", type=Path, default=Path("results/calval"), help="where the predictors' maps are"
    )
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_downscale_figure)
