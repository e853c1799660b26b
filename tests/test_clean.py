"""Cleaning real GeoTIFFs: masks, band selection, indices, remapping, reprojection, states."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from snakemap.cli import main
from snakemap.core.config import ConfigError
from snakemap.core.label_sections import LabelOptions
from snakemap.core.sections import BandOptions, CleanOptions
from snakemap.data.clean import ALL_ZERO, clean_scene
from tests.conftest import write_tif

NAMES = ["blue", "green", "red", "nir"]
LABELS = LabelOptions(
    classes=["background", "water", "reef"],
    remap={0: "background", 1: "water", 2: "reef", 3: "ignore"},
    ignore_index=255,
)


def acquired(tmp_path: Path, image: np.ndarray, label: np.ndarray | None = None, **kw) -> Path:
    folder = tmp_path / "acq"
    label_nodata = kw.pop("label_nodata", None)
    write_tif(folder / "image.tif", image, **kw)
    if label is not None:
        write_tif(folder / "label.tif", label, nodata=label_nodata)
    (folder / "acquire.json").write_text(json.dumps({"status": "ok", "reason": "", "files": {}}))
    return folder


def scene(rows: int = 40, cols: int = 50, bands: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(100, 3000, (bands, rows, cols)).astype(np.uint16)


def run(tmp_path: Path, folder: Path, bands=None, clean=None, labels=LABELS):
    out = tmp_path / "clean"
    status = clean_scene("s", folder, out, bands or BandOptions(names=NAMES), clean or CleanOptions(), labels)
    return status, out


def read(path: Path) -> tuple[np.ndarray, rasterio.profiles.Profile, tuple]:
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.descriptions


def test_nodata_value_nan_and_zero_masks(tmp_path: Path) -> None:
    img = scene().astype(np.float32)
    img[:, 0, 0] = -9999  # the file's nodata value
    img[2, 1, 1] = np.nan
    img[:, 2, 2] = 0  # all-zero pixel
    img[1, 3, 3] = 0  # one zero band is valid data
    status, out = run(
        tmp_path, acquired(tmp_path, img, nodata=-9999), clean=CleanOptions(zero_is_nodata=True)
    )
    data, profile, _ = read(out / "image.tif")
    invalid = ~np.isfinite(data).all(axis=0)
    assert np.argwhere(invalid).tolist() == [[0, 0], [1, 1], [2, 2]]
    assert np.isnan(profile["nodata"])
    assert status.status == "ok"
    assert status.valid_fraction == pytest.approx(1 - 3 / (40 * 50), abs=1e-6)


def test_band_selection_by_name_and_index_and_indices(tmp_path: Path) -> None:
    img = scene().astype(np.float32)
    bands = BandOptions(
        names=NAMES, select=["nir", 1], indices=["ndwi", {"name": "gr", "a": "green", "b": "red"}]
    )
    status, out = run(tmp_path, acquired(tmp_path, img), bands=bands)
    data, _, desc = read(out / "image.tif")
    assert desc == ("nir", "blue", "ndwi", "gr")
    assert status.bands == list(desc) and status.band_count == 4
    np.testing.assert_array_equal(data[0], img[3])
    np.testing.assert_array_equal(data[1], img[0])
    np.testing.assert_allclose(data[2], (img[1] - img[3]) / (img[1] + img[3]), rtol=1e-6)
    np.testing.assert_allclose(data[3], (img[1] - img[2]) / (img[1] + img[2]), rtol=1e-6)


def test_qa_values_and_bits(tmp_path: Path) -> None:
    img = scene(bands=5).astype(np.float32)
    img[4] = 0
    img[4, 0, :5] = 8  # bit 3: cloud
    img[4, 1, :3] = 1  # value 1: fill
    names = NAMES + ["qa"]
    clean = CleanOptions(qa={"band": "qa", "values": [1], "bits": [3]})
    status, out = run(tmp_path, acquired(tmp_path, img), bands=BandOptions(names=names), clean=clean)
    data, _, desc = read(out / "image.tif")
    assert desc == tuple(NAMES)  # the QA band is dropped
    assert (~np.isfinite(data[0])).sum() == 8
    assert np.isnan(data[:, 0, :5]).all() and np.isnan(data[:, 1, :3]).all()


def test_label_remap_ignore_and_invalid_pixels(tmp_path: Path) -> None:
    img = scene().astype(np.float32)
    img[:, 5, 5] = np.nan
    label = np.zeros((40, 50), dtype=np.uint8)
    label[10:20, 10:20] = 2
    label[0:5] = 3  # mapped to ignore
    label[30:, :] = 7  # unmapped: ignored, up to labels.max_unmapped_fraction
    label[25, 25] = 9  # the file's nodata
    label[5, 5] = 1  # on invalid image data: ignored
    folder = acquired(tmp_path, img, label, label_nodata=9)
    labels = LabelOptions(classes=LABELS.classes, remap=LABELS.remap, max_unmapped_fraction=0.3)
    status, out = run(tmp_path, folder, labels=labels)
    lab, profile, _ = read(out / "label.tif")
    lab = lab[0]
    assert profile["nodata"] == 255 and profile["dtype"] == "uint8"
    assert (lab[10:20, 10:20] == 2).all()
    assert (lab[0:5] == 255).all() and (lab[30:] == 255).all()
    assert lab[25, 25] == 255 and lab[5, 5] == 255
    ignored = 5 * 50 + 10 * 50 + 2
    assert status.extra["class_pixels"] == {"background": 40 * 50 - 100 - ignored, "water": 0, "reef": 100}
    assert status.extra["unmapped_fraction"] == round(10 * 50 / (40 * 50 - 1), 6)  # of the labelled pixels
    assert status.extra["unmapped_values"] == [7]


@pytest.mark.parametrize("scheme", [False, True])
def test_unmapped_label_values_are_recorded_and_fail_above_the_fraction(
    tmp_path: Path, scheme: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A label of another class table (values 0..249 against {0, 1, 2}) is corrupt, not silently sparse."""
    label = (np.arange(40 * 50).reshape(40, 50) % 250).astype(np.uint8)
    label[:, 40:] = 255  # the file's nodata: not labelled
    remap = {0: "land", 1: "water", 2: "reef"}
    config = dict(MIXED, bands={"names": LANDSAT})
    if scheme:  # a label scheme behaves like labels.remap
        config["label_schemes"] = {"codes": remap}
        config["labels"] = dict(MIXED["labels"], remap={})
    flags = ("--label-scheme", "codes") if scheme else ()
    image = np.random.default_rng(5).uniform(0.02, 0.6, (6, 40, 50)).astype(np.float32)
    out = clean_cli(tmp_path, "s", acquired(tmp_path, image, label, label_nodata=255), config, *flags)
    status = json.loads((out / "status.json").read_text())
    labelled = label[label != 255]
    fraction = round(float(np.isin(labelled, [0, 1, 2], invert=True).mean()), 6)
    key = "label_schemes.codes" if scheme else "labels.remap"
    assert status["status"] == "corrupt" and status["extra"]["unmapped_fraction"] == fraction > 0.9
    assert status["reason"].startswith(f"label values {status['extra']['unmapped_values']} ")
    assert f"are not in {key}: above labels.max_unmapped_fraction 0.01" in status["reason"]
    assert len(status["extra"]["unmapped_values"]) == 10 and 0 not in status["extra"]["unmapped_values"]
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]
    assert any("scene s: label values" in r.getMessage() and key in r.getMessage() for r in caplog.records)
    # Below the configured fraction the same label is ok, the fraction still recorded.
    config["labels"] = dict(config["labels"], max_unmapped_fraction=0.99)
    out = clean_cli(tmp_path, "s", acquired(tmp_path, image, label, label_nodata=255), config, *flags)
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "ok" and status["extra"]["unmapped_fraction"] == fraction
    assert 0 < status["started"] <= status["finished"]  # when the step ran, in the status itself
    assert (read(out / "label.tif")[0][0][np.isin(label, [0, 1, 2], invert=True)] == 255).all()


