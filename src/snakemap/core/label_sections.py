"""The typed ``labels`` section: the classes, how source label values map to them (and how each
label scheme's do), which count as target, how unmapped values are judged, and the classes'
colours (see :mod:`snakemap.core.sections`: each class is the only place of its keys, defaults
and constraints).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from snakemap.core.palette import class_colors, to_hex
from snakemap.core.section_base import Fraction, Name, NonNegative, Section

#: what a remap table maps a value to for pixels that are not learnt from
IGNORE = "ignore"


class LabelOptions(Section):
    """Classes and the remap table; the ``labels`` section.

    ``remap`` maps a source label value to a class name or ``"ignore"``; class ``i`` of
    ``classes`` is written as value ``i``, ignored pixels as ``ignore_index``.
    """

    #: class names; the position is the class index written to label.tif
    classes: list[Name] = Field(
        min_length=2, description="class names; the position is the class index in label.tif"
    )
    #: source value -> class name or "ignore"; keys may be ints or numeric strings (YAML/JSON)
    remap: dict[int | str, str] = Field(description='source label value -> class name or "ignore"')
    #: value written for unlabelled, ignored and nodata pixels
    ignore_index: int = Field(255, ge=0, le=255)
    #: classes that count as target when balancing chips; default all but the first
    target: list[str] | None = Field(
        None, description="classes that count as target when balancing chips (null = all but the first)"
    )
    #: what to do with source values missing from ``remap`` (neither a class, ``ignore`` nor the
    #: label file's nodata): ``ignore`` leaves them unlabelled unless they exceed
    #: ``max_unmapped_fraction``; ``corrupt`` makes the scene corrupt for any such value
    unmapped: Literal["ignore", "corrupt"] = Field(
        "ignore",
        description="label values missing from remap (neither a class, ignore, nor the label's "
        "nodata): ignore leaves them unlabelled unless they exceed max_unmapped_fraction; corrupt "
        "fails the scene for any such value",
    )
    #: with ``unmapped: ignore``, a scene whose labelled source pixels hold values missing from
    #: ``remap`` in a larger fraction than this is corrupt (a label of another class table)
    max_unmapped_fraction: Fraction = Field(
        0.01,
        description="with unmapped: ignore, a scene whose labelled pixels hold values missing from "
        "remap (or from its label scheme) in a larger fraction is corrupt",
    )
    #: vector labels: the column that holds each feature's class (a class name, or a value that
    #: ``remap`` or the row's label scheme maps, keys as strings)
    field: str | None = Field(None, description="vector labels: the column holding each feature's class")
    #: vector labels: burn every pixel a polygon touches, not only those whose centre it holds
    all_touched: bool = Field(False, description="vector labels: every pixel a feature touches is labelled")
    #: vector labels: points and lines widened by this many metres (0: the pixels they fall on)
    buffer_m: NonNegative = Field(0, description="vector labels: metres points and lines are widened by")
    #: vector labels: the class of pixels under no feature; None leaves them unlabelled
    background: str | None = Field(
        None, description="vector labels: the class of pixels under no feature (null: unlabelled)"
    )
    #: class -> colour (``#rrggbb``, ``#rgb`` or a name) in the report's maps and the class
    #: GeoTIFFs' colour tables; classes left out take the default palette (:mod:`snakemap.core.palette`)
    colors: dict[str, str] | None = Field(
        None,
        description="class -> colour (#rrggbb or a name) for maps, legends and GeoTIFF colour tables; "
        "unset classes take the default palette (water blue, cloud white, ...)",
    )
    _table: dict[int, int] = PrivateAttr(default_factory=dict)
    _names: dict[str, int] = PrivateAttr(default_factory=dict)
    _remap_key: str = PrivateAttr("labels.remap")

    @model_validator(mode="after")
    def _check(self) -> LabelOptions:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"labels.classes: a class is named twice ({', '.join(self.classes)})")
        if self.ignore_index < len(self.classes):
            raise ValueError(f"labels.ignore_index {self.ignore_index} must be in {len(self.classes)}..255")
        self._table, self._names = self._build_table(self.remap, self._remap_key)
        if self.background is not None and self.background not in self.classes:
            raise ValueError(f"labels.background: {self.background!r} is not in labels.classes")
        for name in self.target or []:
            if name not in self.classes:
                raise ValueError(f"labels.target: {name!r} is not in labels.classes")
        for name, color in (self.colors or {}).items():
            if name not in self.classes:
                raise ValueError(
                    f"labels.colors: {name!r} is not in labels.classes ({', '.join(self.classes)})"
                )
            try:
                to_hex(color)
            except ValueError as exc:
                raise ValueError(f"labels.colors.{name}: {exc}") from None
        return self

    @property
    def palette(self) -> list[str]:
        """``#rrggbb`` per class, in class order (``colors`` over the default palette)."""
        return class_colors(self.classes, self.colors)

    @property
    def table(self) -> dict[int, int]:
        """Source value -> class index."""
        return self._table

    @property
    def remap_key(self) -> str:
        """The config key ``remap`` came from (``labels.remap`` or ``label_schemes.<name>``)."""
        return self._remap_key

    def _build_table(self, remap: Mapping[int | str, str], key: str) -> tuple[dict[int, int], dict[str, int]]:
        """Source value -> class index of a remap table: integer values (rasters' and vectors'),
        and the other strings (vector labels' class columns); errors name ``key``."""
        table: dict[int, int] = {}
        names: dict[str, int] = {}
        for value, name in remap.items():
            if name == IGNORE:
                index = self.ignore_index
            elif name in self.classes:
                index = self.classes.index(name)
            else:
                raise ValueError(
                    f"{key}: value {value} maps to {name!r}, which is not in labels.classes "
                    f"({', '.join(self.classes)}) nor 'ignore'"
                )
            try:
                table[int(value)] = index
            except (TypeError, ValueError):
                if not str(value):
                    raise ValueError(f"{key}: an empty source value") from None
                names[str(value)] = index
        return table, names

    def vector_class(self, value: object) -> int | None:
        """The class index of a vector label's class value (``ignore_index`` for ``ignore``): a
        class name is that class; other values go through the remap table (``None``: none)."""
        text = str(value)
        if text in self.classes:
            return self.classes.index(text)
        if text in self._names:
            return self._names[text]
        try:
            number = float(text)
        except ValueError:
            return None
        return self._table.get(int(number)) if number.is_integer() else None

    def with_scheme(self, name: str, remap: Mapping[int | str, str]) -> LabelOptions:
        """These classes with the remap table of label scheme ``name`` instead of ``labels.remap``.

        Raises:
            ValueError: naming ``label_schemes.<name>`` for a value mapped to an unknown class.
        """
        scheme = self.model_copy(update={"remap": dict(remap)})
        scheme._remap_key = f"label_schemes.{name}"
        scheme._table, scheme._names = self._build_table(remap, scheme._remap_key)
        return scheme

    @property
    def target_indices(self) -> list[int]:
        """Class indices that count as target (the chips' balance)."""
        names = self.target if self.target is not None else self.classes[1:]
        return [self.classes.index(n) for n in names]
