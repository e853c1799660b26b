"""Scenes to predict, read in strips of rows: from a cleaned GeoTIFF, from memory, or from a raw
scene cleaned strip by strip as it is read (apply's bounded-memory path)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from snakemap.core.sections import BandOptions
from snakemap.data.bands import select_indices, source_names
from snakemap.inference.shift import BandMoments

if TYPE_CHECKING:
    from snakemap.core.apply_sections import MaskOptions
    from snakemap.core.sections import CleanOptions, SensorOptions


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
    step's :func:`snakemap.data.masks.clean_array`), so memory is set by the strip, not the scene.

    For scenes that are not reprojected (``clean.crs`` and ``clean.resolution`` unset).

    Args:
        path: a local file, or a GDAL path (``/vsis3/bucket/key``) read in place.
        gdal_env: GDAL config options for reading ``path`` (:func:`snakemap.core.storage.gdal_options`),
            set around every read, in whichever thread reads.
        needed_only: read only the source bands that cleaning uses (:func:`band_subset`): with 4
            of 13 bands selected, a band-interleaved file read in place sends about 4/13 of its
            bytes. Pixels are then judged valid on those bands alone; without it, on every band,
            as the clean step and ``snakemap predict`` judge them.

    Raises:
        SceneError: a scene without georeferencing or with another band count than the config's.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        bands: BandOptions,
        clean: CleanOptions,
        sensor: SensorOptions | None = None,
        gdal_env: Mapping[str, str] | None = None,
        needed_only: bool = False,
    ) -> None:
        from snakemap.data.clean import check_georeferenced
        from snakemap.data.masks import qa_position

        self.env = dict(gdal_env or {})
        with rasterio.Env(**self.env):
            self.dataset = rasterio.open(path)
        try:
            check_georeferenced(self.dataset)
            layout = bands if sensor is None else BandOptions(names=sensor.bands)
            source = source_names(self.dataset.descriptions, layout)
            positions, self.bands, self.clean = (
                band_subset(source, bands, clean) if needed_only else (list(range(len(source))), bands, clean)
            )
            #: 1-based band numbers read, in file order, and their names
            self.indexes = [i + 1 for i in positions]
            self.source = [source[i] for i in positions]
            given = (sensor.nodata if sensor else None, clean.nodata, self.dataset.nodata)
            self.nodata = next((v for v in given if v is not None), None)
            self.sensor = sensor
            self.qa_pos = qa_position(self.source, self.clean.qa_band)
            self.height, self.width = self.dataset.height, self.dataset.width
            self.profile = {"crs": self.dataset.crs, "transform": self.dataset.transform}
            # the first row read: a bad block or a server error here closes the file too
            self.names = self._clean(self.raw_rows(0, 1))[1]
        except Exception:
            self.dataset.close()
            raise

    def raw_rows(self, start: int, stop: int) -> np.ndarray:
        """Stored values of rows ``[start, stop)`` as float32 ``(bands read, rows, width)``.

        Raises:
            SceneError: ``unreadable: <file>: <GDAL's reason>`` (a bad block, a server error
                after GDAL's retries), where rasterio alone says "Read failed".
        """
        from snakemap.core.status import SceneError

        try:
            with rasterio.Env(**self.env):
                data: np.ndarray = self.dataset.read(
                    self.indexes, window=Window(0, start, self.width, stop - start), out_dtype="float32"
                )
        except RasterioIOError as exc:
            raise SceneError(f"unreadable: {self.dataset.name}: {exc.__cause__ or exc}") from exc
        return data

    def _clean(self, raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
        from snakemap.data.masks import clean_array

        qa, zero_is_nodata = self.clean.qa_options, self.clean.zero_is_nodata
        return clean_array(raw, list(self.source), self.nodata, self.bands, qa, zero_is_nodata, self.sensor)

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


def band_subset(
    source: list[str], bands: BandOptions, clean: CleanOptions
) -> tuple[list[int], BandOptions, CleanOptions]:
    """The source bands that cleaning uses: the selected ones, the indices' inputs and the QA band.

    Args:
        source: the file's band names in file order.

    Returns:
        Their 0-based positions in file order, and ``bands`` and ``clean`` restated by name for
        those bands alone (so that ``bands.select: [2, 4]`` or a QA band given by number still
        name the same bands). Every band when ``bands.select`` is unset or names repeat.

    Raises:
        SceneError: a selected band the file lacks (as :func:`snakemap.data.bands.select_indices`).
    """
    from snakemap.core.sections import QAOptions
    from snakemap.data.masks import qa_position

    everything = list(range(len(source)))
    if bands.select is None or len(set(source)) != len(source):
        return everything, bands, clean
    keep = select_indices(source, bands)
    needed = set(keep)
    needed |= {source.index(b) for s in bands.index_specs() for b in (s.a, s.b) if b in source}
    qa = qa_position(source, clean.qa_band)
    if qa is not None:
        needed.add(qa)
    by_name = BandOptions(names=None, select=[source[i] for i in keep], indices=bands.indices)
    if isinstance(clean.qa, QAOptions) and qa is not None:
        clean = clean.model_copy(update={"qa": clean.qa.model_copy(update={"band": source[qa]})})
    return sorted(needed), by_name, clean


@dataclass
class Survey:
    """What one pass over a scene's strips knows: its valid fraction, whether every stored value
    (but a QA band's) is 0, and whether any pixel falls in ``apply.mask``'s range."""

    valid_fraction: float
    all_zero: bool
    in_mask: bool
    #: the cleaned bands' moments over the valid pixels (the scene's shift score)
    moments: BandMoments | None = None


def survey(reader: CleaningReader, mask: MaskOptions | None = None) -> Survey:
    """One pass over a scene in strips of :data:`SURVEY_ROWS` rows.

    Raises:
        SceneError: a mask band the scene's cleaned bands lack.
    """
    from snakemap.core.status import SceneError
    from snakemap.data.masks import zero_figures

    if mask is not None and mask.band not in reader.names:
        raise SceneError(f"the scene's cleaned bands {reader.names} lack apply.mask.band {mask.band!r}")
    valid = 0
    nonzero = seen = in_mask = False
    moments = BandMoments(list(reader.names))
    for start in range(0, reader.height, SURVEY_ROWS):
        raw = reader.raw_rows(start, min(start + SURVEY_ROWS, reader.height))
        if not nonzero:
            any_valid, nonzero = zero_figures(raw, reader.nodata, reader.qa_pos)
            seen = seen or any_valid
        image = reader._clean(raw)[0]
        ok = np.isfinite(image).all(axis=0)
        valid += int(ok.sum())
        moments.add(image, ok)
        if mask is not None and not in_mask:
            band = image[reader.names.index(mask.band)]
            in_mask = bool(((band >= mask.min) & (band <= mask.max)).any())
    total = reader.height * reader.width
    return Survey(valid / total if total else 0.0, seen and not nonzero, in_mask, moments)
