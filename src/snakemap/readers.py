"""Scenes to predict, read in strips of rows: from a cleaned GeoTIFF, from memory, or from a raw
scene cleaned strip by strip as it is read (apply's bounded-memory path)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import rasterio
from rasterio.windows import Window

from snakemap.bands import BandOptions, source_names

if TYPE_CHECKING:
    from snakemap.clean import CleanOptions
    from snakemap.sensors import SensorOptions
    from snakemap.shards import MaskOptions


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


#: rows per strip of a survey: a few hundred rows of a wide scene, cleaned, stay near 100 MB
SURVEY_ROWS = 256
#: rows cleaned at a time when a strip is read for prediction
CLEAN_ROWS = 64


class CleaningReader:
    """A raw scene cleaned as it is read, strip by strip (mask, scale, select, indices: the clean
    step's :func:`snakemap.clean.clean_array`), so memory is set by the strip, not the scene.

    For scenes that are not reprojected (``clean.crs`` and ``clean.resolution`` unset).

    Raises:
        SceneError: a scene without georeferencing or with another band count than the config's.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        bands: BandOptions,
        clean: CleanOptions,
        sensor: SensorOptions | None = None,
    ) -> None:
        from snakemap.clean import _qa_position, check_georeferenced

        self.dataset = rasterio.open(path)
        try:
            check_georeferenced(self.dataset)
            layout = bands if sensor is None else BandOptions(names=sensor.bands)
            self.source = source_names(self.dataset.descriptions, layout)
        except Exception:
            self.dataset.close()
            raise
        given = (sensor.nodata if sensor else None, clean.nodata, self.dataset.nodata)
        self.nodata = next((v for v in given if v is not None), None)
        self.bands, self.clean, self.sensor = bands, clean, sensor
        self.qa_pos = _qa_position(self.source, clean)
        self.height, self.width = self.dataset.height, self.dataset.width
        self.profile = {"crs": self.dataset.crs, "transform": self.dataset.transform}
        self.names = self._clean(self.raw_rows(0, 1))[1]

    def raw_rows(self, start: int, stop: int) -> np.ndarray:
        """Stored values of rows ``[start, stop)`` as float32 ``(source bands, rows, width)``."""
        data: np.ndarray = self.dataset.read(
            window=Window(0, start, self.width, stop - start), out_dtype="float32"
        )
        return data

    def _clean(self, raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
        from snakemap.clean import clean_array

        return clean_array(raw, list(self.source), self.nodata, self.bands, self.clean, self.sensor)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Cleaned rows ``[start, stop)``, cleaned :data:`CLEAN_ROWS` at a time into one array, so
        that cleaning's temporary copies stay small whatever the strip."""
        out = np.empty((len(self.names), stop - start, self.width), dtype=np.float32)
        for top in range(start, stop, CLEAN_ROWS):
            bottom = min(top + CLEAN_ROWS, stop)
            out[:, top - start : bottom - start] = self._clean(self.raw_rows(top, bottom))[0]
        return out

    def close(self) -> None:
        self.dataset.close()


@dataclass
class Survey:
    """What one pass over a scene's strips knows: its valid fraction, whether every stored value
    (but a QA band's) is 0, and whether any pixel falls in ``apply.mask``'s range."""

    valid_fraction: float
    all_zero: bool
    in_mask: bool


def survey(reader: CleaningReader, mask: MaskOptions | None = None) -> Survey:
    """One pass over a scene in strips of :data:`SURVEY_ROWS` rows.

    Raises:
        SceneError: a mask band the scene's cleaned bands lack.
    """
    from snakemap.clean import zero_figures
    from snakemap.status import SceneError

    if mask is not None and mask.band not in reader.names:
        raise SceneError(f"the scene's cleaned bands {reader.names} lack apply.mask.band {mask.band!r}")
    valid = 0
    nonzero = seen = in_mask = False
    for start in range(0, reader.height, SURVEY_ROWS):
        raw = reader.raw_rows(start, min(start + SURVEY_ROWS, reader.height))
        if not nonzero:
            any_valid, nonzero = zero_figures(raw, reader.nodata, reader.qa_pos)
            seen = seen or any_valid
        image = reader._clean(raw)[0]
        ok = np.isfinite(image).all(axis=0)
        valid += int(ok.sum())
        if mask is not None and not in_mask:
            band = image[reader.names.index(mask.band)]
            in_mask = bool(((band >= mask.min) & (band <= mask.max)).any())
    total = reader.height * reader.width
    return Survey(valid / total if total else 0.0, seen and not nonzero, in_mask)
