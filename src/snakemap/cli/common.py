"""What several steps share: the options every step takes, the options of a predictor, and
the two ways a step takes a scene (--image, or --clean for a calval site)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from snakemap.core.config import ConfigError

if TYPE_CHECKING:
    from snakemap.inference.predictor import Fallback, Member, PerClass


def step_options() -> argparse.ArgumentParser:
    """The parent parser of every step: --config, --options, --verbose."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="the workflow's config YAML")
    common.add_argument("--options", help="config sections as JSON, overriding --config")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


def model_options(required: bool = True) -> argparse.ArgumentParser:
    """The parent parser of the steps that run models. What makes a predictor: one checkpoint, or
    several (an ensemble) with weights (``required``: at least one checkpoint)."""
    models = argparse.ArgumentParser(add_help=False)
    models.add_argument(
        "--checkpoint", action="append", required=required, type=Path, help="repeat for an ensemble"
    )
    models.add_argument("--weight", action="append", type=float, help="one per checkpoint (default 1)")
    models.add_argument("--threshold", type=float, help="probability from which a pixel is --target")
    models.add_argument("--target", help="the class --threshold applies to")
    models.add_argument(
        "--threshold-from", type=Path, help="threshold.json (tune-threshold) whose threshold to use"
    )
    models.add_argument(
        "--winners-from", type=Path, help="winners.json (tune-winners): each class mapped by its member"
    )
    models.add_argument(
        "--weights-from", type=Path, help="weights.json (tune-weights): the members' tuned weights"
    )
    models.add_argument(
        "--rule",
        action="append",
        default=[],
        help='a rule baseline as an ensemble member, JSON: {"name", "weight", "spec"} (repeatable)',
    )
    models.add_argument(
        "--fallback-shift",
        type=float,
        help="a scene whose shift score is above this is mapped by the --fallback-member members alone",
    )
    models.add_argument(
        "--fallback-member",
        action="append",
        default=[],
        help="a member (its --checkpoint, or a --rule's name) that maps such a scene (repeatable)",
    )
    models.add_argument(
        "--onnx-model",
        action="append",
        default=[],
        metavar="CHECKPOINT=ONNX",
        help="run the network of --checkpoint CHECKPOINT as this ONNX export in ONNX Runtime (repeatable)",
    )
    models.add_argument("--threads", type=int, help="CPU threads of torch and ONNX Runtime (default: all)")
    models.add_argument("--gpus", type=int, default=0)
    return models


def onnx_members(args: argparse.Namespace, members: list[Member]) -> None:
    """Swap each member named by an ``--onnx-model CHECKPOINT=ONNX`` for its ONNX export, run by
    :class:`~snakemap.outputs.export.OnnxNetwork` with ``--threads``."""
    from snakemap.outputs.export import OnnxNetwork

    by_source = {Path(m.source): m for m in members if m.learned}
    for pair in args.onnx_model:
        checkpoint, sep, onnx = pair.partition("=")
        member = by_source.get(Path(checkpoint))
        if not sep or member is None:
            raise ConfigError(
                f"--onnx-model {pair}: give CHECKPOINT=ONNX for one of the --checkpoint members"
            )
        member.model = OnnxNetwork(onnx, args.threads, source=onnx)


def fallback(args: argparse.Namespace, members: list[Member]) -> Fallback | None:
    """The :class:`~snakemap.inference.predictor.Fallback` of --fallback-shift/--fallback-member,
    matched to the members by their checkpoint path or rule name; None without them."""
    from snakemap.inference.predictor import Fallback

    if args.fallback_shift is None and not args.fallback_member:
        return None
    if args.fallback_shift is None or not args.fallback_member:
        raise ConfigError("--fallback-shift and --fallback-member go together")
    sources = [Path(m.source) if m.learned else m.source for m in members]
    wanted = [name if name.startswith("baselines/") else Path(name) for name in args.fallback_member]
    unknown = [str(w) for w in wanted if w not in sources]
    if unknown:  # a member tuned to weight 0 has left the predictor
        raise ConfigError(f"fallback members {unknown} are not among the predictor's members")
    return Fallback(args.fallback_shift, [sources.index(w) for w in wanted])


