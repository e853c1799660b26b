"""Thresholds and per-class winners tuned out of fold: never on the calval sites that score them.

An ensemble with ``threshold: tune`` marks a pixel as the target class where the target's
probability reaches a threshold. That threshold is chosen here, F1-optimal over the validation
chips of the training scenes that its members did not train on: each chip is predicted by the
(weighted) members whose held-out fold holds it, so every probability is out of fold. Chips that
every member trained on are not used. The calval sites stay an independent test.

``results/ensembles/{name}/threshold.json``::

    {"threshold": 0.42, "f1": 0.81, "precision": 0.8, "recall": 0.82, "pixels": 123456,
     "target_pixels": 2345, "chips": 40, "tuned_on": "out-of-fold validation chips",
     "members": {"arch-Unet": {"held_out_fold": 0, "chips": 40}}, "pr": {...}}

An ensemble with ``combine: per_class`` maps each class by one member: the model or rule with the
best IoU of that class on the same out-of-fold chips (:func:`tune_winners`), written to
``results/ensembles/{name}/winners.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from snakemap.core.io import PROB_SCALE, read_json
from snakemap.evaluation.calval import pr_curve
from snakemap.inference.predictor import Member, Predictor
from snakemap.tasks.networks import load_trained
from snakemap.training.datasets import chip_paths, scene_statistics
from snakemap.training.train import held_out_fold

TUNED_ON = "out-of-fold validation chips"


@dataclass
class FoldChips:
    """The chips of one training scene in one fold: its chip table, the fold, the chip numbers,
    and the scene's chip images and labels (memory maps, indexed by chip number)."""

    index: Path
    fold: int
    chips: np.ndarray
    images: np.ndarray
    labels: np.ndarray

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(n, bands, size, size)`` float32 images and ``(n, size, size)`` labels, ``batch_size``
        chips at a time."""
        for start in range(0, len(self.chips), batch_size):
            batch = self.chips[start : start + batch_size]
            yield np.asarray(self.images[batch], dtype=np.float32), np.asarray(self.labels[batch])


def held_out_chips(
    indexes: Sequence[str | os.PathLike[str]], folds: str | os.PathLike[str]
) -> Iterator[FoldChips]:
    """The training scenes' chips, scene by scene and fold by fold (chips without a fold left out)."""
    fold_of = pd.read_parquet(folds).set_index(["scene_id", "chip"])["fold"]
    for index in map(Path, indexes):
        table = pd.read_parquet(index)
        if not len(table):
            continue
        scene = table["scene_id"].iloc[0]
        chip_folds = np.array([fold_of.get((scene, c), -1) for c in table["chip"]])
        paths = chip_paths(index)
        images = np.load(paths.image, mmap_mode="r")
        labels = np.load(paths.label, mmap_mode="r")
        for fold in np.unique(chip_folds[chip_folds >= 0]):
            yield FoldChips(index, int(fold), table["chip"].to_numpy()[chip_folds == fold], images, labels)


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
    tta: bool = False,
) -> dict[str, Any]:
    """The F1-optimal target threshold over out-of-fold chips (see the module docstring).

    Args:
        members: the ensemble's members.
        indexes: ``{scene}.index.parquet`` of the training scenes.
        folds: ``folds.parquet`` (``scene_id, chip, fold``).
        stats: ``bands.json``, whose band names are the chips' bands in order.
        target: the target class name.
        tta: the probabilities averaged over flips, as ``predict.tta`` will predict them.

    Raises:
        ValueError: no chip is held out by any member (e.g. all trained with ``validation:
            calval`` and no fold), so no threshold can be tuned without peeking.
    """
    names = [b["name"] for b in read_json(stats)["bands"]]
    trained = [load_trained(m.checkpoint) for m in members]
    classes = trained[0].classes
    k = classes.index(target)
    pos = np.zeros(PROB_SCALE + 1, dtype=np.int64)
    neg = np.zeros(PROB_SCALE + 1, dtype=np.int64)
    used = {m.checkpoint: 0 for m in members}
    n_chips = 0
    for fold_chips in held_out_chips(indexes, folds):
        unseen = [(m, t) for m, t in zip(members, trained, strict=True) if m.held_out == fold_chips.fold]
        if not unseen:
            continue
        predictor = out_of_fold_predictor(unseen, names, fold_chips.index, classes, tta)
        for images, labels in fold_chips.batches(batch_size):
            probs = predictor.probabilities(images, names)
            _count(probs[:, k], labels, k, len(classes), pos, neg)
        n_chips += len(fold_chips.chips)
        for m, _ in unseen:
            used[m.checkpoint] += len(fold_chips.chips)
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


def members_of(members: Sequence[TuningMember]) -> list[str]:
    """``checkpoint (fold k)`` of each member, for messages."""
    return [f"{m.checkpoint} (fold {m.held_out})" for m in members]


def out_of_fold_predictor(
    unseen: Sequence[tuple[TuningMember, Any]],
    names: list[str],
    index: Path,
    classes: list[str],
    tta: bool = False,
) -> Predictor:
    """The weighted ensemble of the members that did not train on one scene's fold (``tta``:
    averaged over flips, as ``predict.tta``).

    ``normalize: scene`` members get that scene's statistics from its chip table ``index``.
    """
    members = []
    for m, t in unseen:
        member = Member.from_trained(t, m.weight)
        if member.normalize == "scene":
            member.normalizer = scene_statistics(index, [names.index(b) for b in member.bands])
        members.append(member)
    return Predictor(members, classes, torch.device("cpu"), tta)


