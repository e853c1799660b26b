"""Band selection by name or index, and spectral indices added as extra channels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snakemap.status import SceneError

#: Named normalized differences ``(a - b) / (a + b)`` over source band names.
PRESET_INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),
    "ndwi": ("green", "nir"),  # McFeeters (1996): open water > 0
    "mndwi": ("green", "swir16"),
    "nbr": ("nir", "swir22"),
}


@dataclass
class IndexSpec:
    """A normalized difference ``(a - b) / (a + b)`` of two source bands, added as a channel."""

    name: str
    a: str
    b: str


@dataclass
class BandOptions:
    """Which bands to keep and which indices to add; mirrors the ``bands`` config section."""

    #: names of the source bands in file order; when given, also the expected band count
    names: list[str] | None = None
    #: bands to keep, in order, by name or 1-based index; None keeps all
    select: list[str | int] | None = None
    #: indices to append: preset names (``ndvi``, ``ndwi``, ``mndwi``, ``nbr``) or ``{name, a, b}``
    indices: list[str | dict[str, str]] = field(default_factory=list)

    def index_specs(self) -> list[IndexSpec]:
        """The indices as :class:`IndexSpec`, presets expanded."""
        specs = []
        for item in self.indices:
            if isinstance(item, str):
                if item.lower() not in PRESET_INDICES:
                    raise ValueError(
                        f"bands.indices: unknown index {item!r}; use one of "
                        f"{', '.join(PRESET_INDICES)} or {{name, a, b}}"
                    )
                a, b = PRESET_INDICES[item.lower()]
                specs.append(IndexSpec(item.lower(), a, b))
            else:
                specs.append(IndexSpec(**item))
        return specs


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


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` as float32; NaN where either is NaN or the sum is 0."""
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / total
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
