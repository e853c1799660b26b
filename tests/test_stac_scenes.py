"""STAC Item scenes: per-band COG assets at 10 and 20 m with raster:bands scale and offset and a
scene-classification mask asset clean to the same image and status as their GeoTIFF twin, value
for value; over HTTP (range requests, relative hrefs) too; bad items end corrupt, named."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pystac.extensions.raster import RasterBand, RasterExtension
from rasterio.transform import from_origin

from snakemap.core.sections import BandOptions, CleanOptions, QAOptions, SensorOptions
from snakemap.data.acquire import acquire_scene
from snakemap.data.clean import clean_scene
from snakemap.data.demo import synth_scene

BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
FINE, COARSE = BANDS[:4], BANDS[4:]
ASSETS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir16": "B11", "swir22": "B12"}
SCL_INVALID = [3, 8, 9]  # cloud shadow, cloud medium and high probability
SENSOR = SensorOptions(bands=BANDS, assets=ASSETS, mask={"asset": "SCL", "values": SCL_INVALID})
SELECT = BandOptions(select=BANDS, indices=["ndwi"])


def write_band(path: Path, data: np.ndarray, res: float, west: float, north: float) -> None:
    profile = dict(driver="COG", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype.name,
                   crs="EPSG:32755", transform=from_origin(west, north, res, res), nodata=0)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A demo scene as a STAC Item (four 10 m bands, two 20 m bands, a 20 m SCL mask, scale 1e-4
    and offset -0.1 in raster:bands, relative hrefs) and its GeoTIFF twin: the seven bands on the
    10 m grid, each 20 m pixel repeated 2 x 2, the same scale and offset in its sensor entry."""
    root = tmp_path_factory.mktemp("stac")
    dn, _ = synth_scene("stac1", 96)
    dn = (dn.astype(np.int64) + 1000).clip(1, 65535).astype(np.uint16)  # the offset keeps them positive
    dn[:, :3, :] = 0  # a nodata strip
    west, north = 400000.0, 8100000.0
    coarse = dn[4:, ::2, ::2]  # 20 m: the top-left pixel of each 2 x 2 block
    scl = np.full((48, 48), 4, dtype=np.uint8)  # vegetation
    scl[10:20, 30:40] = 9  # cloud
    scl[30:34, 5:9] = 3  # cloud shadow
    (root / "item").mkdir()
    item = pystac.Item("S2_T55_stac1", None, None, pystac.utils.str_to_datetime("2026-05-01T00:00:00Z"), {})
    from shapely.geometry import box, mapping

    item.geometry, item.bbox = mapping(box(140, -17, 141, -16)), [140, -17, 141, -16]
    for band in BANDS:
        fine = band in FINE
        data = dn[BANDS.index(band)] if fine else coarse[COARSE.index(band)]
        write_band(root / "item" / f"{ASSETS[band]}.tif", data, 10.0 if fine else 20.0, west, north)
        asset = pystac.Asset(f"./{ASSETS[band]}.tif", media_type=pystac.MediaType.COG, roles=["data"])
        item.add_asset(ASSETS[band], asset)
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(nodata=0, scale=1e-4, offset=-0.1)
        ]
    write_band(root / "item" / "SCL.tif", scl, 20.0, west, north)
    item.add_asset("SCL", pystac.Asset("./SCL.tif", media_type=pystac.MediaType.COG, roles=["data"]))
    (root / "item" / "item.json").write_text(
        json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False))
    )
    twin = np.concatenate([dn[:4], coarse.repeat(2, 1).repeat(2, 2), scl.repeat(2, 0).repeat(2, 1)[None]])
    profile = dict(driver="GTiff", width=96, height=96, count=7, dtype="uint16", crs="EPSG:32755",
                   transform=from_origin(west, north, 10, 10), nodata=0)  # fmt: skip
    with rasterio.open(root / "twin.tif", "w", **profile) as dst:
        dst.write(twin.astype(np.uint16))
    return {"root": root, "item": root / "item" / "item.json", "twin": root / "twin.tif"}


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


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Files of a folder with HTTP range requests, as GDAL's /vsicurl/ reads COGs."""

    def do_GET(self) -> None:  # the http.server API names it
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start, _, end = wanted[6:].partition("-")
            first, last = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
            body = data[first : last + 1]
        else:
            self.send_response(200)
            body = data
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(catalog: dict[str, Path]) -> Iterator[str]:
    """The catalogue folder on a real HTTP server on 127.0.0.1 (a free port)."""

    def handler(*args: object) -> RangeHandler:
        return RangeHandler(*args, directory=str(catalog["root"]))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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

    from tests.test_apply import checkpoint

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
