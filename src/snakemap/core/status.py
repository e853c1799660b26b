"""Per-scene states: every scene ends as exactly one of ok, empty or corrupt.

The state is a small JSON sentinel (``status.json``) written next to where the outputs would be:

.. code-block:: json

    {"scene_id": "reef_01", "status": "ok", "reason": "", "valid_fraction": 0.93,
     "band_count": 6, "bands": ["blue", "..."], "crs": "EPSG:32755", "shape": [256, 256],
     "extra": {"class_pixels": {"...": 0}, "unmapped_fraction": 0.0}, "started": null, "finished": null}

The clean step and the apply shards (``results/maps/{predictor}/scenes/{scene}.json``, with
``started``/``finished`` and timings under ``extra``) write this one format, and every reader
goes through :meth:`SceneStatus.read`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from snakemap.core.io import read_json, write_json

log = logging.getLogger(__name__)

State = Literal["ok", "empty", "corrupt"]
STATES: tuple[State, ...] = ("ok", "empty", "corrupt")


class SceneError(Exception):
    """A scene that cannot be used: the message is the reason recorded in its sentinel."""


def corrupt_reason(exc: BaseException) -> str:
    """The reason a corrupt scene's sentinel gives: a SceneError's own words, else 'unreadable: ...'."""
    return str(exc) if isinstance(exc, SceneError) else f"unreadable: {type(exc).__name__}: {exc}"


@dataclass
class SceneStatus:
    """The outcome of processing one scene."""

    #: the manifest's scene id
    scene_id: str
    #: ``ok``, ``empty`` (nothing to map) or ``corrupt`` (unreadable, wrong shape, failed download)
    status: State
    #: why the scene is empty or corrupt; empty when ok
    reason: str = ""
    #: fraction of pixels with valid data, 0..1
    valid_fraction: float | None = None
    #: number of bands in the cleaned image (selected bands plus indices)
    band_count: int | None = None
    #: names of the cleaned image's bands, in order
    bands: list[str] = field(default_factory=list)
    #: CRS of the cleaned image as a string (``EPSG:xxxx`` or WKT)
    crs: str | None = None
    #: ``[rows, cols]`` of the cleaned image
    shape: list[int] | None = None
    #: extra figures (per-class pixel counts, unmapped label values, timings)
    extra: dict[str, Any] = field(default_factory=dict)
    #: when the work on the scene began and ended (seconds since the epoch; apply sets them)
    started: float | None = None
    finished: float | None = None

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the sentinel atomically."""
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SceneStatus:
        """Read a sentinel written by :meth:`write`, by this version or an earlier one.

        Keys this version does not know are kept under ``extra``.

        Raises:
            ValueError: naming ``path``, for a file that is no scene status.
        """
        data = read_json(path)
        if not isinstance(data, dict) or data.get("status") not in STATES or "scene_id" not in data:
            found = data.get("status") if isinstance(data, dict) else data
            raise ValueError(f"{path}: not a scene status (status {found!r})")
        known = {f.name for f in fields(cls)}
        status = cls(**{k: v for k, v in data.items() if k in known})
        status.extra.update({k: v for k, v in data.items() if k not in known})
        return status

    def summary(self) -> dict[str, Any]:
        """What a shard's manifest lists of the scene: id, status, reason, start and finish times and, for an
        applied scene, its shift score (:mod:`snakemap.inference.shift`) and hectares per class."""
        summary = {
            "scene_id": self.scene_id,
            "status": self.status,
            "reason": self.reason,
            "started": self.started,
            "finished": self.finished,
        }
        if isinstance(self.extra.get("shift"), dict):  # how unlike the training data (apply)
            summary["shift"] = self.extra["shift"]["score"]
            if self.extra["shift"].get("fallback"):  # mapped by an ensemble's fallback members
                summary["fallback"] = True
        if isinstance(self.extra.get("class_ha"), dict):  # hectares per class of its map (apply)
            summary["class_ha"] = self.extra["class_ha"]
        return summary


def status_path(scene_dir: str | os.PathLike[str]) -> Path:
    """The sentinel inside a per-scene output folder."""
    return Path(scene_dir) / "status.json"


def write_no_map(status: SceneStatus, outputs: Sequence[str | os.PathLike[str]]) -> None:
    """Write each of ``outputs`` as an empty file: the site has no map, its status says why."""
    for out in map(Path, outputs):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"")
    log.warning(
        "site %s is %s (%s): no map, empty %s",
        status.scene_id,
        status.status,
        status.reason,
        ", ".join(map(str, outputs)),
    )