def test_unmapped_value_can_make_a_scene_corrupt(tmp_path: Path) -> None:
    labels = LabelOptions(classes=["a", "b"], remap={0: "a", 1: "b"}, unmapped="corrupt")
    label = np.zeros((40, 50), dtype=np.uint8)
    label[0, 0] = 5  # 1 pixel in 2,000: under max_unmapped_fraction, but unmapped: corrupt fails on any
    status, out = run(tmp_path, acquired(tmp_path, scene(), label), labels=labels)
    assert (
        status.status == "corrupt"
        and "[5]" in status.reason
        and "labels.unmapped is corrupt" in status.reason
    )
    assert status.extra["unmapped_fraction"] == 0.0005
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]
    status, _ = run(tmp_path, acquired(tmp_path, scene(), label))  # unmapped: ignore, under the fraction
    assert status.status == "ok" and status.extra["unmapped_values"] == [5]


def test_reprojection_keeps_labels_categorical(tmp_path: Path) -> None:
    img = scene(rows=60, cols=60).astype(np.float32)
    label = np.zeros((60, 60), dtype=np.uint8)
    label[:, 30:] = 2
    folder = acquired(tmp_path, img, label)
    status, out = run(tmp_path, folder, clean=CleanOptions(crs="EPSG:32756", resolution=20))
    data, profile, _ = read(out / "image.tif")
    lab, lprofile, _ = read(out / "label.tif")
    assert profile["crs"].to_epsg() == 32756 and status.crs == "EPSG:32756"
    assert profile["transform"].a == 20 and lprofile["transform"] == profile["transform"]
    assert lab.shape[1:] == data.shape[1:]
    assert set(np.unique(lab)) <= {0, 2, 255}
    assert status.shape == list(data.shape[1:])


