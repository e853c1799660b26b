"""The shift score: how unlike the training scenes an applied scene is, in its sentinel, the
shard's manifest, its STAC item and `snakemap progress`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from pydantic import ValidationError
from rasterio.transform import from_origin

from snakemap.cli.common import fallback as cli_fallback
from snakemap.cli.common import rule_member
from snakemap.core.apply_sections import ApplyOptions, PredictOptions
from snakemap.core.calval_sections import EnsembleOptions
from snakemap.core.config import ConfigError
from snakemap.core.sections import BandOptions, CleanOptions
from snakemap.core.status import SceneStatus
from snakemap.inference.predictor import Member, Predictor
from snakemap.inference.scenes import SceneInput
from snakemap.inference.shard import ShardRunner
from snakemap.inference.shift import BandMoments, shift_score, unlike
from snakemap.outputs.progress import format_progress, progress
from snakemap.outputs.stac import scene_item
from snakemap.tasks.networks import build_model, load_trained
from tests.conftest import write_tif

BANDS = ["blue", "green", "red", "nir"]


def read_tif(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_the_score_is_the_bands_distance_in_training_standard_deviations() -> None:
    rng = np.random.default_rng(0)
    reference = {"a": (100.0, 50.0), "b": (10.0, 2.0)}
    like = np.stack([rng.normal(100, 50, 40_000), rng.normal(10, 2, 40_000)]).reshape(2, 200, 200)
    moments = BandMoments(["a", "b"])
    moments.add(like[:, :100])  # two strips, as apply's survey adds them
    moments.add(like[:, 100:])
    assert moments.count == 40_000
    assert shift_score(moments, reference)["score"] < 0.02  # type: ignore[index]

    moved = like.copy()
    moved[0] += 50  # one training std further in band a, band b as before
    moved[1, 0, 0] = np.nan  # an invalid pixel counts in no band
    scene = BandMoments(["a", "b"])
    scene.add(moved)
    found = shift_score(scene, reference)
    assert found is not None and scene.count == 39_999
    assert abs(found["bands"]["a"] - 1.0) < 0.02 and found["bands"]["b"] < 0.02
    assert abs(found["score"] - 0.5) < 0.02  # the mean over the bands
    assert shift_score(scene, {"c": (0.0, 1.0)}) is None  # no band in common

    entries = [
        {"scene_id": "x", "shift": 0.4},
        {"scene_id": "y", "shift": 2.5},
        {"scene_id": "z", "shift": 1.2},
    ]
    assert [e["scene_id"] for e in unlike(entries, 1.0)] == ["y", "z"]


def checkpoint(path: Path) -> Path:
    """A checkpoint trained (so its statistics say) on bands of mean 100 and std 50."""
    torch.manual_seed(0)
    net = build_model("FPN", "mobilenet_v2", len(BANDS), 2)
    hp = {"arch": "FPN", "encoder_name": "mobilenet_v2", "classes": ["land", "water"], "band_names": BANDS,
          "mean": [100.0] * 4, "std": [50.0] * 4}  # fmt: skip
    torch.save(
        {"hyper_parameters": hp, "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, path
    )
    return path


def like_and_unlike(tmp_path: Path) -> list[SceneInput]:
    """Two 4-band scenes: ``like`` distributed as :func:`checkpoint`'s training data (mean 100, std
    50), ``unlike`` 200 above it (4 training stds)."""
    rng = np.random.default_rng(1)
    scenes = []
    for name, mean in (("like", 100), ("unlike", 300)):
        data = np.clip(rng.normal(mean, 50, (4, 96, 96)), 1, None).astype(np.uint16)
        path = write_tif(tmp_path / "in" / f"{name}.tif", data, transform=from_origin(0, 0, 10, 10), nodata=0,
                         descriptions=BANDS)  # fmt: skip
        scenes.append(SceneInput(name, str(path)))
    return scenes


def test_applied_scenes_carry_their_shift_into_progress_and_stac(tmp_path: Path) -> None:
    scenes = like_and_unlike(tmp_path)
    trained = load_trained(checkpoint(tmp_path / "m.ckpt"))
    predictor = Predictor([Member.from_trained(trained)], trained.classes)
    runner = ShardRunner(
        tmp_path / "maps", predictor, BandOptions(names=BANDS), CleanOptions(),
        PredictOptions(window=64, overlap=8), ApplyOptions(shard_size=2),
    )  # fmt: skip
    shard = runner.run_shard("shard-00000", scenes)

    statuses = {s: SceneStatus.read(tmp_path / "maps" / "scenes" / f"{s}.json") for s in ("like", "unlike")}
    like, far = (statuses[s].extra["shift"] for s in ("like", "unlike"))
    assert like["score"] < 0.1 and 3.5 < far["score"] < 4.5  # 200 above the mean: 4 stds
    assert set(far["bands"]) == set(BANDS)
    assert {e["scene_id"]: e["shift"] for e in shard["scenes"]} == {
        "like": like["score"],
        "unlike": far["score"],
    }

    found = progress(tmp_path / "maps", ["like", "unlike"], 2, shift_threshold=1.0)
    assert found["unlike_scenes"] == [{"scene_id": "unlike", "shift": far["score"], "fallback": False}]
    assert "unlike the training data (shift > 1): 1 scenes: unlike (" in format_progress("m", found)
    assert progress(tmp_path / "maps", ["like", "unlike"], 2, shift_threshold=5.0)["unlike_scenes"] == []

    item = scene_item(tmp_path / "maps" / "scenes" / "unlike.tif", statuses["unlike"], "models/m/best")
    assert item.properties["snakemap:shift"] == far["score"]
    assert item.properties["snakemap:shift_bands"] == far["bands"]


def test_an_ensemble_maps_a_scene_unlike_the_training_data_by_its_fallback_alone(tmp_path: Path) -> None:
    """With ``fallback: {shift: 1, members: [baselines/wet]}``, the scene 4 training stds away is
    the rule's map and says so in its status, the shard's manifest, progress and STAC; the scene
    like the training data is the whole ensemble's map, as without a fallback."""
    scenes = like_and_unlike(tmp_path)
    ckpt = checkpoint(tmp_path / "m.ckpt")
    trained = load_trained(ckpt)
    spec = {"rules": [{"expr": "blue", "above": 0, "class": "water"}], "default": "land"}
    rule = json.dumps({"name": "baselines/wet", "weight": 0.01, "spec": spec})

    def predictor(*fallback: str) -> Predictor:
        parser = argparse.ArgumentParser()
        parser.add_argument("--rule", action="append")
        parser.add_argument("--fallback-shift", type=float)
        parser.add_argument("--fallback-member", action="append", default=[])
        args = parser.parse_args(["--rule", rule, *fallback])
        members = [Member.from_trained(trained, 1.0, str(ckpt)), rule_member(rule, trained.classes)]
        return Predictor(members, trained.classes, fallback=cli_fallback(args, members))

    maps = {}
    for folder, fallback in (
        ("plain", ()),
        ("fallback", ("--fallback-shift", "1", "--fallback-member", "baselines/wet")),
    ):
        runner = ShardRunner(
            tmp_path / folder, predictor(*fallback), BandOptions(names=BANDS), CleanOptions(),
            PredictOptions(window=64, overlap=8), ApplyOptions(shard_size=2),
        )  # fmt: skip
        shard = runner.run_shard("shard-00000", scenes)
        maps[folder] = {s: read_tif(tmp_path / folder / "scenes" / f"{s}.tif") for s in ("like", "unlike")}
    water = trained.classes.index("water")
    # like the training data: the whole ensemble, exactly as without a fallback
    np.testing.assert_array_equal(maps["fallback"]["like"], maps["plain"]["like"])
    # 4 stds away: the rule alone (every valid pixel water), where the model's weight had ruled
    assert (maps["fallback"]["unlike"] == water).all()
    assert (maps["plain"]["unlike"] != water).mean() > 0.05

    statuses = {
        s: SceneStatus.read(tmp_path / "fallback" / "scenes" / f"{s}.json") for s in ("like", "unlike")
    }
    assert statuses["unlike"].extra["shift"]["fallback"] == ["baselines/wet"]
    assert "fallback" not in statuses["like"].extra["shift"]
    assert [e.get("fallback", False) for e in shard["scenes"]] == [False, True]
    found = progress(tmp_path / "fallback", ["like", "unlike"], 2, shift_threshold=1.0)
    assert found["fallback_scenes"] == 1
    assert "mapped by the ensemble's fallback members alone: 1 scenes" in format_progress("e", found)
    assert found["unlike_scenes"] == [
        {"scene_id": "unlike", "shift": statuses["unlike"].extra["shift"]["score"], "fallback": True}
    ]
    item = scene_item(tmp_path / "fallback" / "scenes" / "unlike.tif", statuses["unlike"], "ensembles/e")
    assert item.properties["snakemap:fallback"] == ["baselines/wet"]

    with pytest.raises(ConfigError, match=r"fallback members \['baselines/dry'\] are not among"):
        predictor("--fallback-shift", "1", "--fallback-member", "baselines/dry")
    with pytest.raises(ConfigError, match="go together"):
        predictor("--fallback-shift", "1")


def test_a_fallback_names_members_of_its_ensemble() -> None:
    members = {"m/fold0": 1, "baselines/r": 1}
    with pytest.raises(ValidationError, match=r"\['baselines/x'\] are not members"):
        EnsembleOptions.model_validate(
            {"members": members, "fallback": {"shift": 1, "members": ["baselines/x"]}}
        )
    with pytest.raises(ValidationError, match="not all of them"):
        EnsembleOptions.model_validate(
            {"members": members, "fallback": {"shift": 1, "members": list(members)}}
        )
    with pytest.raises(ValidationError, match=r"fallback.shift\n.*must be > 0"):
        EnsembleOptions.model_validate(
            {"members": members, "fallback": {"shift": 0, "members": ["baselines/r"]}}
        )