def member_weights(args: argparse.Namespace) -> list[float]:
    """One --weight per --checkpoint (all 1 when none is given)."""
    weights = args.weight or [1.0] * len(args.checkpoint)
    if len(weights) != len(args.checkpoint):
        raise ConfigError(f"{len(args.checkpoint)} checkpoints but {len(weights)} weights")
    return list(weights)


def input_image(args: argparse.Namespace, *outputs: Path | None) -> Path | None:
    """--image, or the image of the calval site in --clean; None (with empty ``outputs``) when
    that site's clean did not end ok."""
    if args.clean is None:
        image: Path | None = args.image
        return image
    from snakemap.evaluation.calval import site_image

    return site_image(args.clean, [p for p in outputs if p is not None])


def add_image(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--image, or --clean for a calval site: the two ways predict and baseline take a scene."""
    where = p.add_mutually_exclusive_group(required=required)
    where.add_argument("--image", type=Path, help="a cleaned image.tif")
    where.add_argument("--clean", type=Path, help="a calval site's clean folder (not ok: empty outputs)")


def rule_member(text: str, classes: list[str]) -> Member:
    """A ``--rule`` (JSON ``{"name", "weight", "spec"}``) as an ensemble member."""
    import json

    from pydantic import ValidationError

    from snakemap.core.calval_sections import BaselineOptions, rule_baseline
    from snakemap.core.config import message
    from snakemap.inference.predictor import Member

    rule = json.loads(text)
    where = ("calval", "baselines", str(rule_baseline(rule["name"]) or rule["name"]))
    try:
        spec = BaselineOptions.model_validate(rule["spec"])
    except ValidationError as exc:
        raise ConfigError(message(exc, where)) from None
    unknown = sorted(spec.class_names() - set(classes))
    if unknown:
        raise ConfigError(f"{rule['name']}: classes {unknown} are not the models' ({', '.join(classes)})")
    return Member.from_rules(spec, classes, float(rule["weight"]), rule["name"])


def per_class(path: Path, members: list[Member], classes: list[str]) -> PerClass:
    """The per-class winners of ``winners.json`` (``tune-winners``) over the predictor's members,
    which must be the ones it was tuned with, in the same order."""
    from snakemap.core.io import read_json
    from snakemap.inference.predictor import PerClass

    tuned = read_json(path)
    names = [m.source for m in members]
    if tuned["members"] != names:
        raise ConfigError(f"{path} was tuned with members {tuned['members']}, not {names}: tune it again")
    if list(tuned["classes"]) != list(classes):  # JSON objects come back sorted: use this list
        raise ConfigError(f"{path} was tuned for classes {tuned['classes']}, the models predict {classes}")
    return PerClass(
        list(tuned["winner_index"]),
        [classes.index(c) for c in tuned["precedence"]],
        tuned["members"].index(tuned["fallback"]),
    )


def tuned_weights(path: Path, members: list[Member], classes: list[str]) -> list[Member]:
    """The members with the weights of ``weights.json`` (``tune-weights``), which must have been
    tuned with these members in this order; members weighed 0 are left out (nothing to run)."""
    import logging

    from snakemap.core.io import read_json

    tuned = read_json(path)
    names = [m.source for m in members]
    if tuned["members"] != names:
        raise ConfigError(f"{path} was tuned with members {tuned['members']}, not {names}: tune it again")
    if list(tuned["classes"]) != list(classes):
        raise ConfigError(f"{path} was tuned for classes {tuned['classes']}, the models predict {classes}")
    for member, weight in zip(members, tuned["weights"], strict=True):
        member.weight = float(weight)
    kept = [m for m in members if m.weight > 0]
    logging.info(
        "weights tuned on %s (%s): %s",
        tuned["tuned_on"],
        path,
        ", ".join(f"{m.source} {m.weight:g}" for m in members),
    )
    return kept
