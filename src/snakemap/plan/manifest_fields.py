"""The manifest's cells that carry more than text: a scene's ``datetime`` (ISO 8601) and its
``bounds`` (``minx,miny,maxx,maxy``), parsed for the checks of :mod:`snakemap.plan.manifest` and
for the steps that use them (STAC items, catalogue searches)."""

from __future__ import annotations

import datetime as dt


def is_datetime(text: str) -> bool:
    """Whether a ``datetime`` cell is an ISO 8601 time."""
    try:
        parse_datetime(text)
    except ValueError:
        return False
    return True


def parse_datetime(text: str) -> dt.datetime:
    """An ISO 8601 time as an aware datetime (UTC where the text gives no zone).

    Raises:
        ValueError: for text that is not ISO 8601.
    """
    when = dt.datetime.fromisoformat(text.strip())
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def parse_bounds(text: str) -> tuple[float, float, float, float] | None:
    """A ``bounds`` cell as ``(minx, miny, maxx, maxy)``; None when empty.

    Raises:
        ValueError: for anything but four numbers with ``minx < maxx`` and ``miny < maxy``.
    """
    if not text.strip():
        return None
    try:
        minx, miny, maxx, maxy = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"bounds {text!r} is not minx,miny,maxx,maxy") from None
    if not (minx < maxx and miny < maxy):
        raise ValueError(f"bounds {text!r} needs minx < maxx and miny < maxy")
    return minx, miny, maxx, maxy
