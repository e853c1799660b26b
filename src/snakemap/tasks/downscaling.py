"""The Lightning module of downscaling: training pairs made by degrading chips, masked losses,
validation against bicubic, and loading a trained downscaler for prediction.

A batch is what :class:`snakemap.training.datasets.ChipDataset` gives with ``normalize: scene``: chips
``(batch, channels, H, W)`` standardised by their own grid's statistics (0 where no data; channel
0 the field, the others auxiliary fields) and ``(batch, H, W)`` labels, 1 where the field has
data. Each step degrades the field by the scale factor (block mean over valid cells), fills the
LR gaps from valid neighbours, and scores the prediction on the valid HR cells only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from snakemap.core.config import ConfigError
from snakemap.core.model_sections import ModelOptions, field_model_errors
from snakemap.tasks.augment import augment, flip_mean, flipped
from snakemap.tasks.fieldops import block_mean, fill_nearest, upsample
from snakemap.tasks.networks import read_checkpoint
from snakemap.tasks.segmentation import configure_optimizers
from snakemap.tasks.srnets import build_downscaler_network

#: the label value of a chip cell where the field has data (others are the ignore index)
VALID = 1


def training_pair(
    images: torch.Tensor, labels: torch.Tensor, scale: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, H, W)`` chips and ``(B, H, W)`` labels -> the LR input ``(B, 1, H/s, W/s)`` (gaps
    filled from valid neighbours) and the HR target ``(B, 1, H, W)`` (NaN where no data)."""
    hr = images[:, :1].masked_fill((labels != VALID)[:, None], float("nan"))
    lr = block_mean(hr, scale)
    filled = torch.from_numpy(fill_nearest(lr.detach().cpu().numpy())).to(lr.device)
    return filled, hr


def masked_loss(pred: torch.Tensor, target: torch.Tensor, terms: dict[str, float]) -> torch.Tensor:
    """Weighted sum of ``l1`` and ``mse`` over the cells where ``target`` is finite."""
    valid = torch.isfinite(target)
    if not valid.any():
        return pred.sum() * 0.0
    err = (pred - torch.nan_to_num(target))[valid]
    parts = {"l1": err.abs().mean(), "mse": (err**2).mean()}
    loss: torch.Tensor = sum(w * parts[name] for name, w in terms.items())  # type: ignore[assignment]
    return loss


