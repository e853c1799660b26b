"""The typed ``calval`` section: what is scored at the calval sites beside the models'
checkpoints: rule and product baselines, and ensembles (see :mod:`snakemap.core.sections`: each
class is the only place of its keys, defaults and constraints).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from snakemap.core.expressions import ExpressionError, evaluate, names, parse
from snakemap.core.model_sections import Id
from snakemap.core.section_base import AnyNumber, Fraction, Positive, Section, Unique

Checkpoint = Literal["best", "last"]


class RuleOptions(Section):
    """One rule of a rule baseline: pixels where ``expr`` (over band and index names, see
    :mod:`snakemap.core.expressions`) is above ``above`` and/or below ``below`` are ``class``; an
    ``expr`` that is itself a condition (``"ndwi < 0 and nir < 0.1"``) takes neither."""

    OMIT_UNSET = frozenset({"above", "below"})

    expr: str = Field(description="arithmetic or a condition over band and index names")
    above: AnyNumber | None = None
    below: AnyNumber | None = None
    class_: str = Field(alias="class")

    @field_validator("expr")
    @classmethod
    def _expr(cls, expr: str) -> str:
        parse(expr)  # an ExpressionError (a ValueError) names what is not allowed
        return expr

    def hits(self, bands: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(rows, cols)`` bool: the pixels this rule claims."""
        value = evaluate(self.expr, bands)
        if self.above is None and self.below is None:
            if value.dtype != bool:
                raise ExpressionError(f"{self.expr!r} is no condition: give it above or below")
            return value
        hit = np.ones(value.shape, dtype=bool)
        if self.above is not None:
            hit &= value > self.above
        if self.below is not None:
            hit &= value < self.below
        return hit


class BaselineOptions(Section):
    """An entry of ``calval.baselines``: rules over bands and indices, or a product's maps.

    Rules (``rules`` and ``default``): each valid pixel is the class of the first rule that claims
    it, in the order written, and ``default`` where none does. The short form ``{index, above (or
    below), class, else}`` is the rule ``{expr: index, above, class}`` with ``default: else``.
    Product: ``maps`` gives a raster per site whose values ``remap`` turns into class names
    (unlisted values are nodata).
    """

    OMIT_UNSET = frozenset(
        {"index", "above", "below", "class_", "else_", "rules", "default", "maps", "remap"}
    )

    #: a band of the cleaned image, e.g. ndwi
    index: str | None = Field(None, description="a band of the cleaned image, e.g. ndwi")
    above: AnyNumber | None = None
    below: AnyNumber | None = None
    class_: str | None = Field(None, alias="class")
    else_: str | None = Field(None, alias="else")
    #: rules over band and index names, the first that claims a pixel wins
    rules: Annotated[list[RuleOptions], Field(min_length=1)] | None = Field(
        None, description="rules over band and index names; the first that claims a pixel wins"
    )
    #: the class of the valid pixels no rule claims
    default: str | None = Field(None, description="the class of the valid pixels no rule claims")
    #: site -> product raster
    maps: dict[str, str] | None = Field(None, description="site -> product raster")
    #: product value -> class
    remap: dict[int | str, str] | None = Field(None, description="product value -> class")

    @model_validator(mode="after")
    def _one_form(self) -> BaselineOptions:
        forms = [
            f for f, given in (("index", self.index), ("rules", self.rules), ("maps", self.maps)) if given
        ]
        if len(forms) != 1:
            raise ValueError(
                f"give one of index (with class, else), rules (with default) or maps; got {forms}"
            )
        if self.index is not None and (
            self.class_ is None or self.else_ is None or (self.above is None and self.below is None)
        ):
            raise ValueError("index needs above or below, class and else")
        if self.rules is not None and self.default is None:
            raise ValueError("rules need a default: the class of the pixels no rule claims")
        if self.maps is not None and not self.remap:
            raise ValueError("maps need remap: product value -> class")
        return self

    def rule_list(self) -> tuple[list[RuleOptions], str] | None:
        """The rules and the default class (the short index form as one rule); None for a product."""
        if self.index is not None:
            bounds = {k: v for k, v in (("above", self.above), ("below", self.below)) if v is not None}
            rule = RuleOptions.model_validate({"expr": self.index, "class": self.class_, **bounds})
            return [rule], str(self.else_)
        if self.rules is not None:
            return list(self.rules), str(self.default)
        return None

    def class_names(self) -> set[str]:
        """Every class the baseline maps to."""
        named = {self.class_, self.else_, self.default, *(self.remap or {}).values()}
        named |= {r.class_ for r in self.rules or []}
        return {n for n in named if n is not None}

    def band_names(self) -> set[str]:
        """The band and index names its rules read."""
        found = {self.index} if self.index else set()
        for rule in self.rules or []:
            found |= names(rule.expr)
        return found


