"""Put a collection and its items into the test STAC API that start-stac-api.sh brings up.

``load(api_url, collection, items)`` goes through the API's Transactions extensions (the start
script enables them): the collection by ``POST /collections`` (``PUT /collections/{id}`` when it is
already there), the items by one ``POST /collections/{id}/bulk_items`` with ``method: upsert``, so
loading the same data twice is harmless. ``delete_collection`` removes a collection with its items.
``load_with_pypgstac`` does the same straight into the database with pypgstac's loader (upserts;
the DSN is in ``$STAC_API_DIR/dsn``).

Run as a script, it checks a running API end to end (load, then searches through pystac-client)::

    tests/stac/start-stac-api.sh
    .venv/bin/python tests/stac/load.py [--url http://127.0.0.1:8082] [--via api|pypgstac]
    tests/stac/stop-stac-api.sh
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

DEFAULT_URL = f"http://127.0.0.1:{os.environ.get('STAC_API_PORT', '8082')}"
DEFAULT_DIR = os.environ.get("STAC_API_DIR", "/tmp/snakemap-stac-api")


def _check(response: requests.Response) -> requests.Response:
    if response.status_code >= 400:
        request = f"{response.request.method} {response.url}"
        raise RuntimeError(f"{request}: {response.status_code} {response.text}")
    return response


def load(api_url: str, collection: dict[str, Any], items: Iterable[dict[str, Any]]) -> None:
    """Create or replace ``collection``, then insert or replace ``items`` (all of that collection)."""
    api_url = api_url.rstrip("/")
    cid = collection["id"]
    with requests.Session() as http:
        if http.get(f"{api_url}/collections/{cid}", timeout=30).status_code == 200:
            _check(http.put(f"{api_url}/collections/{cid}", json=collection, timeout=30))
        else:
            _check(http.post(f"{api_url}/collections", json=collection, timeout=30))
        by_id = {}
        for item in items:
            if item.get("collection", cid) != cid:
                raise ValueError(f"item {item['id']} belongs to {item['collection']}, not {cid}")
            by_id[item["id"]] = {**item, "collection": cid}
        if by_id:
            body = {"items": by_id, "method": "upsert"}
            _check(http.post(f"{api_url}/collections/{cid}/bulk_items", json=body, timeout=60))


def delete_collection(api_url: str, collection_id: str) -> bool:
    """Remove a collection and its items; False when there was none."""
    response = requests.delete(f"{api_url.rstrip('/')}/collections/{collection_id}", timeout=30)
    if response.status_code == 404:
        return False
    _check(response)
    return True


def load_with_pypgstac(dsn: str, collection: dict[str, Any], items: Iterable[dict[str, Any]]) -> None:
    """The same as ``load``, straight into the database with pypgstac's ``Loader`` (upserts)."""
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    with PgstacDB(dsn=dsn) as db:
        loader = Loader(db=db)
        loader.load_collections(iter([collection]), Methods.upsert)
        loader.load_items(iter([{**item, "collection": collection["id"]} for item in items]), Methods.upsert)


# --- the end-to-end check --------------------------------------------------------------------


