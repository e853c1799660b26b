"""Config errors as people read them: one line per bad key of a pydantic validation error,
naming its dotted key, and the keys a section knows where one is misspelt."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def error_lines(exc: ValidationError, root: type[BaseModel], prefix: tuple[str, ...] = ()) -> str:
    """One line per bad key of a pydantic error, each naming its dotted key (``prefix`` first: where
    in the config the validated part sits); the unknown keys of one section are named together,
    with the keys that section of ``root`` (the whole config's model) knows."""
    found: dict[tuple[str, ...], list[str]] = {}
    unknown: dict[tuple[str, ...], list[str]] = {}
    for err in exc.errors():
        # a value that matches no member of a union is one error per member, each under the
        # member's tag (``str``, ``list[str]``, ``literal['all']``): one line, "or" between them
        loc = (*prefix, *(str(p) for p in err["loc"] if not _is_union_tag(p)))
        if err["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(loc[-1])
            continue
        text = "required" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
        found.setdefault(loc, []).append(text)
    lines = [
        f"{'.'.join(loc)}: {' or '.join(texts)}" if loc else " or ".join(texts)
        for loc, texts in found.items()
    ]
    for where, keys in unknown.items():
        known = _known(root, where)
        hint = f"; known: {', '.join(known)}" if known else ""
        lines.insert(0, f"{'.'.join(where) or 'config'}: unknown key(s) {', '.join(keys)}{hint}")
    return "\n".join(lines)


def _is_union_tag(part: Any) -> bool:
    """Whether a pydantic error location part names a union member rather than a key."""
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool", "none") or "[" in part or "(" in part
    )


def _known(root: type[BaseModel], where: tuple[str, ...]) -> list[str]:
    """The keys that the section at dotted ``where`` of ``root`` accepts; empty where that is no
    section."""
    node: Any = root
    for part in where:
        node = unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]  # a table's entry, whatever its name
        else:
            return []
    node = unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return sorted(f.alias or n for n, f in node.model_fields.items())
    return []


def unwrap(annotation: Any) -> Any:
    """``X`` of ``X | None`` and ``Annotated[X, ...]``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation
