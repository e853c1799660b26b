"""Options that carry models across sensors: per-scene normalisation, radiometric and scale
augmentation, samples per epoch; and thresholds tuned out of fold, never on calval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
import yaml

from snakemap.core.apply_sections import PredictOptions
from snakemap.core.sections import ChipOptions
from snakemap.data.stats import Normalizer, scene_normalizer
from snakemap.evaluation.tuning import TUNED_ON, TuningMember, tune_threshold
from snakemap.inference.predict import predict_scene
from snakemap.inference.predictor import Member, Predictor
from snakemap.inference.readers import ArrayReader
from snakemap.inference.writer import read_probabilities
from snakemap.tasks.augment import augment, zoom
from snakemap.tasks.networks import build_model
from snakemap.tasks.segmentation import SegmentationTask
from snakemap.training.datasets import ChipDataModule, ChipDataset
from tests.conftest import demo_chips

LABELS = {
    "classes": ["land", "water", "reef", "cloud"],
    "remap": {"0": "land", "1": "water", "2": "water", "3": "reef", "4": "cloud"},
    "target": ["reef"],
}
BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Chips, folds and statistics of three small demo scenes (real GeoTIFFs through the package)."""
    return demo_chips(tmp_path_factory.mktemp("chips"), {"g1": "A", "g2": "B", "g3": "C"}, LABELS,
                      ChipOptions(size=32, stride=32))  # fmt: skip


def test_chips_carry_their_scene_statistics(chips: dict) -> None:
    index = chips["indexes"][0]
    table = pd.read_parquet(index)
    with rasterio.open(chips["clean"][0] / "image.tif") as src:
        image = src.read()
    valid = np.isfinite(image).all(axis=0)
    np.testing.assert_allclose(table["band_mean"].iloc[0], [b[valid].mean() for b in image], rtol=1e-5)
    np.testing.assert_allclose(table["band_std"].iloc[-1], [b[valid].std() for b in image], rtol=1e-4)
    # Per-scene normalisation: chips of one scene come out near zero mean, unit spread.
    chosen = [(index, table["chip"].to_numpy())]
    images, _ = ChipDataset(chosen, [0, 1, 2, 3], Normalizer(np.zeros(4), np.ones(4)), "scene").__getitems__(
        list(range(len(table)))
    )
    assert images.shape[1] == 4
    assert abs(float(images.mean())) < 0.5 and 0.3 < float(images.std()) < 2.0
    raw, _ = ChipDataset(chosen, [0, 1, 2, 3], Normalizer(np.zeros(4), np.ones(4)), "dataset").__getitems__(
        list(range(len(table)))
    )
    assert float(raw.mean()) > 100  # DN, untouched by an identity normaliser


def test_scene_normalised_predictions_ignore_a_sensors_gain_and_offset(tmp_path: Path, chips: dict) -> None:
    with rasterio.open(chips["clean"][1] / "image.tif") as src:
        image, crs, transform = src.read(), src.crs, src.transform
    torch.manual_seed(0)
    network = build_model("Unet", "mobilenet_v2", 4, 4).eval()
    gain = np.array([0.7, 1.1, 1.3, 0.9], dtype=np.float32)[:, None, None]
    offset = np.array([120, -40, 300, 15], dtype=np.float32)[:, None, None]
    other_sensor = image * gain + offset
    runs = {}
    for normalize in ("scene", "dataset"):
        for name, data in (("this", image), ("other", other_sensor)):
            norm = scene_normalizer([image])  # the training statistics, for "dataset"
            member = Member(network, BANDS, norm, normalize=normalize)
            out = tmp_path / f"{normalize}-{name}.tif"
            predict_scene(
                ArrayReader(data.astype(np.float32), BANDS, crs, transform),
                Predictor([member], LABELS["classes"]),
                PredictOptions(window=64, overlap=8, prob_dtype="float32"),
                tmp_path / f"c-{normalize}-{name}.tif",
                out,
            )
            runs[normalize, name] = read_probabilities(out)
    valid = np.isfinite(runs["scene", "this"])
    np.testing.assert_allclose(runs["scene", "this"][valid], runs["scene", "other"][valid], atol=2e-4)
    assert (
        np.abs(runs["dataset", "this"][valid] - runs["dataset", "other"][valid]).max() > 0.01
    )  # not invariant


