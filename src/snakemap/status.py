"""Per-scene states: every scene ends as exactly one of ok, empty or corrupt.

The state is a small JSON sentinel (``status.json``) written next to where the outputs would be:

.. code-block:: json

    {"scene_id": "reef_01", "status": "ok", "reason": "", "valid_fraction": 0.93,
     "band_count": 6, "bands": ["blue", "..."], "crs": "EPSG:32755", "shape": [256, 256]}
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from snakemap.io import read_json, write_json

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
    #: extra figures (per-class pixel counts, timings)
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the sentinel atomically."""
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SceneStatus:
        """Read a sentinel written by :meth:`write`."""
        data = read_json(path)
        if data.get("status") not in STATES:
            raise ValueError(f"{path}: unknown scene status {data.get('status')!r}")
        return cls(**data)


def status_path(scene_dir: str | os.PathLike[str]) -> Path:
    """The sentinel inside a per-scene output folder."""
    return Path(scene_dir) / "status.json"
