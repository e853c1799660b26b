"""Area estimates with 95% confidence intervals (Olofsson et al. 2014): the paper's worked
example to the hectare, interval coverage on a map whose true areas are known, and the sample /
label-sample / areas steps on real GeoTIFFs in a geographic CRS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from snakemap.evaluation.area_grid import AreaGrid, count_mapped, draw_sample, label_from_raster
from snakemap.evaluation.areas import estimate, sample_counts, sample_sizes

CLASSES = ["water", "land", "cloud"]
LABELS = {"classes": CLASSES, "remap": {"0": "water", "1": "land", "2": "cloud"}}


def test_the_papers_worked_example_to_the_hectare() -> None:
    """Olofsson et al. (2014), section 5: four classes, pixels of 0.09 ha."""
    counts = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
    mapped = [200_000, 150_000, 3_200_000, 6_450_000]
    classes = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
    table = estimate(counts, mapped, classes, unit_ha=0.09).set_index("class")
    assert table.loc[classes, "area_ha"].round().tolist() == [21_158, 11_686, 285_770, 581_386]
    assert table.loc[classes, "area_ci95_ha"].round().tolist() == [6_158, 3_756, 15_510, 16_282]
    assert table.loc[classes, "users_accuracy"].round(2).tolist() == [0.88, 0.73, 0.93, 0.96]
    assert table.loc[classes, "producers_accuracy"].round(2).tolist() == [0.75, 0.85, 0.93, 0.96]
    assert table.loc["overall", "overall_accuracy"] == pytest.approx(0.947, abs=5e-4)
    # the paper's intervals of the accuracies (table 8): user's +-0.07, 0.10, 0.04, 0.02 ...
    assert table.loc[classes, "users_ci95"].round(2).tolist() == [0.07, 0.10, 0.04, 0.02]
    # ... producer's +-0.21, 0.25, 0.03, 0.02, overall +-0.02
    assert table.loc[classes, "producers_ci95"].round(2).tolist() == [0.21, 0.25, 0.03, 0.02]
    assert table.loc["overall", "overall_ci95"] == pytest.approx(0.018, abs=1e-3)
    assert table.loc["overall", "mapped_ha"] == pytest.approx(900_000)
    with pytest.raises(ValueError, match=r"\['forest gain'\] are mapped but have no reference point"):
        estimate(counts * np.array([[1], [0], [1], [1]]), mapped, classes)


def test_sample_sizes_follow_the_target_error_with_a_floor_per_class() -> None:
    mapped = np.array([200_000, 150_000, 3_200_000, 6_450_000])
    sizes = sample_sizes(mapped, [0.7, 0.6, 0.9, 0.95], target_se=0.01, min_per_class=50)
    w = mapped / mapped.sum()
    s = np.sqrt(np.array([0.7, 0.6, 0.9, 0.95]) * (1 - np.array([0.7, 0.6, 0.9, 0.95])))
    n = (np.sum(w * s) / 0.01) ** 2  # eq. 13: 641 here
    assert round(n) == 641
    assert sizes.tolist() == [50, 50, round(n * w[2]), round(n * w[3])]
    assert sample_sizes(np.array([10, 0, 1000]), [0.9] * 3, 0.01, 50).tolist() == [10, 0, 891]


def write_classes(path: Path, values: np.ndarray, crs: str = "EPSG:4326") -> Path:
    """A class raster (uint8, nodata 255) on a 0.001-degree grid near the equator."""
    profile = dict(
        driver="GTiff",
        width=values.shape[1],
        height=values.shape[0],
        count=1,
        dtype="uint8",
        crs=crs,
        transform=from_origin(10.0, 0.2, 0.001, 0.001),
        nodata=255,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(np.uint8), 1)
    return path


@pytest.fixture(scope="module")
def truth_and_map(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A reference raster (water in a band, cloud in a square, land elsewhere) and a map of it
    with errors at known rates: water mapped as land 25%, land as water 1%, cloud as land 10%."""
    root = tmp_path_factory.mktemp("areas")
    rng = np.random.default_rng(1)
    truth = np.ones((200, 300), dtype=np.uint8)
    truth[20:60, :] = 0
    truth[100:180, 150:290] = 2
    mapped = truth.copy()
    u = rng.random(truth.shape)
    mapped[(truth == 0) & (u < 0.25)] = 1
    mapped[(truth == 1) & (u < 0.01)] = 0
    mapped[(truth == 2) & (u < 0.10)] = 1
    mapped[:5, :5] = 255  # nodata: counted nowhere
    return write_classes(root / "truth.tif", truth), write_classes(root / "map.tif", mapped)


def test_intervals_cover_the_true_areas_about_95_percent_of_the_time(
    truth_and_map: tuple[Path, Path],
) -> None:
    truth, mapped = truth_and_map
    grid = AreaGrid.over([mapped])  # degrees in, an equal-area grid out
    assert grid.crs.to_epsg() == 6933 and 90 < grid.transform.a < 120  # 0.001 degree is ~111 m
    true_area = count_mapped(grid, [truth], 3) * grid.pixel_ha
    counts = count_mapped(grid, [mapped], 3)
    assert counts.sum() < grid.width * grid.height  # the nodata corner counts nowhere
    sizes = [60, 300, 60]
    hits, trials = np.zeros(3), 120
    for seed in range(trials):
        sample = draw_sample(grid, [mapped], CLASSES, sizes, seed, counts)
        assert sample.groupby("map_class").size().loc[CLASSES].tolist() == sizes
        labelled = label_from_raster(
            sample, grid.crs, truth, lambda v: np.array(CLASSES + [None])[v.astype(int)]
        )
        table = estimate(sample_counts(labelled, CLASSES, "sample"), counts, CLASSES, grid.pixel_ha)
        rows = table.set_index("class").loc[CLASSES]
        hits += (rows["area_low_ha"] <= true_area) & (true_area <= rows["area_high_ha"])
    coverage = hits / trials
    # the map's own counts are far off for water (25% omitted) ...
    assert abs(counts[0] * grid.pixel_ha - true_area[0]) > 0.1 * true_area[0]
    # ... the intervals cover the true areas about 95% of the time (binomial noise over 120)
    assert ((coverage > 0.87) & (coverage <= 1.0)).all(), coverage


