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
from snakemap.cli import apply, areas, calval, data, downscaling, maps, report, training
from snakemap.core.config import ConfigError, load_sections
from snakemap.core.status import SceneError
from snakemap.plan.manifest import ManifestError


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``snakemap`` command."""
    top = argparse.ArgumentParser(prog="snakemap", description=__doc__)
    top.add_argument("--version", action="version", version=f"snakemap {__version__}")
    top.add_argument("--debug", action="store_true", help="a Python traceback with every error")
    sub = top.add_subparsers(dest="step", required=True)
    for steps in (data, training, apply, maps, calval, areas, report, downscaling):
        steps.register(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; bad input (:func:`input_errors`) exits with 2 and one line naming the
    culprit (``--debug``: the traceback)."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # GDAL's own messages repeat the error that ends the step
        logging.getLogger("rasterio").setLevel(logging.WARNING)
    try:
        return int(args.func(args, load_sections(args.config, args.options)))
    except Exception as exc:
        if args.debug or not isinstance(exc, input_errors()):
            raise
        print(f"snakemap {args.step}: {exc}", file=sys.stderr)
        return 2


def input_errors() -> tuple[type[Exception], ...]:
    """What a user's input causes (a config, a manifest, a scene, a bundle, a file that is not
    there): one line and exit code 2, not a traceback. Only from modules already loaded: a step
    that never read a raster does not load rasterio to name its errors."""
    found: list[type[Exception]] = [ConfigError, ManifestError, SceneError, FileNotFoundError]
    for module, name in (("snakemap.outputs.bundle", "BundleError"), ("rasterio.errors", "RasterioIOError")):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)
