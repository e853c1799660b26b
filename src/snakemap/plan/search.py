"""``snakemap search``: a STAC API query to a manifest of STAC Items, before the run.

The workflow reads its manifest when it plans, so a search is its own step: it pages through the
API's ``/search`` (pystac-client), and writes one row per item, in a deterministic order (by
datetime, then id), atomically:

    scene_id  the item's id (characters a file name cannot hold become ``_``)
    uri       the item's own URL on the API (acquire and apply read its assets from there)
    role      ``--role``
    aoi       the item's grid tile (``grid:code``, ``s2:mgrs_tile``, Landsat's WRS path and row),
              else its footprint's 1-degree cell: the group of the cross-validation folds
    sensor    ``--sensor`` (the entry whose ``assets`` map its bands)
    datetime  the item's datetime (or start_datetime)

Beside it, ``{manifest}.search.json`` records the query and when it ran, so that a run can say
what its manifest was made from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from snakemap.core.io import write_csv, write_json

#: characters a scene id cannot hold (see :data:`snakemap.plan.manifest.SCENE_ID_PATTERN`)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SearchError(ValueError):
    """A search that cannot give a manifest: nothing found, or an API that does not answer."""


def scene_id(item_id: str) -> str:
    """A safe scene id for a STAC item id."""
    safe = _UNSAFE.sub("_", item_id).lstrip("._-")
    return safe[:200] or "item"


def aoi_of(item: Any) -> str:
    """The item's grid tile, else the 1-degree cell of its footprint's centre."""
    props = item.properties
    for key in ("grid:code", "s2:mgrs_tile", "mgrs:utm_zone"):
        if props.get(key):
            return scene_id(str(props[key]))
    if props.get("landsat:wrs_path") and props.get("landsat:wrs_row"):
        return f"WRS2-{props['landsat:wrs_path']}-{props['landsat:wrs_row']}"
    if item.bbox:
        west, south, east, north = item.bbox[:4]
        return f"cell_{math.floor((west + east) / 2)}_{math.floor((south + north) / 2)}"
    return scene_id(item.id)


#: one ``--query`` comparison: a property, an operator, a value
_COMPARISON = re.compile(r"^\s*([A-Za-z_][\w:.\-]*)\s*(<=|>=|!=|=|<|>)\s*(.+?)\s*$")


def cql2(expressions: Sequence[str]) -> dict[str, Any] | None:
    """``--query`` comparisons (``eo:cloud_cover<20``) as one CQL2-JSON filter (the Filter
    extension: the Query extension's paging is broken on stac-fastapi-pgstac 7.2, whose pages
    after the first carry no next link); None for none.

    Raises:
        SearchError: naming a comparison that does not parse.
    """
    args = []
    for text in expressions:
        found = _COMPARISON.match(text)
        if found is None:
            raise SearchError(f"--query {text!r}: write property, operator (< <= > >= = !=) and value")
        prop, op, raw = found.groups()
        value: Any = raw.strip("'\"")
        with contextlib.suppress(ValueError):  # a number where it reads as one
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        args.append({"op": "<>" if op == "!=" else op, "args": [{"property": prop}, value]})
    if not args:
        return None
    return args[0] if len(args) == 1 else {"op": "and", "args": args}


def search_manifest(
    api: str,
    collections: Sequence[str],
    out: str | os.PathLike[str],
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    query: Sequence[str] = (),
    sensor: str = "",
    role: str = "apply",
    page_size: int = 100,
    max_items: int | None = None,
) -> pd.DataFrame:
    """Search ``api`` and write the manifest ``out`` and ``{out}.search.json`` (see the module
    docstring); return the manifest.

    Raises:
        SearchError: naming the query, when the API fails or finds nothing (nothing is written).
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    asked = {
        "stac_api": api,
        "collections": list(collections),
        "bbox": list(bbox) if bbox else None,
        "datetime": datetime,
        "query": list(query),
        "sensor": sensor,
        "role": role,
    }
    try:
        client = Client.open(api)
        client.add_conforms_to("ITEM_SEARCH")
        condition = cql2(query)
        if condition is not None:
            client.add_conforms_to("FILTER")
        found = client.search(
            collections=list(collections),
            bbox=list(bbox) if bbox else None,
            datetime=datetime,
            filter=condition,
            filter_lang="cql2-json" if condition is not None else None,
            limit=page_size,
            max_items=max_items,
        )
        items = list(found.items())
    except (APIError, OSError, ValueError) as exc:
        raise SearchError(
            f"the STAC API {api} failed the search {asked}: {type(exc).__name__}: {exc}"
        ) from exc
    if not items:
        raise SearchError(f"the search found no item: {asked}")
    rows = []
    for item in items:
        when = item.datetime or item.common_metadata.start_datetime
        self_href = (
            item.get_self_href() or f"{api.rstrip('/')}/collections/{item.collection_id}/items/{item.id}"
        )
        rows.append(
            {
                "scene_id": scene_id(item.id),
                "uri": self_href,
                "role": role,
                "aoi": aoi_of(item),
                "sensor": sensor,
                "datetime": when.isoformat() if when else "",
            }
        )
    table = pd.DataFrame(rows).sort_values(["datetime", "scene_id"], kind="stable").reset_index(drop=True)
    twice = sorted(set(table["scene_id"][table["scene_id"].duplicated()]))
    if twice:
        raise SearchError(f"items of several collections share the ids {twice[:10]}: search one collection")
    write_csv(table, out)
    write_json(
        Path(f"{out}.search.json"),
        {**asked, "searched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "items": len(table)},
    )
    return table
