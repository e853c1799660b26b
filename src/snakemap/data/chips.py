"""Chips: cut training windows from a cleaned scene into three files per scene.

Cluster filesystems choke on millions of small files, so a scene's chips are stored together,
as arrays that the training data loader memory-maps:

- ``{scene}.image.npy``: float32 ``(chips, bands, size, size)``, NaN where invalid.
- ``{scene}.label.npy``: uint8 ``(chips, size, size)`` class indices, ``ignore_index`` elsewhere;
  for downscaling (a cleaned scene without ``label.tif``, cut with ``field=True``), 1 where the
  field (band 1) has data and ``ignore_index`` elsewhere.
- ``{scene}.index.parquet``: one row per chip: ``scene_id, chip, row, col, nodata_fraction,
  labelled_fraction, target_fraction, band_mean, band_std``; ``row, col`` is the chip's top-left
  pixel in the scene; ``band_mean`` and ``band_std`` are the whole scene's per-band statistics
  (lists, the same on every row of a scene) for ``normalize: scene``.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from snakemap.core.io import atomic_path
from snakemap.core.sections import ChipOptions
from snakemap.core.status import SceneStatus, status_path
from snakemap.data.stats import scene_normalizer

INDEX_COLUMNS = [
    "scene_id",
    "chip",
    "row",
    "col",
    "nodata_fraction",
    "labelled_fraction",
    "target_fraction",
    "band_mean",
    "band_std",
]


@dataclass
class ChipPaths:
    """The three files of one scene's chips."""

    image: Path
    label: Path
    index: Path


def origins_inside(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``size`` every ``stride`` that lie inside ``[0, length)`` and
    cover it (chips, and the windows a field is downscaled in; the predictor's windows overhang
    the edge instead: :func:`snakemap.inference.windows.padded_origins`).

    The last window is moved back to end at ``length``, so the far edge is covered too.
    A ``length`` shorter than ``size`` gives no window.
    """
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def select_chips(
    image: np.ndarray,
    label: np.ndarray,
    options: ChipOptions,
    target: list[int],
    ignore_index: int,
    scene_id: str = "",
) -> pd.DataFrame:
    """Choose the chips of one scene.

    Args:
        image: ``(bands, rows, cols)`` float32, NaN where invalid.
        label: ``(rows, cols)`` uint8 class indices.
        options: sizes, thresholds and sampling.
        target: the class indices that count as target.
        ignore_index: the label value of unlabelled pixels.
        scene_id: recorded in the table and mixed into the seed.

    Returns:
        The chip table (see the module docstring), sorted by row and column.
    """
    size = options.size
    stride = options.stride or size
    invalid = ~np.isfinite(image).all(axis=0)
    labelled = (label != ignore_index) & ~invalid
    is_target = np.isin(label, target) & labelled
    rows = []
    for r in origins_inside(image.shape[1], size, stride):
        for c in origins_inside(image.shape[2], size, stride):
            win = (slice(r, r + size), slice(c, c + size))
            nodata = float(invalid[win].mean())
            lab = float(labelled[win].mean())
            if nodata > options.max_nodata_fraction or lab == 0:
                continue
            rows.append((scene_id, 0, r, c, nodata, lab, float(is_target[win].mean()), None, None))
    table = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    rng = np.random.default_rng([options.seed, zlib.crc32(scene_id.encode())])
    background = table.index[table["target_fraction"] == 0]
    n_drop = len(background) - int(round(options.background_fraction * len(background)))
    if n_drop > 0:
        table = table.drop(rng.choice(background, size=n_drop, replace=False))
    if options.max_per_scene is not None and len(table) > options.max_per_scene:
        table = table.loc[np.sort(rng.choice(table.index, size=options.max_per_scene, replace=False))]
    table = table.sort_values(["row", "col"]).reset_index(drop=True)
    table["chip"] = np.arange(len(table))
    norm = scene_normalizer([image])
    table["band_mean"] = [norm.mean.tolist()] * len(table)
    table["band_std"] = [norm.std.tolist()] * len(table)
    return table


def write_chips(
    clean_dir: str | os.PathLike[str],
    paths: ChipPaths,
    options: ChipOptions,
    target: list[int],
    ignore_index: int,
    field: bool = False,
) -> int:
    """Cut the chips of one cleaned scene and write its three files atomically.

    A scene that is not ok, or has no label, gives zero chips (empty arrays and table).

    Args:
        field: a downscaling scene: the label is where band 1 has data (``target`` is ignored).

    Returns:
        The number of chips written.
    """
    status = SceneStatus.read(status_path(clean_dir))
    size = options.size
    image_file, label_file = Path(clean_dir) / "image.tif", Path(clean_dir) / "label.tif"
    if status.status == "ok" and (field or label_file.exists()):
        with rasterio.open(image_file) as src:
            image = src.read()
        if field:
            label = np.where(np.isfinite(image[0]), 1, ignore_index).astype(np.uint8)
            target = [1]
        else:
            with rasterio.open(label_file) as src:
                label = src.read(1)
        table = select_chips(image, label, options, target, ignore_index, status.scene_id)
    else:
        image = np.zeros((status.band_count or 0, 0, 0), dtype=np.float32)
        label = np.zeros((0, 0), dtype=np.uint8)
        table = pd.DataFrame(columns=INDEX_COLUMNS).astype(
            {"scene_id": str, "chip": int, "row": int, "col": int}
        )
    rows, cols = table["row"].to_numpy(), table["col"].to_numpy()
    _write_windows(paths.image, image.astype(np.float32, copy=False), rows, cols, size)
    _write_windows(paths.label, label.astype(np.uint8, copy=False), rows, cols, size)
    with atomic_path(paths.index, suffix=".parquet") as tmp:
        table.to_parquet(tmp, index=False)
    return len(table)


def _write_windows(path: Path, source: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> None:
    """Write ``source[..., r:r+size, c:c+size]`` for each chip as one ``(chips, ..., size, size)`` .npy."""
    shape = (len(rows), *source.shape[:-2], size, size)
    with atomic_path(path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=source.dtype, shape=shape)
        for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
            out[i] = source[..., r : r + size, c : c + size]
        out.flush()
        del out  # close the memory map before the rename
