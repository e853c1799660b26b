"""Band selection by name or index, and spectral indices added as extra channels."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from snakemap.core.config import ConfigError
from snakemap.core.sections import BandOptions, IndexSpec
from snakemap.core.status import SceneError


def source_names(descriptions: tuple[str | None, ...], options: BandOptions) -> list[str]:
    """Names of a file's bands: from the config, else the file's descriptions, else ``b1..bN``.

    Raises:
        SceneError: when the config names a different number of bands than the file has.
    """
    count = len(descriptions)
    if options.names is not None:
        if len(options.names) != count:
            raise SceneError(
                f"wrong band count: the config names {len(options.names)} bands "
                f"({', '.join(options.names)}), the file has {count}"
            )
        return list(options.names)
    return [d if d else f"b{i}" for i, d in enumerate(descriptions, start=1)]


def select_indices(names: list[str], options: BandOptions) -> list[int]:
    """0-based positions of the selected bands within ``names``.

    Raises:
        SceneError: a selected name that the file lacks, or an index past its band count.
    """
    if options.select is None:
        return list(range(len(names)))
    positions = []
    for item in options.select:
        if isinstance(item, int):
            if not 1 <= item <= len(names):
                raise SceneError(f"wrong band count: band {item} selected, the file has {len(names)}")
            positions.append(item - 1)
        elif item in names:
            positions.append(names.index(item))
        else:
            raise SceneError(f"band {item!r} selected, the file's bands are {', '.join(names)}")
    return positions


def check_layout(options: BandOptions, key: str, subject: str, source: list[str]) -> None:
    """Every band that ``bands.select`` keeps and every index needs is one of ``source``.

    Args:
        key: the config key that lists ``source`` (``bands.names``, ``sensors.<name>.bands``).
        subject: what ``source`` belongs to, for the message (``sensor s2``, ``the file layout``).
        source: source band names in file order.

    Raises:
        ConfigError: naming ``key``, the band and who needs it.
    """
    needed = [(b, "bands.select keeps") for b in options.select or [] if isinstance(b, str)]
    needed += [(b, f"index {s.name} needs") for s in _specs(options) for b in (s.a, s.b)]
    for band, why in needed:
        if band not in source:
            have = ", ".join(source)
            raise ConfigError(f"{key}: {subject} has no band {band!r}, which {why} (its bands: {have})")
    for item in options.select or []:
        if isinstance(item, int) and not 1 <= item <= len(source):
            raise ConfigError(f"{key}: {subject} has {len(source)} bands, bands.select keeps band {item}")


def cleaned_names(
    options: BandOptions, layouts: Mapping[str, list[str] | None], qa_band: str | int | None = None
) -> list[str] | None:
    """The names of the cleaned image's bands (the selected bands, then the indices), from the config alone.

    Args:
        layouts: one entry per way the scenes are stored: the config key that lists the source
            bands (``bands.names``, ``sensors.<name>.bands``) -> those names in file order, or
            None where each file's own band descriptions name them.
        qa_band: ``clean.qa.band`` (name or 1-based index), never one of the cleaned bands.

    Returns:
        The names, the same for every layout; None when they depend on the files (every band
        kept, or bands picked by position, for a layout of None) or differ between layouts.

    Raises:
        ConfigError: naming the key, for a selected band, an index's band or the QA band that a
            layout lacks, or a QA band that ``bands.select`` keeps.
    """
    indices = [spec.name for spec in _specs(options)]
    if qa_band is not None and qa_band in (options.select or []):
        raise ConfigError(f"bands.select keeps clean.qa.band {qa_band!r}: a QA band is never cleaned")
    found: list[list[str] | None] = []
    for key, source in layouts.items():
        if source is None:
            by_name = options.select is not None and all(isinstance(b, str) for b in options.select)
            found.append([str(b) for b in options.select or []] + indices if by_name else None)
            continue
        subject = "the file layout" if key == "bands.names" else f"sensor {key.split('.')[1]}"
        check_layout(options, key, subject, source)
        if isinstance(qa_band, str) and qa_band not in source:
            raise ConfigError(f"{key}: {subject} has no band {qa_band!r}, which clean.qa.band names")
        if isinstance(qa_band, int) and not 1 <= qa_band <= len(source):
            raise ConfigError(f"{key}: {subject} has {len(source)} bands, clean.qa.band is band {qa_band}")
        qa_pos = source.index(qa_band) if isinstance(qa_band, str) else (qa_band - 1 if qa_band else None)
        keep = [source[i] for i in select_indices(source, options) if options.select or i != qa_pos]
        found.append(keep + indices)
    if not found or any(f is None for f in found) or any(f != found[0] for f in found):
        return None
    return found[0]


def _specs(options: BandOptions) -> list[IndexSpec]:
    """The indices of ``bands.indices``; a bad entry is a ConfigError."""
    try:
        return options.index_specs()
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` as float32; NaN where either is NaN or the sum is 0."""
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = (a - b) / total
    out[total == 0] = np.nan
    return out


def add_indices(
    source: np.ndarray, names: list[str], specs: list[IndexSpec]
) -> tuple[list[np.ndarray], list[str]]:
    """Compute each index from the source bands.

    Args:
        source: ``(bands, rows, cols)`` float array of all source bands, NaN where invalid.
        names: the source band names, one per band of ``source``.
        specs: the indices to compute.

    Returns:
        The ``(rows, cols)`` index arrays and their names.
    """
    arrays, out_names = [], []
    for spec in specs:
        for band in (spec.a, spec.b):
            if band not in names:
                raise SceneError(f"index {spec.name} needs band {band!r}; the file has {', '.join(names)}")
        arrays.append(normalized_difference(source[names.index(spec.a)], source[names.index(spec.b)]))
        out_names.append(spec.name)
    return arrays, out_names
