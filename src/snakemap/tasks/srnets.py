"""Super-resolution networks for downscaling, all residual on bicubic interpolation.

Every network maps ``lr (B, 1, h, w)`` (a normalised, gap-filled low-resolution field) and
``aux (B, A, h*s, w*s)`` (normalised auxiliary high-resolution channels, ``A`` may be 0) to a list
of predictions, one per stage: ``(B, 1, h*2**k, w*2**k)`` for the recurrent network's stages
``k = 1 .. log2(s)``, and the single ``(B, 1, h*s, w*s)`` for the others. The last is the output.

- ``SRCNN``: Dong et al. 2014 (9-1-5, 64 and 32 filters) on the bicubic upsampled field and the
  auxiliary channels, plus the bicubic field.
- ``RecurrentSRCNN``: one x2 SRCNN stage, its weights shared, applied log2(s) times (as DeepSD
  and DeepIceSheet stack x2 stages); each stage is trained against its own degraded target.
- ``EDSR``: Lim et al. 2017: residual blocks without batch norm at the low resolution, sub-pixel
  upsampling, then a fusion at the high resolution with the auxiliary channels.
- ``RCAN``: EDSR's blocks with channel attention (Zhang et al. 2018).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from snakemap.core.model_sections import DOWNSCALING_ARCHS as ARCHS
from snakemap.tasks.fieldops import block_mean, upsample


def _aux(aux: torch.Tensor | None) -> torch.Tensor | None:
    return aux if aux is not None and aux.shape[1] > 0 else None


class SRCNN(nn.Module):
    """SRCNN 9-1-5 on ``[bicubic(lr), aux]`` at the high resolution, residual on bicubic."""

    def __init__(self, scale: int, aux_channels: int = 0, features: int = 64) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(1 + aux_channels, features, 9, padding=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features // 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features // 2, 1, 5, padding=2),
        )

    def forward(self, lr: torch.Tensor, aux: torch.Tensor | None = None) -> list[torch.Tensor]:
        base = upsample(lr, self.scale)
        aux = _aux(aux)
        x = base if aux is None else torch.cat([base, aux], 1)
        return [base + self.body(x)]


class RecurrentSRCNN(nn.Module):
    """One x2 :class:`SRCNN` stage with shared weights, applied log2(s) times."""

    def __init__(self, scale: int, aux_channels: int = 0, features: int = 64) -> None:
        super().__init__()
        stages = math.log2(scale)
        if scale < 2 or stages != int(stages):
            raise ValueError(f"RecurrentSRCNN needs a scale that is a power of 2, got {scale}")
        self.scale, self.stages = scale, int(stages)
        self.stage = SRCNN(2, aux_channels, features)

    def forward(self, lr: torch.Tensor, aux: torch.Tensor | None = None) -> list[torch.Tensor]:
        aux = _aux(aux)
        outputs, x = [], lr
        for k in range(1, self.stages + 1):
            # the auxiliary channels at this stage's resolution
            a = None if aux is None else block_mean(aux, self.scale // 2**k)
            x = self.stage(x, a)[0]
            outputs.append(x)
        return outputs


class _ChannelAttention(nn.Module):
    def __init__(self, features: int, reduction: int = 8) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(features, max(1, features // reduction), 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(max(1, features // reduction), features, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated: torch.Tensor = x * self.gate(x)
        return gated


class _ResBlock(nn.Module):
    def __init__(self, features: int, attention: bool, res_scale: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features, 3, padding=1),
        ]
        if attention:
            layers.append(_ChannelAttention(features))
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.body(x) * self.res_scale
        return out


class EDSR(nn.Module):
    """EDSR (or, with ``attention``, RCAN-like) residual blocks at the low resolution, x2 (or x3)
    sub-pixel upsampling steps to ``s``, and two convolutions at the high resolution that see the
    auxiliary channels; residual on bicubic."""

    def __init__(
        self, scale: int, aux_channels: int = 0, features: int = 32, blocks: int = 8, attention: bool = False
    ) -> None:
        super().__init__()
        self.scale = scale
        # The auxiliary channels' block means join the field at the low resolution too.
        self.head = nn.Conv2d(1 + aux_channels, features, 3, padding=1)
        self.body = nn.Sequential(
            *[_ResBlock(features, attention) for _ in range(blocks)],
            nn.Conv2d(features, features, 3, padding=1),
        )
        steps: list[nn.Module] = []
        remaining = scale
        while remaining > 1:
            factor = 2 if remaining % 2 == 0 else remaining
            steps += [nn.Conv2d(features, features * factor**2, 3, padding=1), nn.PixelShuffle(factor)]
            remaining //= factor
        self.up = nn.Sequential(*steps)
        self.tail = nn.Sequential(
            nn.Conv2d(features + 1 + aux_channels, features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, 1, 3, padding=1),
        )

    def forward(self, lr: torch.Tensor, aux: torch.Tensor | None = None) -> list[torch.Tensor]:
        aux = _aux(aux)
        base = upsample(lr, self.scale)
        x = lr if aux is None else torch.cat([lr, block_mean(aux, self.scale)], 1)
        feats = self.head(x)
        feats = self.up(feats + self.body(feats))
        hr = [feats, base] if aux is None else [feats, base, aux]
        return [base + self.tail(torch.cat(hr, 1))]


def build_srnet(
    arch: str, scale: int, aux_channels: int = 0, features: int = 64, blocks: int = 8
) -> nn.Module:
    """A downscaling network by name (see :data:`ARCHS`)."""
    if arch == "SRCNN":
        return SRCNN(scale, aux_channels, features)
    if arch == "RecurrentSRCNN":
        return RecurrentSRCNN(scale, aux_channels, features)
    if arch in ("EDSR", "RCAN"):
        return EDSR(scale, aux_channels, features, blocks, attention=arch == "RCAN")
    raise ValueError(f"unknown downscaling arch {arch!r}: use one of {', '.join(ARCHS)}")


#: added to a patch's standard deviation (in the grid's standardised units) so that a flat patch
#: is not blown up
PATCH_STD_FLOOR = 0.05


class PatchStandardized(nn.Module):
    """A network that sees each LR patch standardised by its own mean and standard deviation, so
    that it learns the shape of the field rather than its absolute level and relief, and whose
    stage predictions are mapped back; with ``consistency`` each prediction is also corrected so
    that its block means equal the LR input (the output, averaged back down, is the input).

    Maps ``lr (B, 1, h, w)`` and ``aux (B, A, h*s, w*s)`` to the wrapped network's stage
    predictions ``[(B, 1, h*s_k, w*s_k)]``.
    """

    def __init__(
        self, network: nn.Module, scale: int, standardize: bool = True, consistency: bool = False
    ) -> None:
        super().__init__()
        self.network = network
        self.scale = scale
        self.standardize = standardize
        self.consistency = consistency

    def forward(self, lr: torch.Tensor, aux: torch.Tensor | None = None) -> list[torch.Tensor]:
        mean = lr.mean((2, 3), keepdim=True) if self.standardize else torch.zeros_like(lr[:, :, :1, :1])
        std = (
            lr.std((2, 3), correction=0, keepdim=True) + PATCH_STD_FLOOR
            if self.standardize
            else torch.ones_like(mean)
        )
        outs: list[torch.Tensor] = self.network((lr - mean) / std, aux)
        mapped = []
        for k, out in enumerate(outs):
            out = out * std + mean
            # the stages double the resolution (one stage: the whole scale); a static int, so that
            # an ONNX export keeps the window size dynamic
            s = self.scale // 2 ** (len(outs) - 1 - k)
            if self.consistency and s > 1:
                out = out + upsample(lr - F.avg_pool2d(out, s), s, "nearest")
            mapped.append(out)
        return mapped


def build_downscaler_network(
    arch: str,
    scale: int,
    aux_channels: int = 0,
    features: int = 64,
    blocks: int = 8,
    normalize: str = "scene",
    consistency: bool = False,
) -> nn.Module:
    """:func:`build_srnet`, wrapped in :class:`PatchStandardized` for ``normalize: patch`` or
    ``consistency`` (the plain network otherwise, whose checkpoints keep their layout)."""
    network = build_srnet(arch, scale, aux_channels, features, blocks)
    if normalize == "patch" or consistency:
        return PatchStandardized(network, scale, normalize == "patch", consistency)
    return network