def test_sample_points_are_distinct_pixels_of_their_stratum(truth_and_map: tuple[Path, Path]) -> None:
    _, mapped = truth_and_map
    grid = AreaGrid.over([mapped])
    a = draw_sample(grid, [mapped], CLASSES, [30, 30, 30], seed=3)
    b = draw_sample(grid, [mapped], CLASSES, [30, 30, 30], seed=3)
    pd.testing.assert_frame_equal(a, b)  # reproducible
    assert not a.duplicated(["x", "y"]).any()
    with rasterio.open(mapped) as src:
        from rasterio.warp import transform

        lon, lat = transform(grid.crs, src.crs, a["x"].tolist(), a["y"].tolist())
        values = [v[0] for v in src.sample(list(zip(lon, lat, strict=True)))]
    assert [CLASSES[v] for v in values] == a["map_class"].tolist()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "snakemap", *args], capture_output=True, text=True)


def test_sample_label_and_areas_steps_on_an_area_of_interest(
    tmp_path: Path, truth_and_map: tuple[Path, Path]
) -> None:
    truth, mapped = truth_and_map
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame({"name": ["west"]}, geometry=[box(10.0, 0.0, 10.2, 0.2)], crs="EPSG:4326").to_file(aoi)
    options = json.dumps(
        {"labels": LABELS, "areas": {"aoi": str(aoi), "sample": {"min_per_class": 20, "target_se": 0.02}}}
    )
    sample, reference, out = tmp_path / "sample.gpkg", tmp_path / "reference.gpkg", tmp_path / "areas.csv"
    done = run("sample", str(mapped), "--out", str(sample), "--options", options)
    assert done.returncode == 0, done.stderr
    points = gpd.read_file(sample)
    assert (
        set(points.columns) >= {"point", "map_class", "reference", "geometry"}
        and (points["reference"] == "").all()
    )
    assert points.crs.to_epsg() == 6933 and (points.to_crs("EPSG:4326").geometry.x < 10.2).all()  # in the AOI
    assert points.groupby("map_class").size().min() >= 20
    done = run(
        "label-sample", str(sample), "--raster", str(truth), "--out", str(reference), "--options", options
    )
    assert done.returncode == 0, done.stderr
    labelled = gpd.read_file(reference)
    assert len(labelled) == len(points) and set(labelled["reference"]) <= set(CLASSES)
    done = run("areas", str(mapped), "--reference", str(reference), "--out", str(out), "--options", options)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out).set_index("class")
    assert table.index.tolist() == [*CLASSES, "overall"]
    grid = AreaGrid.over([mapped], aoi=aoi)
    true_area = count_mapped(grid, [truth], 3) * grid.pixel_ha
    assert (table.loc[CLASSES, "area_high_ha"] >= table.loc[CLASSES, "area_low_ha"]).all()
    assert table.loc["water", "area_ci95_ha"] > 0  # water is missed in the land stratum
    assert table.loc[CLASSES, "mapped_ha"].sum() == pytest.approx(table.loc["overall", "mapped_ha"])
    # the error-adjusted water area is nearer the truth than the map's count, which misses a quarter
    water = table.loc["water"]
    assert abs(water["area_ha"] - true_area[0]) < abs(water["mapped_ha"] - true_area[0])
    # a reference class the map does not have, and a sample drawn from another map: named
    bad = labelled.copy()
    bad.loc[3, "reference"] = "snow"
    bad.to_file(tmp_path / "bad.gpkg")
    done = run(
        "areas",
        str(mapped),
        "--reference",
        str(tmp_path / "bad.gpkg"),
        "--out",
        str(out),
        "--options",
        options,
    )
    assert done.returncode != 0 and "points [3]" in done.stderr and "snow" not in CLASSES
    assert "reference unlabelled or of a class the map does not have" in done.stderr
    stale = labelled.copy()
    stale.loc[0, "map_class"] = next(c for c in CLASSES if c != stale.loc[0, "map_class"])
    stale.to_file(tmp_path / "stale.gpkg")
    done = run(
        "areas",
        str(mapped),
        "--reference",
        str(tmp_path / "stale.gpkg"),
        "--out",
        str(out),
        "--options",
        options,
    )
    assert done.returncode != 0 and "points [0]" in done.stderr and "draw it again" in done.stderr


def test_naming_the_drawn_sample_as_the_reference_is_refused() -> None:
    """The sample rule rewrites its output when it reruns: labels kept in it would be lost."""
    import yaml

    from snakemap.core.config import ConfigError, load_config
    from tests.conftest import REPO

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    predictor = config["apply"]["predictors"][0]
    config["areas"] = {"reference": {predictor: f"results/maps/{predictor}/sample.gpkg"}}
    with pytest.raises(ConfigError, match="name the drawn sample itself"):
        load_config(config)
