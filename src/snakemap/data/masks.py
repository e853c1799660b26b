"""Array-level cleaning, shared by the clean step (:func:`snakemap.data.clean.read_clean`, a whole
scene) and apply's strip-by-strip reads (:class:`snakemap.inference.readers.CleaningReader`).

Holds the position of the QA band (``clean.qa``) among a scene's source bands, the all-zero test
on stored values, and :func:`clean_array`: the nodata, zero and QA masks, the sensor's scaling to
reflectance, band selection and indices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from snakemap.core.config import ConfigError
from snakemap.core.sections import BandOptions, QAOptions
from snakemap.data.bands import add_indices, select_indices

if TYPE_CHECKING:
    from snakemap.core.sections import SensorOptions


def qa_position(names: list[str], qa_band: str | int | None) -> int | None:
    """0-based position of the QA band (``clean.qa.band``) among the source bands ``names``; None
    without one."""
    return None if qa_band is None else select_indices(names, BandOptions(select=[qa_band]))[0]


def is_all_zero(data: np.ndarray, nodata: float | None, qa_pos: int | None) -> bool:
    """True when ``(bands, rows, cols)`` stored values hold valid pixels, all exactly 0 in every band."""
    seen, nonzero = zero_figures(data, nodata, qa_pos)
    return seen and not nonzero


def zero_figures(data: np.ndarray, nodata: float | None, qa_pos: int | None) -> tuple[bool, bool]:
    """Whether ``(bands, rows, cols)`` stored values hold any valid value, and any valid value
    that is not 0. Valid here: finite and not ``nodata``; the QA band, whose 0 means clear, is
    not looked at. Band by band, so that a scene with data is known after its first band."""
    seen = False
    for i, band in enumerate(data):
        if i == qa_pos:
            continue
        valid = np.isfinite(band)
        if nodata is not None and np.isfinite(nodata):
            valid &= band != nodata
        if (valid & (band != 0)).any():
            return True, True
        seen = seen or bool(valid.any())
    return seen, False


def clean_array(
    data: np.ndarray,
    names: list[str],
    nodata: float | None,
    bands: BandOptions,
    qa: QAOptions | None,
    zero_is_nodata: bool,
    sensor: SensorOptions | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Mask, scale, select and add indices to ``(source bands, rows, cols)`` float32 (changed in place).

    Nodata, zero and QA masks apply to the stored values; then every source band but the QA
    band becomes ``value * scale + offset`` (:meth:`SensorOptions.scaling`), and indices are
    computed from that.

    Args:
        qa: ``clean.qa`` (:attr:`snakemap.core.sections.CleanOptions.qa_options`).
        zero_is_nodata: ``clean.zero_is_nodata``.

    Returns:
        ``(selected bands + indices, rows, cols)`` float32 with NaN where invalid, and band names.
    """
    qa_band = qa.band if qa is not None else None
    qa_pos = qa_position(names, qa_band)
    invalid = _invalid_mask(data, nodata, zero_is_nodata, qa, qa_pos)
    data[:, invalid] = np.nan
    if sensor is not None and not sensor.is_reflectance:
        for i in range(len(names)):
            if i != qa_pos:  # band by band, in place: no copy of the scene
                scale, offset = sensor.scaling(i)
                data[i] *= scale
                data[i] += offset
    keep = select_indices(names, bands)
    if bands.select is None:
        keep = [i for i in keep if i != qa_pos]
    elif qa_pos in keep:
        raise ConfigError(f"bands.select keeps clean.qa.band {qa_band!r}: a QA band is never cleaned")
    index_arrays, index_names = add_indices(data, names, bands.index_specs())
    image = np.stack([data[i] for i in keep] + index_arrays)
    return image, [names[i] for i in keep] + index_names


def _invalid_mask(
    data: np.ndarray,
    nodata: float | None,
    zero_is_nodata: bool,
    qa: QAOptions | None,
    qa_pos: int | None,
) -> np.ndarray:
    """``(rows, cols)`` bool: True where any band is nodata/NaN, all are 0, or QA flags it (the
    QA band's values are flags, never nodata: a flag of 0 is a valid pixel's)."""
    invalid: np.ndarray = ~np.isfinite(data).all(axis=0)
    bands = [b for b in range(len(data)) if b != qa_pos]  # band by band: no copy of the scene
    if nodata is not None and np.isfinite(nodata):
        for b in bands:
            invalid |= data[b] == nodata
    if zero_is_nodata and bands:
        zero = data[bands[0]] == 0
        for b in bands[1:]:
            zero &= data[b] == 0
        invalid |= zero
    if qa is not None and qa_pos is not None:
        flags = np.nan_to_num(data[qa_pos]).astype(np.int64)
        if qa.values:
            invalid |= np.isin(flags, qa.values)
        for bit in qa.bits:
            invalid |= (flags >> bit) & 1 == 1
    return invalid
