"""Rule baselines: expressions over band and index names, one rule per class, the first that
claims a pixel wins; the short index form; expressions that cannot run code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from snakemap.core.calval_sections import BaselineOptions
from snakemap.core.config import ConfigError, check_baseline_bands, load_config
from snakemap.core.expressions import ExpressionError, evaluate, names, parse
from snakemap.evaluation.calval import baseline_map
from snakemap.tasks.networks import build_model
from tests.conftest import REPO, write_tif

CLASSES = ["clear_land", "water", "cloud_shadow", "cloud"]
BANDS = ["blue", "green", "red", "nir", "swir16", "ndwi"]
RULES = {
    "rules": [
        {"expr": "mean(blue, green, red)", "above": 0.215, "class": "cloud"},
        {"expr": "ndwi", "above": 0.0, "class": "water"},
        {"expr": "mean(nir, swir16) < 0.2 and ndwi < 0", "class": "cloud_shadow"},
    ],
    "default": "clear_land",
}


def cleaned_image(path: Path) -> Path:
    """A cleaned 6-band image (float32 reflectance, NaN nodata, band names as descriptions) whose
    columns are: cloud, water, shadow, land, bright water (cloud and water: cloud wins), nodata."""
    pixels = {
        "cloud": [0.40, 0.40, 0.40, 0.45, 0.30],
        "water": [0.08, 0.10, 0.06, 0.03, 0.01],
        "shadow": [0.05, 0.06, 0.05, 0.12, 0.10],
        "land": [0.06, 0.09, 0.10, 0.30, 0.25],
        "bright water": [0.30, 0.35, 0.30, 0.10, 0.02],
    }
    data = np.full((6, 2, 6), np.nan, dtype=np.float32)
    for col, (blue, green, red, nir, swir) in enumerate(pixels.values()):
        data[:5, :, col] = np.array([blue, green, red, nir, swir])[:, None]
        data[5, :, col] = (green - nir) / (green + nir)
    return write_tif(path, data, nodata=float("nan"), descriptions=BANDS)


def classes_of(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        assert src.nodata == 255 and src.crs is not None
        out: np.ndarray = src.read(1)[0]
    return out


def test_rules_claim_pixels_in_order_and_the_default_takes_the_rest(tmp_path: Path) -> None:
    image = cleaned_image(tmp_path / "image.tif")
    baseline_map(BaselineOptions.model_validate(RULES), "s1", image, CLASSES, tmp_path / "rules.tif")
    cloud, water, shadow, land = (CLASSES.index(c) for c in ("cloud", "water", "cloud_shadow", "clear_land"))
    # the bright water pixel: cloud is claimed first; the last column has no data
    assert classes_of(tmp_path / "rules.tif").tolist() == [cloud, water, shadow, land, cloud, 255]

    reordered = dict(RULES, rules=[RULES["rules"][1], RULES["rules"][0], RULES["rules"][2]])
    baseline_map(
        BaselineOptions.model_validate(reordered), "s1", image, CLASSES, tmp_path / "water_first.tif"
    )
    assert classes_of(tmp_path / "water_first.tif")[4] == water


def test_the_short_index_form_is_one_rule_and_a_default(tmp_path: Path) -> None:
    image = cleaned_image(tmp_path / "image.tif")
    short = {"index": "ndwi", "above": 0.0, "class": "water", "else": "clear_land"}
    long = {"rules": [{"expr": "ndwi", "above": 0.0, "class": "water"}], "default": "clear_land"}
    for name, spec in (("short", short), ("long", long)):
        baseline_map(BaselineOptions.model_validate(spec), "s1", image, CLASSES, tmp_path / f"{name}.tif")
    assert (classes_of(tmp_path / "short.tif") == classes_of(tmp_path / "long.tif")).all()
    assert BaselineOptions.model_validate(short).resolved() == short  # its text unchanged


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "blue.real",
        "blue[0]",
        "open('x')",
        "lambda: 1",
        "'text'",
        "blue == 1",
    ],
)
def test_expressions_that_could_run_code_are_refused(expr: str) -> None:
    with pytest.raises(ExpressionError):
        parse(expr)
    with pytest.raises(ConfigError, match="calval.baselines.x.rules.0.expr"):
        config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        config["calval"] = {
            "baselines": {"x": {"rules": [{"expr": expr, "class": "reef"}], "default": "land"}}
        }
        load_config(config)


def test_expressions_evaluate_per_pixel() -> None:
    bands = {"a": np.array([1.0, 4.0]), "b": np.array([3.0, 2.0])}
    assert evaluate("mean(a, b) * 2 - min(a, b)", bands).tolist() == [3.0, 4.0]
    assert evaluate("1 < a <= 4 and not b > 2", bands).tolist() == [False, True]
    assert evaluate("(a > 3) | ~(b < 3)", bands).tolist() == [True, True]
    assert names("sqrt(abs(nir - red)) / max(nir, 1e-6)") == {"nir", "red"}
    with pytest.raises(ExpressionError, match="reads c, not among the bands a, b"):
        evaluate("a + c", bands)


def test_config_mistakes_in_baselines_are_named() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cases = {
        "'clear_land' not in labels.classes": {"ndwi_water": {"index": "ndwi", "above": 0, "class": "water",
                                                              "else": "clear_land"}},
        "rules need a default": {"r": {"rules": [{"expr": "ndwi", "above": 0, "class": "water"}]}},
        "give one of index": {"r": {"index": "ndwi", "rules": [{"expr": "ndwi > 0", "class": "water"}]}},
    }  # fmt: skip
    for message, baselines in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_config({**config, "calval": {"baselines": baselines}})
    calval = {
        "baselines": {
            "r": {"rules": [{"expr": "mean(nir, swir16) < 0.2", "class": "land"}], "default": "land"}
        }
    }
    with pytest.raises(ConfigError, match=r"calval.baselines.r: reads swir16, not among the cleaned bands"):
        check_baseline_bands(calval, ["blue", "green", "red", "nir", "ndwi", "ndvi"])
    check_baseline_bands(calval, None)  # the files decide: nothing to check


def test_the_baseline_step_maps_a_site_by_hand(tmp_path: Path) -> None:
    """`snakemap baseline` as the rule calls it, with the rules as JSON."""
    clean = tmp_path / "clean" / "s1"
    cleaned_image(clean / "image.tif")
    (clean / "status.json").write_text(json.dumps({"scene_id": "s1", "status": "ok"}))
    labels = {"labels": {"classes": CLASSES, "remap": {str(i): c for i, c in enumerate(CLASSES)}}}
    out = tmp_path / "out.tif"
    cmd = [sys.executable, "-m", "snakemap", "baseline", "s1", "--spec", json.dumps(RULES),
           "--clean", str(clean), "--out", str(out), "--options", json.dumps(labels)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert classes_of(tmp_path / "out.tif").tolist() == [3, 1, 2, 0, 3, 255]
    bad = dict(RULES, default=None)
    proc = subprocess.run([*cmd[:6], json.dumps(bad), *cmd[7:]], capture_output=True, text=True)
    assert proc.returncode == 2 and "calval.baselines: default: given empty (null)" in proc.stderr


def rules_checkpoint(path: Path) -> Path:
    """A checkpoint with random weights over the cleaned bands, predicting the four classes."""
    torch.manual_seed(0)
    net = build_model("FPN", "mobilenet_v2", len(BANDS), len(CLASSES))
    hp = {"arch": "FPN", "encoder_name": "mobilenet_v2", "classes": CLASSES, "band_names": BANDS,
          "mean": [0.2] * 5 + [0.0], "std": [0.1] * 5 + [0.5]}  # fmt: skip
    torch.save(
        {"hyper_parameters": hp, "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, path
    )
    return path


def test_an_ensemble_mixes_a_model_and_a_rule_baseline(tmp_path: Path) -> None:
    """A rule member adds its map as one-hot probabilities: weighted far above the model, the
    ensemble's map is the rules' map; the model still decides where they weigh alike."""
    image = cleaned_image(tmp_path / "image.tif")
    ckpt = rules_checkpoint(tmp_path / "m.ckpt")
    baseline_map(BaselineOptions.model_validate(RULES), "s1", image, CLASSES, tmp_path / "rules.tif")
    member = json.dumps({"name": "baselines/index_rules", "weight": 100.0, "spec": RULES})
    options = json.dumps({"predict": {"window": 32, "overlap": 4}})
    cmd = [sys.executable, "-m", "snakemap", "predict", "--checkpoint", str(ckpt), "--weight", "1",
           "--rule", member, "--image", str(image), "--classes-out", str(tmp_path / "ens.tif"),
           "--probs-out", str(tmp_path / "probs.tif"), "--options", options]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert (classes_of(tmp_path / "ens.tif") == classes_of(tmp_path / "rules.tif")).all()
    with rasterio.open(tmp_path / "probs.tif") as src:
        probs = src.read()[:, 0] / 250.0  # the first row; uint8 probabilities scaled by 250
    assert probs[CLASSES.index("cloud"), 0] > 0.98  # the rule's one-hot, weighted 100 to 1

    from snakemap.inference.predictor import Member, Predictor
    from snakemap.tasks.networks import load_trained

    trained = load_trained(ckpt)
    rule = Member.from_rules(BaselineOptions.model_validate(RULES), CLASSES, 1.0, "baselines/index_rules")
    predictor = Predictor([Member.from_trained(trained), rule], CLASSES)
    assert rule.bands == ["blue", "green", "ndwi", "nir", "red", "swir16"]
    assert predictor.reference()["ndwi"] == (0.0, 0.5)  # the model's statistics, not the rule's


def test_rule_members_are_checked_when_the_config_is_loaded() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    rules = {"rules": [{"expr": "ndwi", "above": 0, "class": "water"}], "default": "land"}
    product = {"maps": {"s": "p.tif"}, "remap": {1: "reef"}}
    cases = {
        "baselines/nope is no rule baseline": {"members": {"arch-Unet": 1, "baselines/nope": 1}},
        "baselines/product is no rule baseline": {"members": {"arch-Unet": 1, "baselines/product": 1}},
        "an ensemble needs a model besides its rules": {"members": {"baselines/r": 1}},
        "threshold: tune is for ensembles of models alone": {
            "members": {"arch-Unet": 1, "baselines/r": 1},
            "threshold": "tune",
        },
    }
    for message, ensemble in cases.items():
        calval = {"baselines": {"r": rules, "product": product}, "ensembles": {"e": ensemble}}
        with pytest.raises(ConfigError, match=message):
            load_config({**config, "calval": calval})
    calval = {
        "baselines": {"r": rules},
        "ensembles": {"e": {"members": {"arch-Unet": 1, "baselines/r": 0.5}}},
    }
    assert load_config({**config, "calval": calval}).calval.ensembles["e"].members["baselines/r"] == 0.5


def test_per_class_winners_claim_in_precedence_and_the_fallback_fills_the_rest() -> None:
    from snakemap.inference.predictor import PerClass

    def one_hot(classes: list[list[int]]) -> torch.Tensor:
        return torch.from_numpy(np.eye(3, dtype=np.float32)[np.array(classes)]).permute(2, 0, 1)[None]

    a = one_hot([[0, 1, 2, 0]])  # member 0: maps class 1 here at pixel 1, class 2 at pixel 2
    b = one_hot([[1, 1, 1, 2]])  # member 1: says class 1 at pixels 0-2, class 2 at pixel 3
    # classes 0 and 1 by member 1, class 2 by member 0; class 2 claims before class 1; fallback 0
    combined = PerClass(winners=[1, 1, 0], precedence=[2, 1, 0], fallback=0).combine([a, b], 3)
    assert combined.shape == (1, 3, 1, 4) and (combined.sum(1) == 1).all()
    # pixel 0: b claims 1 -> 1; pixel 2: a claims 2 and b claims 1, 2 comes first -> 2;
    # pixel 3: no winner claims its own class (a says 0, b says 2) -> the fallback a's 0
    assert combined.argmax(1)[0, 0].tolist() == [1, 1, 2, 0]
    combined = PerClass(winners=[1, 1, 0], precedence=[1, 2, 0], fallback=1).combine([a, b], 3)
    assert combined.argmax(1)[0, 0].tolist() == [1, 1, 1, 2]  # class 1 first; the fallback is b


def test_per_class_ensembles_are_checked_when_the_config_is_loaded() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    rules = {"rules": [{"expr": "ndwi", "above": 0, "class": "water"}], "default": "land"}
    members = {"arch-Unet": 1, "baselines/r": 1}
    cases = {
        "combine: per_class maps each class by its winner; leave threshold out": {
            "members": members,
            "combine": "per_class",
            "threshold": 0.5,
        },
        "precedence: list every class of labels.classes once": {
            "members": members,
            "combine": "per_class",
            "precedence": ["water", "land"],
        },
        "precedence: only for combine: per_class": {"members": members, "precedence": ["water"]},
    }
    for message, ensemble in cases.items():
        calval = {"baselines": {"r": rules}, "ensembles": {"e": ensemble}}
        with pytest.raises(ConfigError, match=message):
            load_config({**config, "calval": calval})


def test_winners_json_is_read_in_the_models_class_order(tmp_path: Path) -> None:
    """JSON objects come back with sorted keys: the precedence must index the model's classes."""
    from snakemap.cli.common import per_class
    from snakemap.core.io import write_json
    from snakemap.inference.predictor import Member

    classes = ["land", "water", "reef", "cloud"]
    write_json(
        tmp_path / "winners.json",
        {
            "classes": classes,
            "members": ["m.ckpt", "baselines/r"],
            "winners": {"land": "m.ckpt", "water": "baselines/r", "reef": "m.ckpt", "cloud": "m.ckpt"},
            "winner_index": [0, 1, 0, 0],
            "precedence": ["water", "cloud", "reef", "land"],
            "fallback": "m.ckpt",
        },
    )
    members = [
        Member(lambda x: x, [], None, source="m.ckpt"),
        Member(lambda x: x, [], None, source="baselines/r"),
    ]  # type: ignore[arg-type]
    found = per_class(tmp_path / "winners.json", members, classes)
    assert found.precedence == [1, 3, 2, 0] and found.winners == [0, 1, 0, 0] and found.fallback == 0
    with pytest.raises(ConfigError, match="tuned for classes"):
        per_class(tmp_path / "winners.json", members, ["cloud", "land", "reef", "water"])
    with pytest.raises(ConfigError, match="tune it again"):
        per_class(tmp_path / "winners.json", members[:1], classes)