def test_cog_layout(tmp_path: Path) -> None:
    status, out = run(tmp_path, acquired(tmp_path, scene(rows=600, cols=700)))
    with rasterio.open(out / "image.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.compression.name == "deflate"
        assert src.overviews(1)  # overviews for quick viewing
        assert src.crs.to_epsg() == 32755


def test_all_nodata_scene_is_empty(tmp_path: Path) -> None:
    img = np.zeros((4, 40, 50), dtype=np.uint16)
    status, out = run(tmp_path, acquired(tmp_path, img, nodata=0))
    assert (status.status, status.reason) == ("empty", "no valid pixels")
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]


def test_mostly_nodata_scene_is_empty_below_threshold(tmp_path: Path) -> None:
    img = scene()
    img[:, 1:, :] = 0
    status, _ = run(tmp_path, acquired(tmp_path, img, nodata=0), clean=CleanOptions(min_valid_fraction=0.05))
    assert status.status == "empty" and "below clean.min_valid_fraction" in status.reason


def test_wrong_band_count_is_corrupt(tmp_path: Path) -> None:
    status, out = run(tmp_path, acquired(tmp_path, scene(bands=3)))
    assert status.status == "corrupt"
    assert status.reason.startswith("wrong band count: the config names 4 bands")
    assert json.loads((out / "status.json").read_text())["status"] == "corrupt"


