"""Progress of an application run, from files alone, fast enough to call while it runs.

Finished shards are read from their manifests (one file per shard, listing
:meth:`snakemap.core.status.SceneStatus.summary` of each scene); only the scenes of unfinished shards
are looked up one by one, and only those whose sentinel exists are read (:meth:`SceneStatus.read`).
The ok scenes per CRS come from the mosaic's ``mosaic/index.json`` (see
:func:`snakemap.outputs.mosaic.build_mosaic`), as of the last mosaic.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snakemap.core.io import read_json, write_json
from snakemap.core.status import SceneStatus
from snakemap.inference.shift import unlike
from snakemap.plan.shards import shard_ids, shard_members

#: throughput is measured over the scenes finished in the last ten minutes
RECENT_S = 600.0
#: the summaries of finished shards, beside their folder (see :func:`_shard_summaries`)
COUNTS_CACHE = "shard-counts.json"


def progress(
    root: str | os.PathLike[str],
    scene_ids: Sequence[str],
    shard_size: int,
    now: float | None = None,
    shift_threshold: float = 1.0,
) -> dict[str, Any]:
    """Counts of done, empty, corrupt and pending scenes under one predictor's ``root``.

    Returns:
        ``{"total", "ok", "empty", "corrupt", "pending", "done_pct", "scenes_per_hour", "eta_s",
        "corrupt_scenes": [{"scene_id", "reason"}], "unlike_scenes": [{"scene_id", "shift",
        "fallback"}], "shift_threshold", "fallback_scenes", "mapped_ha", "run_scenes_per_hour",
        "shards_done", "shards", "zones"}``;
        ``scenes_per_hour``: the scenes that finished in the last ten minutes (:data:`RECENT_S`)
        before ``now``, per hour: the current rate (0 once a run has been idle that long), and
        ``eta_s`` the pending scenes at that rate (None while it is 0 and scenes are pending);
        ``run_scenes_per_hour``: the done scenes per hour from the first shard job's start to the
        last scene's finish (0 before both are known), what a finished run ran at;
        ``mapped_ha``: hectares per class summed over the ok scenes' maps (where scenes
        overlap, each counts its own); ``unlike_scenes``: the ok scenes
        whose shift score (:mod:`snakemap.inference.shift`) is above ``shift_threshold``, most
        unlike the training data first; ``fallback_scenes``: the ok scenes an ensemble mapped by
        its fallback members alone (:class:`snakemap.inference.predictor.Fallback`);
        ``zones``: ok scenes by CRS (``{"EPSG:32618": 12}``, plus ``"none"`` for maps without
        a CRS) in the last mosaic, ``{}`` before it.
    """
    root = Path(root)
    now = time.time() if now is None else now
    counts = {"ok": 0, "empty": 0, "corrupt": 0}
    corrupt: list[dict[str, str]] = []
    unlike_scenes: list[dict[str, Any]] = []
    fallback = 0
    recent = 0
    span: list[float] = []  # each summary's first start and last finish
    mapped: dict[str, float] = {}
    shards = shard_ids(len(scene_ids), shard_size)
    finished = [shard for shard in shards if (root / "shards" / f"{shard}.json").exists()]
    unfinished = sorted(set(shards) - set(finished))
    shards_done = len(finished)
    pending_ids = [s for shard in unfinished for s in shard_members(scene_ids, shard, shard_size)]
    # each finished scene left its map and its sentinel
    files = 2 * shards_done * shard_size
    sentinels = _sentinels(root / "scenes", pending_ids, files)
    live = _summary([SceneStatus.read(p).summary() for p in sentinels], now, shift_threshold)
    for summary in [*_shard_summaries(root, finished, now, shift_threshold), live]:
        for status in counts:
            counts[status] += summary[status]
        corrupt += summary["corrupt_scenes"]
        unlike_scenes += summary["unlike_scenes"]
        fallback += summary["fallback"]
        recent += summary["recent"]
        span += [t for t in (summary["first_start"], summary["last_finish"]) if t is not None]
        for name, ha in summary["mapped_ha"].items():
            mapped[name] = mapped.get(name, 0.0) + ha
    done = sum(counts.values())
    pending = len(scene_ids) - done
    per_hour = recent / RECENT_S * 3600
    hours = (max(span) - min(span)) / 3600 if span else 0.0
    return {
        "total": len(scene_ids),
        **counts,
        "pending": pending,
        "done_pct": 100.0 * done / len(scene_ids) if scene_ids else 100.0,
        "scenes_per_hour": per_hour,
        "run_scenes_per_hour": done / hours if hours > 0 else 0.0,
        "eta_s": pending / per_hour * 3600 if per_hour > 0 else (0.0 if pending == 0 else None),
        "shards": len(shards),
        "shards_done": shards_done,
        "corrupt_scenes": corrupt,
        "unlike_scenes": sorted(unlike_scenes, key=lambda e: -e["shift"]),
        "shift_threshold": shift_threshold,
        "fallback_scenes": fallback,
        "mapped_ha": mapped,
        "zones": zones(root),
    }


def _summary(entries: Sequence[dict[str, Any]], now: float, shift_threshold: float) -> dict[str, Any]:
    """Counts by state, the corrupt scenes, the scenes unlike the training data, hectares per
    class of the ok maps and how many finished in the last ``RECENT_S``."""
    summary: dict[str, Any] = {
        "ok": 0,
        "empty": 0,
        "corrupt": 0,
        "corrupt_scenes": [],
        "unlike_scenes": unlike(entries, shift_threshold),
        # mapped by an ensemble's fallback members alone (inference.predictor.Fallback)
        "fallback": sum(1 for e in entries if e.get("fallback") and e["status"] == "ok"),
        "recent": 0,
        "mapped_ha": {},
        "first_start": min((e["started"] for e in entries if e.get("started")), default=None),
        "last_finish": max((e["finished"] for e in entries if e.get("finished")), default=None),
    }
    for e in entries:
        for name, ha in (e.get("class_ha") or {}).items():
            summary["mapped_ha"][name] = summary["mapped_ha"].get(name, 0.0) + ha
        summary[e["status"]] += 1
        if e["status"] == "corrupt":
            summary["corrupt_scenes"].append({"scene_id": e["scene_id"], "reason": e.get("reason", "")})
        if e.get("finished") and now - e["finished"] <= RECENT_S:
            summary["recent"] += 1
    return summary


def _shard_summaries(
    root: Path, shards: Sequence[str], now: float, shift_threshold: float
) -> list[dict[str, Any]]:
    """:func:`_summary` of each finished shard's manifest.

    A million scenes' entries take seconds to parse, and progress is asked for again and again
    while a run goes: the summaries are kept in ``{root}/shard-counts.json`` under each
    manifest's size and mtime, and a manifest is parsed again only when it changed (a rerun) or
    when it is recent enough to hold scenes that count for the throughput.
    """
    cache_path = root / COUNTS_CACHE
    try:
        cache = read_json(cache_path)
        if not isinstance(cache, dict):
            raise ValueError(f"{cache_path} is not a table of shards")
    except (OSError, ValueError):
        cache = {}
    kept, summaries, changed = {}, [], False
    for shard in shards:
        stat = (root / "shards" / f"{shard}.json").stat()
        key = f"{stat.st_size}:{stat.st_mtime_ns}:{shift_threshold}"
        entry: Any = cache.get(shard)
        recent = now - stat.st_mtime <= RECENT_S
        if not _usable(entry, key) or recent:
            manifest = read_json(root / "shards" / f"{shard}.json")
            summary = _summary(manifest["scenes"], now, shift_threshold)
            # the job's start (models loaded, scenes listed) counts for the run's rate
            starts = [t for t in (summary["first_start"], manifest.get("started")) if t is not None]
            summary["first_start"] = min(starts) if starts else None
            entry = {"key": key, "summary": summary}
            changed = True
        kept[shard] = entry
        # a manifest written before the last RECENT_S holds no recent scene, whatever was kept
        summaries.append(entry["summary"] if recent else {**entry["summary"], "recent": 0})
    if changed or set(cache) != set(kept):
        with contextlib.suppress(OSError):  # a read-only results folder: no cache
            write_json(cache_path, kept)
    return summaries


#: what each kept shard summary holds (an older summary without one is made again)
SUMMARY_KEYS = (
    "ok", "empty", "corrupt", "corrupt_scenes", "unlike_scenes", "fallback", "recent", "mapped_ha",
    "first_start", "last_finish",
)  # fmt: skip


def _usable(entry: Any, key: str) -> bool:
    """A kept summary of the manifest as it is now (and of the expected shape)."""
    return (
        isinstance(entry, dict)
        and entry.get("key") == key
        and isinstance(entry.get("summary"), dict)
        and all(k in entry["summary"] for k in SUMMARY_KEYS)
    )


def _sentinels(scenes: Path, scene_ids: Sequence[str], files: int) -> list[Path]:
    """The sentinels that exist among those of ``scene_ids`` (the scenes of unfinished shards).

    Whichever costs fewer system calls: one ``stat`` per scene when they are fewer than the
    ``files`` the folder is thought to hold (late in a run: a shard or two in flight beside a
    million finished scenes), else one listing of the folder (early: a million pending scenes,
    few files).
    """
    if not scene_ids or not scenes.is_dir():
        return []
    if len(scene_ids) < files:
        return [p for p in (scenes / f"{s}.json" for s in scene_ids) if p.exists()]
    existing = {e.name[:-5] for e in os.scandir(scenes) if e.name.endswith(".json")}
    return [scenes / f"{s}.json" for s in scene_ids if s in existing]


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
        f"shards {p['shards_done']}/{p['shards']}; {p['scenes_per_hour']:.0f} scenes/h in the last "
        f"10 min, {p.get('run_scenes_per_hour', 0.0):.0f} over the run; ETA {eta}"
    ]
    if p.get("zones"):
        lines.append("  mosaic: " + ", ".join(f"{k} {n}" for k, n in p["zones"].items()))
    if p.get("mapped_ha"):
        lines.append("  mapped: " + ", ".join(f"{k} {v:,.1f} ha" for k, v in p["mapped_ha"].items()))
    lines += [f"  corrupt: {c['scene_id']}: {c['reason']}" for c in p["corrupt_scenes"]]
    unlike_scenes = p.get("unlike_scenes") or []
    if unlike_scenes:
        shown = ", ".join(f"{u['scene_id']} ({u['shift']:.2f})" for u in unlike_scenes[:10])
        more = f" and {len(unlike_scenes) - 10} more" if len(unlike_scenes) > 10 else ""
        lines.append(
            f"  unlike the training data (shift > {p['shift_threshold']:g}): {len(unlike_scenes)} scenes: "
            f"{shown}{more}"
        )
    if p.get("fallback_scenes"):
        lines.append(f"  mapped by the ensemble's fallback members alone: {p['fallback_scenes']} scenes")
    return "\n".join(lines)
