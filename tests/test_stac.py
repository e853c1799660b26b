"""STAC items and collections of applied maps, on real COGs, sentinels and shard manifests."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from snakemap.core.io import NODATA_CLASS, PROB_SCALE, write_cog, write_json
from snakemap.core.status import SceneStatus
from snakemap.outputs.mosaic import build_mosaic
from snakemap.outputs.stac import item_path, scene_item, validate_offline
from snakemap.outputs.stac_collection import write_collection
from snakemap.outputs.stac_model import ModelInfo

PREDICTOR = "models/arch-Unet/best"
CLASSES = ["land", "deep water", "shallow water", "reef", "cloud"]
SIZE = 64
#: ok scenes: upper-left corners in EPSG:32755 (one far west of the central meridian, where the
#: grid is rotated most against north), and the one whose map carries a TIFF datetime tag
ORIGINS = {"quad_a": (500000.0, 8000000.0), "quad_b": (500640.0, 8000000.0), "quad_c": (200000.0, 8000000.0)}
TIFF_TIME = "quad_b"
#: the acquisition time the manifest gives one scene
MANIFEST_TIME = {"quad_c": dt.datetime(2024, 3, 2, 0, 15, tzinfo=dt.UTC)}


def _class_map(
    path: Path, origin: tuple[float, float], seed: int, tags: dict[str, str] | None = None
) -> None:
    data = np.random.default_rng(seed).integers(0, len(CLASSES), (1, SIZE, SIZE)).astype(np.uint8)
    data[:, :, :8] = NODATA_CLASS  # outside the swath
    profile = {"crs": "EPSG:32755", "transform": from_origin(*origin, 10, 10), "nodata": NODATA_CLASS}
    write_cog(path, data, profile, tags=tags)


def _shard(root: Path, shard: str, statuses: list[SceneStatus]) -> Path:
    """A shard's manifest as :meth:`snakemap.inference.shard.ShardRunner.run_shard` writes it."""
    path = root / "shards" / f"{shard}.json"
    manifest = {
        "shard": shard,
        "scenes": [s.summary() for s in statuses],
        "processed": len(statuses),
        "skipped": 0,
    }
    write_json(path, manifest)
    return path


@pytest.fixture
def applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A predictor's maps as apply and mosaic leave them, in a project run from ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    root = Path("results/maps") / PREDICTOR
    checkpoint = Path("results/models/arch-Unet/best.ckpt")
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not really a checkpoint")
    statuses = []
    start = time.time() - 60
    for i, (scene, origin) in enumerate(ORIGINS.items()):
        tags = {"TIFFTAG_DATETIME": "2024:05:01 10:30:00"} if scene == TIFF_TIME else None
        _class_map(root / "scenes" / f"{scene}.tif", origin, i, tags)
        status = SceneStatus(
            scene, "ok", valid_fraction=0.875, bands=["blue", "green", "red", "nir"], crs="EPSG:32755"
        )
        status.started, status.finished = start + 10 * i, start + 10 * i + 5
        status.write(root / "scenes" / f"{scene}.json")
        statuses.append(status)
    empty = SceneStatus(
        "quad_empty", "empty", reason="no pixel with ndwi in [0.2, 1]", started=start, finished=start
    )
    empty.write(root / "scenes" / "quad_empty.json")
    shards = [_shard(root, "shard-00000", statuses[:2]), _shard(root, "shard-00001", [statuses[2], empty])]
    build_mosaic([root / "scenes" / f"{s}.tif" for s in ORIGINS], root / "mosaic", root / "overview.tif")
    info = ModelInfo(PREDICTOR, "Unet", checkpoints=[str(checkpoint)], framework_version="2.15.0")
    collection = write_collection(root, PREDICTOR, shards, info, CLASSES, MANIFEST_TIME)
    return {"root": root, "shards": shards, "info": info, "collection": collection, "statuses": statuses}


def _items(root: Path) -> dict[str, pystac.Item]:
    return {s: pystac.Item.from_file(str(item_path(root / "scenes" / f"{s}.tif"))) for s in ORIGINS}


