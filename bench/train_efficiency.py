"""Training-loop efficiency: chips from disk through the DataLoader vs. the bare model step.

Writes chips (default 640 of 6 x 64 x 64, float32, with labels) as snakemap's chip files, then,
in one run, with the same model, batch size, loss and optimizer:

  loop   snakemap's training loop: Lightning fit over ChipDataModule (memory-mapped chips,
         normalisation, weighted sampling, augmentation), training batches only;
  bare   forward + backward + optimizer step on tensors already in memory.

It prints both in samples/s and their ratio (goal: loop / bare >= 0.90).

    .venv/bin/python bench/train_efficiency.py [--chips 640] [--batch-size 16] [--arch Unet]
        [--encoder resnet18] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from snakemap.data.chips import INDEX_COLUMNS
from snakemap.data.stats import Normalizer
from snakemap.tasks.segmentation import SegmentationTask
from snakemap.training.datasets import ChipDataModule, ChipDataset

CLASSES = ["land", "water", "reef", "cloud"]


class EpochTimer(L.Callback):
    """Wall time of the training batches of each epoch, validation excluded."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds: list[float] = []
        self.batches: list[int] = []

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.start = time.perf_counter()
        self.batches.append(0)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        self.batches[-1] += 1

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self.start)


def write_chips(folder: Path, n: int, bands: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    np.save(folder / "s.image.npy", rng.normal(0.1, 0.03, (n, bands, size, size)).astype(np.float32))
    np.save(folder / "s.label.npy", rng.integers(0, len(CLASSES), (n, size, size)).astype(np.uint8))
    table = pd.DataFrame({c: 0 for c in INDEX_COLUMNS}, index=range(n))
    table["scene_id"], table["chip"], table["target_fraction"] = "s", np.arange(n), rng.random(n) < 0.3
    table.to_parquet(folder / "s.index.parquet")
    return folder / "s.index.parquet"


def make_task(args: argparse.Namespace, bands: int) -> SegmentationTask:
    torch.manual_seed(0)
    return SegmentationTask(
        args.arch,
        args.encoder,
        CLASSES,
        [f"b{i}" for i in range(bands)],
        [0.1] * bands,
        [0.03] * bands,
        scheduler="none",
    )


def loop_rate(args: argparse.Namespace, index: Path, bands: int) -> tuple[float, int]:
    norm = Normalizer(np.full(bands, 0.1, np.float32), np.full(bands, 0.03, np.float32))
    data = ChipDataset([(index, np.arange(args.chips))], list(range(bands)), norm)
    flags = pd.read_parquet(index)["target_fraction"].to_numpy() > 0
    module = ChipDataModule(data, data, args.batch_size, 0.5, flags, num_workers=args.workers)
    timer = EpochTimer()
    gpu = args.device == "cuda"
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="bf16-mixed" if gpu else "32-true",
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(make_task(args, bands), datamodule=module)
    # The first epoch warms up (allocations, cudnn autotuning); the rest are measured.
    batches, seconds = sum(timer.batches[1:]), sum(timer.seconds[1:])
    return batches * args.batch_size / seconds, batches


def bare_rate(args: argparse.Namespace, bands: int, steps: int) -> float:
    device = torch.device(args.device)
    task = make_task(args, bands).to(device)
    task.train()
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, bands, args.size, args.size, generator=rng).to(device)
    y = torch.randint(0, len(CLASSES), (args.batch_size, args.size, args.size), generator=rng).to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = task._loss(task(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(max(3, steps // args.epochs)):  # warm-up, as the loop's first epoch
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chips", type=int, default=640)
    ap.add_argument("--bands", type=int, default=6)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--arch", default="Unet")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = write_chips(Path(tmp), args.chips, args.bands, args.size)
        loop, steps = loop_rate(args, index, args.bands)
        bare = bare_rate(args, args.bands, steps)
    print(
        f"device: {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}), "
        f"threads: {torch.get_num_threads()}, model: {args.arch}/{args.encoder}, batch: {args.batch_size}, "
        f"chips: {args.chips} x {args.bands} x {args.size} x {args.size}, measured steps: {steps}"
    )
    print(f"snakemap training loop (disk -> DataLoader -> step): {loop:8.1f} samples/s")
    print(f"bare fwd+bwd+step on in-memory tensors:            {bare:8.1f} samples/s")
    print(f"efficiency loop / bare:                            {loop / bare:8.3f}   (goal >= 0.90)")


if __name__ == "__main__":
    main()