def test_garbage_and_truncated_files_are_corrupt(tmp_path: Path) -> None:
    folder = acquired(tmp_path, scene(rows=300, cols=300))
    data = (folder / "image.tif").read_bytes()
    (folder / "image.tif").write_bytes(data[: len(data) // 3])
    status, _ = run(tmp_path, folder)
    assert status.status == "corrupt" and status.reason.startswith("unreadable: ")
    (folder / "image.tif").write_bytes(b"this is not a GeoTIFF")
    status, _ = run(tmp_path, folder)
    assert status.status == "corrupt" and "not recognized" in status.reason


def test_failed_acquisition_is_corrupt_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "acq"
    folder.mkdir()
    (folder / "acquire.json").write_text(json.dumps({"status": "corrupt", "reason": "image: HTTP 404"}))
    status, _ = run(tmp_path, folder)
    assert (status.status, status.reason) == ("corrupt", "acquire failed: image: HTTP 404")


def test_rerun_replaces_stale_outputs(tmp_path: Path) -> None:
    folder = acquired(tmp_path, scene())
    status, out = run(tmp_path, folder)
    assert (out / "image.tif").exists()
    write_tif(folder / "image.tif", np.zeros((4, 40, 50), dtype=np.uint16), nodata=0)
    status, out = run(tmp_path, folder)
    assert status.status == "empty" and not (out / "image.tif").exists()


# Several sensors and label codes in one run: scenes of the same surface clean alike.
S2_L1C = [
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "watervapor",
    "cirrus",
    "swir16",
    "swir22",
]
LANDSAT = ["blue", "green", "red", "nir", "swir16", "swir22"]
MIXED = {
    "bands": {"select": LANDSAT, "indices": ["ndwi", "mndwi", "nbr"]},
    "labels": {"classes": ["land", "water", "reef"], "remap": {0: "land", 1: "water", 2: "reef"}},
    "label_schemes": {
        "codes_a": {10: "land", 20: "water", 30: "reef"},
        "codes_b": {1: "land", 2: "water", 3: "reef", 9: "ignore"},
    },
}


def clean_cli(tmp_path: Path, name: str, folder: Path, config: dict, *flags: str) -> Path:
    """Clean one scene through the ``snakemap clean`` command, as the workflow's rule calls it."""
    out = tmp_path / "clean" / name
    argv = ["clean", name, "--acquired", str(folder), "--out", str(out), *flags]
    assert main([*argv, "--options", json.dumps(config)]) == 0
    return out


# L1C before and since processing baseline 04.00 (DN = reflectance * 10000 + 1000 since)
@pytest.mark.parametrize(("offset", "dn_offset"), [(0.0, 0), (-0.1, 1000)])
def test_sensors_clean_to_the_same_bands_and_values(tmp_path: Path, offset: float, dn_offset: int) -> None:
    rng = np.random.default_rng(3)
    surface = np.round(rng.uniform(0.02, 0.6, (6, 40, 50)), 4)  # (bands, rows, cols) reflectance
    s2 = rng.integers(1, 10000, (13, 40, 50)).astype(np.uint16)  # bands Landsat lacks: anything
    for i, band in enumerate(LANDSAT):
        s2[S2_L1C.index(band)] = np.round(surface[i] * 10000).astype(np.uint16) + dn_offset
    s2[:, 0, 0] = 0  # the sensor's nodata value
    landsat = surface.astype(np.float32)
    landsat[:, 0, 0] = np.nan
    config = dict(
        MIXED,
        sensors={
            "s2l1c": {"bands": S2_L1C, "scale": 0.0001, "offset": offset, "nodata": 0},
            "landsat_toa": {"bands": LANDSAT},
        },
    )
    out_s2 = clean_cli(tmp_path, "s2", acquired(tmp_path / "s2", s2), config, "--sensor", "s2l1c")
    out_l = clean_cli(tmp_path, "l", acquired(tmp_path / "l", landsat), config, "--sensor", "landsat_toa")
    a, _, desc_a = read(out_s2 / "image.tif")
    b, _, desc_b = read(out_l / "image.tif")
    assert desc_a == desc_b == (*LANDSAT, "ndwi", "mndwi", "nbr")
    assert np.isnan(a[:, 0, 0]).all() and np.isnan(b[:, 0, 0]).all()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(a[:6, 1:], surface[:, 1:], atol=1e-6)  # reflectance, not DN


def test_sensor_band_count_is_checked_per_scene(tmp_path: Path) -> None:
    config = dict(MIXED, sensors={"landsat_toa": {"bands": LANDSAT}})
    out = clean_cli(tmp_path, "s", acquired(tmp_path, scene(bands=4)), config, "--sensor", "landsat_toa")
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "corrupt"
    assert status["reason"].startswith("wrong band count: the config names 6 bands (blue, green")


def test_label_schemes_map_other_codes_to_the_same_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    classes = rng.integers(0, 3, (40, 50))
    codes_a = np.array([10, 20, 30], np.uint8)[classes]
    codes_b = np.array([1, 2, 3], np.uint8)[classes]
    codes_a[:5] = (
        99  # not in its scheme: ignored (up to the fraction), like a value missing from labels.remap
    )
    codes_b[:5] = 9  # "ignore" in its scheme
    image = rng.uniform(0.02, 0.6, (6, 40, 50)).astype(np.float32)
    config = dict(MIXED, bands={"names": LANDSAT}, labels=dict(MIXED["labels"], max_unmapped_fraction=0.2))
    folder_a, folder_b = acquired(tmp_path / "a", image, codes_a), acquired(tmp_path / "b", image, codes_b)
    out_a = clean_cli(tmp_path, "a", folder_a, config, "--label-scheme", "codes_a")
    out_b = clean_cli(tmp_path, "b", folder_b, config, "--label-scheme", "codes_b")
    lab_a, lab_b = read(out_a / "label.tif")[0][0], read(out_b / "label.tif")[0][0]
    np.testing.assert_array_equal(lab_a, lab_b)
    assert (lab_a[:5] == 255).all()
    np.testing.assert_array_equal(lab_a[5:], classes[5:])
    # Without a scheme the same codes go through labels.remap, which knows none of them.
    out_c = clean_cli(tmp_path, "c", acquired(tmp_path / "c", image, codes_a), config)
    status = json.loads((out_c / "status.json").read_text())
    assert status["status"] == "corrupt" and status["extra"]["unmapped_fraction"] == 1.0
    assert status["reason"].startswith("label values [") and "are not in labels.remap" in status["reason"]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("reproject", [False, True])
def test_scene_without_crs_or_geotransform_is_corrupt(tmp_path: Path, reproject: bool) -> None:
    clean = CleanOptions(crs="EPSG:32756") if reproject else CleanOptions()  # once leaked a CRSError
    for name, kw in (("no_crs", {"crs": None}), ("identity", {"transform": Affine.identity()})):
        status, out = run(
            tmp_path / name, acquired(tmp_path / name, scene(), scene()[0] % 3, **kw), clean=clean
        )
        assert (status.status, status.reason) == ("corrupt", "no CRS / georeferencing"), name
        assert sorted(p.name for p in out.iterdir()) == ["status.json"]


@pytest.mark.parametrize("zero_is_nodata", [False, True])
def test_all_zero_scene_is_empty_whatever_zero_is_nodata(tmp_path: Path, zero_is_nodata: bool) -> None:
    img = np.zeros((4, 40, 50), dtype=np.uint16)
    img[:, :5] = 7  # the file's nodata: not looked at
    clean = CleanOptions(zero_is_nodata=zero_is_nodata, min_valid_fraction=0.0)
    status, out = run(tmp_path, acquired(tmp_path, img, nodata=7), clean=clean)
    assert (status.status, status.reason) == ("empty", ALL_ZERO)
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]
    img[2, 20, 20] = 1  # one value in one band: data
    status, _ = run(tmp_path, acquired(tmp_path, img, nodata=7), clean=clean)
    assert status.status == "ok"


def test_config_mistakes_raise_before_the_scene_is_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = acquired(tmp_path, scene())
    qa = CleanOptions(qa={"band": "qa", "values": [1]})
    cases = [
        (
            BandOptions(names=NAMES, select=["nir", "swir16"]),
            CleanOptions(),
            "bands.names: the file layout has no band 'swir16', which bands.select keeps "
            "(its bands: blue, green",
        ),
        (
            BandOptions(names=NAMES, indices=["mndwi"]),
            CleanOptions(),
            "bands.names: the file layout has no band 'swir16', which index mndwi needs",
        ),
        (
            BandOptions(names=[*NAMES, "qa"], select=["blue", "qa"]),
            qa,
            "bands.select keeps clean.qa.band 'qa'",
        ),
        (
            BandOptions(names=NAMES),
            qa,
            "bands.names: the file layout has no band 'qa', which clean.qa.band names",
        ),
    ]
    for bands, clean, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            run(tmp_path, folder, bands=bands, clean=clean)
        assert not (tmp_path / "clean").exists()
    # As the rule calls it: exit 2 naming the key, and no final state for the scene.
    options = {
        "bands": {"names": NAMES, "select": ["swir16"]},
        "labels": {"classes": ["a", "b"], "remap": {0: "a"}},
    }
    argv = [
        "clean", "s",
        "--acquired", str(folder),
        "--out", str(tmp_path / "cli"),
        "--options", json.dumps(options),
    ]  # fmt: skip
    assert main(argv) == 2
    assert "snakemap clean: bands.names: the file layout has no band 'swir16'" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