def test_items_load_round_trip_and_validate(applied: dict[str, Any]) -> None:
    items = _items(applied["root"])
    for scene, item in items.items():
        assert item.id == scene
        assert item.collection_id == "models-arch-Unet-best"
        d = item.to_dict(include_self_link=False)
        assert pystac.Item.from_dict(d).to_dict(include_self_link=False) == d
        skipped = validate_offline(item)
        assert {"projection", "raster", "classification", "mlm"} == {u.split("/")[3] for u in skipped}
        props = item.properties
        assert props["mlm:name"] == "models-arch-Unet-best"
        assert props["mlm:architecture"] == "Unet"
        assert props["mlm:tasks"] == ["semantic-segmentation"]
        assert props["mlm:input"][0]["bands"] == ["blue", "green", "red", "nir"]
        assert [c["title"] for c in props["mlm:output"][0]["classification:classes"]] == CLASSES
        assert "mlm:pretrained_source" not in props  # unknown, not "trained from scratch"
        assert [link.rel for link in item.links if link.rel == "via"] == ["via"]
    # datetime: the manifest's, else the map's TIFF tag, else null with the processing interval
    assert items["quad_c"].datetime == MANIFEST_TIME["quad_c"]
    assert items[TIFF_TIME].datetime == dt.datetime(2024, 5, 1, 10, 30, tzinfo=dt.UTC)
    first = items["quad_a"]
    assert first.datetime is None and first.to_dict()["properties"]["datetime"] is None
    status = applied["statuses"][0]
    assert first.common_metadata.start_datetime == dt.datetime.fromtimestamp(status.started, dt.UTC)
    assert first.common_metadata.end_datetime == dt.datetime.fromtimestamp(status.finished, dt.UTC)
    assert first.common_metadata.created == first.common_metadata.end_datetime


def test_bboxes_contain_the_footprints(applied: dict[str, Any]) -> None:
    for scene, item in _items(applied["root"]).items():
        with rasterio.open(applied["root"] / "scenes" / f"{scene}.tif") as src:
            left, bottom, right, top = src.bounds
            crs = src.crs
        lons, lats = warp_transform(crs, "EPSG:4326", [left, right, right, left], [bottom, bottom, top, top])
        west, south, east, north = item.bbox
        for lon, lat in zip(lons, lats, strict=True):
            assert west - 1e-9 <= lon <= east + 1e-9 and south - 1e-9 <= lat <= north + 1e-9, scene
        assert 140 < west < east < 160 and -30 < south < north < -10  # UTM 55S, not metres
        ring = np.array(item.geometry["coordinates"][0])
        assert item.geometry["type"] == "Polygon" and len(ring) == 4 * 20 + 1
        assert (ring[0] == ring[-1]).all()
    # far from the central meridian the grid is rotated: the footprint is no lon/lat box
    ring = np.array(_items(applied["root"])["quad_c"].geometry["coordinates"][0])
    assert len(np.unique(ring[:21, 1].round(9))) > 1


def test_asset_links_resolve(applied: dict[str, Any]) -> None:
    root = applied["root"]
    for scene, item in _items(root).items():
        folder = Path(item.get_self_href()).parent
        for key, asset in item.assets.items():
            assert not Path(asset.href).is_absolute(), key
            assert (folder / asset.href).is_file(), (scene, key, asset.href)
        assert (folder / item.assets["map"].href).resolve() == (root / "scenes" / f"{scene}.tif").resolve()
        assert item.assets["checkpoint"].roles == ["mlm:model", "mlm:checkpoint"]
        assert item.assets["checkpoint"].extra_fields["mlm:artifact_type"] == "torch.save"
        assert (folder / item.assets["checkpoint"].href).resolve() == Path(
            applied["info"].checkpoints[0]
        ).resolve()
        for link in item.links:
            assert Path(link.get_absolute_href() or "").is_file(), (scene, link.rel)
        fields = item.assets["map"].to_dict()
        assert fields["type"] == pystac.MediaType.COG and fields["roles"] == ["data"]
        assert fields["proj:code"] == "EPSG:32755" and fields["proj:shape"] == [SIZE, SIZE]
        assert fields["proj:transform"] == [10.0, 0.0, ORIGINS[scene][0], 0.0, -10.0, ORIGINS[scene][1]]
        assert fields["raster:bands"] == [{"data_type": "uint8", "nodata": 255, "spatial_resolution": 10.0}]
        classes = {c["value"]: c for c in fields["classification:classes"]}
        assert classes[255]["nodata"] is True and classes[1]["name"] == "deep_water"
        assert [classes[v]["title"] for v in range(len(CLASSES))] == CLASSES


def test_probabilities_are_an_asset_with_their_scale(applied: dict[str, Any]) -> None:
    root = applied["root"]
    probs = np.full((len(CLASSES), SIZE, SIZE), 50, dtype=np.uint8)
    profile = {
        "crs": "EPSG:32755",
        "transform": from_origin(*ORIGINS["quad_a"], 10, 10),
        "nodata": NODATA_CLASS,
    }
    write_cog(
        root / "scenes" / "probs" / "quad_a.tif", probs, profile, scales=[1 / PROB_SCALE] * len(CLASSES)
    )
    status = SceneStatus.read(root / "scenes" / "quad_a.json")
    item = scene_item(root / "scenes" / "quad_a.tif", status, PREDICTOR, CLASSES)
    asset = item.assets["probabilities"]
    assert (Path(item.get_self_href()).parent / asset.href).resolve() == (
        root / "scenes/probs/quad_a.tif"
    ).resolve()
    bands = asset.to_dict()["raster:bands"]
    assert len(bands) == len(CLASSES)
    assert bands[0] == {"data_type": "uint8", "nodata": 255, "scale": 1 / PROB_SCALE}
    assert "mlm:name" not in item.properties  # no model_info: no MLM fields
    validate_offline(item)


