"""Polygons of the mapped classes (`vectorize:`): one per patch with its area, mean probability
and edge flag, a minimum mapping unit, scenes in metres and in degrees, the shard's part and the
merged GeoParquet / GeoPackage; and a scene mapped before `vectorize` was set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

from snakemap.core.output_sections import VectorizeOptions
from snakemap.outputs.polygons import merge_polygons, scene_polygons, write_part, write_scene_polygons
from tests.conftest import APPLY_BANDS as BANDS
from tests.conftest import apply_manifest as manifest
from tests.conftest import random_checkpoint as checkpoint
from tests.conftest import scene_data, tile

CLASSES = ["land", "water", "reef"]


def class_map(path: Path, crs: str = "EPSG:32755", res: float = 10.0, west: float = 300000.0) -> Path:
    """Land with a lake (40 x 30 px), a pond of 4 px, a reef touching the east edge, nodata corner;
    and its probabilities (the chosen class 0.8, uint8 x 250)."""
    mapped = np.zeros((100, 120), dtype=np.uint8)
    mapped[10:50, 10:40] = 1  # lake
    mapped[70:72, 70:72] = 1  # pond
    mapped[60:90, 100:120] = 2  # reef on the edge
    mapped[:5, :5] = 255
    north = 8200000.0 if crs != "EPSG:4326" else -16.0
    profile = dict(driver="GTiff", count=1, dtype="uint8", width=120, height=100, crs=crs, nodata=255,
                   transform=from_origin(west if crs != "EPSG:4326" else 145.0, north, res, res))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mapped, 1)
    probs = np.full((3, 100, 120), 25, dtype=np.uint8)  # 0.1
    for k in range(3):
        probs[k][mapped == k] = 200  # 0.8
    probs[:, mapped == 255] = 255
    probs[1, 10:30, 10:40] = 225  # the lake's north half 0.9: its mean 0.85
    with rasterio.open(path.with_suffix(".probs.tif"), "w", **dict(profile, count=3)) as dst:
        dst.write(probs)
    return path


def test_one_polygon_per_patch_with_area_probability_and_edge(tmp_path: Path) -> None:
    path = class_map(tmp_path / "map.tif")
    frame = scene_polygons(
        path, path.with_suffix(".probs.tif"), "s1", CLASSES, VectorizeOptions(classes=["water", "reef"])
    )
    assert list(frame.columns) == [
        "scene_id",
        "class",
        "area_m2",
        "mean_probability",
        "touches_edge",
        "geometry",
    ]
    assert sorted(frame["class"]) == ["reef", "water", "water"] and (frame["scene_id"] == "s1").all()
    assert frame.geometry.is_valid.all() and frame.crs.to_epsg() == 32755
    lake = frame[(frame["class"] == "water")].sort_values("area_m2").iloc[-1]
    # 1200 pixels of 100 m² (measured in EPSG:6933: UTM's scale factor off the central meridian)
    assert lake["area_m2"] == pytest.approx(1200 * 100, rel=0.01)
    assert lake["mean_probability"] == pytest.approx(0.85, abs=0.005) and not lake["touches_edge"]
    reef = frame[frame["class"] == "reef"].iloc[0]
    assert reef["touches_edge"] and reef["mean_probability"] == pytest.approx(0.8, abs=0.005)
    # without probabilities the column is empty, not made up
    bare = scene_polygons(path, None, "s1", CLASSES, VectorizeOptions())
    assert bare["mean_probability"].isna().all() and set(bare["class"]) == set(CLASSES)
    assert (bare["class"] == "land").sum() == 1  # land is one patch around the others


def test_the_minimum_mapping_unit_and_simplification(tmp_path: Path) -> None:
    path = class_map(tmp_path / "map.tif")
    sieved = scene_polygons(path, None, "s1", CLASSES, VectorizeOptions(classes=["water"], min_area_m2=500))
    assert len(sieved) == 1  # the 400 m² pond merged into the land around it
    plain = scene_polygons(path, None, "s1", CLASSES, VectorizeOptions(classes=["reef"]))
    simple = scene_polygons(path, None, "s1", CLASSES, VectorizeOptions(classes=["reef"], simplify_m=15))
    assert simple.geometry.is_valid.all()
    assert simple.geometry.iloc[0].area == pytest.approx(plain.geometry.iloc[0].area, rel=0.05)


def test_a_scene_in_degrees_gets_areas_in_square_metres(tmp_path: Path) -> None:
    path = class_map(tmp_path / "geo.tif", crs="EPSG:4326", res=0.0001)
    frame = scene_polygons(path, None, "g", CLASSES, VectorizeOptions(classes=["water"], min_area_m2=500))
    # 0.0001 degree at 16 S: 11.1 m by 10.7 m; the pond (4 px, ~475 m²) is under 500 m²
    assert len(frame) == 1
    lake = frame.iloc[0]
    assert lake["area_m2"] == pytest.approx(1200 * 11.13 * 10.70, rel=0.02)


def test_parts_merge_into_geoparquet_and_geopackage(tmp_path: Path) -> None:
    a = class_map(tmp_path / "a.tif")
    b = class_map(tmp_path / "b.tif", crs="EPSG:32756", west=500000.0)  # another UTM zone
    for name, path in (("a", a), ("b", b)):
        write_scene_polygons(
            scene_polygons(path, None, name, CLASSES, VectorizeOptions()), tmp_path / f"{name}.fgb"
        )
    assert write_part([tmp_path / "a.fgb"], tmp_path / "p0.parquet") == 4
    assert write_part([tmp_path / "b.fgb"], tmp_path / "p1.parquet") == 4
    assert write_part([], tmp_path / "p2.parquet") == 0  # a shard without ok scenes
    parts = [tmp_path / f"p{i}.parquet" for i in range(3)]
    assert merge_polygons(parts, tmp_path / "all.parquet", tmp_path / "all.gpkg") == 8
    merged, twin = gpd.read_parquet(tmp_path / "all.parquet"), gpd.read_file(tmp_path / "all.gpkg")
    assert merged.crs.to_epsg() == twin.crs.to_epsg() == 4326
    assert len(merged) == len(twin) == 8 and sorted(merged["scene_id"].unique()) == ["a", "b"]
    assert merged["area_m2"].round(3).tolist() == twin["area_m2"].round(3).tolist()


@pytest.mark.slow
def test_a_shard_vectorizes_its_scenes_and_those_mapped_before(tmp_path: Path) -> None:
    scenes = {
        f"q{i}": str(tile(tmp_path / "in" / f"q{i}.tif", scene_data(i), 300000 + 960 * i, 8200000))
        for i in range(2)
    }
    man = manifest(tmp_path / "m.csv", scenes)
    ckpt = checkpoint(tmp_path / "m.ckpt", BANDS)
    base = {"bands": {"names": BANDS}, "predict": {"window": 64, "overlap": 8}, "apply": {"shard_size": 2}}

    def shard(options: dict) -> subprocess.CompletedProcess[str]:
        where = ["--manifest", str(man), "--root", str(tmp_path / "maps"), "--checkpoint", str(ckpt)]
        cmd = [sys.executable, "-m", "snakemap", "apply-shard", "shard-00000", *where]
        return subprocess.run(
            [*cmd, "--options", json.dumps(options)], capture_output=True, text=True, timeout=600
        )

    done = shard(base)  # mapped without polygons
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "maps" / "polygons").exists()
    vector = {
        **base,
        "vectorize": {"min_area_m2": 300},
        "labels": {"classes": ["land", "water"], "remap": {0: "land", 1: "water"}},
    }
    done = shard(vector)  # the scenes are done; their polygons are made from their maps
    assert done.returncode == 0, done.stderr[-2000:]
    part = gpd.read_parquet(tmp_path / "maps" / "polygons" / "parts" / "shard-00000.parquet")
    for scene in scenes:
        frame = gpd.read_file(tmp_path / "maps" / "polygons" / f"{scene}.fgb")
        with rasterio.open(tmp_path / "maps" / "scenes" / f"{scene}.tif") as src:
            mapped = src.read(1)
        # every patch of at least 3 pixels (300 m² of 100 m² pixels) is a polygon
        counts = [ndimage.label(mapped == k)[0] for k in (0, 1)]
        sizes = [np.bincount(c.ravel())[1:] for c in counts]
        assert len(frame) <= sum(len(s) for s in sizes) and len(frame) >= 1
        assert frame["area_m2"].sum() == pytest.approx((mapped != 255).sum() * 100, rel=0.01)
        assert (part["scene_id"] == scene).sum() == len(frame)
    assert part.crs.to_epsg() == 4326
    # other options: the shard reruns and the done scenes' polygons are made again with them
    coarse = {**vector, "vectorize": {"min_area_m2": 5000}}
    done = shard(coarse)
    assert done.returncode == 0, done.stderr[-2000:]
    again = gpd.read_parquet(tmp_path / "maps" / "polygons" / "parts" / "shard-00000.parquet")
    assert len(again) < len(part) and (again["area_m2"] >= 5000 * 0.99).all()
