"""The real rasters of ../shared/data: sparse labels, odd nodata, and the ukis example config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from snakemap.core.label_sections import LabelOptions
from snakemap.core.sections import BandOptions, CleanOptions
from snakemap.data.acquire import acquire_scene
from snakemap.data.clean import clean_scene
from tests.conftest import REPO, snakemake

NC_CLASSES = ["developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"]


def test_nc_landsat_sparse_labels_and_nodata(tmp_path: Path, shared_data: Path) -> None:
    seg = shared_data / "segmentation"
    image, label = seg / "nc_landsat7_2000_image.tif", seg / "nc_landsat96_labelled_pixels_label.tif"
    assert acquire_scene("nc", str(image), tmp_path / "acq", label_uri=label.as_uri())
    labels = LabelOptions(classes=NC_CLASSES, remap={i + 1: c for i, c in enumerate(NC_CLASSES)})
    status = clean_scene(
        "nc", tmp_path / "acq", tmp_path / "clean", BandOptions(indices=["ndvi"]), CleanOptions(), labels
    )
    assert status.status == "ok"
    with rasterio.open(image) as src:
        raw = src.read()
        valid = (raw != -99999).all(axis=0)
    with rasterio.open(label) as src:
        sparse = src.read(1)
    assert status.valid_fraction == pytest.approx(valid.mean(), abs=1e-6)
    assert 0.8 < status.valid_fraction < 0.9  # about 15% of the frame is nodata
    with rasterio.open(tmp_path / "clean" / "label.tif") as src:
        cleaned = src.read(1)
        assert src.crs.to_epsg() == 32119  # the image's grid, though the label file says 3358
    # Unlabelled pixels (0) are ignored; every labelled pixel on valid data keeps its class.
    keep = (sparse > 0) & valid
    np.testing.assert_array_equal(cleaned[keep], sparse[keep] - 1)
    assert (cleaned[~keep] == 255).all()
    assert sum(status.extra["class_pixels"].values()) == keep.sum()


@pytest.mark.workflow
def test_ukis_example_config(tmp_path: Path, shared_data: Path) -> None:
    # The example's manifest points at ../shared/data from the working directory.
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    (tmp_path / "shared").symlink_to(shared_data.parent)
    # The stages up to the folds (training has its own tests and benchmark).
    # and the rule baseline's scores at the Landsat 7 site.
    targets = ["results/clean/ukis_l7", "results/stats/bands.json", "results/splits/folds.parquet"]
    targets.append("results/calval/baselines/index_rules/metrics.json")
    snakemake(work, "--configfile", "config/examples/ukis.yaml", "--replace-workflow-config", *targets)
    run = work / "runs" / "ukis"  # the example's workdir: beside any other run's results
    assert not (work / "results").exists()
    for scene in ("ukis_s2", "ukis_l7"):
        status = json.loads((run / "results" / "clean" / scene / "status.json").read_text())
        assert status["status"] == "ok" and status["shape"] == [512, 512]
        assert status["bands"] == ["blue", "green", "red", "nir", "swir16", "swir22", "ndwi", "mndwi"]
        record = json.loads((run / "resources" / "scenes" / scene / "acquire.json").read_text())
        assert record["files"]["image"]["attempts"] == 1  # checksums verified at the first try
    s2 = json.loads((run / "results" / "clean" / "ukis_s2" / "status.json").read_text())
    assert s2["extra"]["class_pixels"] == {
        "clear_land": 183124,
        "water": 840,
        "cloud_shadow": 28583,
        "cloud": 49597,
    }
    stats = json.loads((run / "results" / "stats" / "bands.json").read_text())
    assert stats["scenes"] == ["ukis_s2"]
    blue = stats["bands"][0]
    assert blue["count"] == 512 * 512 and 0 <= blue["min"] < blue["p1"] < blue["mean"] < blue["p99"] < 1.5
    folds = pd.read_parquet(run / "results" / "splits" / "folds.parquet")
    assert len(folds) == 225 and sorted(folds["fold"].unique()) == [0, 1, 2, 3]
    assert (folds.groupby("group")["fold"].nunique() == 1).all() and folds["group"].nunique() == 16
    assert not (run / "results" / "chips" / "ukis_l7.index.parquet").exists()  # calval: no chips
    rules = json.loads((run / "results/calval/baselines/index_rules/metrics.json").read_text())
    ious = {c: round(v["iou"], 3) for c, v in rules["overall"]["per_class"].items()}
    # in-sample (the thresholds were read off both scenes, this one included): the rules as written
    assert ious == {"clear_land": 0.737, "water": 0.433, "cloud_shadow": 0.671, "cloud": 0.651}


@pytest.mark.workflow
def test_landcover_example_config(tmp_path: Path, shared_data: Path) -> None:
    """The land-cover example through snakemake on the real North Carolina scene: its sparse
    labels cut into chips, spatial-block folds, and one fold's booster (fewer rounds here) that
    maps the scene's labelled pixels far better than chance."""
    import torch
    import yaml

    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    (tmp_path / "shared").symlink_to(shared_data.parent)
    example = work / "config" / "examples" / "landcover.yaml"
    config = yaml.safe_load(example.read_text())
    assert config["apply"]["predictors"] == ["ensembles/folds"]  # the recommended predictor
    config["models"]["base"]["boosting"] = {"rounds": 40, "pixels": 20000}
    example.write_text(yaml.safe_dump(config))
    args = ["--configfile", "config/examples/landcover.yaml", "--replace-workflow-config"]
    snakemake(work, *args, "results/models/base/fold0/best.ckpt", "results/bundles/base/fold0.zip")
    run = work / config["workdir"]
    folds = pd.read_parquet(run / "results" / "splits" / "folds.parquet")
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3]
    metrics = pd.read_csv(run / "results" / "models" / "base" / "fold0" / "metrics.csv")
    assert metrics["val_f1"].max() > 1 / len(NC_CLASSES) * 2  # well above chance on the held-out fold
    hp = torch.load(run / "results/models/base/fold0/best.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["family"] == "lightgbm" and hp["classes"] == NC_CLASSES
    assert hp["band_names"] == ["blue", "green", "red", "nir", "swir16", "swir22", "ndvi", "ndwi", "mndwi"]


@pytest.mark.workflow
def test_stac_polygons_example_runs_with_one_command(tmp_path: Path, shared_data: Path) -> None:
    """The STAC example through snakemake on the real UKIS scenes: a catalogue of per-band COG
    assets at 30 and 60 m with polygon labels, a booster trained on the Sentinel-2 item, the
    Landsat 7 item mapped, its polygons and its areas with 95% intervals from a reference sample
    labelled from its own label raster."""
    import geopandas as gpd
    import yaml

    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    (tmp_path / "shared").symlink_to(shared_data.parent)
    example = work / "config" / "examples" / "stac_polygons.yaml"
    config = yaml.safe_load(example.read_text())
    config["models"]["base"]["boosting"] = {"rounds": 60, "pixels": 20000}  # quicker here
    example.write_text(yaml.safe_dump(config))
    snakemake(work, "--configfile", "config/examples/stac_polygons.yaml", "--replace-workflow-config")
    run = work / config["workdir"]
    acquired = run / "resources" / "scenes" / "ukis_s2"
    assert (acquired / "image.vrt").exists() and (acquired / "label.gpkg").exists()
    status = json.loads((run / "results" / "clean" / "ukis_s2" / "status.json").read_text())
    assert status["status"] == "ok" and status["extra"]["class_pixels"]["water"] > 500  # from polygons
    maps = run / "results" / "maps" / "models" / "base" / "best"
    polygons = gpd.read_parquet(maps / "polygons.parquet")
    assert set(polygons["class"]) <= {"water", "cloud"} and (polygons["area_m2"] >= 8100 * 0.99).all()
    areas = pd.read_csv(maps / "areas.csv").set_index("class")
    assert list(areas.index) == ["clear_land", "water", "cloud_shadow", "cloud", "overall"]
    # the scene is 512 x 512 pixels of 30 m, a little over 23,590 ha in the equal-area grid
    assert areas.loc["overall", "mapped_ha"] == pytest.approx(512 * 512 * 0.09, rel=0.01)
    assert 0.5 < areas.loc["overall", "overall_accuracy"] <= 1
    classes = areas.drop(index="overall")
    assert classes["area_ha"].sum() == pytest.approx(areas.loc["overall", "mapped_ha"], abs=0.05)
    assert (classes["area_ci95_ha"] > 0).all() and (classes["sample_points"] >= 30).all()
    # each reference point's class is the Landsat 7 label raster's there, through labels.remap
    reference = gpd.read_file(maps / "reference.gpkg").to_crs("EPSG:32632")
    remap = {3: "clear_land", 1: "water", 0: "cloud_shadow", 4: "cloud"}
    with rasterio.open(shared_data / "segmentation" / "ukis_landsat7_label.tif") as src:
        codes = [int(v[0]) for v in src.sample(zip(reference.geometry.x, reference.geometry.y, strict=True))]
    assert [remap[c] for c in codes] == reference["reference"].tolist()
