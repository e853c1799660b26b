"""Train one model with Lightning: resumable, with best and last checkpoints and a metrics table.

Layout of one training job, ``results/models/{id}[/fold{k}]/``:

- ``config.yaml``: the resolved config (model parameters, classes, bands, statistics, fold).
- ``best.ckpt`` (by ``monitor``), ``last.ckpt``, ``metrics.csv`` (one row per epoch): published
  atomically when training ends.
- ``train/``: the working state while training runs: ``checkpoints/{best,last}.ckpt`` written
  atomically every epoch, ``logs/version_N/metrics.csv`` (Lightning's CSVLogger, one version per
  attempt) and ``fingerprint.json``. A job killed at any moment starts again from
  ``checkpoints/last.ckpt`` (the epoch counter continues); an unreadable one is kept aside and the
  job restarts from the best checkpoint or from scratch (``resume_fallback``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import yaml
from lightning.fabric.plugins.environments.lightning import LightningEnvironment
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from snakemap.core.io import atomic_path, read_json, write_csv
from snakemap.core.model_sections import ModelOptions
from snakemap.core.registry import task_named
from snakemap.data.stats import Normalizer
from snakemap.plan.grid import learning_params
from snakemap.training.boosting import train_booster
from snakemap.training.console import EpochLine, progress_bar, quiet_lightning
from snakemap.training.datasets import ChipDataModule, ChipDataset, chip_paths
from snakemap.training.resume import AtomicCheckpointIO, JobData, job_fingerprint, pick_resume, prepare_state

log = logging.getLogger(__name__)


def _select(
    indexes: Sequence[Path], keep: pd.DataFrame | None
) -> tuple[list[tuple[Path, np.ndarray]], np.ndarray]:
    """Per scene, the chip numbers to use (all, or those in ``keep``), and their target flags."""
    chosen, flags = [], []
    for index in indexes:
        table = pd.read_parquet(index)
        if keep is not None and len(table):
            wanted = keep.loc[keep["scene_id"] == table["scene_id"].iloc[0], "chip"]
            table = table[table["chip"].isin(wanted)]
        if len(table):
            chosen.append((Path(index), table["chip"].to_numpy()))
            flags.append(table["target_fraction"].to_numpy() > 0)
    return chosen, (np.concatenate(flags) if flags else np.zeros(0, dtype=bool))


def held_out_fold(params: dict[str, Any], fold: int | None) -> int | None:
    """The fold of the training scenes that a job does not train on, or None (it trains on all).

    ``fold`` when the job has one; otherwise fold 0 for ``validation: fold`` and None for
    ``validation: calval`` (which validates on the calval sites instead).
    """
    if fold is not None:
        return fold
    return None if params.get("validation", "fold") == "calval" else 0


def split_chips(data: JobData, opts: ModelOptions, fold: int | None) -> tuple[Any, Any, np.ndarray]:
    """The training and validation chips of one job, and the training chips' target flags."""
    folds = pd.read_parquet(data.folds)
    held = held_out_fold(opts.model_dump(), fold)
    if opts.validation == "calval":
        train, flags = _select(data.train_indexes, folds if held is None else folds[folds["fold"] != held])
        val, _ = _select(data.calval_indexes, None)
        if not val:
            raise ValueError("validation: calval, but the calval scenes have no chips")
    else:
        train, flags = _select(data.train_indexes, folds[folds["fold"] != held])
        val, _ = _select(data.train_indexes, folds[folds["fold"] == held])
    if not train or not val:
        raise ValueError(f"no {'training' if not train else 'validation'} chips for this job (fold {fold})")
    return train, val, flags


def resolve_bands(bands: list[str] | None, available: list[str]) -> list[str]:
    """The model's input band names (None: all), checked against the cleaned bands."""
    if bands is None:
        return list(available)
    missing = [b for b in bands if b not in available]
    if missing:
        raise ValueError(f"bands {missing} are not among the cleaned bands {available}")
    return list(bands)