#: how an ensemble names a rule baseline among its members
RULE_MEMBER = "baselines/"


def rule_baseline(member: str) -> str | None:
    """The baseline an ensemble member ``baselines/{name}`` names; None for a model key."""
    return member.removeprefix(RULE_MEMBER) if member.startswith(RULE_MEMBER) else None


class FallbackOptions(Section):
    """An ensemble's ``fallback``: a scene whose shift score (how unlike the training scenes its
    bands are, :mod:`snakemap.inference.shift`) is above ``shift`` is mapped by these members
    alone, typically its rule baselines: the learned members extrapolate there, and in
    ``bench/quality.py`` they lose to the rules on such scenes. Per-class winners are not used on
    a scene that falls back; a threshold is. The scene's status and STAC item say so."""

    #: the shift score above which only ``members`` map a scene
    shift: Positive = Field(description="the shift score above which only the fallback members map a scene")
    #: members of the ensemble (model keys or ``baselines/{name}``), weighted as in ``members``
    members: Annotated[Unique[str], Field(min_length=1)] = Field(
        description="members of the ensemble (model keys or baselines/{name}) that alone map such a scene"
    )


class EnsembleOptions(Section):
    """An entry of ``calval.ensembles``: weighted members and how their probabilities are cut, or
    (``combine: per_class``) which member maps each class."""

    OMIT_UNSET = frozenset({"combine", "precedence", "weights", "fallback"})

    #: model key (id or id/fold{k}), or ``baselines/{name}`` of a rule baseline -> weight
    members: dict[str, Positive] = Field(
        min_length=1,
        description="model key (id or id/fold{k}), or baselines/{name} of a rule baseline (its map as "
        "one-hot probabilities) -> weight",
    )
    checkpoint: Literal["best", "last"] = "best"
    #: probability of the single target class from which a pixel is target; ``tune``: F1-optimal
    #: on the members' out-of-fold validation chips, never on calval
    threshold: Literal["tune"] | Fraction | None = Field(
        None,
        description="probability of the single target class from which a pixel is target; tune: "
        "F1-optimal on the members' out-of-fold validation chips, never on calval",
    )
    #: ``mean``: the weighted mean of the members' probabilities; ``per_class``: each class is
    #: mapped by the member (model or rule) with the best IoU of that class on the out-of-fold
    #: validation chips (:func:`snakemap.evaluation.tuning.tune_winners`); weights are not used
    combine: Literal["mean", "per_class"] = Field(
        "mean",
        description="mean: the weighted mean of the members' probabilities; per_class: each class mapped "
        "by the member with the best IoU of it out of fold (a rule where no model beats it)",
    )
    #: ``given``: the members' weights as written; ``tune``: each model's weight (its folds'
    #: together) and each rule's scaled by a factor chosen for the best worst case out of fold
    #: (:func:`snakemap.evaluation.weights.tune_weights`), written to ``weights.json``
    weights: Literal["given", "tune"] = Field(
        "given",
        description="given: the members' weights as written; tune: each model's (its folds together) and "
        "each rule's weight scaled by a factor in 0-4 chosen out of fold for the best worst case over the "
        "training scenes, another class mix and gains of 0.8 and 1.25",
    )
    #: ``per_class``: the order in which classes claim a pixel that several winners map (first
    #: wins); None: by the winners' out-of-fold precision, the most precise first
    precedence: Unique[str] | None = Field(
        None,
        description="per_class: classes in the order they claim a pixel several winners map; null: by "
        "the winners' out-of-fold precision",
    )
    #: the members that alone map a scene unlike the training data (None: every member maps every
    #: scene)
    fallback: FallbackOptions | None = Field(
        None,
        description="{shift, members}: a scene whose shift score is above shift is mapped by these members "
        "alone (e.g. the rules where the models extrapolate)",
    )

    @model_validator(mode="after")
    def _fallback_members(self) -> EnsembleOptions:
        if self.fallback is None:
            return self
        unknown = [m for m in self.fallback.members if m not in self.members]
        if unknown:
            raise ValueError(f"fallback.members: {unknown} are not members of the ensemble")
        if set(self.fallback.members) == set(self.members):
            raise ValueError("fallback.members: name some of the members, not all of them")
        return self


class CalvalOptions(Section):
    """The ``calval`` section: models, ensembles and baselines scored at the calval sites."""

    checkpoints: Unique[Checkpoint] = Field(default_factory=lambda: list[Checkpoint](["best"]))
    #: GPUs per prediction job
    gpus: int = Field(0, ge=0, description="GPUs per prediction job")
    baselines: dict[Id, BaselineOptions] = Field(default_factory=dict)
    ensembles: dict[Id, EnsembleOptions] = Field(default_factory=dict)
