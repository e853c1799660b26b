"""Thresholds tuned out of fold: never on the calval sites that score them.

An ensemble with ``threshold: tune`` marks a pixel as the target class where the target's
probability reaches a threshold. That threshold is chosen here, F1-optimal over the validation
chips of the training scenes that its members did not train on: each chip is predicted by the
(weighted) members whose held-out fold holds it, so every probability is out of fold. Chips that
every member trained on are not used. The calval sites stay an independent test.

``results/ensembles/{name}/threshold.json``::

    {"threshold": 0.42, "f1": 0.81, "precision": 0.8, "recall": 0.82, "pixels": 123456,
     "target_pixels": 2345, "chips": 40, "tuned_on": "out-of-fold validation chips",
     "members": {"arch-Unet": {"held_out_fold": 0, "chips": 40}}, "pr": {...}}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from snakemap.core.io import PROB_SCALE, read_json
from snakemap.evaluation.calval import pr_curve
from snakemap.inference.predict import Member, Predictor
from snakemap.tasks.networks import load_trained
from snakemap.training.datasets import chip_paths, scene_statistics
from snakemap.training.train import held_out_fold

TUNED_ON = "out-of-fold validation chips"


@dataclass
class TuningMember:
    """One ensemble member: its checkpoint, weight, and the fold it did not train on (or None)."""

    checkpoint: Path
    weight: float
    held_out: int | None

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str], weight: float = 1.0) -> TuningMember:
        """Read the held-out fold from the ``config.yaml`` that training wrote beside the checkpoint."""
        checkpoint = Path(checkpoint)
        resolved = yaml.safe_load((checkpoint.parent / "config.yaml").read_text())
        return cls(checkpoint, weight, held_out_fold(resolved["params"], resolved["fold"]))


def tune_threshold(
    members: Sequence[TuningMember],
    indexes: Sequence[str | os.PathLike[str]],
    folds: str | os.PathLike[str],
    stats: str | os.PathLike[str],
    target: str,
    batch_size: int = 32,
) -> dict[str, Any]:
    """The F1-optimal target threshold over out-of-fold chips (see the module docstring).

    Args:
        members: the ensemble's members.
        indexes: ``{scene}.index.parquet`` of the training scenes.
        folds: ``folds.parquet`` (``scene_id, chip, fold``).
        stats: ``bands.json``, whose band names are the chips' bands in order.
        target: the target class name.

    Raises:
        ValueError: no chip is held out by any member (e.g. all trained with ``validation:
            calval`` and no fold), so no threshold can be tuned without peeking.
    """
    names = [b["name"] for b in read_json(stats)["bands"]]
    trained = [load_trained(m.checkpoint) for m in members]
    classes = trained[0].classes
    k = classes.index(target)
    fold_of = pd.read_parquet(folds).set_index(["scene_id", "chip"])["fold"]
    pos = np.zeros(PROB_SCALE + 1, dtype=np.int64)
    neg = np.zeros(PROB_SCALE + 1, dtype=np.int64)
    used = {m.checkpoint: 0 for m in members}
    n_chips = 0
    for index in map(Path, indexes):
        table = pd.read_parquet(index)
        if not len(table):
            continue
        scene = table["scene_id"].iloc[0]
        chip_folds = np.array([fold_of.get((scene, c), -1) for c in table["chip"]])
        paths = chip_paths(index)
        images = np.load(paths.image, mmap_mode="r")
        labels = np.load(paths.label, mmap_mode="r")
        for fold in np.unique(chip_folds):
            unseen = [
                (m, t) for m, t in zip(members, trained, strict=True) if m.held_out == fold and fold >= 0
            ]
            if not unseen:
                continue
            chips = table["chip"].to_numpy()[chip_folds == fold]
            predictor = _out_of_fold_predictor(unseen, names, index, classes)
            for start in range(0, len(chips), batch_size):
                batch = chips[start : start + batch_size]
                probs = predictor.probabilities(np.asarray(images[batch], dtype=np.float32), names)
                _count(probs[:, k], np.asarray(labels[batch]), k, len(classes), pos, neg)
            n_chips += len(chips)
            for m, _ in unseen:
                used[m.checkpoint] += len(chips)
    if pos.sum() + neg.sum() == 0:
        raise ValueError(
            "threshold: tune needs chips that some member did not train on, and there are none "
            f"(members' held-out folds: {[m.held_out for m in members]}); tune on held-out folds "
            "(validation: fold) or give a fixed threshold"
        )
    curve = pr_curve(pos, neg)
    best = int(np.argmax(curve["f1"]))
    return {
        "threshold": curve["threshold"][best],
        "f1": curve["f1"][best],
        "precision": curve["precision"][best],
        "recall": curve["recall"][best],
        "pixels": int(pos.sum() + neg.sum()),
        "target_pixels": int(pos.sum()),
        "chips": n_chips,
        "tuned_on": TUNED_ON,
        "members": {
            str(m.checkpoint): {"held_out_fold": m.held_out, "weight": m.weight, "chips": used[m.checkpoint]}
            for m in members
        },
        "pr": curve,
    }


def _out_of_fold_predictor(
    unseen: Sequence[tuple[TuningMember, Any]], names: list[str], index: Path, classes: list[str]
) -> Predictor:
    """The weighted ensemble of the members that did not train on one scene's fold.

    ``normalize: scene`` members get that scene's statistics from its chip table ``index``.
    """
    members = []
    for m, t in unseen:
        member = Member.from_trained(t, m.weight)
        if member.normalize == "scene":
            member.normalizer = scene_statistics(index, [names.index(b) for b in member.bands])
        members.append(member)
    return Predictor(members, classes, torch.device("cpu"))


def _count(
    p: np.ndarray, labels: np.ndarray, k: int, n_classes: int, pos: np.ndarray, neg: np.ndarray
) -> None:
    """Add ``(n, h, w)`` target probabilities to the histograms of target and other labelled pixels."""
    valid = labels < n_classes
    q = np.rint(np.clip(p, 0, 1) * PROB_SCALE).astype(np.int64)
    pos += np.bincount(q[valid & (labels == k)], minlength=PROB_SCALE + 1)[: PROB_SCALE + 1]
    neg += np.bincount(q[valid & (labels != k)], minlength=PROB_SCALE + 1)[: PROB_SCALE + 1]
