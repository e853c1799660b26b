"""Map quality on real scenes from ../shared/data, with the workflow's own code and options.

1. Cross-sensor: train on the UKIS Sentinel-2 scene (best.ckpt chosen on its own spatial-block
   fold 0), score on the UKIS Landsat 7 scene, which no model or threshold ever sees before it is
   scored. Per class IoU of single models (median of --seeds seeds) for each option on its own
   and all together, of the 4-fold ensemble, and of the index rules per class (NDWI > 0 for water,
   mean(B, G, R) brightness for cloud: at fixed thresholds, and at thresholds tuned on the
   Sentinel-2 scene).
2. Sparse land cover: the North Carolina Landsat 7 scene and its sparse 7-class polygons, in
   spatial-block folds: macro F1 over every fold's held-out pixels of the workflow's model against
   a scikit-learn random forest on the same labelled pixels. Pixels that any training chip of the
   fold covers are not scored (chips may straddle a block's edge), for the model and the forest
   alike; the model's last epoch is scored (no checkpoint is chosen on the test fold).

    .venv/bin/python bench/quality.py [--seeds 3] [--parts cross,landcover] [--work DIR]

Prints the tables; writes them as JSON to ``--out`` (default ``WORK/quality.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score

from snakemap.core.apply_sections import PredictOptions
from snakemap.core.label_sections import LabelOptions
from snakemap.core.metrics import confusion_matrix, scores
from snakemap.core.sections import BandOptions, ChipOptions, CleanOptions, SplitOptions
from snakemap.data.acquire import acquire_scene
from snakemap.data.chips import ChipPaths, write_chips
from snakemap.data.clean import clean_scene
from snakemap.data.splits import write_folds
from snakemap.data.stats import write_band_statistics
from snakemap.inference.predict import predict_scene
from snakemap.inference.predictor import Fallback, Member, Predictor
from snakemap.inference.readers import CleanImageReader
from snakemap.tasks.networks import load_trained
from snakemap.training.resume import JobData
from snakemap.training.train import train_job

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "segmentation"
UKIS = LabelOptions(
    classes=["clear_land", "water", "cloud_shadow", "cloud"],
    remap={3: "clear_land", 1: "water", 0: "cloud_shadow", 4: "cloud"},
    target=["water"],
)
NC_CLASSES = ["developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"]
NC = LabelOptions(
    classes=NC_CLASSES, remap={i + 1: c for i, c in enumerate(NC_CLASSES)} | {0: "ignore"}, target=NC_CLASSES
)
BANDS = BandOptions(indices=["ndwi", "mndwi", "ndvi"])
#: The options measured: each on its own over ``plain``, then all together.
BASE: dict[str, Any] = {
    "arch": "Unet",
    "encoder_name": "resnet18",
    "epochs": 8,
    "samples_per_epoch": 256,
    "batch_size": 8,
    "lr": 0.001,
    "loss": {"ce": 1.0, "dice": 1.0},
    "balance": 0.5,
    "monitor": "val_iou",
    "augment": {"flips": True, "rot90": True, "jitter": 0.0},
}
RADIOMETRIC = {"gain": 0.2, "offset": 0.2}
RESCALE = {"rescale": [0.5, 2.0]}
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "normalize: scene": {"normalize": "scene"},
    "all three": {"normalize": "scene", "augment": {**RADIOMETRIC, **RESCALE}},
    "gain/offset jitter": {"augment": RADIOMETRIC},
    "rescale": {"augment": RESCALE},
}
#: The variant of the fold ensemble and of the land-cover model.
BEST = "all three"


def params(variant: dict[str, Any], seed: int, **extra: Any) -> dict[str, Any]:
    """BASE with a variant's options (``augment`` merged) and a seed."""
    p = copy.deepcopy(BASE)
    for key, value in variant.items():
        p[key] = {**p[key], **value} if key == "augment" else value
    return {**p, "seed": seed, **extra}


def prepare(work: Path, name: str, image: Path, label: Path, labels: LabelOptions) -> Path:
    """Acquire and clean one scene as the workflow does; return its clean folder."""
    acquire_scene(name, str(image), work / "acquired" / name, label_uri=str(label))
    status = clean_scene(name, work / "acquired" / name, work / "clean" / name, BANDS, CleanOptions(), labels)
    if status.status != "ok":
        raise SystemExit(f"{name}: {status.status} ({status.reason})")
    return work / "clean" / name


