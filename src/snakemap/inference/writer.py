"""A prediction's outputs: a class map and class probabilities, written strip by strip as COGs.

Both are staged as tiled GeoTIFFs beside their final paths, then copied to Cloud-Optimized
GeoTIFFs and renamed into place, so a killed run leaves no partial output. Probabilities are
uint8 scaled by 250 (nodata 255) or float32 (NaN nodata); :func:`read_probabilities` reads either.
The files say what they hold: the class map has a colour table (``labels.colors``, else the
default palette), the band description ``class`` and the tags of :func:`class_tags`; each
probability band is described ``p({class})``, with its scale in the ``PROBABILITY`` tag.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from snakemap.core.io import COG_OPTIONS, NODATA_CLASS, PROB_SCALE, atomic_path
from snakemap.core.palette import class_colors, colormap

if TYPE_CHECKING:
    from snakemap.core.apply_sections import PredictOptions
    from snakemap.inference.readers import SceneReader


class SceneOutputs:
    """Tiled GeoTIFFs written strip by strip (:meth:`staging`), then copied to COGs and renamed
    into place (:meth:`publish`) or removed (:meth:`discard`)."""

    def __init__(
        self,
        reader: SceneReader,
        names: list[str],
        opts: PredictOptions,
        class_path: Any,
        prob_path: Any,
        colors: list[str] | None = None,
    ):
        self.reader, self.names, self.opts = reader, names, opts
        self.classes = len(names)
        self.colors = colors or class_colors(names)
        self.paths = [Path(class_path)] + ([Path(prob_path)] if prob_path else [])
        # Staged beside the outputs (same filesystem), removed whatever happens.
        self.tmps = [p.with_name(f".{p.name}.{os.getpid()}.stage.tif") for p in self.paths]
        self.stack = contextlib.ExitStack()

    @contextlib.contextmanager
    def staging(self) -> Iterator[SceneOutputs]:
        """Open the staged files for :meth:`write`; close them at the end of the block, or
        discard them if it raises."""
        try:
            self._open()
            yield self
            self.stack.close()
        except BaseException:
            self.discard()
            raise

    def _open(self) -> None:
        base = {
            "driver": "GTiff",
            "height": self.reader.height,
            "width": self.reader.width,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "BIGTIFF": "IF_SAFER",
            **self.reader.profile,
        }
        for p in self.paths:
            p.parent.mkdir(parents=True, exist_ok=True)
        self.class_ds = self.stack.enter_context(
            rasterio.open(self.tmps[0], "w", count=1, dtype="uint8", nodata=NODATA_CLASS, **base)
        )
        self.prob_ds = None
        if len(self.paths) > 1:
            u8 = self.opts.prob_dtype == "uint8"
            self.prob_ds = self.stack.enter_context(
                rasterio.open(
                    self.tmps[1],
                    "w",
                    count=self.classes,
                    dtype="uint8" if u8 else "float32",
                    nodata=NODATA_CLASS if u8 else float("nan"),
                    **base,
                )
            )
            if u8:
                self.prob_ds.scales = [1 / PROB_SCALE] * self.classes
            for i, name in enumerate(self.names, start=1):
                self.prob_ds.set_band_description(i, f"p({name})")
            self.prob_ds.update_tags(**prob_tags(u8))
        # what the values mean, in the file itself: class names, their colours
        self.class_ds.set_band_description(1, "class")
        self.class_ds.update_tags(**class_tags(self.names))
        self.class_ds.write_colormap(1, colormap(self.colors))

    def write(
        self,
        row: int,
        probs: np.ndarray,
        classify: Callable[[np.ndarray], np.ndarray],
        valid: np.ndarray,
    ) -> None:
        """Classify (``classify``: ``(classes, n, width)`` probabilities to ``(n, width)`` classes)
        and write rows ``row..row+n``."""
        classes = classify(probs)
        n = classes.shape[0]
        window = Window(0, row, self.reader.width, n)
        self.class_ds.write(np.where(valid, classes, NODATA_CLASS)[None], window=window)
        if self.prob_ds is not None:
            if self.opts.prob_dtype == "uint8":
                data = np.where(valid, np.rint(np.clip(probs, 0, 1) * PROB_SCALE), NODATA_CLASS).astype(
                    np.uint8
                )
            else:
                data = np.where(valid, probs, np.nan).astype(np.float32)
            self.prob_ds.write(data, window=window)

    def publish(self) -> None:
        """Copy the staged files to Cloud-Optimized GeoTIFFs at their paths (atomically), then
        remove them."""
        try:
            self.stack.close()
            # Staged uncompressed; compressed once, quickly, into the COG, by as many GDAL
            # threads as this process may use (half the time on 2 cores: this runs after the
            # scene's last window, or beside the next scene's model in a shard). Class overviews
            # keep classes (nearest), probability overviews average.
            threads = str(
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            )
            for tmp, path, resampling in zip(self.tmps, self.paths, ("nearest", "average"), strict=False):
                _to_cog(tmp, path, resampling=resampling, level=1, num_threads=threads)
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staged files (the outputs are left as they were)."""
        self.stack.close()
        for tmp in self.tmps:
            tmp.unlink(missing_ok=True)


def class_tags(names: list[str]) -> dict[str, str]:
    """A class map's metadata: ``CLASSES`` (names in value order, comma-separated), ``CLASS_{i}``
    per value, and what nodata means."""
    tags = {"CLASSES": ",".join(names), "NODATA_MEANS": f"{NODATA_CLASS}: no valid input"}
    tags.update({f"CLASS_{i}": name for i, name in enumerate(names)})
    return tags


def prob_tags(u8: bool) -> dict[str, str]:
    """A probability file's metadata: how a stored value reads as a probability."""
    if u8:
        return {"PROBABILITY": f"value / {PROB_SCALE} (0..{PROB_SCALE}); {NODATA_CLASS}: nodata"}
    return {"PROBABILITY": "value (0..1); NaN: nodata"}


def _to_cog(staged: Path, path: Path, **options: Any) -> None:
    """Copy a tiled GeoTIFF to a Cloud-Optimized one at ``path``, atomically (GDAL streams it)."""
    with atomic_path(path, suffix=".tif") as tmp:
        rasterio.shutil.copy(staged, tmp, **{**COG_OPTIONS, **options})


def read_probabilities(path: str | os.PathLike[str]) -> np.ndarray:
    """``(classes, rows, cols)`` float32 probabilities from a probability GeoTIFF, NaN nodata."""
    with rasterio.open(path) as src:
        data: np.ndarray = src.read()
        if src.dtypes[0] == "uint8":
            out = data.astype(np.float32) / PROB_SCALE
            out[data == NODATA_CLASS] = np.nan
            return out
        return data.astype(np.float32)
