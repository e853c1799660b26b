"""Label classes and the remapping of source label values to class indices."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from snakemap.status import SceneError

IGNORE = "ignore"


@dataclass
class LabelOptions:
    """Classes and the remap table; mirrors the ``labels`` config section.

    ``remap`` maps a source label value to a class name or ``"ignore"``; class ``i`` of
    ``classes`` is written as value ``i``, ignored pixels as ``ignore_index``.
    """

    #: class names; the position is the class index written to label.tif
    classes: list[str]
    #: source value -> class name or "ignore"; keys may be ints or numeric strings (YAML/JSON)
    remap: dict[int | str, str]
    #: value written for unlabelled, ignored and nodata pixels
    ignore_index: int = 255
    #: classes that count as target when balancing chips; default all but the first
    target: list[str] | None = None
    #: what to do with a source value missing from ``remap``
    unmapped: Literal["ignore", "corrupt"] = "ignore"
    #: derived: source value -> class index
    table: dict[int, int] = field(init=False, repr=False)
    #: derived: the config key ``remap`` came from (``labels.remap`` or ``label_schemes.<name>``)
    remap_key: str = field(init=False, default="labels.remap")

    def __post_init__(self) -> None:
        if not 0 <= self.ignore_index <= 255 or self.ignore_index < len(self.classes):
            raise ValueError(
                f"labels.ignore_index {self.ignore_index} must be in {len(self.classes)}..255"
            )
        self.table = self._table(self.remap, self.remap_key)
        for name in self.target or []:
            if name not in self.classes:
                raise ValueError(f"labels.target: {name!r} is not in labels.classes")

    def _table(self, remap: Mapping[int | str, str], key: str) -> dict[int, int]:
        """Source value -> class index of a remap table; errors name ``key``."""
        table: dict[int, int] = {}
        for value, name in remap.items():
            try:
                source = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key}: source value {value!r} is not an integer") from None
            if name == IGNORE:
                table[source] = self.ignore_index
            elif name in self.classes:
                table[source] = self.classes.index(name)
            else:
                raise ValueError(
                    f"{key}: value {value} maps to {name!r}, which is not in labels.classes "
                    f"({', '.join(self.classes)}) nor 'ignore'"
                )
        return table

    def with_scheme(self, name: str, remap: Mapping[int | str, str]) -> LabelOptions:
        """These classes with the remap table of label scheme ``name`` instead of ``labels.remap``.

        Raises:
            ValueError: naming ``label_schemes.<name>`` for a value mapped to an unknown class.
        """
        scheme = copy.copy(self)
        scheme.remap_key = f"label_schemes.{name}"
        scheme.remap = dict(remap)
        scheme.table = self._table(remap, scheme.remap_key)
        return scheme

    @property
    def target_indices(self) -> list[int]:
        """Class indices that count as target (the chips' balance)."""
        names = self.target if self.target is not None else self.classes[1:]
        return [self.classes.index(n) for n in names]


def remap_labels(label: np.ndarray, options: LabelOptions, nodata: float | None = None) -> np.ndarray:
    """Map source label values to class indices.

    Args:
        label: ``(rows, cols)`` integer array of source values.
        options: the classes and remap table.
        nodata: the label file's nodata value, always mapped to ``ignore_index``.

    Returns:
        ``(rows, cols)`` uint8 array of class indices and ``ignore_index``.

    Raises:
        SceneError: for values missing from the table when ``unmapped`` is ``corrupt``.
    """
    values, inverse = np.unique(label, return_inverse=True)
    missing = [int(v) for v in values if int(v) not in options.table and v != nodata]
    if missing and options.unmapped == "corrupt":
        raise SceneError(f"label values {missing} are not in {options.remap_key}")
    lut = np.array(
        [
            options.ignore_index if v == nodata else options.table.get(int(v), options.ignore_index)
            for v in values
        ],
        dtype=np.uint8,
    )
    return lut[inverse].reshape(label.shape)
