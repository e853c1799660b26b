"""The files of a shard outside its runner: the lock a shard job holds on
``shards/{shard}.lock`` (``flock``: the kernel frees it when a job dies), and the ok scenes'
maps that finished shards' manifests (``shards/{shard}.json``) list, for the mosaic."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from snakemap.core.io import read_json


@contextlib.contextmanager
def shard_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; fail at once if another live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(
                f"{path} is held by another running job: the shard is being applied already"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ok_scene_maps(shard_manifests: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The class maps of the ok scenes listed in shard manifests (in ``{root}/scenes/``)."""
    maps = []
    for path in map(Path, shard_manifests):
        scenes = path.parent.parent / "scenes"
        maps += [scenes / f"{e['scene_id']}.tif" for e in read_json(path)["scenes"] if e["status"] == "ok"]
    return maps
