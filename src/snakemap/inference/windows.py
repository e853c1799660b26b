"""The windows a scene is predicted in (:class:`PredictOptions`): where they start, and the strips
of rows they read.

A strip holds one row of windows, ``window`` rows of the scene padded with NaN (nodata) beyond
its edges; strips are read one ahead, in a thread, while the model works on the current one.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from snakemap.core.apply_sections import PredictOptions

if TYPE_CHECKING:
    from snakemap.inference.readers import SceneReader


def padded_origins(length: int, pad: int, stride: int) -> list[int]:
    """Origins ``-pad + k * stride`` of the windows needed to cover ``[0, length)``."""
    origins = [-pad]
    while origins[-1] + pad + stride < length:
        origins.append(origins[-1] + stride)
    return origins


def window_strips(reader: SceneReader, opts: PredictOptions) -> Iterator[tuple[int, np.ndarray]]:
    """Per row of windows: its origin row and the strip ``(bands, window, pad + width + window)``."""
    pad, stride = opts.geometry()
    w = opts.window
    for y in padded_origins(reader.height, pad, stride):
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
