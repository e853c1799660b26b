"""The gradient-boosting pixel family (``family: lightgbm``): trained on the networks' chips and
folds, its best round chosen on the held-out fold, reproducible, predicted seam-free through the
sliding windows, bundled as LightGBM's own text model and refused by the ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from snakemap.core.apply_sections import PredictOptions
from snakemap.core.model_sections import ModelOptions, field_model_errors
from snakemap.core.sections import ChipOptions
from snakemap.inference.predict import predict_scene
from snakemap.inference.predictor import Member, Predictor
from snakemap.inference.readers import CleanImageReader
from snakemap.outputs.bundle import bundled_model, read_bundle, write_bundle
from snakemap.outputs.export import ExportError, export_onnx
from snakemap.tasks.boosting import feature_names, feature_rows
from snakemap.tasks.networks import load_trained
from snakemap.training.resume import JobData
from snakemap.training.train import train_job
from tests.conftest import demo_chips

LABELS = {
    "classes": ["land", "water", "reef", "cloud"],
    "remap": {"0": "land", "1": "water", "2": "water", "3": "reef", "4": "cloud"},
    "target": ["reef"],
}
PARAMS = {
    "family": "lightgbm",
    "boosting": {"rounds": 40, "pixels": 6000, "scales": [3, 7]},
    "class_weights": [1.0, 1.0, 3.0, 1.0],
    "balance": 0.5,
}


@pytest.fixture(scope="module")
def booster(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A booster trained on three small demo scenes (fold 0 held out), and its data."""
    root = tmp_path_factory.mktemp("boost")
    data = demo_chips(root, {"t1": "A", "t2": "B", "t3": "C"}, LABELS, ChipOptions(size=32))
    job = JobData(data["indexes"], [], data["folds"], data["stats"])
    best = train_job(root / "gbm", PARAMS, None, LABELS["classes"], 255, job, 0, 2)
    return {"root": root, "data": data, "job": job, "best": best}


def test_a_booster_learns_and_keeps_its_best_round(booster: dict) -> None:
    out = Path(booster["best"]).parent
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 20 and metrics["round"].tolist()[-1] == 40
    assert metrics["val_loss"].iloc[-1] < metrics["val_loss"].iloc[0]  # it learns
    assert metrics["val_acc"].max() > 0.8
    best = torch.load(out / "best.ckpt", weights_only=True)
    last = torch.load(out / "last.ckpt", weights_only=True)
    hp = best["hyper_parameters"]
    chosen = metrics.sort_values(["val_iou", "round"], ascending=[False, True]).iloc[0]
    assert hp["rounds"] == chosen["round"] and last["hyper_parameters"]["rounds"] == 40
    assert hp["family"] == "lightgbm" and best["state_dict"] == {}
    assert hp["features"] == feature_names(["blue", "green", "red", "nir"], [3, 7])
    assert len(hp["features"]) == 4 * 5
    assert not (out / "train").exists() and (out / "config.yaml").exists()
    # the same seed, chips and options give the same booster
    again = train_job(out.parent / "again", PARAMS, None, LABELS["classes"], 255, booster["job"], 0, 2)
    assert torch.load(again, weights_only=True)["hyper_parameters"]["booster"] == hp["booster"]


def test_windows_give_the_map_of_one_whole_scene_window(booster: dict, tmp_path: Path) -> None:
    clean = Path(booster["data"]["clean"][0]) / "image.tif"
    trained = load_trained(booster["best"])
    maps = {}
    for name, opts in {
        "windows": PredictOptions(window=48, overlap=8, batch_size=3, prob_dtype="float32"),
        "whole": PredictOptions(window=160, overlap=32, prob_dtype="float32"),
    }.items():
        reader = CleanImageReader(clean)
        predictor = Predictor([Member.from_trained(trained)], trained.classes)
        figures = predict_scene(reader, predictor, opts, tmp_path / f"{name}.tif", tmp_path / f"{name}.p.tif")
        reader.close()
        with rasterio.open(tmp_path / f"{name}.p.tif") as src:
            maps[name] = src.read()
        maps[name + "_windows"] = figures["windows"]
    assert maps["windows_windows"] > 1 and maps["whole_windows"] == 1
    valid = np.isfinite(maps["whole"]).all(0)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(maps["windows"][:, valid], maps["whole"][:, valid], atol=1e-5)
    np.testing.assert_allclose(maps["whole"][:, valid].sum(0), 1.0, atol=1e-4)  # probabilities
    # windows whose kept centres lack the features' context would show seams: refused, named
    predictor = Predictor([Member.from_trained(trained, source="gbm/best.ckpt")], trained.classes)
    reader = CleanImageReader(clean)
    with pytest.raises(ValueError, match=r"gbm/best.ckpt reads 3 pixels .* at least 6"):
        predict_scene(reader, predictor, PredictOptions(window=48, overlap=4, blend=True), tmp_path / "x.tif")
    reader.close()
    assert not (tmp_path / "x.tif").exists()


def test_a_booster_maps_a_flipped_window_as_the_flipped_map(booster: dict) -> None:
    """Why ``predict.tta`` runs a booster once: its features are odd, centred neighbourhoods."""
    trained = load_trained(booster["best"])
    member = Member.from_trained(trained)
    assert member.flip_equivariant
    with rasterio.open(Path(booster["data"]["clean"][0]) / "image.tif") as src:
        window = src.read(window=rasterio.windows.Window(10, 20, 40, 30)).astype(np.float32)
    x = member.prepare(window[None], list(trained.band_names), torch.device("cpu"))
    probs = trained.network(x)
    for dims in ((-1,), (-2,), (-2, -1)):
        gap = (trained.network(x.flip(dims)).flip(dims) - probs).abs()
        # the same up to float rounding of the neighbourhood sums (a split on a rounding edge)
        assert float((gap > 1e-5).float().mean()) < 1e-3 and float(gap.max()) < 0.01


def test_a_booster_bundle_holds_its_text_model_and_has_no_onnx(booster: dict, tmp_path: Path) -> None:
    resolved = {"params": PARAMS, "fold": None}
    path = write_bundle(booster["best"], resolved, {"labels": LABELS}, tmp_path / "gbm.zip")
    bundle = read_bundle(path)
    model = bundled_model(bundle.meta, bundle.state)
    direct = load_trained(booster["best"])
    x = torch.randn(2, 4, 24, 24)
    assert torch.equal(model.network(x), direct.network(x)) and model.outputs == "probabilities"
    rows = feature_rows(x, [3, 7])
    assert rows.shape == (2 * 24 * 24, 20)
    expected = direct.network.booster.predict(rows).reshape(2, 24, 24, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(model.network(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ExportError, match="lightgbm model has no ONNX export"):
        export_onnx(bundle, tmp_path / "gbm.onnx")
    assert not (tmp_path / "gbm.onnx").exists()


def test_boosting_options_are_checked() -> None:
    with pytest.raises(ValueError, match="must be odd"):
        ModelOptions(family="lightgbm", boosting={"scales": [4]})
    with pytest.raises(ValueError, match="num_leave"):
        ModelOptions(family="lightgbm", boosting={"num_leave": 8})
    assert field_model_errors(ModelOptions(family="lightgbm", arch="EDSR"))[0].startswith(
        "family 'lightgbm' maps classes"
    )
    assert "family" not in ModelOptions().resolved()  # old jobs' resolved configs are unchanged
