"""The area steps: draw a stratified reference sample from a predictor's maps, label it from a
reference raster, and estimate areas with 95% confidence intervals (:mod:`snakemap.evaluation.areas`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from snakemap.cli.common import step_options
from snakemap.core.config import ConfigError, build


def _sections(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """The ``areas`` (its defaults where the config has none) and ``labels`` sections."""
    if not cfg.get("labels"):
        raise ConfigError("the area steps need the labels section (its classes)")
    return build("areas", cfg.get("areas")), build("labels", cfg["labels"])


def _grid(maps: list[Path], areas: Any) -> Any:
    from snakemap.evaluation.area_grid import AreaGrid, map_files

    try:
        return AreaGrid.over(map_files(maps), areas.crs, areas.aoi, areas.resolution)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _sample(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.evaluation.area_grid import count_mapped, draw_sample, map_files, write_sample
    from snakemap.evaluation.areas import sample_sizes

    areas, labels = _sections(cfg)
    grid = _grid(args.maps, areas)
    files = map_files(args.maps)
    counts = count_mapped(grid, files, len(labels.classes))
    sizes = sample_sizes(
        counts, areas.sample.expected(labels.classes), areas.sample.target_se, areas.sample.min_per_class
    )
    table = draw_sample(grid, files, labels.classes, sizes, areas.sample.seed, counts)
    write_sample(table, grid.crs, args.out)
    logging.info(
        "%d points (%s) over %d mapped pixels of %.4g ha: %s",
        len(table),
        ", ".join(f"{c} {n}" for c, n in zip(labels.classes, sizes, strict=True)),
        int(counts.sum()),
        grid.pixel_ha,
        args.out,
    )
    return 0


def _label_sample(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import numpy as np
    import pyogrio

    from snakemap.data.labels import remap_labels
    from snakemap.evaluation.area_grid import label_from_raster, read_sample, write_sample

    _, labels = _sections(cfg)
    crs = pyogrio.read_info(args.sample)["crs"]
    table = read_sample(args.sample, crs)
    names = np.array([*labels.classes, None], dtype=object)

    def classes_of(values: Any) -> Any:
        index, _ = remap_labels(values, labels)  # NaN and values of no class: ignore_index
        return names[np.minimum(index, len(labels.classes))]

    labelled = label_from_raster(table, crs, args.raster, classes_of)
    write_sample(labelled, crs, args.out)
    logging.info("%d of %d points labelled from %s: %s", len(labelled), len(table), args.raster, args.out)
    return 0


def _areas(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.io import write_csv
    from snakemap.evaluation.area_grid import check_strata, count_mapped, map_files, read_sample
    from snakemap.evaluation.areas import estimate, sample_counts

    areas, labels = _sections(cfg)
    grid = _grid(args.maps, areas)
    files = map_files(args.maps)
    counts = count_mapped(grid, files, len(labels.classes))
    try:
        table = read_sample(args.reference, grid.crs)
        check_strata(table, grid, files, labels.classes, str(args.reference))
        matrix = sample_counts(table, labels.classes, str(args.reference))
        result = estimate(matrix, counts, labels.classes, grid.pixel_ha)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    # hectares to the square metre, accuracies to 1e-4: what a report quotes, without float noise
    ha = [c for c in result.columns if c.endswith("_ha")]
    result[ha] = result[ha].round(2)
    result = result.round(
        {c: 4 for c in result.columns if c not in ha and c not in ("class", "sample_points")}
    )
    print(write_csv(result, args.out).to_string(index=False))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the area steps to the ``snakemap`` command."""
    common = step_options()
    maps_help = "class maps: GeoTIFFs, VRTs or a mosaic folder (its zones); the first to map a place counts"

    p = sub.add_parser("sample", parents=[common], help="a stratified random reference sample of a map")
    p.add_argument("maps", nargs="+", type=Path, help=maps_help)
    p.add_argument("--out", type=Path, required=True, help="sample.gpkg: points to label (column reference)")
    p.set_defaults(func=_sample)

    p = sub.add_parser("label-sample", parents=[common], help="a sample's reference classes from a raster")
    p.add_argument("sample", type=Path, help="the sample (snakemap sample)")
    p.add_argument(
        "--raster",
        type=Path,
        nargs="+",
        required=True,
        help="reference class rasters (values through labels.remap; the first with a value at a point "
        "gives it)",
    )
    p.add_argument("--out", type=Path, required=True, help="the labelled sample (GeoPackage)")
    p.set_defaults(func=_label_sample)

    p = sub.add_parser(
        "areas", parents=[common], help="error-adjusted areas with 95%% CIs from a labelled sample"
    )
    p.add_argument("maps", nargs="+", type=Path, help=maps_help)
    p.add_argument("--reference", type=Path, required=True, help="the labelled sample")
    p.add_argument("--out", type=Path, required=True, help="areas.csv")
    p.set_defaults(func=_areas)
