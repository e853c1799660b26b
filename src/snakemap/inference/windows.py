"""The windows a scene is predicted in (:class:`PredictOptions`): where they start, and the strips
of rows they read.

A strip holds one row of windows, ``window`` rows of the scene padded with NaN (nodata) beyond
its edges; strips are read one ahead, in a thread, while the model works on the current one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from snakemap.inference.readers import SceneReader


def window_origins(length: int, pad: int, stride: int) -> list[int]:
    """Origins ``-pad + k * stride`` of the windows needed to cover ``[0, length)``."""
    origins = [-pad]
    while origins[-1] + pad + stride < length:
        origins.append(origins[-1] + stride)
    return origins


def iter_strips(reader: SceneReader, opts: PredictOptions) -> Iterator[tuple[int, np.ndarray]]:
    """Per row of windows: its origin row and the strip ``(bands, window, pad + width + window)``."""
    pad, stride = opts.geometry()
    w = opts.window
    for y in window_origins(reader.height, pad, stride):
        strip = np.full((len(reader.names), w, pad + reader.width + w), np.nan, dtype=np.float32)
        top, bottom = max(y, 0), min(y + w, reader.height)
        if bottom > top:
            strip[:, top - y : bottom - y, pad : pad + reader.width] = reader.read_rows(top, bottom)
        yield y, strip


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """The items of ``items``, each next one produced in a thread while the caller works."""
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(next, items, None)
        while (item := nxt.result()) is not None:
            nxt = pool.submit(next, items, None)
            yield item


@dataclass
class PredictOptions:
    """Windows, batches and outputs of the predictor; mirrors the ``predict`` config section."""

    #: window side in pixels (the model's input)
    window: int = 256
    #: context pixels: cropped from each side (centre crop) or blended between neighbours
    overlap: int = 32
    #: blend overlapping windows instead of keeping each window's centre
    blend: bool = False
    #: windows per model call
    batch_size: int = 8
    #: average over flips (test-time augmentation)
    tta: bool = False
    #: how probabilities are stored
    prob_dtype: Literal["uint8", "float32"] = "uint8"
    #: compile the networks with ``torch.compile`` before the first scene (minutes of compiling
    #: that pay off over many scenes on a GPU; the maps are the same to float tolerance)
    compile: bool = False

    def fitted(self, height: int, width: int, multiple: int = 32) -> PredictOptions:
        """The same options with the window shrunk, as far as it helps, to tile this scene evenly.

        The number of windows per axis stays what ``window`` needs; each is made just large enough
        (a multiple of ``multiple``, as encoder-decoder networks need) so that less padding
        beyond the scene's edge is computed. A small scene gets one small window.
        """
        pad, stride = self.geometry()
        context = self.window - stride
        core = 0
        for length in (height, width):
            n = max(1, -(-length // stride))  # windows this axis needs
            core = max(core, -(-length // n))
        window = min(self.window, -(-(core + context) // multiple) * multiple)
        return dataclasses.replace(self, window=max(window, context + 1))

    def geometry(self) -> tuple[int, int]:
        """``(pad, stride)`` of the windows."""
        if self.blend:
            stride, pad = self.window - self.overlap, self.overlap // 2
        else:
            stride, pad = self.window - 2 * self.overlap, self.overlap
        if stride <= 0:
            raise ValueError(f"predict.overlap {self.overlap} leaves no stride in a window of {self.window}")
        return pad, stride

    def weights(self) -> np.ndarray:
        """``(window, window)`` float32 weight of each window pixel."""
        w, o = self.window, self.overlap
        if self.blend:
            ramp = np.minimum(np.arange(w) + 0.5, np.arange(w)[::-1] + 0.5) / max(o, 1)
            line = np.clip(ramp, 1e-3, 1.0)
        else:
            line = np.zeros(w, dtype=np.float32)
            line[o : w - o] = 1.0
        return np.outer(line, line).astype(np.float32)