def merge_metrics(logs: Path) -> pd.DataFrame:
    """One row per epoch from the CSVLogger files of all attempts; later attempts win."""
    frames = [
        pd.read_csv(p)
        for p in sorted(logs.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    ]
    frames = [f for f in frames if len(f) and "epoch" in f]
    if not frames:
        return pd.DataFrame(columns=["epoch"])
    rows = pd.concat(frames, ignore_index=True)
    # Lightning logs train and validation values on separate rows: merge them per epoch.
    merged = rows.groupby("epoch", as_index=False).last()
    return merged.drop(columns=[c for c in ("step",) if c in merged]).sort_values("epoch")


def _trainer_setup(gpus: int) -> dict[str, Any]:
    if gpus > 0 and torch.cuda.is_available():
        devices = min(gpus, torch.cuda.device_count())
        setup: dict[str, Any] = {
            "accelerator": "gpu",
            "devices": devices,
            "precision": "bf16-mixed",
            "strategy": "ddp" if devices > 1 else "auto",
        }
        if devices > 1:
            # One SLURM task holds all the job's GPUs: Lightning launches the DDP processes itself
            # instead of expecting srun to start one task per GPU.
            setup["plugins"] = [LightningEnvironment()]
        return setup
    if gpus > 0:
        log.warning("%d GPU(s) asked for but CUDA is not available: training on the CPU", gpus)
    return {"accelerator": "cpu", "devices": 1, "precision": "32-true", "strategy": "auto"}


def resolve_job(
    opts: ModelOptions, fold: int | None, classes: list[str], ignore_index: int, stats: dict[str, Any]
) -> dict[str, Any]:
    """A job's resolved config (``config.yaml``): what it learns, without its resources.

    Args:
        opts: the options as the task reads them (its ``model_options`` hook).
        stats: the band statistics (``bands.json``), which give the input bands' mean and std.
    """
    available = [b["name"] for b in stats["bands"]]
    if isinstance(opts.bands, str):
        raise ValueError(f"bands {opts.bands!r} names a band set: expand the grid with its band_sets first")
    bands = resolve_bands(opts.bands, available)
    channels = [available.index(b) for b in bands]
    mean = [float(stats["bands"][c]["mean"]) for c in channels]
    std = [float(stats["bands"][c]["std"]) or 1.0 for c in channels]
    return {
        "params": learning_params(opts.resolved()),
        "fold": fold,
        "classes": classes,
        "ignore_index": ignore_index,
        "bands": bands,
        "mean": mean,
        "std": std,
    }


def train_job(
    out: str | os.PathLike[str],
    params: dict[str, Any],
    fold: int | None,
    classes: list[str],
    ignore_index: int,
    data: JobData,
    gpus: int | None = None,
    cpus: int | None = None,
    task_name: str | None = None,
) -> Path:
    """Train one job into ``out`` (see the module docstring); return the best checkpoint.

    Args:
        out: the job's folder, ``results/models/{id}[/fold{k}]``.
        params: the model's resolved parameters (:class:`ModelOptions` fields; its resources
            ``gpus``, ``cpus``, ``mem_mb`` and ``runtime`` may be left out and are ignored).
        fold: the held-out fold, or None.
        classes, ignore_index: from the labels config.
        data: the chip tables, folds and statistics.
        gpus, cpus: GPUs and CPU cores given to the job (its resources); None uses ``params``'.
        task_name: the config's ``task`` (:mod:`snakemap.core.registry`; None: the default), whose
            hooks read the options and build the Lightning module (``classes`` empty for a task
            without labels).
    """
    task = task_named(task_name)
    opts = task.hook("model_options")(ModelOptions(**params))
    gpus = opts.gpus if gpus is None else gpus
    cpus = opts.cpus if cpus is None else cpus
    out = Path(out)
    work = out / "train"
    stats = read_json(data.stats)
    resolved = resolve_job(opts, fold, classes, ignore_index, stats)
    if task.recorded:
        resolved["task"] = task.name
    bands, mean, std = resolved["bands"], resolved["mean"], resolved["std"]
    channels = [[b["name"] for b in stats["bands"]].index(b) for b in bands]
    prepare_state(work, job_fingerprint(resolved, data))
    with atomic_path(out / "config.yaml", suffix=".yaml") as tmp:
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))

    quiet_lightning()
    L.seed_everything(opts.seed, workers=True)
    train, val, flags = split_chips(data, opts, fold)
    norm = Normalizer(np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32))
    train_set = ChipDataset(train, channels, norm, opts.normalize)
    val_set = ChipDataset(val, channels, norm, opts.normalize)
    if opts.family == "lightgbm":
        return train_booster(out, opts, resolved, train_set, val_set, flags, cpus)
    module = ChipDataModule(
        train_set,
        val_set,
        opts.batch_size,
        opts.balance,
        flags,
        num_workers=max(0, cpus - 1) if gpus else 0,
        seed=opts.seed,
        samples_per_epoch=opts.samples_per_epoch,
    )
    chip_size = int(np.load(chip_paths(train[0][0]).image, mmap_mode="r").shape[-1]) if train else 0
    module_task: L.LightningModule = task.hook("lightning_module")(
        opts, classes, bands, mean, std, ignore_index, chip_size
    )
    mode = "min" if opts.monitor.endswith(("loss", "rmse", "ratio")) else "max"
    checkpoints = work / "checkpoints"
    # Two checkpoints, each overwritten in place: Lightning's save_last only writes when a new
    # best was saved, which would make last.ckpt the best one and lose epochs on a resume.
    callbacks: list[Any] = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="best",
            monitor=opts.monitor,
            mode=mode,
            save_top_k=1,
            enable_version_counter=False,
        ),
        ModelCheckpoint(
            dirpath=checkpoints, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
        ),
    ]
    if opts.early_stopping:
        callbacks.append(EarlyStopping(monitor=opts.monitor, mode=mode, patience=opts.early_stopping))
    callbacks.append(EpochLine(opts.monitor, mode))
    resume = pick_resume(checkpoints, opts.resume_fallback)
    if resume is not None:
        log.info("resuming from %s (epoch %d)", resume, torch.load(resume, weights_only=True)["epoch"])
    setup = _trainer_setup(gpus)
    trainer = L.Trainer(
        max_epochs=opts.epochs,
        callbacks=callbacks,
        logger=CSVLogger(save_dir=work, name="logs", flush_logs_every_n_steps=1),
        plugins=[AtomicCheckpointIO(), *setup.pop("plugins", [])],
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=progress_bar(),
        **setup,
    )
    trainer.fit(module_task, datamodule=module, ckpt_path=resume, weights_only=True)
    if trainer.global_rank == 0:
        _publish(out, work)
    return out / "best.ckpt"


def _publish(out: Path, work: Path) -> None:
    """Copy the finished state to the job's outputs, atomically; drop the resumable state."""
    checkpoints = work / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        with atomic_path(out / name, suffix=".ckpt") as tmp:
            shutil.copyfile(checkpoints / name, tmp)
    write_csv(merge_metrics(work / "logs"), out / "metrics.csv")
    # Finished: a later run (new inputs, forced) starts afresh instead of resuming this one.
    shutil.rmtree(checkpoints)
