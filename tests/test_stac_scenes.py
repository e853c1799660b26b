"""STAC Item scenes: per-band COG assets at 10 and 20 m with raster:bands scale and offset and a
scene-classification mask asset clean to the same image and status as their GeoTIFF twin, value
for value; over HTTP (range requests, relative hrefs) too; bad items end corrupt, named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from snakemap.core.sections import BandOptions, CleanOptions, QAOptions, SensorOptions
from snakemap.data.acquire import acquire_scene
from snakemap.data.clean import clean_scene
from tests.conftest import STAC_ASSETS as ASSETS
from tests.conftest import STAC_BANDS as BANDS
from tests.conftest import STAC_FINE as FINE
from tests.conftest import STAC_SCL_INVALID as SCL_INVALID

SENSOR = SensorOptions(bands=BANDS, assets=ASSETS, mask={"asset": "SCL", "values": SCL_INVALID})
SELECT = BandOptions(select=BANDS, indices=["ndwi"])


def clean_of(
    tmp: Path, name: str, uri: str, sensor: SensorOptions, clean: CleanOptions, **kw: object
) -> tuple:
    acquired = tmp / f"acq-{name}"
    acquire_scene(name, uri, acquired, sensor=sensor, **kw)  # type: ignore[arg-type]
    status = clean_scene(name, acquired, tmp / f"clean-{name}", SELECT, clean, None, sensor)
    image = tmp / f"clean-{name}" / "image.tif"
    with rasterio.open(image) if image.exists() else _none() as src:
        return status, (src.read() if src is not None else None), acquired


class _none:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def test_a_stac_scene_cleans_like_its_geotiff_twin_value_for_value(
    tmp_path: Path, catalog: dict[str, Path]
) -> None:
    status, stac, acquired = clean_of(tmp_path, "stac", str(catalog["item"]), SENSOR, CleanOptions())
    assert status.status == "ok", status.reason
    assert (acquired / "image.vrt").exists() and not (acquired / "image.tif").exists()  # never copied
    twin_sensor = SensorOptions(bands=[*BANDS, "scl"], scale=1e-4, offset=-0.1)
    twin_clean = CleanOptions(qa=QAOptions(band="scl", values=SCL_INVALID))
    twin_status, twin, _ = clean_of(tmp_path, "twin", str(catalog["twin"]), twin_sensor, twin_clean)
    assert stac.shape == twin.shape == (7, 96, 96)  # six bands and the NDWI
    np.testing.assert_array_equal(stac, twin)  # NaN where masked, equal everywhere else
    assert status.valid_fraction == twin_status.valid_fraction < 1
    masked = np.isnan(stac[0])
    assert masked[:3].all() and masked[20:40, 60:80].all()  # nodata strip, cloud from the 20 m SCL
    assert np.nanmax(stac[:6]) < 1.0 and np.nanmin(stac[:6]) >= -0.1  # scale and offset applied
    record = json.loads((acquired / "acquire.json").read_text())
    assert record["files"]["item"]["item_id"] == "S2_T55_stac1"


def test_an_item_over_http_reads_its_relative_assets_there(
    tmp_path: Path, catalog: dict[str, Path], served: str
) -> None:
    status, stac, acquired = clean_of(tmp_path, "http", f"{served}/item/item.json", SENSOR, CleanOptions())
    assert status.status == "ok", status.reason
    assert f"/vsicurl/{served}/item/B02.tif" in (acquired / "image.vrt").read_text()
    _, local, _ = clean_of(tmp_path, "local", str(catalog["item"]), SENSOR, CleanOptions())
    np.testing.assert_array_equal(stac, local)


def test_bad_items_end_corrupt_naming_the_item_and_asset(
    tmp_path: Path, catalog: dict[str, Path], served: str
) -> None:
    item = json.loads(catalog["item"].read_text())
    # a sensor mapping a band to an asset the item lacks
    lacking = SENSOR.model_copy(update={"assets": {**ASSETS, "swir22": "B12A"}})
    status, _, _ = clean_of(tmp_path, "lacking", str(catalog["item"]), lacking, CleanOptions())
    assert status.status == "corrupt" and "has no asset 'B12A' for band swir22" in status.reason
    # an asset that fails its file:checksum
    bad = dict(
        item, assets={**item["assets"], "B02": {**item["assets"]["B02"], "file:checksum": "1220" + "0" * 64}}
    )
    (catalog["root"] / "item" / "bad.json").write_text(json.dumps(bad))
    status, _, _ = clean_of(
        tmp_path, "sum", str(catalog["root"] / "item" / "bad.json"), SENSOR, CleanOptions()
    )
    assert status.status == "corrupt" and "asset B02 fails its file:checksum" in status.reason
    good_sum = hashlib.sha256((catalog["root"] / "item" / "B02.tif").read_bytes()).hexdigest()
    good = dict(
        item, assets={**item["assets"], "B02": {**item["assets"]["B02"], "file:checksum": "1220" + good_sum}}
    )
    (catalog["root"] / "item" / "good.json").write_text(json.dumps(good))
    status, _, acquired = clean_of(
        tmp_path, "goodsum", str(catalog["root"] / "item" / "good.json"), SENSOR, CleanOptions()
    )
    assert status.status == "ok"
    assert json.loads((acquired / "acquire.json").read_text())["files"]["item"]["checksums_verified"] == {
        "B02": good_sum
    }
    # an item over http pointing at a local file
    sneaky = dict(item, assets={**item["assets"], "B03": {**item["assets"]["B03"], "href": "/etc/passwd"}})
    (catalog["root"] / "item" / "sneaky.json").write_text(json.dumps(sneaky))
    status, _, _ = clean_of(tmp_path, "sneaky", f"{served}/item/sneaky.json", SENSOR, CleanOptions())
    assert status.status == "corrupt" and "asset B03 points at a local file (/etc/passwd)" in status.reason
    # an asset href that cannot be read
    gone = dict(item, assets={**item["assets"], "B04": {**item["assets"]["B04"], "href": "./missing.tif"}})
    (catalog["root"] / "item" / "gone.json").write_text(json.dumps(gone))
    status, _, _ = clean_of(
        tmp_path, "gone", str(catalog["root"] / "item" / "gone.json"), SENSOR, CleanOptions()
    )
    assert status.status == "corrupt" and "band red" in status.reason and "missing.tif" in status.reason
    # the manifest's sha256 is the item file's
    status, _, _ = clean_of(tmp_path, "sha", str(catalog["item"]), SENSOR, CleanOptions(), sha256="0" * 64)
    assert status.status == "corrupt" and "sha256 mismatch" in status.reason


@pytest.mark.slow
def test_apply_maps_a_stac_scene_as_its_geotiff_twin(tmp_path: Path, catalog: dict[str, Path]) -> None:
    import subprocess
    import sys

    from tests.conftest import random_checkpoint as checkpoint

    ckpt = checkpoint(tmp_path / "m.ckpt", FINE)
    sensors = {
        "s2": {"bands": BANDS, "assets": ASSETS, "mask": {"asset": "SCL", "values": SCL_INVALID}},
        "twin": {"bands": [*BANDS, "scl"], "scale": 1e-4, "offset": -0.1},
    }
    maps = {}
    for name, uri, sensor in (("stac", catalog["item"], "s2"), ("twin", catalog["twin"], "twin")):
        man = tmp_path / f"{name}.csv"
        man.write_text(f"scene_id,uri,role,sensor\n{name},{uri},apply,{sensor}\n")
        clean = {"qa": {"band": "scl", "values": SCL_INVALID}} if name == "twin" else {}
        options = {"bands": {"select": BANDS}, "clean": clean, "sensors": sensors,
                   "predict": {"window": 64, "overlap": 8}, "apply": {"shard_size": 1}}  # fmt: skip
        where = ["--manifest", str(man), "--root", str(tmp_path / name), "--checkpoint", str(ckpt)]
        cmd = [sys.executable, "-m", "snakemap", "apply-shard", "shard-00000", *where]
        done = subprocess.run(
            [*cmd, "--options", json.dumps(options)], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        status = json.loads((tmp_path / name / "scenes" / f"{name}.json").read_text())
        assert status["status"] == "ok", status["reason"]
        with rasterio.open(tmp_path / name / "scenes" / f"{name}.tif") as src:
            maps[name] = src.read(1)
    np.testing.assert_array_equal(maps["stac"], maps["twin"])
    assert (maps["stac"] == 255).any() and (maps["stac"] != 255).mean() > 0.8  # masked: cloud and nodata
    assert not list((tmp_path / "stac" / ".scratch").glob("*"))  # the VRT and the item are gone
