"""The calval steps: baselines, a predictor's scores over the sites, threshold tuning, the summary."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from snakemap.cli.common import (
    add_image,
    input_image,
    member_weights,
    model_options,
    rule_member,
    step_options,
)
from snakemap.core.config import ConfigError, build


def _baseline(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import json

    from pydantic import ValidationError

    from snakemap.core.calval_sections import BaselineOptions
    from snakemap.core.config import message
    from snakemap.evaluation.calval import baseline_map

    labels = build("labels", cfg["labels"])
    try:
        spec = BaselineOptions.model_validate(json.loads(args.spec))
    except ValidationError as exc:
        raise ConfigError(message(exc, ("calval", "baselines"))) from None
    image = input_image(args, args.out)
    if image is not None:
        baseline_map(spec, args.site, image, labels.classes, args.out)
    return 0


def _calval_metrics(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.io import read_json
    from snakemap.evaluation.calval import score_predictor, site_files, sites_table
    from snakemap.evaluation.scores import write_scores

    labels = build("labels", cfg["labels"])
    files, skipped = site_files(args.clean, args.maps, args.probs)
    target = labels.target_indices[0] if len(labels.target_indices) == 1 else None
    tuned = read_json(args.threshold_from) if args.threshold_from else None
    result = score_predictor(
        args.predictor, files, labels.classes, labels.ignore_index, target, tuned, args.selection, skipped
    )
    write_scores(result, sites_table(result), args.out_json, args.out_csv)
    return 0


def _tune_threshold(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.io import write_json
    from snakemap.evaluation.tuning import TuningMember, tune_threshold

    if not args.target:
        raise ConfigError("tune-threshold needs --target, the class whose threshold is tuned")
    weights = member_weights(args)
    members = [TuningMember.from_checkpoint(c, w) for c, w in zip(args.checkpoint, weights, strict=True)]
    tta = build("predict", cfg.get("predict")).tta
    result = tune_threshold(members, args.indexes, args.folds, args.stats, args.target, tta=tta)
    write_json(args.out, result)
    logging.info(
        "threshold %.3f (F1 %.3f) over %d out-of-fold chips",
        result["threshold"],
        result["f1"],
        result["chips"],
    )
    return 0


def _rules(args: argparse.Namespace, cfg: dict[str, Any]) -> list[Any]:
    """The ``--rule`` members of an ensemble step, checked against the config's classes."""
    classes = build("labels", cfg["labels"]).classes if cfg.get("labels") else []
    return [rule_member(text, classes) for text in args.rule]


def _tune_winners(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import json

    from snakemap.core.io import write_json
    from snakemap.evaluation.tuning import TuningMember, tune_winners

    members = [TuningMember.from_checkpoint(c) for c in args.checkpoint]
    rules = _rules(args, cfg)
    precedence = json.loads(args.precedence) if args.precedence else None
    tta = build("predict", cfg.get("predict")).tta
    result = tune_winners(members, rules, args.indexes, args.folds, args.stats, precedence, tta=tta)
    write_json(args.out, result)
    logging.info(
        "per-class winners over %d out-of-fold chips: %s (fallback %s)",
        result["chips"],
        ", ".join(f"{c}: {m}" for c, m in result["winners"].items()),
        result["fallback"],
    )
    return 0


def _tune_weights(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.io import write_json
    from snakemap.evaluation.tuning import TuningMember
    from snakemap.evaluation.weights import tune_weights

    members = [
        TuningMember.from_checkpoint(c, w) for c, w in zip(args.checkpoint, member_weights(args), strict=True)
    ]
    rules = _rules(args, cfg)
    indices = [spec.name for spec in build("bands", cfg["bands"]).index_specs()] if cfg.get("bands") else []
    tta = build("predict", cfg.get("predict")).tta
    result = tune_weights(members, rules, args.indexes, args.folds, args.stats, indices, tta=tta)
    write_json(args.out, result)
    logging.info(
        "weights over %d out-of-fold chips: %s; worst macro IoU %.3f (given weights %.3f)",
        result["chips"],
        ", ".join(f"{g} x{v['factor']:g}" for g, v in result["groups"].items()),
        result["tuned"]["worst"],
        result["given"]["worst"],
    )
    return 0


def _calval_summary(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.core.io import write_csv
    from snakemap.evaluation.calval import summary

    print(write_csv(summary(args.metrics), args.out).to_string(index=False))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the calval steps to the ``snakemap`` command."""
    common, models = step_options(), model_options()

    p = sub.add_parser("baseline", parents=[common], help="a baseline's class map of one site")
    p.add_argument("site")
    p.add_argument("--spec", required=True, help="the baseline's config as JSON")
    add_image(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_baseline)

    p = sub.add_parser("calval-metrics", parents=[common], help="score one predictor over its sites")
    p.add_argument("--predictor", required=True)
    p.add_argument("--clean", nargs="+", type=Path, required=True, help="per site: its clean folder")
    p.add_argument("--maps", nargs="+", type=Path, required=True, help="class map per site")
    p.add_argument("--probs", nargs="*", type=Path, help="probabilities per site")
    p.add_argument("--threshold-from", type=Path, help="the threshold.json whose threshold made the maps")
    p.add_argument("--selection", default="", help="how the checkpoint was chosen: held-out fold | calval")
    p.add_argument("--out-json", type=Path, required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    p.set_defaults(func=_calval_metrics)

    tuning = (
        ("tune-threshold", "an ensemble's threshold, tuned out of fold", "threshold.json", _tune_threshold),
        ("tune-winners", "a per-class ensemble's winner of each class, chosen out of fold", "winners.json",
         _tune_winners),
        ("tune-weights", "an ensemble's weights per model and rule, chosen out of fold for the worst case",
         "weights.json", _tune_weights),
    )  # fmt: skip
    for name, what, out, func in tuning:  # each walks the training scenes' held-out chips
        p = sub.add_parser(name, parents=[common, models], help=what)
        p.add_argument(
            "--indexes", nargs="+", type=Path, required=True, help="chip tables of the training scenes"
        )
        p.add_argument("--folds", type=Path, required=True)
        p.add_argument("--stats", type=Path, required=True)
        p.add_argument("--out", type=Path, required=True, help=out)
        if name == "tune-winners":
            p.add_argument("--precedence", help="JSON list of the classes in the order they claim a pixel")
        p.set_defaults(func=func)

    p = sub.add_parser("calval-summary", parents=[common], help="one row per predictor")
    p.add_argument("metrics", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_calval_summary)
