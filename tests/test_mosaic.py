"""Mosaics across CRSs: one VRT per zone and an overview of every zone, from the real entry point,
on maps of the two shared scenes (UTM 18N and UTM 25S); progress and STAC list every zone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from snakemap.cli import main
from snakemap.core.config import ConfigError
from snakemap.core.io import NODATA_CLASS, write_cog, write_json
from snakemap.core.status import SceneStatus
from snakemap.outputs.mosaic import build_mosaic
from snakemap.outputs.progress import progress
from snakemap.outputs.stac import validate_offline
from snakemap.outputs.stac_collection import write_collection

PREDICTOR = "models/arch-Unet/best"
#: ok scenes: their source in ../shared/data/scenes and the zone it lies in
ZONES = {"bahamas": ("RGB.byte.tif", "EPSG:32618"), "recife": ("L7_ETMs.tif", "EPSG:31985")}
#: the apply scenes in manifest order (two shards of two): the ok ones, one empty, one corrupt
SCENE_IDS = ["bahamas", "dry", "recife", "broken"]


def _class_map(source: Path, path: Path) -> None:
    """A class map on the grid of ``source``: its first band cut into four classes, 255 where it
    has no data (a sentinel's worth of real grid, CRS and nodata)."""
    with rasterio.open(source) as src:
        band, crs, transform = src.read(1), src.crs, src.transform
        nodata = src.nodata if src.nodata is not None else 0
    classes = np.digitize(band, [64, 128, 192]).astype(np.uint8)
    classes[band == nodata] = NODATA_CLASS
    write_cog(path, classes[None], {"crs": crs, "transform": transform, "nodata": NODATA_CLASS})


def _applied(root: Path, scenes: Path) -> list[Path]:
    """The maps, sentinels and shard manifests that apply leaves for :data:`SCENE_IDS`."""
    now = time.time()
    statuses = []
    for scene in SCENE_IDS:
        if scene in ZONES:
            _class_map(scenes / ZONES[scene][0], root / "scenes" / f"{scene}.tif")
            status = SceneStatus(scene, "ok", crs=ZONES[scene][1], started=now - 5, finished=now)
        elif scene == "dry":
            status = SceneStatus(scene, "empty", reason="no pixel in the mask", started=now, finished=now)
        else:
            status = SceneStatus(scene, "corrupt", reason="unreadable: truncated", started=now, finished=now)
        status.write(root / "scenes" / f"{scene}.json")
        statuses.append(status)
    shards = []
    for k in range(2):
        members = statuses[2 * k : 2 * k + 2]
        shard = root / "shards" / f"shard-{k:05d}.json"
        write_json(shard, {"shard": shard.stem, "scenes": [s.summary() for s in members]})
        shards.append(shard)
    return shards


def test_scenes_in_two_utm_zones_are_all_in_the_mosaics_and_the_overview(
    tmp_path: Path, shared_data: Path
) -> None:
    root = tmp_path / "results" / "maps" / PREDICTOR
    shards = _applied(root, shared_data / "scenes")
    argv = [
        "mosaic",
        *map(str, shards),
        "--out",
        str(root / "mosaic"),
        "--overview",
        str(root / "overview.tif"),
    ]
    assert main([*argv, "--options", json.dumps({"apply": {"overview_factor": 8}})]) == 0

    # One VRT per zone, each holding its zone's map: no ok scene is left out.
    index = json.loads((root / "mosaic" / "index.json").read_text())
    assert sorted(p.name for p in (root / "mosaic").iterdir()) == ["31985.vrt", "32618.vrt", "index.json"]
    assert {k: z["scene_ids"] for k, z in index["zones"].items()} == {
        "EPSG:31985": ["recife"],
        "EPSG:32618": ["bahamas"],
    }
    assert index["scenes"] == 2 and index["unreferenced"] == []
    for scene, (source, crs) in ZONES.items():
        zone = index["zones"][crs]
        with (
            rasterio.open(root / "mosaic" / zone["vrt"]) as vrt,
            rasterio.open(shared_data / "scenes" / source) as src,
        ):
            assert [Path(f).name for f in vrt.files[1:]] == [f"{scene}.tif"]
            assert vrt.crs == src.crs and vrt.bounds == pytest.approx(src.bounds)
            assert (vrt.read(1) != NODATA_CLASS).sum() > 0.5 * vrt.width * vrt.height

    # The overview is in EPSG:4326 and shows every zone's scene where it lies.
    with rasterio.open(root / "overview.tif") as ov:
        assert ov.crs.to_epsg() == 4326 and ov.nodata == NODATA_CLASS
        assert ov.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert list(ov.bounds) == pytest.approx(index["overview"]["bounds"])
        data = ov.read(1)
        inside = np.zeros(data.shape, dtype=bool)
        for source, _ in ZONES.values():
            with rasterio.open(shared_data / "scenes" / source) as src:
                west, south, east, north = transform_bounds(src.crs, ov.crs, *src.bounds, densify_pts=21)
            assert ov.bounds.left <= west and ov.bounds.bottom <= south
            assert ov.bounds.right >= east and ov.bounds.top >= north
            rows, cols = rasterio.transform.rowcol(ov.transform, [west, east], [north, south])
            window = data[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1]
            inside[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
            assert (window != NODATA_CLASS).sum() > 0.3 * window.size
            assert set(np.unique(window)) <= {0, 1, 2, 3, NODATA_CLASS}
        assert (data[~inside] == NODATA_CLASS).all()  # nothing outside the two scenes
    print(
        "\nzones:",
        {k: z["scenes"] for k, z in index["zones"].items()},
        "overview bounds:",
        [round(v, 3) for v in index["overview"]["bounds"]],
        "shape:",
        index["overview"]["shape"],
    )

    # progress and the STAC collection list both zones
    figures = progress(root, SCENE_IDS, 2)
    assert (figures["ok"], figures["empty"], figures["corrupt"]) == (2, 1, 1)
    assert figures["zones"] == {"EPSG:31985": 1, "EPSG:32618": 1}
    collection = pystac.Collection.from_file(str(write_collection(root, PREDICTOR, shards)))
    validate_offline(collection)
    assert sorted(i.id for i in collection.get_items()) == ["bahamas", "recife"]
    assert collection.summaries.get_list("proj:code") == ["EPSG:31985", "EPSG:32618"]
    for crs in ("EPSG:31985", "EPSG:32618"):
        asset = collection.assets[f"mosaic-{crs.split(':')[1]}"]
        assert asset.extra_fields["proj:code"] == crs and (root / asset.href).resolve().is_file()
    assert collection.assets["overview"].extra_fields["proj:code"] == "EPSG:4326"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # that map, on purpose
def test_a_map_without_a_crs_is_listed_apart_and_a_bad_overview_crs_is_named(tmp_path: Path) -> None:
    maps = tmp_path / "scenes"
    data = np.ones((1, 32, 32), dtype=np.uint8)
    write_cog(
        maps / "placed.tif",
        data,
        {"crs": "EPSG:32755", "transform": from_origin(500000, 8000000, 10, 10), "nodata": 255},
    )
    with rasterio.open(
        maps / "unplaced.tif", "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8"
    ) as dst:
        dst.write(data)
    index = build_mosaic(
        [maps / "placed.tif", maps / "unplaced.tif"], tmp_path / "mosaic", tmp_path / "ov.tif"
    )
    assert index["unreferenced"] == ["unplaced"] and list(index["zones"]) == ["EPSG:32755"]
    assert index["zones"]["EPSG:32755"]["scene_ids"] == ["placed"]
    assert progress(tmp_path, [], 1)["zones"] == {"EPSG:32755": 1, "none": 1}
    with rasterio.open(tmp_path / "ov.tif") as ov:
        assert ov.crs.to_epsg() == 4326 and (ov.read(1) == 1).any()
    with pytest.raises(ConfigError, match=r"apply\.overview_crs 'EPSG:0'"):
        build_mosaic([maps / "placed.tif"], tmp_path / "mosaic", tmp_path / "ov.tif", overview_crs="EPSG:0")


def test_scenes_on_both_sides_of_the_antimeridian_keep_a_narrow_overview(tmp_path: Path) -> None:
    """Two scenes near Fiji, one in UTM zone 60 (west of 180) and one in zone 1 (east of it): the
    overview covers their longitudes on a 0..360 grid, not the whole globe, and each scene's
    pixels land where they belong."""
    from pyproj import Transformer

    maps = []
    for name, epsg, lon, value in (("west", 32760, 179.6, 1), ("east", 32701, -179.6, 2)):
        x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, -17.0)
        path = tmp_path / "scenes" / f"{name}.tif"
        path.parent.mkdir(exist_ok=True)
        data = np.full((1, 100, 100), value, dtype=np.uint8)
        write_cog(
            path,
            data,
            {
                "crs": f"EPSG:{epsg}",
                "transform": from_origin(x - 1500, y + 1500, 30, 30),
                "nodata": NODATA_CLASS,
            },
        )
        maps.append(path)
    index = build_mosaic(maps, tmp_path / "mosaic", tmp_path / "overview.tif", factor=2)
    west, south, east, north = index["overview"]["bounds"]
    assert 179.0 < west < 179.6 < 180.4 < east < 181.0  # longitudes 0..360: no band around the globe
    assert -17.2 < south < north < -16.8
    with rasterio.open(tmp_path / "overview.tif") as ov:
        assert ov.crs.to_epsg() == 4326 and index["overview"]["longitudes"] == "0..360"
        data = ov.read(1)
        for lon, value in ((179.6, 1), (180.4, 2)):  # -179.6 is 180.4 on the 0..360 grid
            row, col = rasterio.transform.rowcol(ov.transform, lon, -17.0)
            assert data[row, col] == value
        assert ov.bounds.right - ov.bounds.left < 2  # about 0.8 degrees wide, not 360


def test_polar_scenes_also_go_into_polar_overviews(tmp_path: Path) -> None:
    """A scene on the Antarctic polar stereographic grid (EPSG:3031) and one in UTM near the
    equator: the southern overview holds the polar scene alone, in EPSG:3031, where it lies; the
    northern one, with no scene poleward of 60 N, is an empty 1 x 1 file; the global overview
    holds both."""
    from snakemap.core.apply_sections import PolarOptions

    polar = tmp_path / "scenes" / "ross.tif"
    polar.parent.mkdir()
    grid = {
        "crs": "EPSG:3031",
        "transform": from_origin(-300000, -1000000, 1000, 1000),
        "nodata": NODATA_CLASS,
    }
    write_cog(polar, np.full((1, 100, 100), 2, dtype=np.uint8), grid)
    tropic = tmp_path / "scenes" / "tropic.tif"
    grid = {"crs": "EPSG:32755", "transform": from_origin(300000, 8200000, 100, 100), "nodata": NODATA_CLASS}
    write_cog(tropic, np.full((1, 50, 50), 1, dtype=np.uint8), grid)
    sides = {"south": tmp_path / "overview_south.tif", "north": tmp_path / "overview_north.tif"}
    index = build_mosaic([polar, tropic], tmp_path / "mosaic", tmp_path / "overview.tif", 2, polar=sides,
                         polar_options=PolarOptions(latitude=60))  # fmt: skip
    assert index["polar"]["south"]["scenes"] == 1 and index["polar"]["north"]["scenes"] == 0
    with rasterio.open(sides["south"]) as south:
        assert south.crs.to_epsg() == 3031
        left, bottom, right, top = south.bounds
        assert left <= -300000 and right >= -200000 and bottom <= -1100000 and top >= -1000000
        assert right - left < 200000  # the scene, not the continent
        data = south.read(1)
        row, col = rasterio.transform.rowcol(south.transform, -250000, -1050000)  # the scene's centre
        assert data[row, col] == 2 and set(np.unique(data)) <= {2, NODATA_CLASS}
    with rasterio.open(sides["north"]) as north:
        assert north.shape == (1, 1) and north.read(1)[0, 0] == NODATA_CLASS
    with rasterio.open(tmp_path / "overview.tif") as ov:
        assert {1, 2} <= set(np.unique(ov.read(1)))
