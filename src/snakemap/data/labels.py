"""Label classes and the remapping of source label values to class indices."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

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
    #: what to do with source values missing from ``remap`` (neither a class, ``ignore`` nor the
    #: label file's nodata): ``ignore`` leaves them unlabelled unless they exceed
    #: ``max_unmapped_fraction``; ``corrupt`` makes the scene corrupt for any such value
    unmapped: Literal["ignore", "corrupt"] = "ignore"
    #: with ``unmapped: ignore``, a scene whose labelled source pixels hold values missing from
    #: ``remap`` in a larger fraction than this is corrupt (a label of another class table)
    max_unmapped_fraction: float = 0.01
    #: derived: source value -> class index
    table: dict[int, int] = field(init=False, repr=False)
    #: derived: the config key ``remap`` came from (``labels.remap`` or ``label_schemes.<name>``)
    remap_key: str = field(init=False, default="labels.remap")

    def __post_init__(self) -> None:
        if not 0 <= self.ignore_index <= 255 or self.ignore_index < len(self.classes):
            raise ValueError(f"labels.ignore_index {self.ignore_index} must be in {len(self.classes)}..255")
        if self.unmapped not in ("ignore", "corrupt"):
            raise ValueError(f"labels.unmapped {self.unmapped!r} must be ignore or corrupt")
        if not 0 <= self.max_unmapped_fraction <= 1:
            raise ValueError(f"labels.max_unmapped_fraction {self.max_unmapped_fraction} must be in 0..1")
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


#: the unmapped values a scene's status lists, most frequent first
LISTED_VALUES = 10


@dataclass
class Unmapped:
    """Source label values that are neither in the remap table nor the label file's nodata."""

    #: the most frequent of them (at most :data:`LISTED_VALUES`), most frequent first
    values: list[int]
    #: source pixels holding one of them
    pixels: int
    #: labelled source pixels: neither the label file's nodata nor NaN
    labelled: int

    @property
    def fraction(self) -> float:
        """``pixels / labelled``, 0..1 (0 for a label without labelled pixels)."""
        return self.pixels / self.labelled if self.labelled else 0.0

    def problem(self, options: LabelOptions) -> str:
        """Why the scene is corrupt by ``unmapped`` and ``max_unmapped_fraction``; ``""`` if it is not."""
        if not self.pixels:
            return ""
        share = f"label values {self.values} ({self.fraction:.2%} of the labelled pixels)"
        share += f" are not in {options.remap_key}"
        if options.unmapped == "corrupt":
            return f"{share} (labels.unmapped is corrupt)"
        if self.fraction > options.max_unmapped_fraction:
            return f"{share}: above labels.max_unmapped_fraction {options.max_unmapped_fraction}"
        return ""


def remap_labels(
    label: np.ndarray, options: LabelOptions, nodata: float | None = None
) -> tuple[np.ndarray, Unmapped]:
    """Map source label values to class indices.

    Args:
        label: ``(rows, cols)`` integer (or float) array of source values.
        options: the classes and remap table.
        nodata: the label file's nodata value, always mapped to ``ignore_index``.

    Returns:
        ``(rows, cols)`` uint8 array of class indices and ``ignore_index`` (values missing from
        the table become ``ignore_index`` too), and what was missing from the table. Whether
        that makes the scene corrupt is :meth:`Unmapped.problem`'s to say.
    """
    values, inverse, counts = np.unique(label, return_inverse=True, return_counts=True)
    unlabelled = np.array([v == nodata or not np.isfinite(v) for v in values], dtype=bool)
    missing = np.array(
        [not u and int(v) not in options.table for v, u in zip(values, unlabelled, strict=True)], dtype=bool
    )
    frequent = np.argsort(-counts[missing], kind="stable")[:LISTED_VALUES]
    unmapped = Unmapped(
        [int(v) for v in values[missing][frequent]],
        int(counts[missing].sum()),
        int(counts[~unlabelled].sum()),
    )
    lut = np.array(
        [
            options.ignore_index if u or m else options.table[int(v)]
            for v, u, m in zip(values, unlabelled, missing, strict=True)
        ],
        dtype=np.uint8,
    )
    return lut[inverse].reshape(label.shape), unmapped