def example(collection_id: str = "snakemap-check") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tiny collection and 3 items: a and b overlap near (10.5, 50.5), c lies far away;
    a and c are in June 2024, b in July; cloud cover 5, 12 and 60 %."""
    collection = {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": collection_id,
        "description": "a tiny collection for the snakemap STAC API check",
        "license": "CC0-1.0",
        "extent": {
            "spatial": {"bbox": [[10.0, 10.0, 31.0, 51.2]]},
            "temporal": {"interval": [["2024-06-01T00:00:00Z", "2024-07-31T00:00:00Z"]]},
        },
        "links": [],
    }

    def item(iid: str, bbox: list[float], when: str, cloud: float) -> dict[str, Any]:
        w, s, e, n = bbox
        return {
            "type": "Feature",
            "stac_version": "1.0.0",
            "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
            "id": iid,
            "collection": collection_id,
            "bbox": bbox,
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "properties": {"datetime": when, "eo:cloud_cover": cloud},
            "assets": {
                "visual": {
                    "href": f"http://127.0.0.1:9/scenes/{iid}.tif",
                    "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    "roles": ["data"],
                }
            },
            "links": [],
        }

    items = [
        item("scene-a", [10.0, 50.0, 11.0, 51.0], "2024-06-01T10:00:00Z", 5.0),
        item("scene-b", [10.2, 50.2, 11.2, 51.2], "2024-07-15T10:00:00Z", 12.0),
        item("scene-c", [30.0, 10.0, 31.0, 11.0], "2024-06-10T10:00:00Z", 60.0),
    ]
    return collection, items


def check(api_url: str, via: str) -> None:
    from pystac_client import Client

    collection, items = example()
    cid = collection["id"]
    t0 = time.monotonic()
    if via == "api":
        load(api_url, collection, items)
        load(api_url, collection, items)  # twice: upserts, no conflict
    else:
        dsn = (Path(DEFAULT_DIR) / "dsn").read_text().strip()
        load_with_pypgstac(dsn, collection, items)
        load_with_pypgstac(dsn, collection, items)
    print(f"loaded 1 collection and {len(items)} items via {via} (twice) in {time.monotonic() - t0:.2f} s")

    client = Client.open(api_url)
    # stac-fastapi 7 advertises sort as .../v1.1.0/item-search#sort; pystac-client 0.9.1 knows only
    # v1.0.* and would warn "Server does not conform to SORT" (it sends sortby all the same)
    client.add_conforms_to("SORT")
    asc = ["+properties.datetime"]

    def ids(**kw: Any) -> list[str]:
        return [i.id for i in client.search(collections=[cid], **kw).items()]

    cases: list[tuple[str, dict[str, Any], list[str]]] = [
        ("all, default order (datetime descending)", {}, ["scene-b", "scene-c", "scene-a"]),
        ("all, sortby +datetime", {"sortby": asc}, ["scene-a", "scene-c", "scene-b"]),
        ("bbox", {"bbox": [9, 49, 12, 52], "sortby": asc}, ["scene-a", "scene-b"]),
        ("datetime", {"datetime": "2024-06-01/2024-06-30", "sortby": asc}, ["scene-a", "scene-c"]),
        (
            "query eo:cloud_cover<20",
            {"query": {"eo:cloud_cover": {"lt": 20}}, "sortby": asc},
            ["scene-a", "scene-b"],
        ),
        (
            "bbox + datetime + query",
            {
                "bbox": [9, 49, 12, 52],
                "datetime": "2024-06-01/2024-06-30",
                "query": {"eo:cloud_cover": {"lt": 20}},
            },
            ["scene-a"],
        ),
    ]
    failed = 0
    for name, kw, want in cases:
        got = ids(**kw)
        ok = got == want
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {got}" + ("" if ok else f" (want {want})"))

    # paging: limit=1 follows the `next` links, one item a page, every item once, the same order
    search = client.search(collections=[cid], limit=1, sortby=asc)
    pages = [[i.id for i in page.items] for page in search.pages()]
    ok = pages == [["scene-a"], ["scene-c"], ["scene-b"]]
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} paging limit=1: {pages}")

    got_item = next(client.search(ids=["scene-a"], collections=[cid]).items())
    href = got_item.assets["visual"].href
    ok = href == "http://127.0.0.1:9/scenes/scene-a.tif" and got_item.properties["eo:cloud_cover"] == 5.0
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} asset href and properties kept: {href}")

    if not delete_collection(api_url, cid) or ids():
        failed += 1
        print("FAIL delete_collection")
    else:
        print("ok   delete_collection")
    if failed:
        sys.exit(f"{failed} check(s) failed")
    print("all checks passed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--via", choices=["api", "pypgstac"], default="api")
    args = parser.parse_args()
    check(args.url, args.via)