def test_the_collection_links_the_ok_scenes_and_the_mosaic(applied: dict[str, Any]) -> None:
    root, path = applied["root"], applied["collection"]
    assert path == root / "collection.json"
    collection = pystac.Collection.from_file(str(path))
    validate_offline(collection)
    assert collection.id == "models-arch-Unet-best" and collection.license == "other"
    items = list(collection.get_items())
    assert sorted(i.id for i in items) == sorted(ORIGINS)
    # the empty scene's sentinel says why it has no item
    assert not item_path(root / "scenes" / "quad_empty.tif").exists()
    assert SceneStatus.read(root / "scenes" / "quad_empty.json").status == "empty"
    (bbox,) = collection.extent.spatial.bboxes
    for item in items:
        assert bbox[0] <= item.bbox[0] and bbox[1] <= item.bbox[1]
        assert bbox[2] >= item.bbox[2] and bbox[3] >= item.bbox[3]
        assert item.get_collection() is not None and item.get_collection().id == collection.id
    ((start, end),) = collection.extent.temporal.intervals
    assert start == MANIFEST_TIME["quad_c"] and end is not None and end > start
    for key, name in (
        ("mosaic-32755", "mosaic/32755.vrt"),
        ("mosaic-index", "mosaic/index.json"),
        ("overview", "overview.tif"),
    ):
        href = collection.assets[key].href
        assert not Path(href).is_absolute() and (root / href).resolve() == (root / name).resolve()
    assert collection.assets["overview"].media_type == pystac.MediaType.COG
    assert collection.assets["mosaic-32755"].extra_fields["proj:code"] == "EPSG:32755"
    assert collection.assets["overview"].extra_fields["proj:code"] == "EPSG:4326"
    assert collection.summaries.get_list("proj:code") == ["EPSG:32755"]
    # every href is relative: the folder can move
    text = path.read_text() + "".join(item_path(root / "scenes" / f"{s}.tif").read_text() for s in ORIGINS)
    assert str(Path.cwd()) not in text


def test_rewriting_is_safe_and_drops_items_of_scenes_no_longer_ok(applied: dict[str, Any]) -> None:
    root = applied["root"]
    before = item_path(root / "scenes" / "quad_a.tif").read_text()
    corrupt = SceneStatus("quad_b", "corrupt", reason="unreadable: RasterioError: boom")
    corrupt.write(root / "scenes" / "quad_b.json")
    write_collection(root, PREDICTOR, applied["shards"], applied["info"], CLASSES, MANIFEST_TIME)
    assert item_path(root / "scenes" / "quad_a.tif").read_text() == before
    assert not item_path(root / "scenes" / "quad_b.tif").exists()
    collection = pystac.Collection.from_file(str(root / "collection.json"))
    assert sorted(i.id for i in collection.get_items()) == ["quad_a", "quad_c"]
    assert not [p for p in root.rglob(".*") if p.is_file()], "temporary files left behind"


def test_a_downscaled_field_gets_raster_bands_not_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = Path("results/maps/models/arch-EDSR/best")
    field = np.random.default_rng(0).normal(20, 3, (1, 32, 32)).astype(np.float32)
    field[:, :4] = np.nan
    profile = {
        "crs": "EPSG:32755",
        "transform": from_origin(500000, 8000000, 2.5, 2.5),
        "nodata": float("nan"),
    }
    write_cog(root / "scenes" / "field_a.tif", field, profile)
    status = SceneStatus(
        "field_a", "ok", bands=["tas"], started=1.7e9, finished=1.7e9 + 3, extra={"scale": 4}
    )
    status.write(root / "scenes" / "field_a.json")
    bundle = Path("results/bundles/arch-EDSR.onnx")
    bundle.parent.mkdir(parents=True)
    bundle.write_bytes(b"onnx")
    info = ModelInfo("models/arch-EDSR/best", "EDSR", bundle=str(bundle), bands=["tas", "elevation"])
    shard = _shard(root, "shard-00000", [status])
    write_collection(root, "models/arch-EDSR/best", [shard], info, unit="degC")

    item = pystac.Item.from_file(str(item_path(root / "scenes" / "field_a.tif")))
    validate_offline(item)
    asset = item.assets["map"].to_dict()
    (band,) = asset["raster:bands"]
    assert band["nodata"] == "nan" and band["data_type"] == "float32" and band["unit"] == "degC"
    assert band["spatial_resolution"] == 2.5
    assert "classification:classes" not in asset
    assert not any("classification" in u for u in item.stac_extensions)
    assert item.properties["mlm:tasks"] == ["super-resolution"]
    assert item.properties["mlm:input"][0]["bands"] == ["tas", "elevation"]
    model = item.assets["bundle"]
    assert model.extra_fields["mlm:artifact_type"] == "onnx"
    assert (Path(item.get_self_href()).parent / model.href).resolve() == bundle.resolve()
    d = item.to_dict(include_self_link=False)
    assert pystac.Item.from_dict(d).to_dict(include_self_link=False) == d
    # no mosaic yet: the collection has no assets, and is still valid
    collection = pystac.Collection.from_file(str(root / "collection.json"))
    validate_offline(collection)
    assert collection.assets == {}


