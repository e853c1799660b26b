"""Ensemble weights tuned out of fold for the worst case (``weights: tune``): never on the
calval sites that score them.

Each model (its folds together) and each rule gets a factor on its given weight, chosen over
the training scenes' held-out chips shown several ways (:func:`variants`), written to
``results/ensembles/{name}/weights.json`` (see :func:`tune_weights`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snakemap.core.io import read_json
from snakemap.data.stats import Normalizer
from snakemap.evaluation.tuning import (
    TUNED_ON,
    FoldChips,
    TuningMember,
    held_out_chips,
    out_of_fold_predictor,
)
from snakemap.inference.predictor import Member, Predictor
from snakemap.tasks.networks import load_trained

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
    tta: bool = False,
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
        tta: the members' probabilities averaged over flips, as ``predict.tta`` will predict them.

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
                _group_predictor(
                    unseen[g], names, fold_chips, classes, gain, statistics.get(variant.stats), tta
                )
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
    tta: bool = False,
) -> Predictor:
    """:func:`out_of_fold_predictor` of one model's members, its ``normalize: scene`` members
    standardised by ``statistics`` (per band of ``names``; None: the scene's own) times
    ``gain`` (per band of ``names``), as a scene so shown would be."""
    predictor = out_of_fold_predictor(unseen, names, fold_chips.index, classes, tta)
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
