"""The base of every config section: unknown keys are errors, a section resolves to plain data
with its defaults filled in, and numbers are kept as given (an int stays an int, so that the
options a rule passes keep their text), with bounds that the generated schema shows.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

#: band, index, class and auxiliary names (file-name and identifier safe)
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"


class Section(BaseModel):
    """A config section: unknown keys are errors, and :meth:`resolved` is the section as the
    workflow passes it on (every key that has a default, plus the keys that were given)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=False)

    #: keys that have no default: left out of :meth:`resolved` unless given
    OMIT_UNSET: ClassVar[frozenset[str]] = frozenset()

    def resolved(self) -> dict[str, Any]:
        """The section as plain data (for JSON and ``config``), keyed by the config's names."""
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            if name in self.OMIT_UNSET and name not in self.model_fields_set:
                continue
            out[info.alias or name] = plain(getattr(self, name))
        out.update(plain(self.__pydantic_extra__ or {}))  # a section that allows more keys
        return out

    @model_validator(mode="after")
    def _given_keys_have_values(self) -> Section:
        # A key without a default, given empty (`models:` with its content commented out), is a
        # mistake: it would pass as null and fail far from the config.
        for name in sorted(self.OMIT_UNSET & self.model_fields_set):
            if getattr(self, name) is None:
                key = type(self).model_fields[name].alias or name
                raise ValueError(f"{key}: given empty (null); give it a value or leave the key out")
        return self


def plain(value: Any) -> Any:
    """Sections, lists and dicts as plain data, values as they are (an int stays an int)."""
    if isinstance(value, Section):
        return value.resolved()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _number(value: Any, finite: bool = True) -> Any:
    """A number as given (an int stays an int, so the options rules pass keep their text); a
    numeric string (``--config key=0.5``) becomes one. NaN and infinities only where not
    ``finite`` (a nodata value, a mask's open bound)."""
    what = "a finite number" if finite else "a number"
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".ein") else int(value)
        except ValueError:
            raise ValueError(f"expected {what}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or (finite and not math.isfinite(value)):
        raise ValueError(f"expected {what}, got {value!r}")
    return value


class _Number:
    """``Annotated[float, _Number(ge=...)]``: a number kept as given, with bounds."""

    def __init__(
        self, ge: float | None = None, gt: float | None = None, le: float | None = None, finite: bool = True
    ) -> None:
        self.ge, self.gt, self.le, self.finite = ge, gt, le, finite

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        def check(value: Any) -> Any:
            value = _number(value, self.finite)
            if self.ge is not None and value < self.ge:
                raise ValueError(f"must be >= {self.ge}, got {value}")
            if self.gt is not None and value <= self.gt:
                raise ValueError(f"must be > {self.gt}, got {value}")
            if self.le is not None and value > self.le:
                raise ValueError(f"must be <= {self.le}, got {value}")
            return value

        return core_schema.no_info_plain_validator_function(check)

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        for key, value in (("minimum", self.ge), ("exclusiveMinimum", self.gt), ("maximum", self.le)):
            if value is not None:
                out[key] = value
        return out


Number = Annotated[float, _Number()]
#: NaN and infinities allowed too: nodata values, open bounds
AnyNumber = Annotated[float, _Number(finite=False)]
Fraction = Annotated[float, _Number(ge=0, le=1)]
Positive = Annotated[float, _Number(gt=0)]
NonNegative = Annotated[float, _Number(ge=0)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


def _unique(values: list[Any]) -> list[Any]:
    twice = sorted({str(v) for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} given more than once")
    return values


_T = TypeVar("_T")
#: a list whose items are distinct
Unique = Annotated[list[_T], AfterValidator(_unique), Field(json_schema_extra={"uniqueItems": True})]
