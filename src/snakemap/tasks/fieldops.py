"""Downscaling's array operations: degrade a field, fill its gaps, interpolate it, and downscale a
whole grid with a model window by window.

A field is a float32 array, NaN where it has no data. A scale factor ``s`` maps a low-resolution
(LR) cell onto an ``s x s`` block of high-resolution (HR) cells, aligned at the top-left corner:
LR cell ``(i, j)`` covers HR rows ``i*s .. i*s+s-1``. Training pairs are made by degrading an HR
field (:func:`block_mean`); interpolation uses cell centres (``align_corners=False``), which is
where a block mean of a smooth field sits, so a linear field is reproduced exactly away from the
edges.

Normalisation is per grid: a grid's own mean and standard deviation (of its valid cells), in
training (the scene's statistics, in the chip index) and in prediction (the input grid's), so a
grid from another region or in other units needs no statistics fitted elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from snakemap.data.chips import origins_inside

Method = Literal["nearest", "bilinear", "bicubic"]
METHODS: tuple[Method, ...] = ("bicubic", "bilinear", "nearest")


def block_mean(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``(..., H, W)`` -> ``(..., H // s, W // s)``: each block's mean over its finite cells.

    A block without any finite cell is NaN; rows and columns beyond a multiple of ``s`` are
    dropped. Nodata never enters a mean, so it never leaks into a valid LR cell.
    """
    if scale == 1:
        return x
    lead = x.shape[:-2]
    h, w = x.shape[-2] // scale * scale, x.shape[-1] // scale * scale
    flat = x[..., :h, :w].reshape(-1, 1, h, w)
    valid = torch.isfinite(flat)
    sums = F.avg_pool2d(torch.where(valid, flat, 0.0), scale) * scale**2
    counts = F.avg_pool2d(valid.to(flat.dtype), scale) * scale**2
    out = torch.where(counts > 0, sums / counts.clamp(min=1), torch.nan)
    return out.reshape(*lead, h // scale, w // scale)


def degrade(field: np.ndarray, scale: int) -> np.ndarray:
    """:func:`block_mean` of a numpy field ``(..., H, W)``, as float32."""
    return block_mean(torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32)), scale).numpy()


def fill_nearest(field: np.ndarray) -> np.ndarray:
    """``(..., H, W)``: every non-finite cell takes the value of the nearest finite cell of its
    own 2-D slice (a slice with none becomes 0). Returns a new float32 array."""
    out = np.array(field, dtype=np.float32)
    flat = out.reshape(-1, *out.shape[-2:])
    for plane in flat:
        invalid = ~np.isfinite(plane)
        if not invalid.any():
            continue
        if invalid.all():
            plane[:] = 0.0
            continue
        _, (rows, cols) = ndimage.distance_transform_edt(invalid, return_indices=True)
        plane[invalid] = plane[rows[invalid], cols[invalid]]
    return out


def upsample(x: torch.Tensor, scale: int, method: Method = "bicubic") -> torch.Tensor:
    """``(B, C, h, w)`` finite values -> ``(B, C, h*s, w*s)`` by the given interpolation."""
    if scale == 1:
        return x
    if method == "nearest":
        return F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.interpolate(x, scale_factor=scale, mode=method, align_corners=False)


def interpolate_grid(lr: np.ndarray, scale: int, method: Method) -> np.ndarray:
    """A baseline: an LR field ``(h, w)`` (NaN gaps) -> ``(h*s, w*s)`` by interpolation of the
    gap-filled field, NaN where the LR cell was."""
    filled = torch.from_numpy(fill_nearest(lr))[None, None]
    out = upsample(filled, scale, method)[0, 0].numpy()
    return np.where(nearest_mask(lr, scale), out, np.float32(np.nan)).astype(np.float32)


def nearest_mask(lr: np.ndarray, scale: int) -> np.ndarray:
    """``(h*s, w*s)`` bool: the HR cells whose LR cell holds data."""
    valid = np.isfinite(lr)
    return np.repeat(np.repeat(valid, scale, axis=0), scale, axis=1)


