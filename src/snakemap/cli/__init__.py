"""The ``snakemap`` command: one sub-command per workflow step, each runnable by hand.

Every step takes its settings from ``--config config/config.yaml`` (the workflow's own file)
and/or ``--options '{"section": {...}}'`` (JSON, as the workflow's rules pass them).
Each sub-command imports its modules inside its function: start-up stays light, and only the
steps that need torch import it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from snakemap import __version__
from snakemap.cli import apply, areas, calval, data, downscaling, report, training
from snakemap.core.config import ConfigError, load_sections
from snakemap.plan.manifest import ManifestError


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``snakemap`` command."""
    top = argparse.ArgumentParser(prog="snakemap", description=__doc__)
    top.add_argument("--version", action="version", version=f"snakemap {__version__}")
    sub = top.add_subparsers(dest="step", required=True)
    for steps in (data, training, apply, calval, areas, report, downscaling):
        steps.register(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; a bad config or manifest exits with 2 and a message naming the culprit."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args, load_sections(args.config, args.options)))
    except (ConfigError, ManifestError) as exc:
        print(f"snakemap {args.step}: {exc}", file=sys.stderr)
        return 2
