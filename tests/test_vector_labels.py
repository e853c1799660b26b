"""Vector labels (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, GeoParquet) rasterized onto each
scene's grid in the clean step, acquired like raster labels (also over HTTP), and their bad input."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import shapes
from shapely.geometry import LineString, Point, Polygon, box, shape

from snakemap.core.label_sections import LabelOptions
from snakemap.core.sections import BandOptions, CleanOptions, DemoOptions
from snakemap.data.acquire import acquire_scene
from snakemap.data.clean import clean_scene
from snakemap.data.demo import write_demo_scene
from tests.conftest import CONFIG

BANDS = BandOptions(**CONFIG["bands"])
REMAP = {int(k): v for k, v in CONFIG["labels"]["remap"].items()}
CLASSES = CONFIG["labels"]["classes"]


def labels(**kw: object) -> LabelOptions:
    return LabelOptions(**{**CONFIG["labels"], "field": "code", **kw})


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A demo scene (six bands, EPSG:32755, 10 m) and its label raster."""
    root = tmp_path_factory.mktemp("vector")
    write_demo_scene("v1", root / "image.tif", root / "label.tif", DemoOptions(size=96))
    return root / "image.tif", root / "label.tif"


def polygons_of(label: Path) -> gpd.GeoDataFrame:
    """The label raster as polygons (one per patch of equal value), field ``code``."""
    with rasterio.open(label) as src:
        data = src.read(1)
        mask = data != src.nodata if src.nodata is not None else None
        found = [(shape(g), int(v)) for g, v in shapes(data, mask=mask, transform=src.transform)]
        crs = src.crs
    return gpd.GeoDataFrame({"code": [v for _, v in found]}, geometry=[g for g, _ in found], crs=crs)


def clean_with(tmp_path: Path, image: Path, label_uri: str, options: LabelOptions, name: str = "s") -> tuple:
    acquired = tmp_path / f"acq-{name}"
    assert acquire_scene(name, str(image), acquired, label_uri=label_uri)
    status = clean_scene(name, acquired, tmp_path / f"clean-{name}", BANDS, CleanOptions(), options)
    label = tmp_path / f"clean-{name}" / "label.tif"
    return status, (rasterio.open(label).read(1) if label.exists() else None), acquired


def raster_clean(tmp_path: Path, image: Path, label: Path) -> np.ndarray:
    acquired = tmp_path / "acq-raster"
    assert acquire_scene("r", str(image), acquired, label_uri=str(label))
    clean_scene("r", acquired, tmp_path / "clean-raster", BANDS, CleanOptions(), labels(field=None))
    with rasterio.open(tmp_path / "clean-raster" / "label.tif") as src:
        return src.read(1)


@pytest.mark.parametrize("suffix", [".gpkg", ".shp", ".geojson", ".fgb", ".parquet"])
def test_polygons_in_every_format_give_the_raster_labels_pixel_for_pixel(
    tmp_path: Path, demo: tuple[Path, Path], suffix: str
) -> None:
    image, label = demo
    polygons = polygons_of(label)
    path = tmp_path / f"labels{suffix}"
    polygons.to_parquet(path) if suffix == ".parquet" else polygons.to_file(path)
    status, vector, acquired = clean_with(tmp_path, image, str(path), labels())
    assert status.status == "ok", status.reason
    assert (acquired / f"label{suffix}").exists()
    if suffix == ".shp":
        assert all((acquired / f"label{p}").exists() for p in (".shx", ".dbf", ".prj"))
    np.testing.assert_array_equal(vector, raster_clean(tmp_path, image, label))
    assert status.extra["class_pixels"]["water"] > 0


def test_polygons_in_another_crs_with_class_names_and_string_keys(
    tmp_path: Path, demo: tuple[Path, Path]
) -> None:
    image, label = demo
    polygons = polygons_of(label).to_crs("EPSG:4326")  # degrees: reprojected onto the scene's grid
    names = {0: "land", 1: "sea", 2: "water", 3: "reef", 4: "cloud"}  # "sea" goes through remap
    polygons["cover"] = polygons["code"].map(names)
    path = tmp_path / "cover.gpkg"
    polygons.to_file(path)
    options = labels(field="cover", remap={**CONFIG["labels"]["remap"], "sea": "water"})
    status, vector, _ = clean_with(tmp_path, image, str(path), options)
    assert status.status == "ok", status.reason
    expected = raster_clean(tmp_path, image, label)
    # pixel centres on reprojected boundaries may fall either way; nearly all agree
    assert (vector == expected).mean() > 0.97
    assert set(np.unique(vector)) <= {0, 1, 2, 3, 255}


