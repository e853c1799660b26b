"""Cleaning real GeoTIFFs: masks, band selection, indices, remapping, reprojection, states."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from snakemap.bands import BandOptions
from snakemap.clean import CleanOptions, clean_scene
from snakemap.labels import LabelOptions
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
    status, out = run(tmp_path, acquired(tmp_path, img, nodata=-9999), clean=CleanOptions(zero_is_nodata=True))
    data, profile, _ = read(out / "image.tif")
    invalid = ~np.isfinite(data).all(axis=0)
    assert np.argwhere(invalid).tolist() == [[0, 0], [1, 1], [2, 2]]
    assert np.isnan(profile["nodata"])
    assert status.status == "ok"
    assert status.valid_fraction == pytest.approx(1 - 3 / (40 * 50), abs=1e-6)


def test_band_selection_by_name_and_index_and_indices(tmp_path: Path) -> None:
    img = scene().astype(np.float32)
    bands = BandOptions(names=NAMES, select=["nir", 1], indices=["ndwi", {"name": "gr", "a": "green", "b": "red"}])
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
    label[30:, :] = 7  # unmapped: ignored
    label[25, 25] = 9  # the file's nodata
    label[5, 5] = 1  # on invalid image data: ignored
    folder = acquired(tmp_path, img, label, label_nodata=9)
    status, out = run(tmp_path, folder)
    lab, profile, _ = read(out / "label.tif")
    lab = lab[0]
    assert profile["nodata"] == 255 and profile["dtype"] == "uint8"
    assert (lab[10:20, 10:20] == 2).all()
    assert (lab[0:5] == 255).all() and (lab[30:] == 255).all()
    assert lab[25, 25] == 255 and lab[5, 5] == 255
    ignored = 5 * 50 + 10 * 50 + 2
    assert status.extra["class_pixels"] == {"background": 40 * 50 - 100 - ignored, "water": 0, "reef": 100}


def test_unmapped_value_can_make_a_scene_corrupt(tmp_path: Path) -> None:
    labels = LabelOptions(classes=["a", "b"], remap={0: "a", 1: "b"}, unmapped="corrupt")
    label = np.zeros((40, 50), dtype=np.uint8)
    label[0, 0] = 5
    status, out = run(tmp_path, acquired(tmp_path, scene(), label), labels=labels)
    assert status.status == "corrupt" and "[5]" in status.reason
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]


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
    (folder / "acquire.json").write_text(json.dumps({"status": "failed", "reason": "image: HTTP 404"}))
    status, _ = run(tmp_path, folder)
    assert (status.status, status.reason) == ("corrupt", "acquire failed: image: HTTP 404")


def test_rerun_replaces_stale_outputs(tmp_path: Path) -> None:
    folder = acquired(tmp_path, scene())
    status, out = run(tmp_path, folder)
    assert (out / "image.tif").exists()
    write_tif(folder / "image.tif", np.zeros((4, 40, 50), dtype=np.uint16), nodata=0)
    status, out = run(tmp_path, folder)
    assert status.status == "empty" and not (out / "image.tif").exists()
