"""Progress of an application run, from files alone, fast enough to call while it runs.

Finished shards are read from their manifests (one file per shard, listing
:meth:`snakemap.status.SceneStatus.summary` of each scene); only the scenes of unfinished shards
are looked up one by one, and only those whose sentinel exists are read (:meth:`SceneStatus.read`).
The ok scenes per CRS come from the mosaic's ``mosaic/index.json`` (see
:func:`snakemap.mosaic.build_mosaic`), as of the last mosaic.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snakemap.io import read_json
from snakemap.shards import shard_ids, shard_members
from snakemap.status import SceneStatus

RECENT_S = 600.0  # throughput is measured over the scenes finished in the last ten minutes


def progress(
    root: str | os.PathLike[str], scene_ids: Sequence[str], shard_size: int, now: float | None = None
) -> dict[str, Any]:
    """Counts of done, empty, corrupt and pending scenes under one predictor's ``root``.

    Returns:
        ``{"total", "ok", "empty", "corrupt", "pending", "done_pct", "scenes_per_hour", "eta_s",
        "corrupt_scenes": [{"scene_id", "reason"}], "shards_done", "shards", "zones"}``;
        ``zones``: ok scenes by CRS (``{"EPSG:32618": 12}``, plus ``"none"`` for maps without
        a CRS) in the last mosaic, ``{}`` before it.
    """
    root = Path(root)
    now = time.time() if now is None else now
    counts = {"ok": 0, "empty": 0, "corrupt": 0}
    corrupt: list[dict[str, str]] = []
    recent = 0
    shards = shard_ids(len(scene_ids), shard_size)
    shards_done = 0
    existing = {e.name for e in os.scandir(root / "scenes")} if (root / "scenes").is_dir() else set()
    for shard in shards:
        manifest = root / "shards" / f"{shard}.json"
        if manifest.exists():
            entries = read_json(manifest)["scenes"]
            shards_done += 1
        else:
            names = (f"{s}.json" for s in shard_members(scene_ids, shard, shard_size))
            entries = [SceneStatus.read(root / "scenes" / n).summary() for n in names if n in existing]
        for e in entries:
            counts[e["status"]] += 1
            if e["status"] == "corrupt":
                corrupt.append({"scene_id": e["scene_id"], "reason": e.get("reason", "")})
            if e.get("finished") and now - e["finished"] <= RECENT_S:
                recent += 1
    done = sum(counts.values())
    pending = len(scene_ids) - done
    per_hour = recent / RECENT_S * 3600
    return {
        "total": len(scene_ids),
        **counts,
        "pending": pending,
        "done_pct": 100.0 * done / len(scene_ids) if scene_ids else 100.0,
        "scenes_per_hour": per_hour,
        "eta_s": pending / per_hour * 3600 if per_hour > 0 else (0.0 if pending == 0 else None),
        "shards": len(shards),
        "shards_done": shards_done,
        "corrupt_scenes": corrupt,
        "zones": zones(root),
    }


def zones(root: str | os.PathLike[str]) -> dict[str, int]:
    """Ok scenes by CRS in the mosaic under ``root`` (``mosaic/index.json``); ``{}`` without one."""
    index = Path(root) / "mosaic" / "index.json"
    if not index.is_file():
        return {}
    data = read_json(index)
    counts = {key: int(zone["scenes"]) for key, zone in data["zones"].items()}
    if data.get("unreferenced"):
        counts["none"] = len(data["unreferenced"])
    return counts


def format_progress(name: str, p: dict[str, Any]) -> str:
    """A few human-readable lines."""
    eta = "done" if p["pending"] == 0 else ("unknown" if p["eta_s"] is None else f"{p['eta_s'] / 3600:.1f} h")
    lines = [
        f"{name}: {p['done_pct']:.1f}% of {p['total']} scenes "
        f"(ok {p['ok']}, empty {p['empty']}, corrupt {p['corrupt']}, pending {p['pending']}); "
        f"shards {p['shards_done']}/{p['shards']}; {p['scenes_per_hour']:.0f} scenes/h; ETA {eta}"
    ]
    if p.get("zones"):
        lines.append("  mosaic: " + ", ".join(f"{k} {n}" for k, n in p["zones"].items()))
    lines += [f"  corrupt: {c['scene_id']}: {c['reason']}" for c in p["corrupt_scenes"]]
    return "\n".join(lines)
