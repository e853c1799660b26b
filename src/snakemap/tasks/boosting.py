"""The gradient-boosting pixel family (``family: lightgbm``): per-pixel features and the booster
that maps them to class probabilities.

A pixel's features are its normalised bands (the cleaned bands and spectral indices the model
takes), and for every neighbourhood side ``s`` in ``scales`` each band's mean and standard
deviation over the ``s x s`` pixels around it (edges replicated). They are computed with torch
from the same normalised windows the networks get, so training (on chips) and prediction (through
the sliding windows, shards and ensembles of :mod:`snakemap.inference.predict`) see the same
features; the windows' ``overlap`` must be at least ``max(scales) // 2`` for seam-free maps.

The trained booster is LightGBM's own text model (never a pickle): a checkpoint's
``hyper_parameters["booster"]``, and ``booster.txt`` in a bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: the value of ``hyper_parameters["family"]`` of a booster's checkpoint
FAMILY = "lightgbm"


def feature_names(bands: Sequence[str], scales: Sequence[int]) -> list[str]:
    """The names of :func:`pixel_features`' channels: ``band``, then ``band:mean{s}`` and
    ``band:std{s}`` per scale."""
    names = list(bands)
    for s in scales:
        names += [f"{b}:mean{s}" for b in bands] + [f"{b}:std{s}" for b in bands]
    return names


def pixel_features(x: torch.Tensor, scales: Sequence[int]) -> torch.Tensor:
    """``(n, c, h, w)`` normalised bands -> ``(n, c * (1 + 2 * len(scales)), h, w)`` features:
    the bands, then per side ``s`` their ``s x s`` neighbourhood means and standard deviations."""
    x = x.float()
    out = [x]
    for s in scales:
        p = s // 2
        padded = F.pad(x, (p, p, p, p), mode="replicate")
        mean = F.avg_pool2d(padded, s, stride=1)
        square = F.avg_pool2d(padded * padded, s, stride=1)
        out += [mean, (square - mean * mean).clamp_min(0.0).sqrt()]
    return torch.cat(out, 1)


def feature_rows(x: torch.Tensor, scales: Sequence[int], margin: int = 0) -> np.ndarray:
    """``(n, c, h, w)`` normalised bands -> ``(n * (h - 2m) * (w - 2m), features)`` float32 rows
    of the pixels at least ``margin`` (m) from the edge, pixel by pixel in ``(n, h, w)`` order (the
    features see the whole window)."""
    features = pixel_features(x, scales)
    h, w = features.shape[-2:]
    features = features[:, :, margin : h - margin, margin : w - margin]
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).cpu().numpy()


class PixelBooster:
    """A LightGBM booster standing in for a network: normalised ``(n, bands, h, w)`` in, class
    probabilities ``(n, classes, h, w)`` out (a member whose activation is ``none``).

    Args:
        model: LightGBM's text model.
        scales: the neighbourhood sides of its features.
        classes: the number of classes.
        threads: LightGBM's threads when predicting (0: torch's).
    """

    def __init__(self, model: str, scales: Sequence[int], classes: int, threads: int = 0) -> None:
        import lightgbm as lgb

        self.booster = lgb.Booster(model_str=model)
        self.scales = list(scales)
        self.classes = classes
        self.threads = threads
        #: pixels at each window edge that the predictor discards (its centre crop): not
        #: predicted, their probabilities uniform (:meth:`snakemap.inference.predictor.Predictor.
        #: check_context` sets it; 0 predicts every pixel, as blending needs)
        self.margin = 0

    @property
    def context(self) -> int:
        """Pixels its features read around each pixel: a window's kept centre needs that margin."""
        return max(self.scales, default=1) // 2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        m = self.margin if 2 * self.margin < min(h, w) else 0
        rows = feature_rows(x, self.scales, m)  # the trees run on the kept centre only
        threads = self.threads or torch.get_num_threads()
        centre = np.asarray(self.booster.predict(rows, num_threads=threads), dtype=np.float32)
        probs = np.full((n, self.classes, h, w), 1.0 / self.classes, dtype=np.float32)
        probs[:, :, m : h - m, m : w - m] = centre.reshape(n, h - 2 * m, w - 2 * m, self.classes).transpose(
            0, 3, 1, 2
        )
        return torch.from_numpy(probs).to(x.device)

    def eval(self) -> PixelBooster:
        return self


def booster_from(hp: dict[str, Any]) -> PixelBooster:
    """The booster of a checkpoint's (or a bundle's) hyper-parameters."""
    return PixelBooster(str(hp["booster"]), hp["scales"], len(hp["classes"]))