def test_an_ok_scene_without_its_map_is_named(applied: dict[str, Any]) -> None:
    root = applied["root"]
    (root / "scenes" / "quad_c.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"scene quad_c: .*ok.*quad_c\.tif is missing"):
        write_collection(root, PREDICTOR, applied["shards"], applied["info"], CLASSES)
    status = SceneStatus.read(root / "scenes" / "quad_c.json")
    with pytest.raises(FileNotFoundError, match="scene quad_c"):
        scene_item(root / "scenes" / "quad_c.tif", status, PREDICTOR)


def test_a_scene_without_a_map_is_refused(applied: dict[str, Any]) -> None:
    root = applied["root"]
    empty = SceneStatus.read(root / "scenes" / "quad_empty.json")
    with pytest.raises(ValueError, match="scene quad_empty: its sentinel says empty"):
        scene_item(root / "scenes" / "quad_empty.tif", empty, PREDICTOR)


def test_validation_is_offline_and_catches_core_violations(
    applied: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("validate_offline went to the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(pystac.StacIO, "read_text", no_network)
    path = item_path(applied["root"] / "scenes" / "quad_a.tif")
    data = json.loads(path.read_text())
    assert validate_offline(data)  # a dict as read from the file, too
    bad = {**data, "bbox": data["bbox"][:3]}
    with pytest.raises(pystac.STACValidationError, match="quad_a"):
        validate_offline(bad)
    no_time = {**data, "properties": {k: v for k, v in data["properties"].items() if "datetime" not in k}}
    with pytest.raises(pystac.STACValidationError):
        validate_offline(no_time)
    with pytest.raises(ValueError, match="no offline schema"):
        validate_offline({**data, "stac_version": "0.9.0"})
    assert math.isfinite(sum(data["bbox"]))


def test_an_item_across_the_antimeridian_is_cut_as_rfc_7946_asks(tmp_path: Path) -> None:
    """A scene of UTM zone 1 that straddles 180 degrees (Fiji): its footprint is a MultiPolygon
    cut at the antimeridian and its bbox has west > east; a scene beside it stays one polygon."""
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32701", always_xy=True).transform(180.0, -17.0)
    profile = {"crs": "EPSG:32701", "nodata": NODATA_CLASS}
    data = np.ones((1, 100, 100), dtype=np.uint8)
    write_cog(
        tmp_path / "scenes" / "across.tif",
        data,
        {**profile, "transform": from_origin(x - 1500, y + 1500, 30, 30)},
    )
    write_cog(
        tmp_path / "scenes" / "beside.tif",
        data,
        {**profile, "transform": from_origin(x + 5000, y + 1500, 30, 30)},
    )
    now = time.time()
    items = {}
    for name in ("across", "beside"):
        status = SceneStatus(name, "ok", crs="EPSG:32701", started=now, finished=now)
        items[name] = scene_item(tmp_path / "scenes" / f"{name}.tif", status, PREDICTOR, CLASSES)
        validate_offline(items[name])
    across = items["across"]
    assert across.geometry["type"] == "MultiPolygon" and len(across.geometry["coordinates"]) == 2
    west, south, east, north = across.bbox
    assert 179.9 < west < 180 and -180 < east < -179.9 and west > east and south < -17 < north
    for polygon in across.geometry["coordinates"]:  # each part on its own side of 180
        lons = [p[0] for p in polygon[0]]
        assert max(lons) <= 180 and min(lons) >= -180 and (min(lons) >= 179.9 or max(lons) <= -179.9)
    beside = items["beside"]
    assert beside.geometry["type"] == "Polygon" and beside.bbox[0] < beside.bbox[2]
