"""A training job's resumable state: atomic checkpoints, the fingerprint of what they were made
from, and which checkpoint to resume from (see :mod:`snakemap.training.train` for the job's layout)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from snakemap.core.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary name and renamed, read back with ``weights_only``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path, suffix=".ckpt") as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        checkpoint: dict[str, Any] = torch.load(path, map_location=map_location or "cpu", weights_only=True)
        return checkpoint


def job_fingerprint(config: dict[str, Any], data: JobData) -> str:
    """Changes when the job's resolved config (:func:`snakemap.training.train.resolve_job`) or its inputs
    change: then old state is not resumed. The job's resources are not in it: more runtime or
    memory resumes."""
    files = [data.folds, data.stats, *data.train_indexes, *data.calval_indexes]
    stamp = [(str(p), os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in files]
    return hashlib.sha256(json.dumps([config, stamp], sort_keys=True, default=str).encode()).hexdigest()


def pick_resume(checkpoints: Path, fallback: str) -> Path | None:
    """The checkpoint to resume from: ``last.ckpt`` when readable, else per ``fallback``.

    An unreadable ``last.ckpt`` is never ignored silently: it is logged and moved to
    ``last.ckpt.corrupt-<time>`` in the folder above (the job's ``train/``, which outlives it).
    """
    last = checkpoints / "last.ckpt"
    if not last.exists():
        return None
    try:
        torch.load(last, map_location="cpu", weights_only=True)
        return last
    except Exception as exc:  # noqa: BLE001 - any failure to read it means it is unusable
        aside = checkpoints.parent / f"last.ckpt.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
        last.rename(aside)
        log.error(
            "last checkpoint %s is unreadable (%s: %s); kept aside as %s",
            last,
            type(exc).__name__,
            exc,
            aside,
        )
    best = checkpoints / "best.ckpt"
    if fallback == "best" and best.exists():
        try:
            torch.load(best, map_location="cpu", weights_only=True)
            log.warning("resuming from the best checkpoint %s instead", best)
            return best
        except Exception as exc:  # noqa: BLE001 - unreadable as well: train from scratch
            log.error("best checkpoint %s is unreadable too (%s)", best, exc)
    log.warning("restarting training from scratch")
    return None


def prepare_state(work: Path, fingerprint: str) -> None:
    """Make ``work`` the state of a job with this fingerprint (:func:`job_fingerprint`).

    State left there for other parameters or inputs is not resumed: it is moved aside to
    ``train.stale-<time>``. The fingerprint is then recorded in ``work/fingerprint.json``.
    """
    if work.exists() and (
        not (work / "fingerprint.json").exists()
        or read_json(work / "fingerprint.json").get("sha256") != fingerprint
    ):
        stale = work.with_name(f"train.stale-{time.strftime('%Y%m%dT%H%M%S')}")
        log.warning("training state in %s is for other parameters or inputs: moved to %s", work, stale)
        work.rename(stale)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "fingerprint.json", {"sha256": fingerprint})


@dataclass
class JobData:
    """Where a job's data is: chip tables of the train (and calval) scenes, folds, statistics."""

    #: ``{scene}.index.parquet`` of every training scene
    train_indexes: list[Path]
    #: ``{scene}.index.parquet`` of every calval scene (for ``validation: calval``)
    calval_indexes: list[Path]
    folds: Path
    stats: Path