class DownscalingTask(L.LightningModule):
    """Downscale a field by ``scale`` with one of :data:`snakemap.tasks.srnets.ARCHS`.

    The hyperparameters saved in every checkpoint make it self-contained for prediction: the
    architecture and its size, the scale factor and the input band names (the field first).
    """

    def __init__(
        self,
        arch: str,
        scale: int,
        band_names: list[str],
        features: int = 64,
        blocks: int = 8,
        loss: dict[str, float] | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        epochs: int = 10,
        augment: dict[str, Any] | None = None,
        normalize: str = "scene",
        consistency: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.scale = scale
        self.model = build_downscaler_network(
            arch, scale, len(band_names) - 1, features, blocks, normalize, consistency
        )
        self.loss_terms = dict(loss or {"l1": 1.0})
        unknown = sorted(set(self.loss_terms) - {"l1", "mse"})
        if unknown:
            raise ValueError(f"models loss: {unknown} are not downscaling losses: use l1, mse")
        self.augment_options: dict[str, Any] = augment or {}
        self.optimizer_name, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.scheduler_name, self.epochs = scheduler, epochs
        self._val = np.zeros(3)  # squared errors of the model and of bicubic, cells

    def forward(self, lr: torch.Tensor, aux: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Stage predictions for ``lr (B, 1, h, w)`` and ``aux (B, A, h*s, w*s)`` (normalised)."""
        out: list[torch.Tensor] = self.model(lr, aux)
        return out

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        if self.trainer.training:
            opts = self.augment_options
            images, labels = augment(images, labels, opts.get("flips", True), opts.get("rot90", True))
        return images, labels

    def _step(self, batch: Any) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        images, labels = batch
        lr, hr = training_pair(images, labels, self.scale)
        return self(lr, images[:, 1:]), lr, hr

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        preds, _, hr = self._step(batch)
        # Every stage against the target degraded to its own resolution (one stage but for
        # the recurrent network).
        loss = sum(
            (masked_loss(p, block_mean(hr, hr.shape[-1] // p.shape[-1]), self.loss_terms) for p in preds),
            torch.zeros((), device=hr.device),
        )
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(hr))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = np.zeros(3)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        preds, lr, hr = self._step(batch)
        valid = torch.isfinite(hr)
        bicubic = upsample(lr, self.scale)
        target = torch.nan_to_num(hr)
        self.log("val_loss", masked_loss(preds[-1], hr, self.loss_terms), on_epoch=True, batch_size=len(hr))
        self._val += [
            float(((preds[-1] - target)[valid] ** 2).sum()),
            float(((bicubic - target)[valid] ** 2).sum()),
            float(valid.sum()),
        ]

    def on_validation_epoch_end(self) -> None:
        sse, sse_bicubic, n = self._val
        rmse, rmse_bicubic = np.sqrt(sse / max(n, 1)), np.sqrt(sse_bicubic / max(n, 1))
        # In the grids' normalised units; the ratio to bicubic is unit-free.
        self.log("val_rmse", float(rmse), prog_bar=True)
        self.log("val_rmse_bicubic", float(rmse_bicubic))
        self.log("val_ratio", float(rmse / rmse_bicubic) if rmse_bicubic > 0 else 1.0, prog_bar=True)

    def configure_optimizers(self) -> Any:
        return configure_optimizers(
            self.parameters(),
            self.optimizer_name,
            self.lr,
            self.weight_decay,
            self.scheduler_name,
            self.epochs,
            monitor="val_rmse",
            mode="min",
        )


@dataclass
class TrainedDownscaler:
    """A trained downscaling network and what prediction needs to know about it."""

    #: maps normalised ``lr (B, 1, h, w)``, ``aux (B, A, h*s, w*s)`` to stage predictions (or, as
    #: an ONNX session, to the final one)
    network: Any
    scale: int
    #: the input bands: the field, then the auxiliary fields
    band_names: list[str]
    arch: str
    #: ``predict.tta``: the mean of the predictions of the four flips of each window
    #: (:data:`snakemap.tasks.augment.FLIPS`); a consistent network stays consistent
    tta: bool = False

    def __call__(self, lr: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
        """The final prediction ``(B, 1, h*s, w*s)``, normalised (a
        :data:`snakemap.tasks.fieldops.Downscaler`).

        A torch network returns one prediction per stage; an ONNX export its final one alone.
        """

        def final(dims: tuple[int, ...]) -> torch.Tensor:
            out: list[torch.Tensor] | torch.Tensor = self.network(
                flipped(lr, dims), None if aux is None else flipped(aux, dims)
            )
            return out[-1] if isinstance(out, list) else out

        return flip_mean(final, self.tta)


def load_downscaler(
    checkpoint: str | Path, map_location: str | torch.device = "cpu", tta: bool = False
) -> TrainedDownscaler:
    """Load a downscaling checkpoint for inference (``weights_only=True``, without Lightning);
    ``tta``: average over flips (``predict.tta``)."""
    hp, state = read_checkpoint(checkpoint, map_location)
    return replace(downscaler_from(hp, state, map_location), tta=tta)


def downscaler_from(
    hp: dict[str, Any], state: dict[str, torch.Tensor], map_location: str | torch.device = "cpu"
) -> TrainedDownscaler:
    """A :class:`TrainedDownscaler` from a checkpoint's (or a bundle's) hyperparameters and the
    network's state dict."""
    network = build_downscaler_network(
        hp["arch"],
        hp["scale"],
        len(hp["band_names"]) - 1,
        hp["features"],
        hp["blocks"],
        hp.get("normalize", "scene"),
        bool(hp.get("consistency", False)),
    )
    network.load_state_dict(state)
    network.to(map_location).eval()
    return TrainedDownscaler(network, int(hp["scale"]), list(hp["band_names"]), str(hp["arch"]))


def model_options(opts: ModelOptions) -> ModelOptions:
    """The options as downscaling reads them: every cleaned band (the field, then the auxiliary
    fields), each grid normalised by its own statistics, no class balance, and the segmentation
    defaults of ``loss`` and ``monitor`` read as ``{l1: 1.0}`` and ``val_rmse``.

    Raises:
        ConfigError: naming the key, for an architecture or loss the task does not have.
    """
    errors = field_model_errors(opts)
    if errors:
        raise ConfigError(f"models: {errors[0]}")
    loss = {"l1": 1.0} if opts.loss == {"ce": 1.0} else opts.loss
    unknown = sorted(set(loss) - {"l1", "mse"})
    if unknown:
        raise ConfigError(f"models loss {unknown} are segmentation losses: downscaling uses l1, mse")
    monitor = "val_rmse" if opts.monitor == "val_iou" else opts.monitor
    if monitor not in ("val_rmse", "val_ratio", "val_loss"):
        raise ConfigError(f"models monitor {monitor!r}: downscaling logs val_rmse, val_ratio, val_loss")
    normalize = "patch" if opts.normalize == "patch" else "scene"
    return opts.model_copy(
        update={"bands": None, "normalize": normalize, "balance": None, "loss": loss, "monitor": monitor}
    )


def lightning_module(
    opts: ModelOptions,
    classes: list[str],
    bands: list[str],
    mean: list[float],
    std: list[float],
    ignore_index: int,
    chip_size: int,
) -> DownscalingTask:
    """The Lightning module of one training job (no classes: the field is its own target).

    Raises:
        ConfigError: a chip side (``chips.size``) that the model's scale does not divide.
    """
    errors = field_model_errors(opts, chip_size)
    if errors:
        raise ConfigError(f"models: {errors[0]}")
    return DownscalingTask(
        opts.arch,
        opts.scale,
        bands,
        opts.features,
        opts.blocks,
        opts.loss,
        opts.optimizer,
        opts.lr,
        opts.weight_decay,
        opts.scheduler,
        opts.epochs,
        opts.augment,
        opts.normalize,
        opts.consistency,
    )


def downscaler_around(network: Any, hp: dict[str, Any]) -> TrainedDownscaler:
    """A trained downscaler whose network is ``network`` (an ONNX Runtime session, say)."""
    return TrainedDownscaler(network, int(hp["scale"]), list(hp["band_names"]), str(hp["arch"]))