def test_augment_gain_offset_and_rescale() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.ones(8, 3, 32, 32)
    labels = torch.ones(8, 32, 32, dtype=torch.int64)
    same, same_labels = augment(images, labels, False, False, generator=g)
    assert torch.equal(same, images) and torch.equal(same_labels, labels)
    out, _ = augment(images, labels, False, False, gain=0.2, offset=0.5, generator=g)
    per_band = out[:, :, 0, 0]
    assert per_band.min() >= 1 - 0.2 - 0.5 - 1e-6 and per_band.max() <= 1 + 0.2 + 0.5 + 1e-6
    # Each band of each sample gets its own gain and offset.
    assert per_band.std(dim=1).min() > 0 and per_band.std(dim=0).min() > 0
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # a constant within a band
    small, small_labels = zoom(torch.ones(2, 3, 32, 32), torch.ones(2, 32, 32, dtype=torch.int64), 0.5, 255)
    assert small.shape == (2, 3, 32, 32) and small_labels.shape == (2, 32, 32)
    assert (small_labels == 255).float().mean() == pytest.approx(0.75) and (small[:, :, 0, 0] == 0).all()
    stripes = torch.arange(32.0).repeat(1, 1, 32, 1)
    big, big_labels = zoom(stripes, (stripes[:, 0] > 15).long(), 2.0, 255)
    assert big.shape == stripes.shape and (big_labels != 255).all()
    assert float(big[0, 0, 0, -1] - big[0, 0, 0, 0]) == pytest.approx(
        15.5, abs=0.5
    )  # the centre half, enlarged
    zoomed, zoomed_labels = augment(images, labels, True, True, rescale=[0.5, 2.0], generator=g)
    assert zoomed.shape == images.shape and zoomed_labels.shape == labels.shape


def test_samples_per_epoch_sets_the_steps(chips: dict) -> None:
    table = pd.read_parquet(chips["indexes"][0])
    dataset = ChipDataset(
        [(chips["indexes"][0], table["chip"].to_numpy())], [0, 1], Normalizer(np.zeros(2), np.ones(2))
    )
    flags = table["target_fraction"].to_numpy() > 0
    for share in (None, 0.5):
        module = ChipDataModule(dataset, dataset, 4, share, flags, samples_per_epoch=40)
        assert len(module.train_dataloader()) == 10
    assert len(ChipDataModule(dataset, dataset, 4, None, flags).train_dataloader()) == len(table) // 4