def test_points_and_lines_are_sparse_labels_widened_in_metres(
    tmp_path: Path, demo: tuple[Path, Path]
) -> None:
    image, _ = demo
    with rasterio.open(image) as src:
        left, bottom, right, top = src.bounds
    x, y = left + 205.0, top - 305.0  # the centre of pixel (row 30, column 20)
    features = gpd.GeoDataFrame(
        {"code": [1, 4]},
        geometry=[Point(x, y), LineString([(left + 5, top - 805), (right - 5, top - 805)])],
        crs="EPSG:32755",
    ).to_crs("EPSG:4326")  # features in degrees; the buffer is still in metres
    path = tmp_path / "points.geojson"
    features.to_file(path)
    status, plain, _ = clean_with(tmp_path, image, str(path), labels(), "plain")
    assert status.status == "ok", status.reason
    with rasterio.open(tmp_path / "clean-plain" / "image.tif") as src:
        valid = np.isfinite(src.read()).all(axis=0)  # labels only where the image is valid
    assert valid[30, 20] and valid[80].sum() > 50
    assert plain[30, 20] == 1 and (plain == 1).sum() == 1  # a point labels its pixel
    line = valid[80].sum()
    assert (plain[80][valid[80]] == 3).all() and (plain == 3).sum() == line  # a line, its row
    assert (plain == 255).sum() == plain.size - line - 1  # everything else is unlabelled
    status, wide, _ = clean_with(tmp_path, image, str(path), labels(buffer_m=25), "wide")
    assert (wide == 1).sum() == pytest.approx(np.pi * 2.5**2, rel=0.35)  # a 25 m disc of 10 m pixels
    assert (wide == 3).sum() == valid[78:83].sum()  # the line widened to 50 m: five rows
    status, filled, _ = clean_with(tmp_path, image, str(path), labels(background="land"), "bg")
    assert (filled == 0).sum() == valid.sum() - line - 1  # under no feature: the background class


def test_a_label_file_with_no_feature_over_the_scene_leaves_it_empty(
    tmp_path: Path, demo: tuple[Path, Path]
) -> None:
    image, _ = demo
    far = gpd.GeoDataFrame({"code": [1]}, geometry=[box(0, 0, 10, 10)], crs="EPSG:4326")
    far.to_file(tmp_path / "far.gpkg")
    status, _, _ = clean_with(tmp_path, image, str(tmp_path / "far.gpkg"), labels())
    assert status.status == "empty" and "no labelled pixels" in status.reason
    status, filled, _ = clean_with(
        tmp_path, image, str(tmp_path / "far.gpkg"), labels(background="land"), "bg"
    )
    # no burns in this scene: every valid pixel unburned
    assert status.status == "ok" and set(np.unique(filled)) == {0, 255}
    assert status.extra["class_pixels"]["land"] == int((filled == 0).sum()) > 0.8 * filled.size


def test_bad_vector_labels_name_the_file_the_column_and_the_features(
    tmp_path: Path, demo: tuple[Path, Path]
) -> None:
    image, label = demo
    polygons = polygons_of(label)
    polygons.to_file(tmp_path / "ok.gpkg")
    status, _, _ = clean_with(tmp_path, image, str(tmp_path / "ok.gpkg"), labels(field="class"), "a")
    assert (
        status.status == "corrupt"
        and "label label.gpkg has no column 'class' (labels.field)" in status.reason
    )
    status, _, _ = clean_with(tmp_path, image, str(tmp_path / "ok.gpkg"), labels(field=None), "b")
    assert status.status == "corrupt" and "labels.field must name its class column" in status.reason
    with rasterio.open(image) as src:
        w, s, e, n = src.bounds
    bow = Polygon([(w, s), (e, n), (e, s), (w, n)])  # a self-intersecting ring over the scene
    broken = gpd.GeoDataFrame({"code": [1, 1]}, geometry=[polygons.geometry.iloc[0], bow], crs=polygons.crs)
    broken.to_file(tmp_path / "broken.gpkg")
    status, _, _ = clean_with(tmp_path, image, str(tmp_path / "broken.gpkg"), labels(), "c")
    assert status.status == "corrupt" and "features [1] have invalid geometries" in status.reason
    odd = polygons.assign(code=polygons["code"].where(polygons["code"] != 4, 9))
    odd.to_file(tmp_path / "odd.gpkg")
    status, _, _ = clean_with(tmp_path, image, str(tmp_path / "odd.gpkg"), labels(unmapped="corrupt"), "d")
    assert (
        status.status == "corrupt" and "label values ['9']" in status.reason and "features" in status.reason
    )


def test_a_vector_label_is_acquired_over_http(tmp_path: Path, demo: tuple[Path, Path], http_server) -> None:
    image, label = demo
    polygons_of(label).to_file(tmp_path / "served.geojson")
    url = http_server.serve("/labels/v1.geojson", (tmp_path / "served.geojson").read_bytes())
    status, vector, acquired = clean_with(tmp_path, image, url, labels())
    assert status.status == "ok" and (acquired / "label.geojson").exists()
    np.testing.assert_array_equal(vector, raster_clean(tmp_path, image, label))