@dataclass(frozen=True)
class GridStats:
    """A grid's normalisation: ``(x - mean) / std`` over its valid cells."""

    mean: float
    std: float

    @classmethod
    def of(cls, field: np.ndarray) -> GridStats:
        """The statistics of a field's finite cells (std 1 for a constant or empty field)."""
        valid = field[np.isfinite(field)]
        if valid.size == 0:
            return cls(0.0, 1.0)
        std = float(valid.std())
        return cls(float(valid.mean()), std if std > 1e-6 * max(1.0, abs(float(valid.mean()))) else 1.0)


#: ``(lr (B, 1, h, w), aux (B, A, h*s, w*s) or None) -> (B, 1, h*s, w*s)``, all normalised
Downscaler = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _spans(length: int, window: int, margin: int) -> list[tuple[int, int, int]]:
    """Windows ``(origin, keep_start, keep_end)`` along one axis: each window keeps the cells at
    least ``margin`` from its inner edges, and the kept parts tile ``[0, length)`` exactly."""
    if length <= window:
        return [(0, 0, length)]
    origins = origins_inside(length, window, window - 2 * margin)
    spans, start = [], 0
    for i, origin in enumerate(origins):
        end = length if i == len(origins) - 1 else origin + window - margin
        spans.append((origin, start, end))
        start = end
    return spans


def downscale_grid(
    lr: np.ndarray,
    scale: int,
    model: Downscaler,
    aux: np.ndarray | None = None,
    stats: GridStats | None = None,
    aux_stats: list[GridStats] | None = None,
    window: int = 64,
    overlap: int = 8,
    batch_size: int = 8,
    device: torch.device | None = None,
) -> np.ndarray:
    """Downscale a whole LR field of any size, window by window with overlap and crop.

    Args:
        lr: ``(h, w)`` float32, NaN where there is no data.
        scale: the model's scale factor s.
        model: a :data:`Downscaler` in normalised units (see :class:`GridStats`).
        aux: ``(A, h*s, w*s)`` auxiliary HR channels on the output grid (NaN gaps filled), or None.
        stats: the field's normalisation; None: the input grid's own.
        aux_stats: the auxiliary channels' normalisation; None: their own.
        window: LR cells per window side; ``overlap``: LR cells of context cropped at each inner
            edge of a window (the kept parts tile the grid, so there are no seams to blend).
        batch_size: windows per forward pass.

    Returns:
        ``(h*s, w*s)`` float32 in the field's units, NaN where the input LR cell had no data.
    """
    device = device or torch.device("cpu")
    stats = stats or GridStats.of(lr)
    h, w = lr.shape
    x = (fill_nearest(lr) - stats.mean) / stats.std
    if aux is not None and len(aux):
        aux_stats = aux_stats or [GridStats.of(a) for a in aux]
        a_norm = fill_nearest(aux)
        for c, s in enumerate(aux_stats):
            a_norm[c] = (a_norm[c] - s.mean) / s.std
    else:
        a_norm = None
    out = np.full((h * scale, w * scale), np.nan, dtype=np.float32)
    tiles = [(ry, rx) for ry in _spans(h, window, overlap) for rx in _spans(w, window, overlap)]
    # Every window has one shape: the last along each axis is moved back to end at the edge.
    wh, ww = min(window, h), min(window, w)
    for b in range(0, len(tiles), batch_size):
        batch = tiles[b : b + batch_size]
        xs = torch.from_numpy(
            np.stack([x[None, oy : oy + wh, ox : ox + ww] for (oy, _, _), (ox, _, _) in batch])
        )
        auxs = None
        if a_norm is not None:
            crops = [
                a_norm[:, oy * scale : (oy + wh) * scale, ox * scale : (ox + ww) * scale]
                for (oy, _, _), (ox, _, _) in batch
            ]
            auxs = torch.from_numpy(np.stack(crops)).to(device)
        with torch.inference_mode():
            pred = model(xs.to(device), auxs).float().cpu().numpy()[:, 0]
        for p, ((oy, y0, y1), (ox, x0, x1)) in zip(pred, batch, strict=True):
            out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = p[
                (y0 - oy) * scale : (y1 - oy) * scale, (x0 - ox) * scale : (x1 - ox) * scale
            ]
    out = out * stats.std + stats.mean
    return np.where(nearest_mask(lr, scale), out, np.float32(np.nan)).astype(np.float32)
