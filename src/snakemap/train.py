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

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from lightning.pytorch.plugins.io import TorchCheckpointIO
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from snakemap.data import ChipDataModule, ChipDataset, augment
from snakemap.grid import ModelOptions, learning_params
from snakemap.io import atomic_path, read_json, write_json
from snakemap.metrics import scores
from snakemap.models import build_model
from snakemap.stats import Normalizer

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


class SegmentationTask(L.LightningModule):
    """Semantic segmentation of ``(batch, channels, H, W)`` images into ``len(classes)`` classes.

    The hyperparameters saved in every checkpoint make it self-contained for prediction: the
    architecture, the classes, the input band names and their normalisation (``normalize``:
    ``dataset`` with ``mean`` and ``std``, or ``scene``: each scene by its own statistics).
    """

    def __init__(
        self,
        arch: str,
        encoder_name: str,
        classes: list[str],
        band_names: list[str],
        mean: list[float],
        std: list[float],
        ignore_index: int = 255,
        encoder_weights: str | None = None,
        loss: dict[str, float] | None = None,
        class_weights: list[float] | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        epochs: int = 10,
        augment: dict[str, Any] | None = None,
        normalize: str = "dataset",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # The settings the hooks use, typed (``self.hparams`` holds the same values untyped).
        #: the class names, in the order of the model's outputs
        self.classes = classes
        #: the label value that is not scored
        self.ignore_index = ignore_index
        #: augmentation settings (see :func:`snakemap.data.augment`)
        self.augment_options: dict[str, Any] = augment or {}
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.scheduler_name = scheduler
        self.epochs = epochs
        self.model = build_model(arch, encoder_name, len(band_names), len(classes), encoder_weights)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.losses = nn.ModuleDict()
        terms = loss or {"ce": 1.0}
        for name in terms:
            if name == "ce":
                self.losses[name] = nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index)
            elif name == "dice":
                self.losses[name] = DiceLoss("multiclass", ignore_index=ignore_index)
            elif name == "focal":
                self.losses[name] = FocalLoss("multiclass", ignore_index=ignore_index)
            else:
                raise ValueError(f"unknown loss {name!r}: use ce, dice, focal")
        self.loss_weights = dict(terms)
        self.val_cm = MulticlassConfusionMatrix(len(classes), ignore_index=ignore_index)

    def on_fit_start(self) -> None:
        # channels_last speeds up convolutions with tensor cores; the batches follow suit.
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, classes, H, W)`` for images ``(batch, channels, H, W)``."""
        logits: torch.Tensor = self.model(x)
        return logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss: torch.Tensor = sum(w * self.losses[n](logits, labels) for n, w in self.loss_weights.items())
        return loss

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        if self.trainer.training:
            opts = self.augment_options
            images, labels = augment(
                images,
                labels,
                opts.get("flips", True),
                opts.get("rot90", True),
                float(opts.get("jitter", 0.0)),
                float(opts.get("gain", 0.0)),
                float(opts.get("offset", 0.0)),
                opts.get("rescale"),
                self.ignore_index,
            )
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = self._loss(self(images), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("val_loss", self._loss(logits, labels), on_epoch=True, prog_bar=True, batch_size=len(images))
        self.val_cm.update(logits.argmax(1), labels)

    def on_validation_epoch_end(self) -> None:
        result = scores(self.val_cm.compute().cpu().numpy(), self.classes)
        self.val_cm.reset()
        values = {"val_f1": result["macro"]["f1"], "val_acc": result["overall_accuracy"]}
        values.update({f"val_iou_{n}": c["iou"] for n, c in result["per_class"].items()})
        # An undefined score (no such pixel yet) is logged as 0 so checkpoints can compare.
        self.log_dict({k: float(np.nan_to_num(v)) for k, v in values.items()})
        self.log("val_iou", float(np.nan_to_num(result["macro"]["iou"])), prog_bar=True)

    def configure_optimizers(self) -> Any:
        params = self.parameters()
        lr, weight_decay = self.lr, self.weight_decay
        if self.optimizer_name == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=lr, momentum=0.9, weight_decay=weight_decay
            )
        elif self.optimizer_name == "adam":
            opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        elif self.optimizer_name == "adamw":
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        else:
            raise ValueError(f"unknown optimizer {self.optimizer_name!r}: use adam, adamw, sgd")
        if self.scheduler_name == "cosine":
            sched: Any = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs))
        elif self.scheduler_name == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, self.epochs // 3), gamma=0.1)
        elif self.scheduler_name == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=2)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_iou"}}
        else:
            return opt
        return {"optimizer": opt, "lr_scheduler": sched}


@dataclass
class JobData:
    """Where a job's data is: chip tables of the train (and calval) scenes, folds, statistics."""

    #: ``{scene}.index.parquet`` of every training scene
    train_indexes: list[Path]
    #: ``{scene}.index.parquet`` of every calval scene (for ``validation: calval``)
    calval_indexes: list[Path]
    folds: Path
    stats: Path


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
    held = held_out_fold(dataclasses.asdict(opts), fold)
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