def cut(work: Path, name: str, labels: LabelOptions, chips: ChipOptions) -> Path:
    paths = ChipPaths(*(work / "chips" / f"{name}.{s}" for s in ("image.npy", "label.npy", "index.parquet")))
    write_chips(work / "clean" / name, paths, chips, labels.target_indices, labels.ignore_index)
    return paths.index


def predict(
    checkpoints: list[Path],
    clean: Path,
    out: Path,
    weights: list[float] | None = None,
    winners: Any = None,
    fallback: float | None = None,
    tta: bool = False,
) -> np.ndarray:
    """The class map of a cleaned scene by one model or the (weighted) mean of several; with
    ``weights`` one longer than ``checkpoints``, the example's rule baseline is a member too;
    with ``winners`` (a :class:`PerClass`) each class is mapped by its winning member; with
    ``fallback``, the rule alone maps a scene whose shift score is above it; with ``tta``, each
    network's probabilities are averaged over the four flips of each window (``predict.tta``)."""
    weights = weights or [1.0] * len(checkpoints)
    members = [Member.from_trained(load_trained(c), w) for c, w in zip(checkpoints, weights, strict=False)]
    if len(weights) > len(checkpoints):
        members.append(Member.from_rules(example_rules(), UKIS.classes, weights[-1], RULES_NAME))
    gate = None if fallback is None else Fallback(fallback, [len(members) - 1])
    classes = load_trained(checkpoints[0]).classes
    predictor = Predictor(members, classes, tta=tta, winners=winners, fallback=gate)
    reader = CleanImageReader(clean / "image.tif")
    try:
        predict_scene(reader, predictor, PredictOptions(window=256, overlap=32), out)
    finally:
        reader.close()
    with rasterio.open(out) as src:
        return src.read(1)


def read(path: Path, band: int | None = None) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band) if band else src.read()


def iou_per_class(pred: np.ndarray, truth: np.ndarray, classes: list[str]) -> dict[str, float]:
    keep = (truth < len(classes)) & (pred < len(classes))
    cm = confusion_matrix(truth[keep], pred[keep], len(classes))
    return {c: float(v["iou"]) for c, v in scores(cm, classes)["per_class"].items()}


