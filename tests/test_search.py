"""``snakemap search`` against a real STAC API on 127.0.0.1 (stac-fastapi with its pgstac backend
on PostgreSQL and PostGIS, what the Planetary Computer runs, started and stopped by
tests/stac/*.sh): paged, deterministic manifests whose items acquire and clean from the API, with
their COG assets on a loopback HTTP server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from snakemap.core.sections import BandOptions, CleanOptions, SensorOptions
from snakemap.data.acquire import acquire_scene
from snakemap.data.clean import clean_scene
from snakemap.plan.manifest import read_manifest
from tests.conftest import REPO, STAC_ASSETS, STAC_BANDS, STAC_SCL_INVALID
from tests.stac.load import delete_collection, load

pytestmark = pytest.mark.slow
COLLECTION = "snakemap-s2-test"
#: not under pytest's temporary folder: PostgreSQL runs as another user, who cannot enter it
API_DIR = "/tmp/snakemap-stac-api-tests"


@pytest.fixture(scope="module")
def stac_api() -> Iterator[str]:
    """The API's URL; skipped, with the script's reason, where it cannot start (no root for
    Debian's PostGIS, say)."""
    env = dict(os.environ, STAC_API_DIR=API_DIR, STAC_API_PYTHON=sys.executable)
    start = subprocess.run(
        [str(REPO / "tests" / "stac" / "start-stac-api.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if start.returncode != 0:
        pytest.skip(f"the STAC API did not start: {start.stderr.strip()[-500:]}")
    try:
        yield start.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            [str(REPO / "tests" / "stac" / "stop-stac-api.sh")], env=env, capture_output=True, timeout=120
        )


@pytest.fixture(scope="module")
def loaded(stac_api: str, catalog: dict[str, Path], served_catalog: str) -> str:
    """Three items of the test catalogue's scene on the API, their assets' hrefs on the loopback
    HTTP server: two in May with 5% and 12% cloud, one in July with 60%."""
    item = json.loads(catalog["item"].read_text())
    for asset in item["assets"].values():
        asset["href"] = f"{served_catalog}/item/{asset['href'].removeprefix('./')}"
    items = []
    for iid, when, cloud, tile in (
        ("S2B_T55KDA_20260510", "2026-05-10T00:30:00Z", 5.0, "55KDA"),
        ("S2A_T55KDA_20260502", "2026-05-02T00:30:00Z", 12.0, "55KDA"),
        ("S2A_T55KDB_20260701", "2026-07-01T00:30:00Z", 60.0, "55KDB"),
    ):
        props = {**item["properties"], "datetime": when, "eo:cloud_cover": cloud, "s2:mgrs_tile": tile}
        items.append({**item, "id": iid, "collection": COLLECTION, "properties": props, "links": []})
    collection = {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": COLLECTION,
        "description": "snakemap's test scenes",
        "license": "CC0-1.0",
        "extent": {
            "spatial": {"bbox": [[140.0, -17.0, 141.0, -16.0]]},
            "temporal": {"interval": [["2026-05-01T00:00:00Z", "2026-07-31T00:00:00Z"]]},
        },
        "links": [],
    }
    delete_collection(stac_api, COLLECTION)
    load(stac_api, collection, items)
    return stac_api


def search(api: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "snakemap",
        "search",
        "--stac-api",
        api,
        "--collection",
        COLLECTION,
        "-o",
        str(out),
    ]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)


def test_a_search_pages_into_a_deterministic_manifest(loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "manifest.csv"
    done = search(loaded, out, "--bbox", "139", "-18", "142", "-15", "--datetime", "2026-05-01/2026-06-30",
                  "--query", "eo:cloud_cover<20", "--sensor", "s2", "--page-size", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 items" in done.stdout
    rows = read_manifest(out, sensors={"s2"})
    assert rows["scene_id"].tolist() == ["S2A_T55KDA_20260502", "S2B_T55KDA_20260510"]  # by datetime
    assert set(rows["role"]) == {"apply"} and set(rows["aoi"]) == {"55KDA"} and set(rows["sensor"]) == {"s2"}
    assert rows["uri"].str.startswith(f"{loaded}/collections/{COLLECTION}/items/").all()
    asked = json.loads((tmp_path / "manifest.csv.search.json").read_text())
    assert asked["query"] == ["eo:cloud_cover<20"] and asked["items"] == 2 and asked["stac_api"] == loaded
    assert asked["bbox"] == [139, -18, 142, -15] and asked["datetime"] == "2026-05-01/2026-06-30"
    again = tmp_path / "again.csv"
    assert search(loaded, again, "--bbox", "139", "-18", "142", "-15").returncode == 0
    assert read_manifest(again)["scene_id"].tolist() == [
        "S2A_T55KDA_20260502",
        "S2B_T55KDA_20260510",
        "S2A_T55KDB_20260701",
    ]


def test_a_search_that_finds_nothing_writes_nothing(loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "none.csv"
    done = search(loaded, out, "--datetime", "2020-01-01/2020-12-31")
    assert done.returncode == 2 and "the search found no item" in done.stderr and "2020-01-01" in done.stderr
    assert not out.exists() and not (tmp_path / "none.csv.search.json").exists()


def test_a_searched_item_acquires_and_cleans_from_the_api(loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "manifest.csv"
    assert search(loaded, out, "--query", "eo:cloud_cover<10").returncode == 0
    row = read_manifest(out).iloc[0]
    sensor = SensorOptions(
        bands=STAC_BANDS, assets=STAC_ASSETS, mask={"asset": "SCL", "values": STAC_SCL_INVALID}
    )
    acquired = tmp_path / "acquired"
    assert acquire_scene(row["scene_id"], row["uri"], acquired, sensor=sensor)
    assert json.loads((acquired / "item.json").read_text())["id"] == "S2B_T55KDA_20260510"
    status = clean_scene(
        row["scene_id"],
        acquired,
        tmp_path / "clean",
        BandOptions(select=STAC_BANDS),
        CleanOptions(),
        None,
        sensor,
    )
    assert status.status == "ok" and 0.5 < status.valid_fraction < 1, status.reason