def _fingerprint(config: dict[str, Any], data: JobData) -> str:
    """Changes when the job's resolved config (:func:`resolve_job`) or its inputs change: then old
    state is not resumed. The job's resources are not in it: more runtime or memory resumes."""
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
        "params": learning_params(dataclasses.asdict(opts)),
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
    """
    opts = ModelOptions(**params)
    gpus = opts.gpus if gpus is None else gpus
    cpus = opts.cpus if cpus is None else cpus
    out = Path(out)
    work = out / "train"
    stats = read_json(data.stats)
    resolved = resolve_job(opts, fold, classes, ignore_index, stats)
    bands, mean, std = resolved["bands"], resolved["mean"], resolved["std"]
    channels = [[b["name"] for b in stats["bands"]].index(b) for b in bands]
    fingerprint = _fingerprint(resolved, data)
    if work.exists() and (
        not (work / "fingerprint.json").exists()
        or read_json(work / "fingerprint.json").get("sha256") != fingerprint
    ):
        stale = work.with_name(f"train.stale-{time.strftime('%Y%m%dT%H%M%S')}")
        log.warning("training state in %s is for other parameters or inputs: moved to %s", work, stale)
        work.rename(stale)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "fingerprint.json", {"sha256": fingerprint})
    with atomic_path(out / "config.yaml", suffix=".yaml") as tmp:
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))

    L.seed_everything(opts.seed, workers=True)
    train, val, flags = split_chips(data, opts, fold)
    norm = Normalizer(np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32))
    module = ChipDataModule(
        ChipDataset(train, channels, norm, opts.normalize),
        ChipDataset(val, channels, norm, opts.normalize),
        opts.batch_size,
        opts.balance,
        flags,
        num_workers=max(0, cpus - 1) if gpus else 0,
        seed=opts.seed,
        samples_per_epoch=opts.samples_per_epoch,
    )
    task = SegmentationTask(
        opts.arch,
        opts.encoder_name,
        classes,
        bands,
        mean,
        std,
        ignore_index,
        opts.encoder_weights,
        opts.loss,
        opts.class_weights,
        opts.optimizer,
        opts.lr,
        opts.weight_decay,
        opts.scheduler,
        opts.epochs,
        opts.augment,
        opts.normalize,
    )
    mode = "min" if opts.monitor.endswith("loss") else "max"
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
        **setup,
    )
    trainer.fit(task, datamodule=module, ckpt_path=resume, weights_only=True)
    if trainer.global_rank == 0:
        _publish(out, work)
    return out / "best.ckpt"


def _publish(out: Path, work: Path) -> None:
    """Copy the finished state to the job's outputs, atomically; drop the resumable state."""
    checkpoints = work / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        with atomic_path(out / name, suffix=".ckpt") as tmp:
            shutil.copyfile(checkpoints / name, tmp)
    with atomic_path(out / "metrics.csv", suffix=".csv") as tmp:
        merge_metrics(work / "logs").to_csv(tmp, index=False)
    # Finished: a later run (new inputs, forced) starts afresh instead of resuming this one.
    shutil.rmtree(checkpoints)