def _count(
    p: np.ndarray, labels: np.ndarray, k: int, n_classes: int, pos: np.ndarray, neg: np.ndarray
) -> None:
    """Add ``(n, h, w)`` target probabilities to the histograms of target and other labelled pixels."""
    valid = labels < n_classes
    q = np.rint(np.clip(p, 0, 1) * PROB_SCALE).astype(np.int64)
    pos += np.bincount(q[valid & (labels == k)], minlength=PROB_SCALE + 1)[: PROB_SCALE + 1]
    neg += np.bincount(q[valid & (labels != k)], minlength=PROB_SCALE + 1)[: PROB_SCALE + 1]


def tune_winners(
    members: Sequence[TuningMember],
    rules: Sequence[Member],
    indexes: Sequence[str | os.PathLike[str]],
    folds: str | os.PathLike[str],
    stats: str | os.PathLike[str],
    precedence: Sequence[str] | None = None,
    batch_size: int = 32,
    tta: bool = False,
) -> dict[str, Any]:
    """Which member maps each class of a ``combine: per_class`` ensemble, chosen out of fold.

    Every member, models and rules alike, is scored on the training scenes' chips of the one fold
    that all the model members held out (members of different folds are refused). Per class
    the member with the highest IoU wins; a rule wins a tie (a model must beat it). The member
    with the best macro IoU fills pixels that no winner claims. The calval sites are not used.

    Args:
        members: the model members (the predictor's first members, in this order).
        rules: the rule members (:meth:`Member.from_rules`), after the models.
        precedence: the classes in the order they claim a pixel; None: by the winners' out-of-fold
            precision of their class, the most precise first.
        tta: the members' probabilities averaged over flips, as ``predict.tta`` will predict them.

    Returns:
        ``winners.json``: ``members`` (names, in the predictor's order), ``winners`` (class ->
        member), ``winner_index``, ``precedence``, ``fallback``, per member ``iou`` and
        ``precision`` per class and ``macro_iou``, per class ``margin_points`` over the best rule
        (IoU points), ``chips`` and ``tuned_on``.

    Raises:
        ValueError: a model member that held out no fold, members that held out different folds,
            or no chip in the held-out fold.
    """
    from snakemap.core.metrics import confusion_matrix, scores

    unscored = [str(m.checkpoint) for m in members if m.held_out is None]
    if unscored:
        raise ValueError(
            f"combine: per_class chooses winners on held-out folds, and {', '.join(unscored)} held out "
            "none (validation: calval); train its members with validation: fold"
        )
    folds_held = sorted({int(m.held_out) for m in members if m.held_out is not None})
    if len(folds_held) > 1:
        raise ValueError(
            "combine: per_class compares its members on the same chips, the fold they all held out; "
            f"these hold out folds {folds_held}: give members of one fold ({', '.join(members_of(members))})"
        )
    names = [b["name"] for b in read_json(stats)["bands"]]
    trained = [load_trained(m.checkpoint) for m in members]
    classes = trained[0].classes
    n = len(classes)
    labels_of = [str(m.checkpoint) for m in members] + [r.source for r in rules]
    cms = [np.zeros((n, n), dtype=np.int64) for _ in labels_of]
    n_chips = 0
    for fold_chips in held_out_chips(indexes, folds):
        if fold_chips.fold not in folds_held:
            continue
        predictors = [
            (i, out_of_fold_predictor([(m, t)], names, fold_chips.index, classes, tta))
            for i, (m, t) in enumerate(zip(members, trained, strict=True))
        ]  # every model member holds out this fold
        predictors += [(len(members) + j, Predictor([r], classes)) for j, r in enumerate(rules)]
        for x, truth in fold_chips.batches(batch_size):
            for i, predictor in predictors:
                cms[i] += confusion_matrix(truth, predictor.probabilities(x, names).argmax(1), n)
        n_chips += len(fold_chips.chips)
    if not n_chips:
        raise ValueError(
            "combine: per_class chooses its winners on chips that a model member did not train on, and "
            f"there are none (members' held-out folds: {[m.held_out for m in members]})"
        )
    result = {name: scores(cm, classes) for name, cm in zip(labels_of, cms, strict=True)}
    iou = {
        name: {c: float(np.nan_to_num(v["iou"])) for c, v in r["per_class"].items()}
        for name, r in result.items()
    }
    precision = {
        name: {c: float(np.nan_to_num(v["precision"])) for c, v in r["per_class"].items()}
        for name, r in result.items()
    }
    is_rule = [False] * len(members) + [True] * len(rules)
    winner_index = []
    for c in classes:
        # the highest IoU; a rule wins a tie
        winner_index.append(max(range(len(labels_of)), key=lambda i: (iou[labels_of[i]][c], is_rule[i], -i)))
    macro = {name: float(np.nan_to_num(r["macro"]["iou"])) for name, r in result.items()}
    fallback = max(range(len(labels_of)), key=lambda i: (macro[labels_of[i]], -i))
    if precedence is None:
        order = sorted(classes, key=lambda c: -precision[labels_of[winner_index[classes.index(c)]]][c])
    else:
        order = list(precedence)
    rule_names = [r.source for r in rules]
    margins = {
        c: (
            round(100 * (iou[labels_of[winner_index[k]]][c] - max(iou[r][c] for r in rule_names)), 2)
            if rule_names
            else None
        )
        for k, c in enumerate(classes)
    }
    return {
        "combine": "per_class",
        "classes": classes,
        "members": labels_of,
        "winners": {c: labels_of[winner_index[k]] for k, c in enumerate(classes)},
        "winner_index": winner_index,
        "precedence": order,
        "fallback": labels_of[fallback],
        "iou": iou,
        "precision": precision,
        "macro_iou": macro,
        "margin_points": margins,
        "chips": n_chips,
        "tuned_on": TUNED_ON,
    }
