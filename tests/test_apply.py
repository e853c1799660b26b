"""Global application: shards that survive SIGKILL, per-scene states, mosaics, progress."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from pyproj import Geod, Transformer
from rasterio.transform import from_origin

from snakemap.cli import main
from snakemap.core.apply_sections import ApplyOptions, PredictOptions
from snakemap.core.config import ConfigError
from snakemap.core.sections import BandOptions, CleanOptions, SensorOptions
from snakemap.core.status import SceneStatus
from snakemap.data.clean import ALL_ZERO
from snakemap.data.stats import Normalizer
from snakemap.inference.predictor import Member, Predictor
from snakemap.inference.scenes import SceneInput
from snakemap.inference.shard import ShardRunner
from snakemap.outputs.mosaic import build_mosaic
from snakemap.outputs.progress import progress
from snakemap.plan.shards import shard_ids, shard_members
from tests.conftest import APPLY_BANDS as BANDS
from tests.conftest import apply_manifest as manifest
from tests.conftest import random_checkpoint as checkpoint
from tests.conftest import scene_data, tile, write_tif


def shard_cmd(tmp: Path, man: Path, ckpt: Path, shard: str, shard_size: int) -> list[str]:
    options = {
        "bands": {"names": BANDS},
        "predict": {"window": 64, "overlap": 8},
        "apply": {"shard_size": shard_size},
    }
    return [
        str(Path(sys.executable).parent / "snakemap"), "apply-shard", shard,
        "--manifest", str(man),
        "--root", str(tmp / "maps"),
        "--checkpoint", str(ckpt),
        "--options", json.dumps(options),
    ]  # fmt: skip


def test_shard_ids_and_members() -> None:
    assert shard_ids(5, 2) == ["shard-00000", "shard-00001", "shard-00002"]
    assert shard_members(list("abcde"), "shard-00002", 2) == ["e"]


@pytest.mark.slow
def test_killed_shard_reruns_only_missing_scenes(tmp_path: Path) -> None:
    scenes = {
        f"q{i:02d}": str(tile(tmp_path / "in" / f"q{i:02d}.tif", scene_data(i, 160), 0, 0)) for i in range(40)
    }
    man = manifest(tmp_path / "m.csv", scenes)
    cmd = shard_cmd(tmp_path, man, checkpoint(tmp_path / "m.ckpt", BANDS), "shard-00000", 40)
    sentinels = tmp_path / "maps" / "scenes"
    with (tmp_path / "first.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    # "[!.]": pathlib's glob also matches the hidden temporary file of a sentinel being written
    while time.monotonic() < deadline and proc.poll() is None and len(list(sentinels.glob("[!.]*.json"))) < 6:
        time.sleep(0.05)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()
    # Progress while the shard is in flight counts what the sentinels say.
    live = progress(tmp_path / "maps", list(scenes), 40)
    assert live["ok"] >= 6 and live["pending"] == 40 - live["ok"] and live["shards_done"] == 0
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(sentinels.glob("[!.]*.json")))
    assert 6 <= done_before < 40
    assert not (tmp_path / "maps" / "shards" / "shard-00000.json").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    shard = json.loads((tmp_path / "maps" / "shards" / "shard-00000.json").read_text())
    assert (shard["processed"], shard["skipped"]) == (40 - done_before, done_before)
    assert [e["status"] for e in shard["scenes"]] == ["ok"] * 40
    leftovers = [p for p in (tmp_path / "maps").rglob(".*") if p.is_file()]
    assert leftovers == []  # what the killed job had half-written was cleared by the rerun
    final = progress(tmp_path / "maps", list(scenes), 40)
    assert (final["ok"], final["pending"], final["done_pct"], final["shards_done"]) == (40, 0, 100.0, 1)


def test_bad_scenes_end_in_their_state(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    good = tile(inputs / "good.tif", scene_data(1), 0, 0)
    empty = tile(inputs / "empty.tif", np.zeros((4, 96, 96), np.uint16), 0, 0)
    (inputs / "garbage.tif").write_bytes(b"II*\x00" + b"\x01" * 4000)
    three = tile(inputs / "three.tif", scene_data(2)[:3], 0, 0)
    dry = tile(inputs / "dry.tif", scene_data(3), 0, 0)
    scenes = [
        SceneInput("good", str(good)),
        SceneInput("empty", str(empty)),
        SceneInput("garbage", str(inputs / "garbage.tif")),
        SceneInput("missing", str(inputs / "nope.tif")),
        SceneInput("three", str(three)),
        SceneInput("dry", str(dry)),
    ]
    norm = Normalizer(np.full(4, 100.0, np.float32), np.full(4, 50.0, np.float32))
    member = Member(lambda x: torch.zeros(x.shape[0], 2, *x.shape[2:]), BANDS, norm)
    runner = ShardRunner(
        tmp_path / "maps",
        Predictor([member], ["land", "water"]),
        BandOptions(names=BANDS),
        CleanOptions(),
        PredictOptions(window=64, overlap=8),
        ApplyOptions(mask={"band": "nir", "min": 0, "max": 250}),
    )
    # dry: every nir value is >= 1 and < 300 - make it all > 250 so the mask finds nothing.
    with rasterio.open(dry, "r+") as dst:
        data = dst.read()
        data[3] = 280
        dst.write(data)
    shard = runner.run_shard("shard-00000", scenes)
    states = {e["scene_id"]: (e["status"], e["reason"]) for e in shard["scenes"]}
    assert states["good"] == ("ok", "")
    assert states["empty"] == ("empty", "no valid pixels")
    assert states["garbage"][0] == "corrupt" and states["garbage"][1].startswith("unreadable")
    assert states["missing"][0] == "corrupt" and "no such file" in states["missing"][1]
    assert states["three"][0] == "corrupt" and states["three"][1].startswith("wrong band count")
    assert states["dry"] == ("empty", "no pixel with nir in [0, 250]")
    maps = sorted(p.name for p in (tmp_path / "maps" / "scenes").glob("*.tif"))
    assert maps == ["good.tif"]
    # the ok scene's hectares per class on the ground: the ellipsoid's area of its footprint (far
    # from its UTM zone's central meridian a 10 m pixel is not 0.01 ha there), shared by pixel
    # count; summed by progress
    with rasterio.open(tmp_path / "maps" / "scenes" / "good.tif") as src:
        classes, crs, (west, south, east, north) = src.read(1), src.crs, src.bounds
    side = np.linspace(0, 1, 50)
    xs = np.r_[west + (east - west) * side, np.full(50, east), east - (east - west) * side, np.full(50, west)]
    ys = np.r_[
        np.full(50, south), south + (north - south) * side, np.full(50, north), north - (north - south) * side
    ]
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    ground_ha = abs(Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)[0]) / 1e4
    expected = {c: ground_ha * float((classes == k).mean()) for k, c in enumerate(["land", "water"])}
    assert expected["land"] > 0 and abs(ground_ha / (0.01 * 96 * 96) - 1) > 0.001  # not the map's area
    good = SceneStatus.read(tmp_path / "maps" / "scenes" / "good.json")
    assert good.extra["class_ha"] == pytest.approx(expected, rel=2e-3)
    mapped = progress(tmp_path / "maps", [s.scene_id for s in scenes], 6)["mapped_ha"]
    assert mapped == pytest.approx(good.extra["class_ha"])
    # Final states are not retried... unless asked.
    again = runner.run_shard("shard-00000", scenes)
    assert (again["processed"], again["skipped"]) == (0, 6)
    runner.apply.retry_corrupt = True  # as `snakemake --config retry_corrupt=true` asks
    half_written = tmp_path / "maps" / "scenes" / ".garbage.tif.999.stage.tif"  # as a killed job leaves
    half_written.write_bytes(b"partial")
    again = runner.run_shard("shard-00000", scenes)
    assert (again["processed"], again["skipped"]) == (3, 3)
    assert not half_written.exists()


def smoothing_predictor() -> Predictor:
    """A model with a 5 x 5 receptive field: 2-class 'probabilities' from local means of band 1."""
    conv = torch.nn.Conv2d(1, 1, 5, padding=2, bias=False)
    conv.weight.data.fill_(1 / 25)

    def model(x: torch.Tensor) -> torch.Tensor:
        m = torch.sigmoid(conv(x[:, :1]))
        return torch.cat([1 - m, m], dim=1)

    norm = Normalizer(np.full(4, 150.0, np.float32), np.full(4, 80.0, np.float32))
    return Predictor([Member(model, BANDS, norm, activation="none")], ["land", "water"])


def test_buffered_neighbours_make_a_seamless_mosaic(tmp_path: Path) -> None:
    whole = scene_data(7, 192)
    left = tile(tmp_path / "in" / "left.tif", whole[:, :, :96], 0, 1920)
    right = tile(tmp_path / "in" / "right.tif", whole[:, :, 96:], 960, 1920)
    full = tile(tmp_path / "whole.tif", whole, 0, 1920)
    subprocess.run(["gdalbuildvrt", "-q", str(tmp_path / "inputs.vrt"), str(left), str(right)], check=True)
    opts = PredictOptions(window=64, overlap=8, prob_dtype="float32")
    results = {}
    for name, buffer in (("buffered", 16), ("plain", 0)):
        runner = ShardRunner(
            tmp_path / name,
            smoothing_predictor(),
            BandOptions(names=BANDS),
            CleanOptions(),
            opts,
            ApplyOptions(buffer=buffer, outputs="both"),
            mosaic_vrt=tmp_path / "inputs.vrt",
        )
        runner.run_shard("shard-00000", [SceneInput("left", str(left)), SceneInput("right", str(right))])
        build_mosaic(
            sorted((tmp_path / name / "scenes").glob("*.tif")),
            tmp_path / name / "mosaic",
            tmp_path / name / "overview.tif",
            factor=4,
            overview_crs="EPSG:32755",
        )
        with rasterio.open(tmp_path / name / "mosaic" / "32755.vrt") as src:
            assert sorted(Path(f).name for f in src.files[1:]) == ["left.tif", "right.tif"]
            results[name] = src.read(1)
            assert src.shape == (192, 192) and src.transform == from_origin(0, 1920, 10, 10)
        with rasterio.open(tmp_path / name / "scenes" / "probs" / "left.tif") as src:
            assert src.shape == (192, 96) and src.transform == from_origin(0, 1920, 10, 10)
        with rasterio.open(tmp_path / name / "overview.tif") as src:
            assert src.shape == (48, 48)
    reference = ShardRunner(
        tmp_path / "ref",
        smoothing_predictor(),
        BandOptions(names=BANDS),
        CleanOptions(),
        opts,
        ApplyOptions(),
    )
    reference.run_shard("shard-00000", [SceneInput("whole", str(full))])
    with rasterio.open(tmp_path / "ref" / "scenes" / "whole.tif") as src:
        expected = src.read(1)
    # With context from the neighbour, the border columns are predicted as in one big scene.
    np.testing.assert_array_equal(results["buffered"], expected)
    border = slice(94, 98)
    assert (results["plain"][:, border] != expected[:, border]).any()


@pytest.mark.slow
def test_real_unlabelled_scenes_keep_their_grid(tmp_path: Path, shared_data: Path) -> None:
    rgb, l7 = shared_data / "scenes" / "RGB.byte.tif", shared_data / "scenes" / "L7_ETMs.tif"
    cases = [
        ("rgb", rgb, ["red", "green", "blue"]),
        ("l7", l7, ["blue", "green", "red", "nir", "swir16", "swir22"]),
    ]
    for name, path, bands in cases:
        ckpt = checkpoint(tmp_path / f"{name}.ckpt", bands)
        man = manifest(tmp_path / f"{name}.csv", {name: str(path)})
        options = {
            "bands": {"names": bands},
            "clean": {"nodata": 0} if name == "rgb" else {},
            "predict": {"window": 256, "overlap": 32},
            "apply": {"shard_size": 1},
        }
        cmd = [
            str(Path(sys.executable).parent / "snakemap"), "apply-shard", "shard-00000",
            "--manifest", str(man),
            "--root", str(tmp_path / name),
            "--checkpoint", str(ckpt),
            "--options", json.dumps(options),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        status = json.loads((tmp_path / name / "scenes" / f"{name}.json").read_text())
        assert status["status"] == "ok", status
        with rasterio.open(tmp_path / name / "scenes" / f"{name}.tif") as out, rasterio.open(path) as src:
            assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
            classes = out.read(1)
            raw = src.read()
        # A pixel is valid where every band is (GDAL's per-band nodata, here 0 for RGB.byte).
        nodata = (raw == 0).any(axis=0) if name == "rgb" else np.zeros(classes.shape, bool)
        assert nodata.sum() > 0 or name == "l7"
        assert (classes[nodata] == 255).all() and (classes[~nodata] < 2).all()


def test_a_scene_of_a_sensor_is_cleaned_like_in_the_clean_step(tmp_path: Path, capsys) -> None:
    dn = scene_data(5)  # stored as DN = reflectance * 10000
    stored = tile(tmp_path / "in" / "dn.tif", dn, 0, 0)
    reflectance = tile(tmp_path / "in" / "refl.tif", dn.astype(np.float32) / 10000, 0, 0)
    norm = Normalizer(np.full(4, 0.015, np.float32), np.full(4, 0.008, np.float32))
    member = Member(
        lambda x: torch.cat([x[:, :1], -x[:, :1]], 1), BANDS, norm
    )  # land where blue is above its mean
    predictor = Predictor([member], ["land", "water"])
    runner = ShardRunner(
        tmp_path / "maps",
        predictor,
        BandOptions(names=BANDS),
        CleanOptions(),
        PredictOptions(window=64, overlap=8),
        ApplyOptions(),
    )
    sensor = SensorOptions(bands=BANDS, scale=0.0001)
    scenes = [SceneInput("dn", str(stored), sensor=sensor), SceneInput("refl", str(reflectance))]
    runner.run_shard("shard-00000", scenes)
    maps = tmp_path / "maps" / "scenes"
    with rasterio.open(maps / "dn.tif") as a, rasterio.open(maps / "refl.tif") as b:
        classes = a.read(1)
        np.testing.assert_array_equal(classes, b.read(1))
    assert set(np.unique(classes)) == {0, 1}  # the model saw reflectance on both sides of its mean
    # By hand, a scene naming a sensor the config lacks stops the shard before any work.
    man = tmp_path / "m.csv"
    man.write_text(f"scene_id,uri,role,sensor\ndn,{stored},apply,s2l1c\n")
    options = {"bands": {"names": BANDS}, "sensors": {"l8": {"bands": BANDS}}, "apply": {"shard_size": 1}}
    argv = [
        "apply-shard", "shard-00000",
        "--manifest", str(man),
        "--root", str(tmp_path / "cli"),
        "--checkpoint", str(tmp_path / "none.ckpt"),
        "--options", json.dumps(options),
    ]  # fmt: skip
    assert main(argv) == 2
    assert "sensors: no entry 's2l1c' (known: l8)" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def null_predictor(bands: list[str] = BANDS) -> Predictor:
    """A predictor of ``bands`` whose model says class 0 everywhere (no weights to load)."""
    norm = Normalizer(np.full(len(bands), 100.0, np.float32), np.full(len(bands), 50.0, np.float32))
    return Predictor(
        [Member(lambda x: torch.zeros(x.shape[0], 2, *x.shape[2:]), bands, norm)], ["land", "water"]
    )


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_scenes_without_georeferencing_or_data_end_in_their_state(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    scenes = [
        SceneInput("no_crs", str(write_tif(inputs / "no_crs.tif", scene_data(1), crs=None))),  # type: ignore[arg-type]
        SceneInput(
            "identity", str(write_tif(inputs / "identity.tif", scene_data(2), transform=Affine.identity()))
        ),
        SceneInput(
            "zeros", str(tile(inputs / "zeros.tif", np.zeros((4, 96, 96), np.uint16), 0, 0, nodata=None))
        ),
        SceneInput("good", str(tile(inputs / "good.tif", scene_data(3), 0, 0))),
    ]
    for zero_is_nodata in (False, True):
        root = tmp_path / f"maps-{zero_is_nodata}"
        runner = ShardRunner(
            root,
            null_predictor(),
            BandOptions(names=BANDS),
            CleanOptions(zero_is_nodata=zero_is_nodata),
            PredictOptions(window=64, overlap=8),
            ApplyOptions(),
        )
        shard = runner.run_shard("shard-00000", scenes)
        states = {e["scene_id"]: (e["status"], e["reason"]) for e in shard["scenes"]}
        assert states == {
            "no_crs": ("corrupt", "no CRS / georeferencing"),
            "identity": ("corrupt", "no CRS / georeferencing"),
            "zeros": ("empty", ALL_ZERO),
            "good": ("ok", ""),
        }
        assert sorted(p.name for p in (root / "scenes").glob("*.tif")) == ["good.tif"]
    # With context from the neighbours (apply.buffer), the scene's own georeferencing and pixels decide.
    left = tile(inputs / "left.tif", scene_data(4), 0, 960, nodata=None)
    right = tile(inputs / "right.tif", np.zeros((4, 96, 96), np.uint16), 960, 960, nodata=None)
    # a scene with a fifth band, beside them: gdalbuildvrt leaves it out
    five = write_tif(
        inputs / "five.tif",
        np.ones((5, 96, 96), np.uint16),
        crs="EPSG:32755",
        transform=from_origin(0, 1920, 10, 10),
        descriptions=[*BANDS, "extra"],
    )
    cmd = ["gdalbuildvrt", "-q", str(tmp_path / "inputs.vrt"), str(left), str(right), str(five)]
    subprocess.run(cmd, check=True, capture_output=True)
    runner = ShardRunner(
        tmp_path / "buffered",
        null_predictor(),
        BandOptions(names=BANDS),
        CleanOptions(),
        PredictOptions(window=64, overlap=8),
        ApplyOptions(buffer=16),
        mosaic_vrt=tmp_path / "inputs.vrt",
    )
    buffered = [SceneInput(n, str(p)) for n, p in (("left", left), ("right", right), ("five", five))]
    shard = runner.run_shard("shard-00000", [*buffered, scenes[0]])
    states = {e["scene_id"]: (e["status"], e["reason"]) for e in shard["scenes"]}
    assert states.pop("five") == (
        "corrupt",
        f"left out of the VRT of the apply scenes ({tmp_path / 'inputs.vrt'}): 5 bands in EPSG:32755, "
        "the VRT's scenes have 4 in EPSG:32755",
    )
    assert states == {
        "left": ("ok", ""),
        "right": ("empty", ALL_ZERO),
        "no_crs": ("corrupt", "no CRS / georeferencing"),
    }


def test_config_mistakes_stop_a_shard_before_any_scene(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scenes = [SceneInput("a", str(tile(tmp_path / "in" / "a.tif", scene_data(1), 0, 0)))]
    bands = BandOptions(names=BANDS, indices=["ndwi"])
    cases = [
        (
            null_predictor(),
            ApplyOptions(mask={"band": "ndmi", "max": 0.0}),
            "apply.mask.band 'ndmi' is not among the cleaned bands ['blue', 'green', 'red', 'nir', 'ndwi']",
        ),
        (
            null_predictor([*BANDS, "swir16"]),
            ApplyOptions(),
            "checkpoint (member 1) needs bands ['swir16'] that bands.select/bands.indices do not produce",
        ),
    ]
    for predictor, apply, message in cases:
        runner = ShardRunner(tmp_path / "maps", predictor, bands, CleanOptions(), PredictOptions(), apply)
        with pytest.raises(ConfigError, match=re.escape(message)):
            runner.run_shard("shard-00000", scenes)
        assert not (tmp_path / "maps").exists()  # no scene touched, no final state written
    # As the workflow's rule calls it: exit 2, naming the key or the checkpoint.
    man = manifest(tmp_path / "m.csv", {"a": scenes[0].uri})
    ckpt = checkpoint(tmp_path / "m.ckpt", [*BANDS, "ndvi"])
    for options, message in (
        ({"apply": {"mask": {"band": "ndmi"}}}, "apply.mask.band 'ndmi' is not among the cleaned bands"),
        ({}, f"checkpoint {ckpt} needs bands ['ndvi'] that bands.select/bands.indices do not produce"),
    ):
        argv = [
            "apply-shard", "shard-00000",
            "--manifest", str(man),
            "--root", str(tmp_path / "cli"),
            "--checkpoint", str(ckpt),
            "--options", json.dumps({"bands": {"names": BANDS}, **options}),
        ]  # fmt: skip
        assert main(argv) == 2
        assert f"snakemap apply-shard: {message}" in capsys.readouterr().err
        assert not (tmp_path / "cli").exists()


def test_sentinels_of_an_earlier_version_are_still_read(tmp_path: Path) -> None:
    scenes_dir = tmp_path / "maps" / "scenes"
    scenes_dir.mkdir(parents=True)
    old = {
        "scene_id": "old",
        "status": "empty",
        "reason": "no valid pixels",
        "valid_fraction": 0.0,
        "band_count": 4,
        "bands": BANDS,
        "crs": "EPSG:32755",
        "shape": [96, 96],
        "extra": {"read_clean_s": 0.01},
        "started": 1.0,
        "finished": time.time(),
    }  # {**status.__dict__, started, finished}: apply until now
    (scenes_dir / "old.json").write_text(json.dumps(old))
    (scenes_dir / "bad.json").write_text(
        json.dumps({**old, "scene_id": "bad", "status": "corrupt", "reason": "x"})
    )
    status = SceneStatus.read(scenes_dir / "old.json")
    assert (status.status, status.finished, status.extra) == (
        "empty",
        old["finished"],
        {"read_clean_s": 0.01},
    )
    new = tile(tmp_path / "in" / "new.tif", scene_data(1), 0, 0)
    scenes = [SceneInput(s, str(new)) for s in ("old", "bad", "new")]
    live = progress(tmp_path / "maps", ["old", "bad", "new"], 3)
    assert (live["empty"], live["corrupt"], live["pending"], live["scenes_per_hour"]) == (
        1,
        1,
        1,
        2 / 600 * 3600,
    )
    runner = ShardRunner(
        tmp_path / "maps",
        null_predictor(),
        BandOptions(names=BANDS),
        CleanOptions(),
        PredictOptions(window=64, overlap=8),
        ApplyOptions(),
    )
    shard = runner.run_shard("shard-00000", scenes)
    assert (shard["processed"], shard["skipped"]) == (1, 2)  # the earlier sentinels count as done
    assert [e["status"] for e in shard["scenes"]] == ["empty", "corrupt", "ok"]
    runner.apply.retry_corrupt = True
    assert runner.run_shard("shard-00000", scenes)["processed"] == 1  # the old corrupt one is retried
    # One format now: apply's sentinel is what SceneStatus.read (and the clean step) reads.
    written = json.loads((scenes_dir / "new.json").read_text())
    assert set(written) == {f.name for f in dataclasses.fields(SceneStatus)}
    assert SceneStatus.read(scenes_dir / "new.json").started <= written["finished"]


def progress_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``snakemap progress`` as a user types it, in ``cwd``."""
    cmd = [str(Path(sys.executable).parent / "snakemap"), "progress", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_progress_without_arguments_reads_the_project_config(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    manifest(project / "config" / "scenes.csv", {"a": "a.tif", "b": "b.tif"})
    config = {
        "manifest": "config/scenes.csv",
        "bands": {},
        "labels": {"classes": ["land", "water"], "remap": {"0": "land", "1": "water"}},
        "apply": {"predictors": ["models/m/best"], "shard_size": 1},
    }
    (project / "config" / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    SceneStatus("a", "ok", finished=time.time()).write(
        project / "results" / "maps" / "models" / "m" / "best" / "scenes" / "a.json"
    )
    proc = progress_cli(project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(
        "models/m/best: 50.0% of 2 scenes (ok 1, empty 0, corrupt 0, pending 1); shards 0/2"
    )
    # Outside a project: exit 2 saying what to pass, no traceback.
    proc = progress_cli(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "snakemap progress: no manifest: run inside a project (with config/config.yaml)"
    )
    assert "--config FILE" in proc.stderr and "Traceback" not in proc.stderr


def test_strip_by_strip_apply_equals_the_whole_scene_path_with_scenes_prepared_ahead(tmp_path: Path) -> None:
    """Apply reads, cleans and predicts in strips (bounded memory) and prepares the next scenes
    while one predicts: the maps and sentinels are those of the whole-scene path, in shard order."""
    from snakemap.data.clean import judge, read_clean
    from snakemap.inference.predict import predict_scene
    from snakemap.inference.readers import ArrayReader
    from snakemap.tasks.networks import load_trained

    ckpt = checkpoint(tmp_path / "m.ckpt", [*BANDS, "ndwi"])
    data = np.ascontiguousarray(scene_data(7, 1100)[:, :, :300])  # taller than one strip of 1024 rows
    data[:, :200, :100] = 0  # a corner of nodata
    scenes = [
        SceneInput(f"s{i}", str(tile(tmp_path / "in" / f"s{i}.tif", data if i == 1 else scene_data(i), 0, 0)))
        for i in range(4)
    ]
    bands = BandOptions(names=BANDS, indices=["ndwi"])
    opts = PredictOptions(window=256, overlap=32, batch_size=4)
    trained = load_trained(ckpt)
    predictor = Predictor([Member.from_trained(trained)], trained.classes)
    runner = ShardRunner(tmp_path / "maps", predictor, bands, CleanOptions(), opts, ApplyOptions(prefetch=2))
    assert runner.streams()
    shard = runner.run_shard("shard-00000", scenes)
    assert [e["scene_id"] for e in shard["scenes"]] == ["s0", "s1", "s2", "s3"]
    # the whole-scene path, by hand
    cleaned = read_clean(Path(scenes[1].uri), None, bands, CleanOptions(), None)
    expected = judge("s1", cleaned, CleanOptions(), None)
    predict_scene(
        ArrayReader(cleaned.image, cleaned.names, cleaned.crs, cleaned.transform),
        predictor,
        opts,
        tmp_path / "whole.tif",
    )
    got = SceneStatus.read(tmp_path / "maps" / "scenes" / "s1.json")
    assert (got.status, got.valid_fraction, got.bands, got.shape) == (
        "ok",
        expected.valid_fraction,
        expected.bands,
        [1100, 300],
    )
    with (
        rasterio.open(tmp_path / "whole.tif") as a,
        rasterio.open(tmp_path / "maps" / "scenes" / "s1.tif") as b,
    ):
        whole, strips = a.read(1), b.read(1)
        assert a.transform == b.transform
    np.testing.assert_array_equal(strips, whole)
    assert (strips[:200, :100] == 255).all() and len(np.unique(strips)) == 3
    assert all(
        SceneStatus.read(tmp_path / "maps" / "scenes" / f"s{i}.json").extra["predict_s"] > 0 for i in range(4)
    )


@pytest.mark.parametrize("prefetch", [0, 1])
def test_maps_are_published_behind_the_next_scene(tmp_path: Path, prefetch: int) -> None:
    """With prefetch, a scene's COGs are published (then its sentinel written) in a thread while
    the next scene predicts; without, one after the other. A map that cannot be published ends
    its scene corrupt, and the others go on."""
    size = 512
    scenes = [
        SceneInput(f"s{i}", str(tile(tmp_path / "in" / f"s{i}.tif", scene_data(i, size), 0, 0)))
        for i in range(4)
    ]
    blocked = tmp_path / "maps" / "scenes" / "s2.tif"
    blocked.mkdir(parents=True)  # a folder where s2's class map goes: renaming onto it fails
    starts: list[float] = []  # when each scene's prediction began (its first step)
    predictor = null_predictor()
    fit_scene = predictor.fit_scene
    predictor.fit_scene = lambda reader, moments=None: (
        starts.append(time.time()),
        fit_scene(reader, moments),
    )[1]  # type: ignore[method-assign]
    runner = ShardRunner(
        tmp_path / "maps",
        predictor,
        BandOptions(names=BANDS),
        CleanOptions(),
        PredictOptions(window=128, overlap=8),
        ApplyOptions(prefetch=prefetch, outputs="both"),
    )
    shard = runner.run_shard("shard-00000", scenes)
    assert [e["status"] for e in shard["scenes"]] == ["ok", "ok", "corrupt", "ok"]
    assert "s2.tif" in shard["scenes"][2]["reason"]
    statuses = [SceneStatus.read(tmp_path / "maps" / "scenes" / f"s{i}.json") for i in range(4)]
    assert len(starts) == 4
    for i in (0, 1, 3):
        assert statuses[i].extra["publish_s"] > 0 and statuses[i].extra["model_s"] > 0
        with rasterio.open(tmp_path / "maps" / "scenes" / f"s{i}.tif") as src:
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and (src.read(1) == 0).all()
    finished = [s.finished for s in statuses]
    assert finished == sorted(finished)  # sentinels in shard order
    # the next scene's prediction began before (prefetch) or after (none) this scene's sentinel
    overlapped = [starts[i + 1] < finished[i] for i in range(3)]
    assert overlapped == [bool(prefetch)] * 3
    leftovers = [p.name for p in (tmp_path / "maps").rglob(".*")]
    assert leftovers == []  # staged files of the failed publication were removed too