def fake_member(root: Path, name: str, params: dict, fold: int | None, bias: float | None) -> Path:
    """A checkpoint as training writes it (hyper-parameters, state dict, config.yaml beside), whose
    network says "reef" with a fixed confidence (``bias``; None: the seeded random network, whose
    map of a flipped chip is not the flipped map); no training needed to test the tuning's plumbing."""
    stats = [0.0] * 4
    torch.manual_seed(0)
    task = SegmentationTask("Unet", "mobilenet_v2", LABELS["classes"], BANDS, stats, [1.0] * 4)
    with torch.no_grad():
        head = task.model.segmentation_head[0]
        if bias is not None:
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.0, 0.0, bias, 0.0]))
    out = root / name
    out.mkdir(parents=True)
    torch.save(
        {"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict(), "epoch": 0},
        out / "best.ckpt",
    )
    (out / "config.yaml").write_text(yaml.safe_dump({"params": params, "fold": fold}))
    return out / "best.ckpt"


def test_tuning_scores_the_probabilities_predict_tta_will_make(tmp_path: Path, chips: dict) -> None:
    net = TuningMember.from_checkpoint(fake_member(tmp_path, "net", {"validation": "fold"}, None, None))
    args = ([net], chips["indexes"], chips["folds"], chips["stats"], "reef")
    plain, flipped = tune_threshold(*args), tune_threshold(*args, tta=True)
    assert plain["pixels"] == flipped["pixels"]
    assert plain["pr"]["precision"] != flipped["pr"]["precision"]  # the flip-averaged probabilities
    assert tune_threshold(*args)["pr"] == plain["pr"]


def test_thresholds_are_tuned_on_out_of_fold_chips_only(tmp_path: Path, chips: dict) -> None:
    folds = pd.read_parquet(chips["folds"])
    a = fake_member(tmp_path, "a", {"validation": "fold"}, None, 1.0)  # holds out fold 0
    b = fake_member(tmp_path, "b", {"validation": "fold"}, 2, 1.0)
    result = tune_threshold(
        [TuningMember.from_checkpoint(a), TuningMember.from_checkpoint(b)],
        chips["indexes"],
        chips["folds"],
        chips["stats"],
        "reef",
    )
    assert result["tuned_on"] == TUNED_ON
    assert result["chips"] == int(folds["fold"].isin([0, 2]).sum())
    assert result["members"][str(a)]["chips"] == int((folds["fold"] == 0).sum())
    assert result["members"][str(b)]["chips"] == int((folds["fold"] == 2).sum())
    labels = np.concatenate(
        [
            np.load(str(p).replace("index.parquet", "label.npy"))[
                folds.loc[
                    (folds["scene_id"] == pd.read_parquet(p)["scene_id"].iloc[0])
                    & folds["fold"].isin([0, 2]),
                    "chip",
                ]
            ]
            for p in chips["indexes"]
        ]
    )
    assert result["pixels"] == int((labels < 4).sum()) and result["target_pixels"] == int((labels == 2).sum())
    # A constant probability: every pixel is reef at the F1-optimal threshold (all recall).
    assert result["recall"] == pytest.approx(1.0)
    assert 0 <= result["threshold"] <= np.exp(1) / (np.exp(1) + 3) + 0.01
    on_calval = fake_member(tmp_path, "c", {"validation": "calval"}, None, 1.0)
    with pytest.raises(ValueError, match="chips that some member did not train on"):
        tune_threshold(
            [TuningMember.from_checkpoint(on_calval)],
            chips["indexes"],
            chips["folds"],
            chips["stats"],
            "reef",
        )


def test_weights_are_tuned_out_of_fold_for_the_worst_case(tmp_path: Path, chips: dict) -> None:
    from snakemap.core.calval_sections import BaselineOptions
    from snakemap.evaluation.weights import group_of, tune_weights, variants

    folds = pd.read_parquet(chips["folds"])
    # one model in two folds (its members hold out folds 0 and 2), saying reef everywhere
    a0 = fake_member(tmp_path / "models" / "m", "fold0", {"validation": "fold"}, None, 1.0)
    a2 = fake_member(tmp_path / "models" / "m", "fold2", {"validation": "fold"}, 2, 1.0)
    assert group_of(a0) == group_of(a2) == str(tmp_path / "models" / "m")
    rules = BaselineOptions.model_validate(
        {"rules": [{"expr": "green - nir", "above": 0, "class": "water"}], "default": "land"}
    )
    rule = Member.from_rules(rules, LABELS["classes"], 0.1, "baselines/r")
    members = [TuningMember.from_checkpoint(a0, 0.5), TuningMember.from_checkpoint(a2, 0.5)]
    result = tune_weights(members, [rule], chips["indexes"], chips["folds"], chips["stats"])
    assert result["tuned_on"] == TUNED_ON and result["chips"] == int(folds["fold"].isin([0, 2]).sum())
    scenes = set(folds.loc[folds["fold"].isin([0, 2]), "scene_id"])  # the scenes with such chips
    cases = {f"{s} / {v.name}" for s in scenes for v in variants(LABELS["classes"])}
    assert set(result["tuned"]["macro_iou"]) <= cases and result["variants"] == [
        v.name for v in variants(LABELS["classes"])
    ]
    assert {f"{s} / as is" for s in scenes} | {f"{s} / reef-rich statistics" for s in scenes} <= set(
        result["tuned"]["macro_iou"]
    )  # a class a scene lacks has no rich variant there
    # Weighed 1 to 0.1 the model's constant reef covers every pixel; a map that is all reef scores
    # worse than the rule's water and land, so tuning raises the rule over the model.
    assert result["tuned"]["worst"] > result["given"]["worst"]
    assert result["tuned"]["worst"] == min(result["tuned"]["macro_iou"].values())
    model, rule_weight = result["weights"][:2], result["weights"][2]
    assert model[0] == model[1]  # a model's folds share one factor
    reef, other = np.exp(1) / (np.exp(1) + 3), 1 / (np.exp(1) + 3)
    assert rule_weight > sum(model) * (reef - other)  # the rule's class now wins every pixel
    assert result["groups"]["baselines/r"]["factor"] * 0.1 == pytest.approx(rule_weight)
    with pytest.raises(ValueError, match="one model"):
        tune_weights(members, [], chips["indexes"], chips["folds"], chips["stats"])
    on_calval = fake_member(tmp_path, "c", {"validation": "calval"}, None, 1.0)
    with pytest.raises(ValueError, match="held out in one of its members"):
        tune_weights([TuningMember.from_checkpoint(on_calval)], [rule], chips["indexes"], chips["folds"],
                     chips["stats"])  # fmt: skip


def test_tuned_weights_replace_the_given_ones_and_drop_members_weighed_zero(tmp_path: Path) -> None:
    from snakemap.cli.common import tuned_weights
    from snakemap.core.config import ConfigError
    from snakemap.core.io import write_json

    classes = LABELS["classes"]
    members = [Member(lambda x: x, [], Normalizer(np.zeros(0), np.ones(0)), 1.0, source=s) for s in "abc"]
    tuned = {"classes": classes, "members": ["a", "b", "c"], "weights": [2.0, 0.0, 0.5], "tuned_on": TUNED_ON}
    write_json(tmp_path / "weights.json", tuned)
    kept = tuned_weights(tmp_path / "weights.json", members, classes)
    assert [(m.source, m.weight) for m in kept] == [("a", 2.0), ("c", 0.5)]
    with pytest.raises(ConfigError, match="tune it again"):
        tuned_weights(tmp_path / "weights.json", members[:2], classes)
    with pytest.raises(ConfigError, match="tuned for classes"):
        tuned_weights(tmp_path / "weights.json", members, classes[::-1])


def test_class_rich_statistics_reweight_the_labelled_pixels(chips: dict) -> None:
    from snakemap.evaluation.weights import _Moments

    images = np.load(str(chips["indexes"][0]).replace("index.parquet", "image.npy"))
    labels = np.load(str(chips["indexes"][0]).replace("index.parquet", "label.npy"))
    moments = _Moments.of(images, labels, np.arange(len(images)), 4)
    pixels = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
    y = labels.reshape(-1)
    keep = (y < 4) & np.isfinite(pixels).all(axis=0)
    mean, std = moments.mixture()
    np.testing.assert_allclose(mean, pixels[:, keep].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(std, pixels[:, keep].std(axis=1), rtol=1e-4)
    k = int(np.argmin(np.where(moments.count > 0, moments.count, np.inf)))  # the rarest class
    rich_mean, _ = moments.mixture(k)
    others = pixels[:, keep & (y != k)].mean(axis=1)
    np.testing.assert_allclose(
        rich_mean, 0.5 * pixels[:, keep & (y == k)].mean(axis=1) + 0.5 * others, rtol=1e-5
    )
