"""Training data: memory-mapped chips, normalised per band, sampled with balance, augmented.

A batch is a pair of tensors: images ``(batch, channels, size, size)`` float32, normalised with
the band statistics and 0 where the chip had no data, and labels ``(batch, size, size)`` int64
class indices with ``ignore_index`` for pixels not to learn from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from snakemap.data.chips import ChipPaths
from snakemap.data.stats import Normalizer

Batch = tuple[torch.Tensor, torch.Tensor]


def chip_paths(index: str | os.PathLike[str]) -> ChipPaths:
    """The three chip files of a scene from its ``{scene}.index.parquet`` path."""
    index = Path(index)
    stem = index.name.removesuffix(".index.parquet")
    return ChipPaths(index.with_name(f"{stem}.image.npy"), index.with_name(f"{stem}.label.npy"), index)


class ChipDataset(Dataset[Batch]):
    """Selected chips of several scenes, read from memory-mapped ``.npy`` files by batch.

    Args:
        chips: ``(index parquet, chip numbers)`` per scene.
        channels: positions of the model's input bands among the chips' bands.
        normalizer: the band statistics of those channels (``normalize: dataset``).
        normalize: ``dataset`` uses ``normalizer`` for every chip; ``scene`` standardises each
            chip by its own scene's statistics (the index's ``band_mean`` and ``band_std``).
    """

    def __init__(
        self,
        chips: Sequence[tuple[Path, np.ndarray]],
        channels: list[int],
        normalizer: Normalizer,
        normalize: str = "dataset",
    ) -> None:
        self.files = [chip_paths(index) for index, _ in chips]
        self.channels = channels
        self.normalizers = [normalizer] * len(self.files)
        if normalize in ("scene", "patch"):  # patch: the network standardises each patch further
            self.normalizers = [scene_statistics(index, channels) for index, _ in chips]
        # One row per sample: which file, which chip in it.
        self.file_of = np.concatenate([np.full(len(n), i) for i, (_, n) in enumerate(chips)] or [np.zeros(0)])
        self.chip_of = np.concatenate([np.asarray(n) for _, n in chips] or [np.zeros(0)]).astype(np.int64)
        self.file_of = self.file_of.astype(np.int64)
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.chip_of)

    def _arrays(self, f: int) -> tuple[np.ndarray, np.ndarray]:
        # Opened lazily, so that each DataLoader worker maps the files itself.
        if f not in self._maps:
            paths = self.files[f]
            self._maps[f] = (np.load(paths.image, mmap_mode="r"), np.load(paths.label, mmap_mode="r"))
        return self._maps[f]

    def __getitem__(self, i: int) -> Batch:
        images, labels = self.__getitems__([i])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch, one fancy-indexed read per scene file."""
        idx = np.asarray(indices, dtype=np.int64)
        first = self._arrays(int(self.file_of[idx[0]]))[0]
        images = np.empty((len(idx), len(self.channels), *first.shape[2:]), dtype=np.float32)
        labels = np.empty((len(idx), *first.shape[2:]), dtype=np.int64)
        for f in np.unique(self.file_of[idx]):
            where = np.flatnonzero(self.file_of[idx] == f)
            chips = self.chip_of[idx[where]]
            order = np.argsort(chips)  # memory maps read fastest in file order
            image, label = self._arrays(int(f))
            images[where[order]] = self.normalizers[int(f)](image[chips[order]][:, self.channels])
            labels[where[order]] = label[chips[order]]
        return torch.from_numpy(images), torch.from_numpy(labels)


def scene_statistics(index: str | os.PathLike[str], channels: Sequence[int]) -> Normalizer:
    """The scene's own band statistics stored in its chip table, for ``channels``."""
    table = pd.read_parquet(index, columns=["band_mean", "band_std"])
    if not len(table) or table["band_mean"].iloc[0] is None:
        raise ValueError(f"{index} has no scene statistics: cut its chips again (normalize: scene)")
    mean = np.asarray(table["band_mean"].iloc[0], dtype=np.float32)[list(channels)]
    std = np.asarray(table["band_std"].iloc[0], dtype=np.float32)[list(channels)]
    return Normalizer(mean, std)


def _pass_through(batch: Batch) -> Batch:
    """The dataset already returns whole batches."""
    return batch


class ChipDataModule(L.LightningDataModule):
    """Train and validation loaders over :class:`ChipDataset`.

    Args:
        train, val: the datasets.
        batch_size: samples per batch.
        target_share: with weighted sampling, the expected share of samples with target
            (None samples uniformly).
        train_has_target: per training sample, whether its chip has target pixels.
        num_workers: DataLoader worker processes.
        seed: seed of the samplers.
        samples_per_epoch: samples drawn (with replacement) per epoch; None: one pass.
    """

    def __init__(
        self,
        train: ChipDataset,
        val: ChipDataset,
        batch_size: int,
        target_share: float | None,
        train_has_target: np.ndarray,
        num_workers: int = 0,
        seed: int = 0,
        samples_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.samples_per_epoch = samples_per_epoch
        self.train, self.val = train, val
        self.batch_size = batch_size
        self.target_share = target_share
        self.train_has_target = train_has_target
        self.num_workers = num_workers
        self.seed = seed

    def _loader(self, dataset: ChipDataset, sampler: Any, drop_last: bool = False) -> DataLoader[Batch]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            # __getitems__ reads whole batches, so the collate function gets a batch, not torch's list
            collate_fn=_pass_through,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader[Batch]:
        generator = torch.Generator().manual_seed(self.seed)
        flags = self.train_has_target
        n = self.samples_per_epoch or len(flags)
        if self.target_share is not None and 0 < flags.sum() < len(flags):
            # Each group gets its share of the total weight, spread over its chips.
            weights = np.where(
                flags, self.target_share / flags.sum(), (1 - self.target_share) / (~flags).sum()
            )
            sampler: Any = WeightedRandomSampler(
                [float(w) for w in weights], n, replacement=True, generator=generator
            )
        elif self.samples_per_epoch:
            sampler = RandomSampler(self.train, replacement=True, num_samples=n, generator=generator)
        else:
            sampler = RandomSampler(self.train, generator=generator)
        # A last batch of one sample breaks batch normalisation: drop the remainder.
        return self._loader(self.train, sampler, drop_last=n > self.batch_size)

    def val_dataloader(self) -> DataLoader[Batch]:
        return self._loader(self.val, None)
