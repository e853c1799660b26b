"""Augmentation of a normalised training batch: flips, quarter turns, contrast and brightness,
another sensor's calibration (per-band gain and offset) and another resolution (a zoom).

A batch is ``images (batch, channels, H, W)`` float32 (normalised, 0 where no data) and
``labels (batch, H, W)`` int64 class indices (or a field, for downscaling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Batch = tuple[torch.Tensor, torch.Tensor]

#: the test-time views (``predict.tta``): the identity, a horizontal, a vertical and a double flip,
#: as the axes of an image batch ``(..., H, W)`` to flip. They form a group and each is its own
#: inverse, so a prediction of a view is brought back by flipping it the same way; unlike quarter
#: turns they keep a window's shape.
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def flipped(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``x (..., H, W)`` flipped along ``dims`` (one of :data:`FLIPS`); ``x`` itself for ``()``."""
    return x.flip(dims) if dims else x


def flip_mean(predict: Callable[[tuple[int, ...]], torch.Tensor], tta: bool) -> torch.Tensor:
    """The mean over :data:`FLIPS` (with ``tta``; else the identity alone) of ``predict(dims)``,
    the prediction ``(..., H, W)`` of the inputs flipped along ``dims``, each flipped back."""
    views = FLIPS if tta else FLIPS[:1]
    total = flipped(predict(views[0]), views[0])
    for dims in views[1:]:
        total = total + flipped(predict(dims), dims)
    return total / len(views)


def augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    flips: bool = True,
    rot90: bool = True,
    jitter: float = 0.0,
    gain: float = 0.0,
    offset: float = 0.0,
    rescale: Sequence[float] | None = None,
    ignore_index: int = 255,
    generator: torch.Generator | None = None,
) -> Batch:
    """Random geometric and radiometric augmentation of a normalised batch, per sample.

    Args:
        images: ``(batch, channels, H, W)`` normalised (0 = the mean, or no data), with ``H == W``
            when ``rot90``.
        labels: ``(batch, H, W)``.
        jitter: contrast factor in ``1 +- jitter`` and brightness offset in ``+- jitter``, all bands
            alike (in normalised units); 0 turns it off.
        gain, offset: per band and sample, ``x * g + o`` with ``g`` in ``1 +- gain`` and ``o`` in
            ``+- offset`` (normalised units): another sensor's calibration. In raw units a gain
            ``g`` is ``g * x + (g - 1) * mean / std`` here, an affine map of the same family.
        rescale: ``[min, max]``: the batch is zoomed by one factor drawn log-uniformly from the
            range (another resolution), bilinear for images and nearest for labels, then cropped
            back to ``H x W`` or padded with 0 and ``ignore_index``.
    """
    n = images.shape[0]
    device = images.device

    def uniform(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1).to(device)

    if flips:
        flip = torch.rand(n, generator=generator).to(device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
    if rot90:
        k = torch.randint(0, 4, (n,), generator=generator)
        images = torch.stack([torch.rot90(images[i], int(k[i]), dims=(-2, -1)) for i in range(n)])
        labels = torch.stack([torch.rot90(labels[i], int(k[i]), dims=(-2, -1)) for i in range(n)])
    if jitter > 0:
        images = images * (1 + uniform(n, 1, 1, 1) * jitter) + uniform(n, 1, 1, 1) * jitter
    if gain > 0 or offset > 0:
        c = images.shape[1]
        images = images * (1 + uniform(n, c, 1, 1) * gain) + uniform(n, c, 1, 1) * offset
    if rescale is not None:
        lo, hi = float(rescale[0]), float(rescale[1])
        u = float(torch.rand(1, generator=generator))
        images, labels = zoom(
            images, labels, float(np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))), ignore_index
        )
    return images, labels


def zoom(images: torch.Tensor, labels: torch.Tensor, factor: float, ignore_index: int = 255) -> Batch:
    """Zoom ``(batch, C, H, W)`` images and ``(batch, H, W)`` labels by ``factor``, keeping ``H x W``.

    ``factor > 1`` enlarges (objects span more pixels, as from a finer-resolution sensor) and
    keeps the centre; ``factor < 1`` shrinks (a coarser sensor) and pads the border with 0 and
    ``ignore_index``.
    """
    h, w = images.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size == (h, w):
        return images, labels
    big = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    lab = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].to(labels.dtype)
    if size[0] >= h:
        top, left = (size[0] - h) // 2, (size[1] - w) // 2
        return big[..., top : top + h, left : left + w], lab[..., top : top + h, left : left + w]
    out = images.new_zeros(images.shape)
    out_lab = labels.new_full(labels.shape, ignore_index)
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    out[..., top : top + size[0], left : left + size[1]] = big
    out_lab[..., top : top + size[0], left : left + size[1]] = lab
    return out, out_lab
