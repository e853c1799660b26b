"""Class colours: the ``labels.colors`` table, with a default palette where common class names
get the colours people expect (water blue, cloud white, vegetation green) and any other class a
distinct colour of matplotlib's ``tab20`` cycle that no other class uses.

Colours are ``#rrggbb`` strings everywhere: the report's figures, the legends and the colour
tables of the class GeoTIFFs (:func:`colormap`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

#: the default colour of a class by (a word of) its name, first match wins
NAMED: tuple[tuple[str, str], ...] = (
    ("shadow", "#4d4d4d"),
    ("cloud", "#ffffff"),
    ("snow", "#b3f0ff"),
    ("ice", "#c6e7f5"),
    ("shallow", "#7fd6e8"),
    ("deep", "#08306b"),
    ("water", "#1f78b4"),
    ("kelp", "#8c6d1f"),
    ("reef", "#ff7f50"),
    ("coral", "#ff7f50"),
    ("burn", "#7f0000"),
    ("fire", "#7f0000"),
    ("urban", "#e31a1c"),
    ("built", "#e31a1c"),
    ("crop", "#f0e442"),
    ("forest", "#1b7837"),
    ("tree", "#1b7837"),
    ("veget", "#33a02c"),
    ("grass", "#a6d96a"),
    ("sand", "#f4e3b0"),
    ("bare", "#c2a27a"),
    ("land", "#c2a27a"),
    ("background", "#bdbdbd"),
)
#: colours for the other classes, in order (matplotlib's tab20, its blues, reds and greys dropped:
#: they read as water, errors and nodata)
CYCLE: tuple[str, ...] = (
    "#9467bd", "#ff7f0e", "#2ca02c", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#c5b0d5",
    "#ffbb78", "#98df8a", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
)  # fmt: skip


def to_hex(color: str) -> str:
    """A colour as ``#rrggbb``: ``#rgb``, ``#rrggbb`` or a CSS/matplotlib name (``navy``).

    Raises:
        ValueError: naming the colour, for one that is none.
    """
    text = color.strip().lower()
    if text.startswith("#") and len(text) in (4, 7):
        digits = text[1:] if len(text) == 7 else "".join(c * 2 for c in text[1:])
        try:
            int(digits, 16)
        except ValueError:
            pass
        else:
            return f"#{digits}"
    from matplotlib import colors  # names only: matplotlib is not needed for hex colours

    try:
        return str(colors.to_hex(text))
    except ValueError:
        raise ValueError(f"{color!r} is not a colour (#rrggbb, #rgb or a name such as 'navy')") from None


def class_colors(classes: Sequence[str], colors: Mapping[str, str] | None = None) -> list[str]:
    """``#rrggbb`` per class, in the order of ``classes``: ``colors[class]`` where given, else
    the default of the first :data:`NAMED` entry that begins a word of its name (``cloud_shadow``:
    shadow; ``vegetation``: veget) unless another class has that colour already, else the next
    colour of :data:`CYCLE` not yet used."""
    given = {k: to_hex(v) for k, v in (colors or {}).items()}
    chosen: list[str | None] = []
    for name in classes:
        if name in given:
            chosen.append(given[name])
            continue
        words = re.split(r"[^a-z0-9]+", name.lower())
        named = next((c for word, c in NAMED if any(w.startswith(word) for w in words)), None)
        # a colour another class already has: the next free one instead (classes stay apart)
        taken = set(given.values()) | {c for c in chosen if c}
        chosen.append(named if named not in taken else None)
    free = [c for c in CYCLE if c not in chosen and c not in given.values()]
    out: list[str] = []
    for color in chosen:
        if color is None:
            color = free.pop(0) if free else CYCLE[len(out) % len(CYCLE)]
        out.append(color)
    return out


def rgb(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` as 0-255 integers."""
    value = to_hex(color)
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def colormap(colors: Sequence[str]) -> dict[int, tuple[int, int, int, int]]:
    """A GeoTIFF colour table: class ``i`` in ``colors[i]``, opaque (rasterio's ``write_colormap``)."""
    return {i: (*rgb(c), 255) for i, c in enumerate(colors)}
