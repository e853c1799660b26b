"""Predict a scene of any size with overlapping windows, seam-free and in bounded memory.

Windows of ``window`` pixels start every ``stride`` pixels, beginning ``pad`` pixels before the
scene's edge (the outside reads as nodata). Each window's output is weighted and summed into a
strip accumulator, and every row that no later window touches is normalised and written:

- centre crop (default, Raster Vision's ``crop_sz``): ``pad = overlap``, ``stride = window -
  2 * overlap``, weight 1 in the window's centre and 0 in its ``overlap``-wide border, so every
  pixel comes from exactly one window's low-error centre;
- blending (``blend: true``): ``stride = window - overlap``, weights ramp linearly over the
  ``overlap`` at each side, so neighbouring windows fade into each other.

Memory is bounded by one strip of ``window`` rows of the scene, whatever its size. Outputs, on
exactly the input's grid and CRS: a class map (uint8, nodata 255) and class probabilities
(uint8 scaled by 250 with nodata 255, or float32 with NaN), both Cloud-Optimized GeoTIFFs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from snakemap.core.apply_sections import PredictOptions
from snakemap.core.io import write_cog
from snakemap.inference.predictor import Predictor
from snakemap.inference.readers import SceneReader
from snakemap.inference.shift import BandMoments
from snakemap.inference.windows import padded_origins, prefetched, window_strips
from snakemap.inference.writer import SceneOutputs

log = logging.getLogger(__name__)


def predict_scene(
    reader: SceneReader,
    predictor: Predictor,
    opts: PredictOptions,
    class_path: str | os.PathLike[str],
    prob_path: str | os.PathLike[str] | None = None,
    moments: BandMoments | None = None,
) -> dict[str, Any]:
    """Predict a whole scene and write its class map (and probabilities) atomically.

    ``moments``: the scene's band moments where the caller has them (its shift score, for a
    predictor with a fallback); otherwise they are counted when needed.

    Returns:
        Figures of the run: windows, batches, valid pixels, seconds in the models (on this scene)
        and in total.
    """
    start = time.perf_counter()
    figures, staged = predict_staged(reader, predictor, opts, class_path, prob_path, moments)
    staged.publish()
    figures["seconds"] = time.perf_counter() - start
    return figures


def predict_cropped(
    reader: SceneReader,
    predictor: Predictor,
    opts: PredictOptions,
    crop: Window,
    class_path: Path,
    prob_path: Path | None = None,
    moments: BandMoments | None = None,
) -> dict[str, Any]:
    """Predict a scene read with context around it (``apply.buffer``: its neighbours' pixels),
    then keep its own ``crop`` window of the maps, as :func:`predict_scene` writes them (a
    fallback is decided by the scene's own ``moments``).

    Returns:
        The figures of :func:`predict_scene`.
    """
    paths = [p for p in (class_path, prob_path) if p is not None]
    staged = [p.with_name(f".{p.name}.{os.getpid()}.buffered.tif") for p in paths]
    try:
        figures = predict_scene(reader, predictor, opts, staged[0], staged[1] if prob_path else None, moments)
        for src_path, dest in zip(staged, paths, strict=True):
            with rasterio.open(src_path) as src:
                data = src.read(window=crop)
                profile = {"crs": src.crs, "transform": src.window_transform(crop), "nodata": src.nodata}
                described = {"descriptions": list(src.descriptions), "tags": src.tags()}
                scales = list(src.scales)
                with contextlib.suppress(ValueError):  # the class map's colour table
                    described["colormap"] = src.colormap(1)
            write_cog(dest, data, profile, scales=scales, **described)
        return figures
    finally:
        for p in staged:
            p.unlink(missing_ok=True)


def predict_staged(
    reader: SceneReader,
    predictor: Predictor,
    opts: PredictOptions,
    class_path: str | os.PathLike[str],
    prob_path: str | os.PathLike[str] | None = None,
    moments: BandMoments | None = None,
) -> tuple[dict[str, Any], SceneOutputs]:
    """Predict a whole scene into staged (uncompressed, hidden) GeoTIFFs beside its outputs.

    The caller publishes them (:meth:`SceneOutputs.publish`: COGs renamed into place), perhaps in
    a thread while the next scene predicts, or discards them; on an error they are discarded.

    Returns:
        The figures of :func:`predict_scene` (``seconds``: until staged), and the staged outputs.
    """
    start = time.perf_counter()
    model_before = predictor.model_seconds
    predictor.check_context(opts)
    if opts.compile:
        predictor.compile()
    predictor.fit_scene(reader, moments)
    opts = opts.fitted(reader.height, reader.width)
    pad, stride = opts.geometry()
    w, o, height, width = opts.window, opts.overlap, reader.height, reader.width
    k = len(predictor.classes)
    weights = opts.weights()
    xs = padded_origins(width, pad, stride)
    last_y = padded_origins(height, pad, stride)[-1]
    acc = np.zeros((k, w, width), dtype=np.float32)
    wsum = np.zeros((w, width), dtype=np.float32)
    valid = np.zeros((w, width), dtype=bool)
    figures: dict[str, float] = {"windows": 0, "batches": 0, "valid_pixels": 0}
    # One thread reads the next strip and one writes finished rows while the model runs: GDAL's
    # decompression and compression release the GIL.
    outputs = SceneOutputs(reader, list(predictor.classes), opts, class_path, prob_path, predictor.colors)
    with outputs.staging(), ThreadPoolExecutor(1) as writer:
        flushed = 0
        pending: list[Future[None]] = []
        for y, strip in prefetched(window_strips(reader, opts)):
            # One batch of windows copied out of the strip at a time: a wide scene's strip holds
            # dozens of windows, and a copy of all of them would double the strip's memory.
            for b in range(0, len(xs), opts.batch_size):
                batch = np.stack([strip[:, :, pad + x : pad + x + w] for x in xs[b : b + opts.batch_size]])
                probs = predictor.probabilities(batch, reader.names)
                figures["batches"] += 1
                for i, p in enumerate(probs):
                    x = xs[b + i]
                    if opts.blend:
                        lo, hi = max(x, 0), min(x + w, width)
                        acc[:, :, lo:hi] += p[:, :, lo - x : hi - x] * weights[:, lo - x : hi - x]
                        wsum[:, lo:hi] += weights[:, lo - x : hi - x]
                    else:
                        # Centre crop: the weights are 1 on the centre and 0 around it, so only
                        # the centre is added (a quarter of the work of weighting the window).
                        lo, hi = max(x + o, 0), min(x + w - o, width)
                        acc[:, o : w - o, lo:hi] += p[:, o : w - o, lo - x : hi - x]
                        wsum[o : w - o, lo:hi] += 1.0
            figures["windows"] += len(xs)
            valid |= np.isfinite(strip[:, :, pad : pad + width]).all(axis=0)
            # Rows above the next window row are final: write them, then shift the buffers.
            done = height if y == last_y else min(y + stride, height)
            n = done - flushed
            if n > 0:
                top = flushed - y
                rows = acc[:, top : top + n] / np.maximum(wsum[top : top + n], 1e-12)
                ok = valid[top : top + n]
                figures["valid_pixels"] += int(ok.sum())
                pending.append(writer.submit(outputs.write, flushed, rows, predictor.classify, ok.copy()))
                flushed = done
            # Shift the buffers up by a stride, in place (no new arrays per strip).
            for buffer in (acc[:, :], wsum[None], valid[None]):
                buffer[:, : w - stride] = buffer[:, stride:]
                buffer[:, w - stride :] = 0
        for job in pending:
            job.result()  # raises what the writer raised
    figures["model_seconds"] = predictor.model_seconds - model_before
    figures["seconds"] = time.perf_counter() - start
    return figures, outputs
