"""What training prints: one line per epoch, each line once, no progress-bar redraws in logs.

Lightning adds its own stream handler to its loggers, so with the root logger's every line of
theirs appeared twice in a job's log; :func:`quiet_lightning` leaves them to the root logger. Its
progress bar redraws a line per step: kept for a terminal, off when the output is a log file.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


def quiet_lightning() -> None:
    """Lightning's loggers print through the root logger alone (each line once)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def progress_bar() -> bool:
    """Lightning's progress bar only where someone watches it: a terminal."""
    return sys.stderr.isatty()


class EpochLine(L.Callback):
    """One log line per epoch: its number, the train and validation losses and the monitored
    metric (IoU for segmentation, RMSE or its ratio to bicubic for downscaling), with the best so far."""

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        found: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        value = found.get(self.monitor)
        if value is not None and (
            self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        ):
            self.best = value
        shown = [f"{k} {found[k]:.4f}" for k in ("train_loss", "val_loss") if k in found]
        if value is not None and self.monitor not in ("train_loss", "val_loss"):
            shown.append(f"{self.monitor} {value:.4f}")
        if self.best is not None:
            shown.append(f"best {self.monitor} {self.best:.4f}")
        log.info("epoch %d/%d: %s", trainer.current_epoch + 1, trainer.max_epochs or 0, ", ".join(shown))
