"""Scenes to predict, read in strips of rows: from a cleaned GeoTIFF or from memory."""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np
import rasterio
from rasterio.windows import Window


class SceneReader(Protocol):
    """A scene to predict, read in strips of rows: ``(bands, rows, width)`` float32, NaN invalid."""

    height: int
    width: int
    names: list[str]
    profile: dict[str, Any]

    def read_rows(self, start: int, stop: int) -> np.ndarray: ...


class CleanImageReader:
    """A cleaned scene (``results/clean/{scene}/image.tif``): float32, NaN nodata, named bands."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.dataset = rasterio.open(path)
        self.height, self.width = self.dataset.height, self.dataset.width
        self.names = [d or f"b{i}" for i, d in enumerate(self.dataset.descriptions, start=1)]
        self.profile = {"crs": self.dataset.crs, "transform": self.dataset.transform}

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        data: np.ndarray = self.dataset.read(
            window=Window(0, start, self.width, stop - start), out_dtype="float32"
        )
        if self.dataset.nodata is not None and not np.isnan(self.dataset.nodata):
            data[data == self.dataset.nodata] = np.nan
        return data

    def close(self) -> None:
        self.dataset.close()


class ArrayReader:
    """A cleaned scene already in memory: ``(bands, rows, cols)`` float32, NaN invalid."""

    def __init__(self, image: np.ndarray, names: list[str], crs: Any, transform: Any) -> None:
        self.image, self.names = image, names
        self.height, self.width = image.shape[1:]
        self.profile = {"crs": crs, "transform": transform}

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        return self.image[:, start:stop]
