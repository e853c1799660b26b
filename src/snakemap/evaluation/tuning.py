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
from snakemap.data.stats import Normalizer
from snakemap.evaluation.calval import pr_curve
from snakemap.inference.predict import Member, Predictor
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
    pos = np.zeros(PROB_SCALE + 1, dtype=np.int64)
    neg = np.zeros(PROB_SCALE + 1, dtype=np.int64)
    used = {m.checkpoint: 0 for m in members}
    n_chips = 0
    for fold_chips in held_out_chips(indexes, folds):
        unseen = [(m, t) for m, t in zip(members, trained, strict=True) if m.held_out == fold_chips.fold]
        if not unseen:
            continue
        predictor = _out_of_fold_predictor(unseen, names, fold_chips.index, classes)
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


def tune_winners(
    members: Sequence[TuningMember],
    rules: Sequence[Member],
    indexes: Sequence[str | os.PathLike[str]],
    folds: str | os.PathLike[str],
    stats: str | os.PathLike[str],
    precedence: Sequence[str] | None = None,
    batch_size: int = 32,
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
            (i, _out_of_fold_predictor([(m, t)], names, fold_chips.index, classes))
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


#: the factors by which ``weights: tune`` may scale each group's given weight
WEIGHT_FACTORS = (0.0, 0.5, 1.0, 2.0, 4.0)
#: the radiometric gains (of the source bands, not the indices) of the shifted variants
GAINS = (0.8, 1.25)
#: at most this many labelled pixels per variant are kept to score the weight candidates
MAX_PIXELS = 4_000_000


@dataclass
class _Variant:
    """One way the out-of-fold chips are shown to the members: a gain on the source bands, and
    the statistics that ``normalize: scene`` members standardise by: the whole scene's
    (``scene``), the fold's chips' (``fold``), or a scene half of one class (``rich:{class}``)."""

    name: str
    gain: float
    stats: str


def variants(classes: Sequence[str]) -> list[_Variant]:
    """The cases ``weights: tune`` scores each fold in (see :func:`tune_weights`)."""
    return (
        [_Variant("as is", 1.0, "scene"), _Variant("fold statistics", 1.0, "fold")]
        + [_Variant(f"{c}-rich statistics", 1.0, f"rich:{c}") for c in classes]
        + [_Variant(f"gain {g:g}", g, "scene") for g in GAINS]
    )


def group_of(checkpoint: str | os.PathLike[str]) -> str:
    """The model a checkpoint belongs to: ``results/models/{id}/fold{k}/best.ckpt`` -> its
    ``{id}`` folder, whatever the fold."""
    folder = Path(checkpoint).parent
    return str(folder.parent if folder.name.startswith("fold") and folder.name[4:].isdigit() else folder)


def tune_weights(
    members: Sequence[TuningMember],
    rules: Sequence[Member],
    indexes: Sequence[str | os.PathLike[str]],
    folds: str | os.PathLike[str],
    stats: str | os.PathLike[str],
    indices: Sequence[str] = (),
    factors: Sequence[float] = WEIGHT_FACTORS,
    batch_size: int = 32,
) -> dict[str, Any]:
    """The weights of a ``weights: tune`` ensemble (``combine: mean``), chosen out of fold for
    the worst case rather than the mean.

    Members form groups: a model's members (its folds) keep the ratios of their given weights and
    share one factor; each rule is its own group. Every training scene's chips of each fold are
    predicted by the members that held that fold out (a fold that some model held out in none of
    its members is not used), in several variants (:func:`variants`): as they are; with
    ``normalize: scene`` members standardised by the statistics of another class mix (the fold's
    own labelled chips; and per class, the scene's labelled pixels re-weighted so that the class
    is half of them, as a flood scene is much water); with the source bands scaled by 0.8 and
    by 1.25 (another sensor's calibration; the indices, ratios, do not change). Every
    combination of the groups' factors in ``factors`` is scored by its macro IoU in each scene
    and variant; the best worst case wins (then the best mean, then the given weights). The
    calval sites are not used.

    Args:
        members: the model members (the predictor's first members, in this order).
        rules: the rule members (:meth:`Member.from_rules`), after the models.
        indices: the band names that are indices (not scaled by a gain).

    Returns:
        ``weights.json``: ``members`` and their tuned ``weights`` (in the predictor's order),
        ``groups`` (members, given weight, factor), the ``given`` and ``tuned`` scores (worst and
        mean macro IoU, per ``scene / variant``), ``candidates``, ``chips``, ``pixels``,
        ``tuned_on``.

    Raises:
        ValueError: fewer than two groups, or no fold that every model held out in one member.
    """
    from itertools import product

    from snakemap.core.metrics import scores

    labels_of = [str(m.checkpoint) for m in members] + [r.source for r in rules]
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault(group_of(m.checkpoint), []).append(i)
    for j, r in enumerate(rules):
        groups[r.source] = [len(members) + j]
    if len(groups) < 2:
        raise ValueError(
            f"weights: tune weighs models and rules against each other, and these members are one model "
            f"({', '.join(labels_of)}): give members of two models or rules, or fixed weights"
        )
    model_groups = [g for g in groups if groups[g][0] < len(members)]
    given_weights = [m.weight for m in members] + [r.weight for r in rules]
    names = [b["name"] for b in read_json(stats)["bands"]]
    gained = np.array([n not in set(indices) for n in names])
    trained = [load_trained(m.checkpoint) for m in members]
    classes = trained[0].classes
    n = len(classes)
    total = sum(
        len(c.chips) * c.images.shape[-1] * c.images.shape[-2] for c in held_out_chips(indexes, folds)
    )
    shown = variants(classes)
    step = max(1, int(np.ceil(np.sqrt(total * len(shown) / MAX_PIXELS))))
    scene_moments: dict[Path, _Moments] = {}
    # per (scene, variant): the labels and each group's probabilities of the sampled pixels
    cases: dict[str, tuple[list[np.ndarray], list[list[np.ndarray]]]] = {}
    n_chips = 0
    for fold_chips in held_out_chips(indexes, folds):
        unseen = {
            g: [(members[i], trained[i]) for i in groups[g] if members[i].held_out == fold_chips.fold]
            for g in model_groups
        }
        if not all(unseen.values()):
            continue
        n_chips += len(fold_chips.chips)
        scene = fold_chips.index.name.removesuffix(".index.parquet")
        if fold_chips.index not in scene_moments:
            everything = np.arange(len(fold_chips.images))
            scene_moments[fold_chips.index] = _Moments.of(fold_chips.images, fold_chips.labels, everything, n)
        statistics = {
            "fold": _Moments.of(fold_chips.images, fold_chips.labels, fold_chips.chips, n).mixture(),
            **{
                f"rich:{c}": scene_moments[fold_chips.index].mixture(k)
                for k, c in enumerate(classes)
                if scene_moments[fold_chips.index].count[k] > 0
            },
        }
        for variant in shown:
            if variant.stats.startswith("rich:") and variant.stats not in statistics:
                continue  # no pixel of that class in the scene
            gain = np.where(gained, variant.gain, 1.0).astype(np.float32)
            predictors = [
                _group_predictor(unseen[g], names, fold_chips, classes, gain, statistics.get(variant.stats))
                for g in model_groups
            ]
            predictors += [
                Predictor([rules[groups[g][0] - len(members)]], classes) for g in groups if g not in unseen
            ]
            truth, probs = cases.setdefault(f"{scene} / {variant.name}", ([], [[] for _ in groups]))
            for images, labels in fold_chips.batches(batch_size):
                images = images * gain[None, :, None, None]
                labels = labels[:, ::step, ::step]
                valid = labels < n
                truth.append(labels[valid])
                for k, predictor in enumerate(predictors):
                    p = predictor.probabilities(images, names)[:, :, ::step, ::step]
                    probs[k].append(p.transpose(0, 2, 3, 1)[valid])
    if not n_chips:
        raise ValueError(
            "weights: tune weighs the members on chips that each model held out in one of its members, "
            f"and there are none (members' held-out folds: {[m.held_out for m in members]}); train the "
            "members with validation: fold"
        )
    stacked = {
        case: (np.concatenate(truth), np.stack([np.concatenate(p) for p in probs]))
        for case, (truth, probs) in cases.items()
    }
    group_names = list(groups)
    base = np.array([sum(given_weights[i] for i in groups[g]) for g in group_names])

    def evaluate(factor: Sequence[float]) -> dict[str, Any]:
        w = (np.asarray(factor) * base).astype(np.float32)
        per_case = {}
        for case, (truth, probs) in stacked.items():
            mixed = np.tensordot(w, probs, axes=1)
            cm = np.bincount(truth.astype(np.int64) * n + mixed.argmax(1), minlength=n * n).reshape(n, n)
            per_case[case] = float(np.nan_to_num(scores(cm, classes)["macro"]["iou"]))
        values = list(per_case.values())
        return {"worst": min(values), "mean": float(np.mean(values)), "macro_iou": per_case}

    given = evaluate([1.0] * len(groups))
    best_factor, best = [1.0] * len(groups), given
    candidates = 0
    for factor in product(factors, repeat=len(groups)):
        if not any(factor) or all(f == 1.0 for f in factor):
            continue
        candidates += 1
        found = evaluate(factor)
        if _rank(found) > _rank(best):
            best_factor, best = list(factor), found
    weights = list(given_weights)
    for g, f in zip(group_names, best_factor, strict=True):
        for i in groups[g]:
            weights[i] = given_weights[i] * f
    return {
        "combine": "mean",
        "classes": classes,
        "members": labels_of,
        "weights": weights,
        "groups": {
            g: {"members": [labels_of[i] for i in groups[g]], "given": float(b), "factor": f}
            for g, b, f in zip(group_names, base, best_factor, strict=True)
        },
        "objective": "worst macro IoU over training scenes and variants, then the mean",
        "variants": [v.name for v in shown],
        "given": given,
        "tuned": best,
        "candidates": candidates + 1,
        "chips": n_chips,
        "pixels": int(sum(len(t) for t, _ in stacked.values())),
        "tuned_on": TUNED_ON,
    }


def _rank(found: dict[str, Any]) -> tuple[float, float]:
    """A candidate's rank: its worst case, then its mean (rounded, so that noise never beats
    the given weights)."""
    return round(found["worst"], 6), round(found["mean"], 6)


@dataclass
class _Moments:
    """Per class: labelled pixel count ``(k,)``, band sums and sums of squares ``(k, bands)``."""

    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def of(cls, images: np.ndarray, labels: np.ndarray, chips: np.ndarray, n_classes: int) -> _Moments:
        """The moments of the labelled, finite pixels of ``chips``, 64 chips at a time."""
        bands = images.shape[1]
        count = np.zeros(n_classes)
        total = np.zeros((n_classes, bands))
        squares = np.zeros((n_classes, bands))
        for start in range(0, len(chips), 64):
            batch = chips[start : start + 64]
            x = np.asarray(images[batch], dtype=np.float64).transpose(1, 0, 2, 3).reshape(bands, -1)
            y = np.asarray(labels[batch]).reshape(-1)
            keep = (y < n_classes) & np.isfinite(x).all(axis=0)
            x, y = x[:, keep], y[keep].astype(np.int64)
            count += np.bincount(y, minlength=n_classes)[:n_classes]
            for b in range(bands):
                total[:, b] += np.bincount(y, weights=x[b], minlength=n_classes)[:n_classes]
                squares[:, b] += np.bincount(y, weights=x[b] ** 2, minlength=n_classes)[:n_classes]
        return cls(count, total, squares)

    def mixture(self, rich: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (float32) per band of the pixels as they are, or (``rich``) re-weighted
        so that class ``rich`` is half of them and the others share the rest as they do here."""
        share = self.count / max(self.count.sum(), 1)
        if rich is not None:
            others = share.copy()
            others[rich] = 0
            share = 0.5 * others / max(others.sum(), 1e-12)
            share[rich] = 0.5 if others.sum() > 0 else 1.0
        present = self.count > 0
        mean_c = self.total[present] / self.count[present, None]
        second_c = self.squares[present] / self.count[present, None]
        w = share[present, None]
        mean = (w * mean_c).sum(axis=0)
        std = np.sqrt(np.maximum((w * second_c).sum(axis=0) - mean**2, 0))
        return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def _group_predictor(
    unseen: Sequence[tuple[TuningMember, Any]],
    names: list[str],
    fold_chips: FoldChips,
    classes: list[str],
    gain: np.ndarray,
    statistics: tuple[np.ndarray, np.ndarray] | None,
) -> Predictor:
    """:func:`_out_of_fold_predictor` of one model's members, its ``normalize: scene`` members
    standardised by ``statistics`` (per band of ``names``; None: the scene's own) times
    ``gain`` (per band of ``names``), as a scene so shown would be."""
    predictor = _out_of_fold_predictor(unseen, names, fold_chips.index, classes)
    for member in predictor.members:
        if member.normalize != "scene":
            continue
        channels = [names.index(b) for b in member.bands]
        if statistics is None:
            mean, std = member.normalizer.mean, member.normalizer.std
        else:
            mean, std = statistics[0][channels], statistics[1][channels]
        member.normalizer = Normalizer(mean * gain[channels], std * gain[channels])
    return predictor
