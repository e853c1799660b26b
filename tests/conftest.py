"""Shared fixtures: real GeoTIFFs, a real HTTP server on 127.0.0.1, paths to the shared data."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_tif(
    path: Path,
    data: np.ndarray,
    crs: str = "EPSG:32755",
    transform: rasterio.Affine | None = None,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
) -> Path:
    """Write a ``(bands, rows, cols)`` (or ``(rows, cols)``) array as a GeoTIFF."""
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=data.dtype,
        crs=crs,
        transform=transform or from_origin(500000, 8000000, 10, 10),
        nodata=nodata,
    ) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, name)
    return path


def demo_chips(
    root: Path, aois: dict[str, str], labels: dict[str, Any], chips: Any, folds: int = 3
) -> dict[str, Any]:
    """Small demo scenes through acquire, clean (blue, green, red, nir), chips, folds and statistics.

    Args:
        root: where everything is written.
        aois: scene name -> AOI, in order.
        labels: the ``labels`` config section.
        chips: a :class:`snakemap.data.chips.ChipOptions`.

    Returns:
        ``indexes`` (one chip table per scene), ``folds``, ``stats`` and ``clean`` (folders).
    """
    from snakemap.data.acquire import acquire_scene
    from snakemap.data.bands import BandOptions
    from snakemap.data.chips import ChipPaths, write_chips
    from snakemap.data.clean import CleanOptions, clean_scene
    from snakemap.data.demo import DemoOptions, write_demo_scene
    from snakemap.data.labels import LabelOptions
    from snakemap.data.splits import SplitOptions, write_folds
    from snakemap.data.stats import write_band_statistics

    options = LabelOptions(**labels)
    indexes, dirs = [], []
    for name in aois:
        image, label = root / "img" / f"{name}.tif", root / "lab" / f"{name}.tif"
        write_demo_scene(name, image, label, DemoOptions(size=96))
        acquire_scene(name, str(image), root / "acq" / name, label_uri=str(label))
        clean = root / "clean" / name
        clean_scene(
            name, root / "acq" / name, clean, BandOptions(select=[1, 2, 3, 4]), CleanOptions(), options
        )
        paths = ChipPaths(
            *(root / "chips" / f"{name}.{s}" for s in ("image.npy", "label.npy", "index.parquet"))
        )
        write_chips(clean, paths, chips, options.target_indices, options.ignore_index)
        indexes.append(paths.index)
        dirs.append(clean)
    write_band_statistics(dirs, root / "bands.json")
    write_folds(indexes, aois, root / "folds.parquet", SplitOptions(folds=folds))
    return {"indexes": indexes, "folds": root / "folds.parquet", "stats": root / "bands.json", "clean": dirs}


@pytest.fixture
def shared_data() -> Path:
    """The real rasters in ../shared/data; skips where a clone has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (a plain clone has no ../shared)")
    return SHARED_DATA


class Behaviour:
    """What the test server answers for each path: a queue of steps, then ``ok`` forever.

    Steps: ``ok`` (the whole body), ``500``, ``404``, ``truncate`` (announces the full length,
    sends half, closes).
    """

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.steps: dict[str, list[str]] = {}
        self.hits: dict[str, int] = {}

    def serve(self, path: str, body: bytes, *steps: str) -> None:
        self.bodies[path] = body
        self.steps[path] = list(steps)
        self.hits[path] = 0


class HTTPFixture:
    def __init__(self, server: http.server.ThreadingHTTPServer, behaviour: Behaviour) -> None:
        self.server = server
        self.behaviour = behaviour

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def serve(self, path: str, body: bytes, *steps: str) -> str:
        self.behaviour.serve(path, body, *steps)
        return self.url(path)

    def hits(self, path: str) -> int:
        return self.behaviour.hits[path]


@pytest.fixture
def http_server() -> Iterator[HTTPFixture]:
    """A real HTTP server on 127.0.0.1 (a free port) whose answers each test scripts."""
    behaviour = Behaviour()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API names it
            path = self.path
            if path not in behaviour.bodies:
                self.send_error(404)
                return
            behaviour.hits[path] += 1
            step = behaviour.steps[path].pop(0) if behaviour.steps[path] else "ok"
            body = behaviour.bodies[path]
            if step in ("500", "404"):
                self.send_error(int(step))
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if step == "ok" else body[: len(body) // 2])
            if step == "truncate":
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HTTPFixture(server, behaviour)
    finally:
        server.shutdown()
        server.server_close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="store the golden quality test's new figures"
    )
