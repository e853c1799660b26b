"""Train the gradient-boosting pixel family (``family: lightgbm``) on the networks' chips and folds.

The job reads the same training and validation chips as a network's (:func:`split_chips`: the
held-out fold, or the calval sites with ``validation: calval``), normalised the same way, and
draws ``boosting.pixels`` training pixels from them: chips are drawn as the networks' sampler
draws them (``balance``: the expected share of chips with target), pixels uniformly inside each
chip's interior (``max(scales) // 2`` from its edge, where every neighbourhood feature sees real
context, as in a prediction window), each weighted by its class's ``class_weights``. The booster
is scored on the validation pixels at :data:`CHECKPOINTS` evenly spaced rounds; the round best by
``monitor`` makes ``best.ckpt``, the last round ``last.ckpt``. Training takes minutes and is not
resumed: a killed job starts again.

Outputs, as a network's: ``best.ckpt`` and ``last.ckpt`` (torch files read with
``weights_only=True``: ``hyper_parameters`` hold ``family: lightgbm``, the classes, the input
bands and their statistics, the feature names and ``booster``, LightGBM's text model; the state
dict is empty), ``metrics.csv`` (one row per checkpoint round: ``epoch``, ``round``,
``train_loss``, ``val_loss``, ``val_iou``, ``val_f1``, ``val_acc``, ``val_iou_<class>``).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from snakemap.core.io import atomic_path, write_csv
from snakemap.core.learning_sections import BoostingOptions
from snakemap.core.metrics import confusion_matrix, scores
from snakemap.core.model_sections import ModelOptions
from snakemap.tasks.boosting import FAMILY, feature_names, feature_rows
from snakemap.training.datasets import ChipDataset

log = logging.getLogger(__name__)

#: rounds at which the booster is scored on the validation pixels
CHECKPOINTS = 20
#: validation pixels scored at most (drawn evenly from the validation chips)
MAX_VALIDATION_PIXELS = 200_000
#: chips read per batch when gathering pixels
READ_BATCH = 64


def gather(
    dataset: ChipDataset,
    draws: np.ndarray,
    per_chip: int,
    margin: int,
    scales: Sequence[int],
    n_classes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows ``(pixels, features)`` and class indices ``(pixels,)`` of up to ``per_chip``
    labelled interior pixels of each drawn chip (``draws``: sample numbers of ``dataset``)."""
    rows, labels = [], []
    for start in range(0, len(draws), READ_BATCH):
        batch = draws[start : start + READ_BATCH]
        images, truth = dataset.__getitems__(batch.tolist())
        size = truth.shape[-1]
        inner = truth[:, margin : size - margin, margin : size - margin].reshape(len(batch), -1).numpy()
        features = feature_rows(images, scales, margin).reshape(len(batch), inner.shape[1], -1)
        for k in range(len(batch)):
            where = np.flatnonzero(inner[k] < n_classes)
            if len(where) > per_chip:
                where = rng.choice(where, per_chip, replace=False)
            rows.append(features[k][where])
            labels.append(inner[k][where])
    if not rows:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(labels).astype(np.int64)


def draw_chips(flags: np.ndarray, n: int, balance: float | None, rng: np.random.Generator) -> np.ndarray:
    """``n`` chip numbers drawn with replacement, with the expected share ``balance`` of chips
    whose flag (has target) is set, as the networks' sampler draws them (None: uniformly)."""
    if balance is not None and 0 < flags.sum() < len(flags):
        weights = np.where(flags, balance / flags.sum(), (1 - balance) / (~flags).sum())
        return np.sort(rng.choice(len(flags), n, replace=True, p=weights / weights.sum()))
    return np.sort(rng.choice(len(flags), n, replace=True))


