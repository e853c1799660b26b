"""Shards: fixed slices of the apply scenes in manifest order, one job each."""

from __future__ import annotations

from collections.abc import Sequence

#: shard ids: shard-00000, shard-00001, ...
SHARD_PATTERN = r"shard-[0-9]{5}"


def shard_ids(n_scenes: int, size: int) -> list[str]:
    """The ids of the shards of ``n_scenes`` scenes in manifest order."""
    return [f"shard-{k:05d}" for k in range((n_scenes + size - 1) // size)]


def shard_members(scene_ids: Sequence[str], shard: str, size: int) -> list[str]:
    """The scenes of one shard: a fixed slice of the apply scenes in manifest order."""
    k = int(shard.split("-")[1])
    return list(scene_ids[k * size : (k + 1) * size])