def binary_iou(hit: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    inter = (hit & truth & valid).sum()
    union = ((hit | truth) & valid).sum()
    return float(inter / union) if union else float("nan")


def best_threshold(values: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    """The threshold on ``values`` with the highest IoU of ``values > t`` against ``truth``."""
    grid = np.quantile(values[valid], np.linspace(0.01, 0.99, 197))
    return float(max(grid, key=lambda t: binary_iou(values > t, truth, valid)))


def index_rules(train: Path, test: Path) -> dict[str, dict[str, float]]:
    """IoU on the test scene of NDWI (water) and brightness (cloud) rules, fixed and tuned on ``train``."""
    out: dict[str, dict[str, float]] = {}
    rules = {"water": ("ndwi", 0.0), "cloud": ("brightness", 0.3)}
    data = {}
    for name, clean in (("train", train), ("test", test)):
        with rasterio.open(clean / "image.tif") as src:
            image, names = src.read(), list(src.descriptions)
        label = read(clean / "label.tif", 1)
        bands = {
            "ndwi": image[names.index("ndwi")],
            "brightness": image[[names.index(b) for b in ("blue", "green", "red")]].mean(0),
        }
        data[name] = (bands, label, np.isfinite(image).all(0) & (label < len(UKIS.classes)))
    for cls, (band, fixed) in rules.items():
        k = UKIS.classes.index(cls)
        bands, label, valid = data["train"]
        tuned = best_threshold(bands[band], label == k, valid)
        bands, label, valid = data["test"]
        out[cls] = {
            f"{band} > {fixed:g}": binary_iou(bands[band] > fixed, label == k, valid),
            f"{band} > {tuned:.3f} (tuned on S2)": binary_iou(bands[band] > tuned, label == k, valid),
        }
    return out


def cross_sensor(work: Path, seeds: int, variants: list[str], save: Any) -> dict[str, Any]:
    s2, l7, data = ukis_data(work)
    truth = read(l7 / "label.tif", 1)
    rows: dict[str, Any] = {"models": {}, "ensemble": {}, "index_rules": index_rules(s2, l7)}
    for name in variants:
        variant = VARIANTS[name]
        runs = []
        for seed in range(seeds):
            out = work / "models" / f"{slug(name)}-s{seed}"
            ckpt = train_once(
                out, params(variant, seed, class_weights=[1.0, 5.0, 1.0, 1.0]), None, UKIS, data
            )
            runs.append(iou_per_class(predict([ckpt], l7, out / "l7.tif"), truth, UKIS.classes))
            log(f"cross-sensor {name} seed {seed}: " + fmt(runs[-1]))
        rows["models"][name] = {c: float(np.median([r[c] for r in runs])) for c in UKIS.classes} | {
            "runs": runs
        }
        save(rows)
        if name == BEST:
            fold_ckpts = [
                train_once(
                    work / "models" / f"{slug(BEST)}-fold{k}",
                    params(VARIANTS[BEST], 0, class_weights=[1.0, 5.0, 1.0, 1.0]),
                    k,
                    UKIS,
                    data,
                )
                for k in range(4)
            ]
            ens = iou_per_class(predict(fold_ckpts, l7, work / "ensemble_l7.tif"), truth, UKIS.classes)
            rows["ensemble"] = {"variant": BEST, **ens}
            log("cross-sensor 4-fold ensemble: " + fmt(ens))
            save(rows)
    return rows


#: the class-mix part's options: each trained on the Sentinel-2 scene, scored on every case
CLASSMIX: dict[str, dict[str, Any]] = {
    "Unet, normalize: dataset": {},
    "Unet, normalize: scene": {"normalize": "scene"},
    "Unet, dataset + gain/offset jitter": {"augment": RADIOMETRIC},
    "LightGBM, normalize: dataset": {"family": "lightgbm"},
    "LightGBM, normalize: scene": {"family": "lightgbm", "normalize": "scene"},
}
#: hybrid ensembles (seed 0 of the options named, then the rules' weight when there is one more)
RULES_NAME = "baselines/index_rules"
HYBRIDS: dict[str, tuple[list[str], list[float] | str]] = {
    "per class (out of fold): Unet scene, Unet dataset+jitter, LightGBM, rules": (
        ["Unet, normalize: scene", "Unet, dataset + gain/offset jitter", "LightGBM, normalize: dataset"],
        [],
    ),
    "ens: Unet scene + LightGBM dataset": (
        ["Unet, normalize: scene", "LightGBM, normalize: dataset"],
        [1, 1],
    ),
    "ens: Unet scene + LightGBM + rules": (
        ["Unet, normalize: scene", "LightGBM, normalize: dataset"],
        [1, 1, 1],
    ),
    "ens: LightGBM dataset + rules": (["LightGBM, normalize: dataset"], [1, 1]),
    "ens: Unet dataset + LightGBM + rules": (
        ["Unet, normalize: dataset", "LightGBM, normalize: dataset"],
        [1, 1, 1],
    ),
    "ens (weights tuned out of fold): Unet scene + LightGBM + rules": (
        ["Unet, normalize: scene", "LightGBM, normalize: dataset"],
        "tune",
    ),
    "ens: Unet scene + LightGBM + rules x1.5": (
        ["Unet, normalize: scene", "LightGBM, normalize: dataset"],
        [1, 1, 1.5],
    ),
    "ens: Unet scene + Unet jitter + LightGBM + rules x1.5": (
        ["Unet, normalize: scene", "Unet, dataset + gain/offset jitter", "LightGBM, normalize: dataset"],
        [1, 1, 1, 1.5],
    ),
}
#: an ensemble of HYBRIDS whose rules alone map a case whose shift score is above the threshold
#: (the example's ``fallback``), at three thresholds around one training standard deviation
FALLBACKS: dict[str, tuple[str, float, bool]] = {
    f"ens: Unet scene + LightGBM + rules x1.5, the rules alone above shift {shift:g}": (
        "ens: Unet scene + LightGBM + rules x1.5",
        shift,
        False,
    )
    for shift in (0.75, 1.0, 1.5)
} | {
    "the same above shift 1, predict.tta": ("ens: Unet scene + LightGBM + rules x1.5", 1.0, True),
}
#: the LightGBM options' ``boosting`` (the defaults; --quick makes them small)
BOOSTING: dict[str, Any] = {}
#: the rule baseline of the UKIS example, scored beside the options
EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "ukis.yaml"
#: about Landsat 7 ETM+ high-gain DN to top-of-atmosphere reflectance at a 40-degree sun (the
#: bands' factors lie within 0.0016..0.0025): the sea crop's sensor entry
ETM_DN_SCALE = 0.002


def ukis_data(work: Path) -> tuple[Path, Path, JobData]:
    """The two UKIS scenes cleaned, the Sentinel-2 scene's chips, spatial-block folds, statistics."""
    s2 = prepare(
        work, "ukis_s2", SHARED / "ukis_sentinel2_image.tif", SHARED / "ukis_sentinel2_label.tif", UKIS
    )
    l7 = prepare(
        work, "ukis_l7", SHARED / "ukis_landsat7_image.tif", SHARED / "ukis_landsat7_label.tif", UKIS
    )
    index = cut(work, "ukis_s2", UKIS, ChipOptions(size=64, stride=32, max_nodata_fraction=0.1))
    folds = work / "ukis_folds.parquet"
    write_folds([index], {"ukis_s2": "s2"}, folds, SplitOptions(folds=4, method="group", block_size=128))
    stats = work / "ukis_bands.json"
    write_band_statistics([s2], stats)
    return s2, l7, JobData([index], [], folds, stats)


def example_rules() -> Any:
    """The UKIS example's ``index_rules`` baseline."""
    import yaml

    from snakemap.core.calval_sections import BaselineOptions

    cfg = yaml.safe_load(EXAMPLE.read_text())
    return BaselineOptions.model_validate(cfg["calval"]["baselines"]["index_rules"])


def rule_map(clean: Path, out: Path) -> np.ndarray:
    """The class map of the UKIS example's ``index_rules`` baseline on a cleaned scene."""
    predictor = Predictor([Member.from_rules(example_rules(), UKIS.classes)], UKIS.classes)
    reader = CleanImageReader(clean / "image.tif")
    try:
        predict_scene(reader, predictor, PredictOptions(window=256, overlap=32), out)
    finally:
        reader.close()
    return read(out, 1)


def sea_crop(work: Path, side: int = 128) -> Path:
    """The most sea-covered ``side``-pixel window (by NDWI > 0) of the unlabelled coastal Landsat 7
    scene ``scenes/L7_ETMs.tif``, cleaned through a sensor entry (DN x ``ETM_DN_SCALE``)."""
    from snakemap.data.sensors import build_sensors

    raw = SHARED.parent / "scenes" / "L7_ETMs.tif"
    acquire_scene("etm", str(raw), work / "acquired" / "etm")
    bands = BandOptions(names=["blue", "green", "red", "nir", "swir16", "swir22"], indices=BANDS.indices)
    sensors = build_sensors(
        {"etm_dn": {"bands": ["blue", "green", "red", "nir", "swir16", "swir22"], "scale": ETM_DN_SCALE}},
        bands,
    )
    status = clean_scene(
        "etm",
        work / "acquired" / "etm",
        work / "clean" / "etm",
        bands,
        CleanOptions(),
        None,
        sensor=sensors["etm_dn"],
    )
    if status.status != "ok":
        raise SystemExit(f"L7_ETMs: {status.status} ({status.reason})")
    with rasterio.open(work / "clean" / "etm" / "image.tif") as src:
        image, names, profile = src.read(), list(src.descriptions), src.profile
    wet = image[names.index("ndwi")] > 0
    best = max(
        (
            (r, c)
            for r in range(0, wet.shape[0] - side + 1, 16)
            for c in range(0, wet.shape[1] - side + 1, 16)
        ),
        key=lambda rc: wet[rc[0] : rc[0] + side, rc[1] : rc[1] + side].mean(),
    )
    folder = work / "cases" / "sea_crop"
    folder.mkdir(parents=True, exist_ok=True)
    r, c = best
    profile.update(
        height=side, width=side, transform=profile["transform"] * rasterio.Affine.translation(c, r)
    )
    with rasterio.open(folder / "image.tif", "w", **profile) as dst:
        dst.write(image[:, r : r + side, c : c + side])
        dst.descriptions = tuple(names)
    return folder


def case_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Per class IoU of a case; NaN for a class under 1% of its labelled pixels (not scored there)."""
    ious = iou_per_class(pred, truth, UKIS.classes)
    valid = truth < len(UKIS.classes)
    return {
        c: (v if (truth[valid] == i).mean() >= 0.01 else float("nan"))
        for i, (c, v) in enumerate(ious.items())
    }


def class_mix(work: Path, seeds: int, save: Any) -> dict[str, Any]:
    """Every option of :data:`CLASSMIX` (median over ``seeds``) and the example's rules on every
    class-mix case (:mod:`classmix_cases`), the sea crop's water share, and the cases' shift scores."""
    from classmix_cases import build_cases, shares
    from scipy.stats import spearmanr

    from snakemap.inference.shift import BandMoments, shift_score

    s2, l7, data = ukis_data(work)
    cases = build_cases(l7, UKIS.classes, work / "cases")
    sea = sea_crop(work)
    reference = {b["name"]: (b["mean"], b["std"]) for b in json.loads(data.stats.read_text())["bands"]}
    rows: dict[str, Any] = {"cases": {}, "options": {}, "sea": {}}
    for name, folder in {**cases, "sea crop": sea}.items():
        with rasterio.open(folder / "image.tif") as src:
            moments = BandMoments(list(src.descriptions))
            moments.add(src.read())
        rows["cases"][name] = {"shift": shift_score(moments, reference)["score"]}
        if name != "sea crop":
            rows["cases"][name]["shares"] = shares(folder, UKIS.classes)
    with rasterio.open(sea / "image.tif") as src:
        ndwi = src.read(list(src.descriptions).index("ndwi") + 1)
    rows["sea"]["ndwi > 0"] = float((ndwi[np.isfinite(ndwi)] > 0).mean())
    truths = {n: read(f / "label.tif", 1) for n, f in cases.items()}
    rules = {
        n: case_scores(rule_map(f, work / "rules" / f"{slug(n)}.tif"), truths[n]) for n, f in cases.items()
    }
    rows["options"]["index rules (the example's)"] = {"cases": rules}
    sea_rules = rule_map(sea, work / "rules" / "sea.tif")
    rows["sea"]["index rules (the example's)"] = float((sea_rules[sea_rules < 255] == 1).mean())
    for option, variant in CLASSMIX.items():
        per_seed: list[dict[str, dict[str, float]]] = []
        sea_share = []
        for seed in range(seeds):
            out = work / "classmix" / f"{slug(option)}-s{seed}"
            extra = {"boosting": BOOSTING} if variant.get("family") == "lightgbm" else {}
            p = params(variant, seed, class_weights=[1.0, 5.0, 1.0, 1.0], **extra)
            ckpt = train_once(out, p, None, UKIS, data)
            per_seed.append(
                {
                    n: case_scores(predict([ckpt], f, out / f"{slug(n)}.tif"), truths[n])
                    for n, f in cases.items()
                }
            )
            sea_map = predict([ckpt], sea, out / "sea.tif")
            sea_share.append(float((sea_map[sea_map < 255] == 1).mean()))
            log(
                f"class-mix {option} seed {seed}: "
                + "; ".join(f"{n}: {fmt(v)}" for n, v in per_seed[-1].items())
            )
        rows["options"][option] = {
            "cases": {
                n: {c: float(np.median([r[n][c] for r in per_seed])) for c in UKIS.classes} for n in cases
            },
            "seeds": per_seed,
        }
        rows["sea"][option] = float(np.median(sea_share))
        save(rows)
    # hybrid ensembles of the seed-0 models and the example's rules (weights in member order)
    for name, (options, weights) in HYBRIDS.items():
        ckpts = [work / "classmix" / f"{slug(o)}-s0" / "best.ckpt" for o in options]
        out = work / "classmix" / slug(name)
        out.mkdir(parents=True, exist_ok=True)
        winners = None
        if weights == "tune":  # as the workflow's tune_weights: out of fold on Sentinel-2
            weights, factors = tuned_weights(ckpts, data)
            rows["options"][name] = {"weights": factors}
        elif not weights:  # per class: each class's winner chosen on the held-out fold of Sentinel-2
            weights = [1.0] * (len(ckpts) + 1)
            winners, chosen = per_class_winners(ckpts, data)
            rows["options"][name] = {"winners": chosen}
        assert isinstance(weights, list)
        rows["options"][name] = rows["options"].get(name, {}) | {
            "cases": {
                n: case_scores(predict(ckpts, f, out / f"{slug(n)}.tif", weights, winners), truths[n])
                for n, f in cases.items()
            }
        }
        sea_map = predict(ckpts, sea, out / "sea.tif", weights, winners)
        rows["sea"][name] = float((sea_map[sea_map < 255] == 1).mean())
        log(
            f"class-mix {name}: "
            + "; ".join(f"{n}: {fmt(v)}" for n, v in rows["options"][name]["cases"].items())
        )
        save(rows)
    for name, (base, shift, tta) in FALLBACKS.items():
        options, weights = HYBRIDS[base]
        assert isinstance(weights, list) and len(weights) == len(options) + 1  # the rules are a member
        ckpts = [work / "classmix" / f"{slug(o)}-s0" / "best.ckpt" for o in options]
        out = work / "classmix" / slug(name)
        out.mkdir(parents=True, exist_ok=True)
        rows["options"][name] = {
            "cases": {
                n: case_scores(
                    predict(ckpts, f, out / f"{slug(n)}.tif", weights, None, shift, tta), truths[n]
                )
                for n, f in cases.items()
            }
        }
        sea_map = predict(ckpts, sea, out / "sea.tif", weights, None, shift, tta)
        rows["sea"][name] = float((sea_map[sea_map < 255] == 1).mean())
        log(
            f"class-mix {name}: "
            + "; ".join(f"{n}: {fmt(v)}" for n, v in rows["options"][name]["cases"].items())
        )
        save(rows)
    # does the shift score rank the cases by their loss of IoU?
    shifts = [rows["cases"][n]["shift"] for n in cases]
    rows["shift_rank"] = {}
    for option, entry in rows["options"].items():
        macro = [float(np.nanmean(list(entry["cases"][n].values()))) for n in cases]
        rho = spearmanr(shifts, macro).statistic
        rows["shift_rank"][option] = float(rho)
    save(rows)
    return rows


def per_class_winners(checkpoints: list[Path], data: JobData) -> tuple[Any, dict[str, Any]]:
    """The per-class winners of the models (then the example's rules), chosen as the workflow's
    ``tune_winners`` chooses them: on the held-out fold of the training scene."""
    from snakemap.evaluation.tuning import TuningMember, tune_winners
    from snakemap.inference.predictor import PerClass

    members = [TuningMember(c, 1.0, 0) for c in checkpoints]
    rules = [Member.from_rules(example_rules(), UKIS.classes, 1.0, RULES_NAME)]
    tuned = tune_winners(members, rules, data.train_indexes, data.folds, data.stats)
    classes = list(tuned["classes"])
    winners = PerClass(
        tuned["winner_index"],
        [classes.index(c) for c in tuned["precedence"]],
        tuned["members"].index(tuned["fallback"]),
    )
    chosen = {k: tuned[k] for k in ("winners", "precedence", "fallback", "margin_points")}
    log(f"per-class winners: {chosen}")
    return winners, chosen


def tuned_weights(checkpoints: list[Path], data: JobData) -> tuple[list[float], dict[str, Any]]:
    """The members' weights (then the example's rules') tuned as the workflow's ``tune_weights``
    tunes them, from weights of 1: on the held-out fold of the training scene, for the worst case."""
    from snakemap.evaluation.tuning import TuningMember
    from snakemap.evaluation.weights import tune_weights

    members = [TuningMember(c, 1.0, 0) for c in checkpoints]
    rules = [Member.from_rules(example_rules(), UKIS.classes, 1.0, RULES_NAME)]
    tuned = tune_weights(
        members, rules, data.train_indexes, data.folds, data.stats, [s.name for s in BANDS.index_specs()]
    )
    factors = {g: v["factor"] for g, v in tuned["groups"].items()}
    log(f"tuned weights: {factors} (worst out-of-fold macro IoU {tuned['tuned']['worst']:.3f})")
    return list(tuned["weights"]), factors


def worst_case(entry: dict[str, Any]) -> dict[str, float]:
    """Per class, the lowest IoU over the cases that score it."""
    out = {}
    for c in UKIS.classes:
        values = [v[c] for v in entry["cases"].values() if np.isfinite(v[c])]
        out[c] = min(values) if values else float("nan")
    return out


def landcover(work: Path, block: int = 96, n_folds: int = 4) -> dict[str, Any]:
    nc = prepare(
        work,
        "nc",
        SHARED / "nc_landsat7_2000_image.tif",
        SHARED / "nc_landsat96_labelled_pixels_label.tif",
        NC,
    )
    chips = ChipOptions(size=32, stride=16, max_nodata_fraction=0.5)
    index = cut(work, "nc", NC, chips)
    folds = work / "nc_folds.parquet"
    write_folds([index], {"nc": "nc"}, folds, SplitOptions(folds=n_folds, method="group", block_size=block))
    stats = work / "nc_bands.json"
    write_band_statistics([nc], stats)
    image = read(nc / "image.tif")
    truth = read(nc / "label.tif", 1)
    table = pd.read_parquet(index).merge(pd.read_parquet(folds)[["chip", "fold"]], on="chip")
    rows, cols = np.mgrid[0 : truth.shape[0], 0 : truth.shape[1]]
    # A pixel's fold is that of its block (the chips' top-left corners define the blocks' folds).
    block_fold = {
        (r // block, c // block): f for r, c, f in zip(table["row"], table["col"], table["fold"], strict=True)
    }
    pixel_fold = np.vectorize(lambda r, c: block_fold.get((r, c), -1))(rows // block, cols // block)
    valid = np.isfinite(image).all(0) & (truth < len(NC_CLASSES))
    features = image.reshape(image.shape[0], -1).T
    pooled: dict[str, list[np.ndarray]] = {"truth": [], "model": [], "lightgbm": [], "forest": []}
    for k in range(n_folds):
        covered = np.zeros(truth.shape, bool)
        for r, c in table.loc[table["fold"] != k, ["row", "col"]].to_numpy():
            covered[r : r + chips.size, c : c + chips.size] = True
        test = valid & (pixel_fold == k) & ~covered
        train = valid & (pixel_fold != k) & (pixel_fold >= 0)
        if not test.any():
            continue
        out = work / "models" / f"nc-fold{k}"
        # Fold k is the test: the model's last epoch is used, not a checkpoint chosen on fold k.
        train_once(out, params(VARIANTS[BEST], 0), k, NC, JobData([index], [], folds, stats))
        model_map = predict([out / "last.ckpt"], nc, out / "nc.tif")
        # the LightGBM family on the same chips and fold; its last round (fold k is the test)
        gbm = work / "models" / f"nc-lightgbm-fold{k}"
        train_once(
            gbm,
            params({"family": "lightgbm", "boosting": BOOSTING}, 0),
            k,
            NC,
            JobData([index], [], folds, stats),
        )
        gbm_map = predict([gbm / "last.ckpt"], nc, gbm / "nc.tif")
        forest = RandomForestClassifier(200, min_samples_leaf=2, n_jobs=-1, random_state=0)
        forest.fit(features[train.ravel()], truth[train])
        pooled["truth"].append(truth[test])
        pooled["model"].append(model_map[test])
        pooled["lightgbm"].append(gbm_map[test])
        pooled["forest"].append(forest.predict(features[test.ravel()]))
        log(f"landcover fold {k}: {int(test.sum())} test pixels, {int(train.sum())} forest training pixels")
    y = np.concatenate(pooled["truth"])
    labels = list(range(len(NC_CLASSES)))
    return {
        "test_pixels": int(len(y)),
        "model_macro_f1": float(
            f1_score(y, np.concatenate(pooled["model"]), labels=labels, average="macro", zero_division=0)
        ),
        "lightgbm_macro_f1": float(
            f1_score(y, np.concatenate(pooled["lightgbm"]), labels=labels, average="macro", zero_division=0)
        ),
        "forest_macro_f1": float(
            f1_score(y, np.concatenate(pooled["forest"]), labels=labels, average="macro", zero_division=0)
        ),
    }


def train_once(out: Path, p: dict[str, Any], fold: int | None, labels: LabelOptions, data: JobData) -> Path:
    """Train unless a finished best.ckpt is there (reruns of the benchmark reuse models)."""
    if not (out / "best.ckpt").exists():
        start = time.perf_counter()
        train_job(out, p, fold, labels.classes, labels.ignore_index, data, 0)
        log(f"trained {out.name} in {time.perf_counter() - start:.0f} s")
    return out / "best.ckpt"


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")


def fmt(row: dict[str, float]) -> str:
    return ", ".join(f"{c} {v:.3f}" for c, v in row.items() if isinstance(v, float))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def report(result: dict[str, Any]) -> None:
    if "cross" in result:
        cross = result["cross"]
        classes = UKIS.classes
        print("\nCross-sensor: trained on UKIS Sentinel-2, scored on UKIS Landsat 7 (IoU)")
        print(f"{'predictor':40s}" + "".join(f"{c:>14s}" for c in classes))
        for name, row in cross["models"].items():
            print(f"{'Unet, ' + name + ' (median)':40s}" + "".join(f"{row[c]:14.3f}" for c in classes))
        ens = cross["ensemble"]
        if ens:
            print(f"{'4-fold ensemble, ' + ens['variant']:40s}" + "".join(f"{ens[c]:14.3f}" for c in classes))
        for cls, rules in cross["index_rules"].items():
            for rule, value in rules.items():
                cells = "".join(f"{value:14.3f}" if c == cls else f"{'':14s}" for c in classes)
                print(f"{rule:40s}" + cells)
        print("goals: cloud >= 0.80, cloud_shadow >= 0.65, clear_land >= 0.75, water above NDWI's")
    if "classmix" in result:
        mix = result["classmix"]
        classes = UKIS.classes
        print("\nClass mix: trained on UKIS Sentinel-2, scored on class-mix cases of UKIS Landsat 7 (IoU)")
        print(f"{'case':22s}{'shift':>7s}  " + "  ".join(f"{c} share" for c in classes))
        for name, case in mix["cases"].items():
            cells = (
                "".join(f"{case['shares'][c]:>{len(c) + 8}.3f}" for c in classes) if "shares" in case else ""
            )
            print(f"{name:22s}{case['shift']:7.2f}" + cells)
        print(
            f"\n{'worst case per class':40s}" + "".join(f"{c:>14s}" for c in classes) + f"{'sea: water':>12s}"
        )
        for option, entry in mix["options"].items():
            worst = worst_case(entry)
            sea = mix["sea"].get(option, float("nan"))
            print(f"{option:40s}" + "".join(f"{worst[c]:14.3f}" for c in classes) + f"{sea:12.2f}")
        print(
            f"{'(sea crop: NDWI > 0 share)':40s}"
            + " " * 14 * len(classes)
            + f"{mix['sea']['ndwi > 0']:12.2f}"
        )
        for name in mix["cases"]:
            if name == "sea crop":
                continue
            print(f"\n  {name}")
            for option, entry in mix["options"].items():
                row = entry["cases"][name]
                print(f"  {option:38s}" + "".join(f"{row[c]:14.3f}" for c in classes))
        for option, entry in mix["options"].items():
            if "winners" in entry:
                print(f"\n{option}: winners chosen on the Sentinel-2 held-out fold: {entry['winners']}")
        print(
            "\nshift score vs macro IoU over the cases, Spearman rho (negative: a higher shift, a lower IoU)"
        )
        for option, rho in mix.get("shift_rank", {}).items():
            print(f"  {option:38s}{rho:7.2f}")
    if "landcover" in result:
        lc = result["landcover"]
        print(
            "\nSparse land cover, North Carolina Landsat 7, spatial-block folds "
            f"({lc['test_pixels']} held-out pixels)"
        )
        print(f"  workflow model ({BEST}) macro F1        {lc['model_macro_f1']:.3f}")
        print(f"  LightGBM family (defaults)              macro F1 {lc['lightgbm_macro_f1']:.3f}")
        print(f"  random forest (200 trees, same pixels)  macro F1 {lc['forest_macro_f1']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/snakemap-quality"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--parts", default="landcover,cross,classmix", help="landcover, cross and/or classmix, in this order"
    )
    ap.add_argument("--variants", default=",".join(VARIANTS), help="cross-sensor variants, in this order")
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--quick", action="store_true", help="one epoch of 16 samples: checks the plumbing, not quality"
    )
    args = ap.parse_args()
    if args.quick:
        BASE.update(epochs=1, samples_per_epoch=16)
        BOOSTING.update(rounds=20, pixels=5000)
    if not SHARED.is_dir():
        raise SystemExit(f"the real scenes are not at {SHARED}: this benchmark needs ../shared/data")
    logging.basicConfig(level=logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"base": BASE, "variants": VARIANTS}
    out = args.out or args.work / "quality.json"

    def save(part: str) -> Any:
        def write(rows: dict[str, Any]) -> None:
            result[part] = rows
            out.write_text(json.dumps(result, indent=1, default=str))  # after every model: partial runs count

        return write

    for part in args.parts.split(","):
        if part == "landcover":
            save("landcover")(landcover(args.work))
        elif part == "cross":
            cross_sensor(args.work, args.seeds, args.variants.split(","), save("cross"))
        elif part == "classmix":
            class_mix(args.work, args.seeds, save("classmix"))
        else:
            raise SystemExit(f"unknown part {part!r}: use landcover, cross, classmix")
    report(result)


if __name__ == "__main__":
    main()