def train_booster(
    out: Path,
    opts: ModelOptions,
    resolved: dict[str, Any],
    train: ChipDataset,
    val: ChipDataset,
    flags: np.ndarray,
    cpus: int,
) -> Path:
    """Train one booster into ``out`` (see the module docstring); return the best checkpoint.

    Args:
        resolved: the job's resolved config (classes, bands, statistics, ignore index).
        train, val: the training and validation chips, normalised as the model's inputs.
        flags: per training chip, whether it has target pixels.
        cpus: LightGBM's threads.
    """
    import lightgbm as lgb

    boost = BoostingOptions(**opts.boosting)
    classes: list[str] = resolved["classes"]
    n_classes = len(classes)
    rng = np.random.default_rng(opts.seed)
    margin = max(boost.scales) // 2
    if not len(train) or not len(val):
        raise ValueError(f"{out}: no {'training' if not len(train) else 'validation'} chips for this job")
    size = int(train.__getitems__([0])[1].shape[-1])
    if size - 2 * margin < 1:
        raise ValueError(f"{out}: boosting.scales {boost.scales} leave chips of {size} pixels no interior")
    per_chip = min((size - 2 * margin) ** 2, 512)
    draws = draw_chips(flags, math.ceil(boost.pixels / per_chip), opts.balance, rng)
    x_train, y_train = gather(train, draws, per_chip, margin, boost.scales, n_classes, rng)
    val_per_chip = max(1, MAX_VALIDATION_PIXELS // max(1, len(val)))
    x_val, y_val = gather(val, np.arange(len(val)), val_per_chip, margin, boost.scales, n_classes, rng)
    if not len(y_train) or not len(y_val):
        kind = "training" if not len(y_train) else "validation"
        raise ValueError(
            f"{out}: no labelled {kind} pixels inside the chips' edges (boosting.scales {boost.scales})"
        )
    weights = np.asarray(opts.class_weights or [1.0] * n_classes, dtype=np.float64)[y_train]
    log.info(
        "lightgbm: %d training pixels from %d chip draws, %d validation pixels, %d features",
        len(y_train), len(draws), len(y_val), x_train.shape[1],
    )  # fmt: skip
    names = feature_names(resolved["bands"], boost.scales)
    params = {
        "objective": "multiclass",
        "num_class": n_classes,
        "learning_rate": float(boost.learning_rate),
        "num_leaves": boost.num_leaves,
        "min_child_samples": boost.min_child_samples,
        "feature_fraction": float(boost.feature_fraction),
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "num_threads": cpus,
        "seed": opts.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    train_set = lgb.Dataset(x_train, y_train, weight=weights, feature_name=_safe(names), free_raw_data=False)
    val_set = lgb.Dataset(x_val, y_val, reference=train_set)
    record: dict[str, Any] = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=boost.rounds,
        valid_sets=[train_set, val_set],
        valid_names=["train", "val"],
        callbacks=[lgb.record_evaluation(record)],
    )
    table = _score_rounds(booster, x_val, y_val, classes, boost.rounds, record)
    if opts.monitor not in table:
        raise ValueError(f"monitor {opts.monitor!r} is not among the booster's metrics {list(table.columns)}")
    ascending = opts.monitor.endswith("loss")
    best = int(table.sort_values([opts.monitor, "round"], ascending=[ascending, True])["round"].iloc[0])
    log.info("lightgbm: best round %d of %d by %s", best, boost.rounds, opts.monitor)
    hp = {
        "family": FAMILY,
        "classes": classes,
        "band_names": resolved["bands"],
        "mean": resolved["mean"],
        "std": resolved["std"],
        "normalize": opts.normalize,
        "ignore_index": resolved["ignore_index"],
        "scales": list(boost.scales),
        "features": names,
    }
    for name, rounds in (("best.ckpt", best), ("last.ckpt", boost.rounds)):
        state = {
            "hyper_parameters": hp
            | {"rounds": rounds, "booster": booster.model_to_string(num_iteration=rounds)},
            "state_dict": {},
            "epoch": int(table.loc[table["round"] == rounds, "epoch"].iloc[0]),
            "global_step": rounds,
        }
        with atomic_path(out / name, suffix=".ckpt") as tmp:
            torch.save(state, tmp)
    write_csv(table, out / "metrics.csv")
    shutil.rmtree(out / "train", ignore_errors=True)
    return out / "best.ckpt"


def _safe(names: list[str]) -> list[str]:
    """Feature names as LightGBM takes them (no ``:``); the checkpoint keeps the readable ones."""
    return [n.replace(":", "_") for n in names]


def _score_rounds(
    booster: Any, x: np.ndarray, y: np.ndarray, classes: list[str], rounds: int, record: dict[str, Any]
) -> pd.DataFrame:
    """One row per checkpoint round: losses and validation scores."""
    steps = sorted({max(1, round(rounds * (k + 1) / CHECKPOINTS)) for k in range(CHECKPOINTS)})
    rows = []
    for epoch, r in enumerate(steps):
        pred = np.asarray(booster.predict(x, num_iteration=r)).argmax(1)
        result = scores(confusion_matrix(y, pred, len(classes)), classes)
        row = {
            "epoch": epoch,
            "round": r,
            "train_loss": float(record["train"]["multi_logloss"][r - 1]),
            "val_loss": float(record["val"]["multi_logloss"][r - 1]),
            "val_iou": float(np.nan_to_num(result["macro"]["iou"])),
            "val_f1": float(np.nan_to_num(result["macro"]["f1"])),
            "val_acc": float(result["overall_accuracy"]),
        }
        row |= {f"val_iou_{n}": float(np.nan_to_num(c["iou"])) for n, c in result["per_class"].items()}
        rows.append(row)
    return pd.DataFrame(rows)
