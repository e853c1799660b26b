"""The shift score: how unlike the training scenes an applied scene is, in its sentinel, the
shard's manifest, its STAC item and `snakemap progress`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rasterio.transform import from_origin

from snakemap.core.model_sections import ApplyOptions, PredictOptions
from snakemap.core.sections import BandOptions, CleanOptions
from snakemap.core.status import SceneStatus
from snakemap.inference.predict import Member, Predictor
from snakemap.inference.scenes import SceneInput
from snakemap.inference.shard import ShardRunner
from snakemap.inference.shift import BandMoments, shift_score, unlike
from snakemap.outputs.progress import format_progress, progress
from snakemap.outputs.stac import scene_item
from snakemap.tasks.networks import build_model, load_trained
from tests.conftest import write_tif

BANDS = ["blue", "green", "red", "nir"]


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


def test_applied_scenes_carry_their_shift_into_progress_and_stac(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    scenes = []
    for name, mean in (("like", 100), ("unlike", 300)):
        data = np.clip(rng.normal(mean, 50, (4, 96, 96)), 1, None).astype(np.uint16)
        path = write_tif(tmp_path / "in" / f"{name}.tif", data, transform=from_origin(0, 0, 10, 10), nodata=0,
                         descriptions=BANDS)  # fmt: skip
        scenes.append(SceneInput(name, str(path)))
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
    assert found["unlike_scenes"] == [{"scene_id": "unlike", "shift": far["score"]}]
    assert "unlike the training data (shift > 1): 1 scenes: unlike (" in format_progress("m", found)
    assert progress(tmp_path / "maps", ["like", "unlike"], 2, shift_threshold=5.0)["unlike_scenes"] == []

    item = scene_item(tmp_path / "maps" / "scenes" / "unlike.tif", statuses["unlike"], "models/m/best")
    assert item.properties["snakemap:shift"] == far["score"]
    assert item.properties["snakemap:shift_bands"] == far["bands"]
