"""Label classes and the remapping of source label values to class indices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snakemap.core.label_sections import LabelOptions

#: the unmapped values a scene's status lists, most frequent first
LISTED_VALUES = 10


@dataclass
class Unmapped:
    """Source label values that are neither in the remap table nor the label file's nodata."""

    #: the most frequent of them (at most :data:`LISTED_VALUES`), most frequent first
    values: list[int | str]
    #: source pixels (or a vector label's features) holding one of them
    pixels: int
    #: labelled source pixels (features): neither the label file's nodata nor NaN
    labelled: int
    #: what is counted: a raster's ``pixels`` or a vector label's ``features``
    unit: str = "pixels"

    @property
    def fraction(self) -> float:
        """``pixels / labelled``, 0..1 (0 for a label without labelled pixels)."""
        return self.pixels / self.labelled if self.labelled else 0.0

    def problem(self, options: LabelOptions) -> str:
        """Why the scene is corrupt by ``unmapped`` and ``max_unmapped_fraction``; ``""`` if it is not."""
        if not self.pixels:
            return ""
        share = f"label values {self.values} ({self.fraction:.2%} of the labelled {self.unit})"
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
