"""The Lightning module of semantic segmentation: model, losses, augmentation, validation scores."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from snakemap.core.config import ConfigError
from snakemap.core.metrics import scores
from snakemap.core.model_sections import DOWNSCALING_ARCHS, ModelOptions
from snakemap.tasks.augment import augment
from snakemap.tasks.networks import build_model


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
        #: augmentation settings (see :func:`snakemap.tasks.augment.augment`)
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
        return configure_optimizers(
            self.parameters(),
            self.optimizer_name,
            self.lr,
            self.weight_decay,
            self.scheduler_name,
            self.epochs,
        )


def configure_optimizers(
    params: Iterable[nn.Parameter],
    optimizer: str,
    lr: float,
    weight_decay: float,
    scheduler: str,
    epochs: int,
    monitor: str = "val_iou",
    mode: Literal["min", "max"] = "max",
) -> Any:
    """Lightning's ``configure_optimizers`` result for an optimizer and schedule by name (the
    ``plateau`` schedule watches ``monitor``, which improves in direction ``mode``)."""
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}: use adam, adamw, sgd")
    if scheduler == "cosine":
        sched: Any = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    elif scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)
    elif scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, patience=2)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": monitor}}
    else:
        return opt
    return {"optimizer": opt, "lr_scheduler": sched}


def model_options(opts: ModelOptions) -> ModelOptions:
    """The options as segmentation reads them: as given, with a segmentation network.

    Raises:
        ConfigError: naming the key, for a downscaling network.
    """
    if opts.arch in DOWNSCALING_ARCHS:
        raise ConfigError(f"models arch {opts.arch!r} is a downscaling network: set task: downscaling")
    if opts.normalize == "patch" or opts.consistency:
        raise ConfigError("models normalize: patch and consistency are for downscaling")
    return opts


def lightning_module(
    opts: ModelOptions,
    classes: list[str],
    bands: list[str],
    mean: list[float],
    std: list[float],
    ignore_index: int,
    chip_size: int,
) -> SegmentationTask:
    """The Lightning module of one training job (``chip_size``, the chips' side, is not needed)."""
    return SegmentationTask(
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
