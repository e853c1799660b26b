"""Shared fixtures and helpers: real GeoTIFFs, a real HTTP server on 127.0.0.1, paths to the shared
data, the real snakemake on a small config (and the embedded demo, run once per session).

Test modules import these helpers from ``tests.conftest``, never from one another."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: a small workflow config: the demo scenes, four of their six bands and the NDWI, 32-pixel chips
CONFIG = {
    "manifest": "config/manifest.csv",
    "demo": {"size": 96, "empty": ["e1"]},
    "bands": {
        "names": ["blue", "green", "red", "nir", "swir16", "swir22"],
        "select": ["blue", "green", "red", "nir"],
        "indices": ["ndwi"],
    },
    "acquire": {"retries": 2, "backoff_s": 0.05, "timeout_s": 10},
    "labels": {
        "classes": ["land", "water", "reef", "cloud"],
        "remap": {0: "land", 1: "water", 2: "water", 3: "reef", 4: "cloud"},
        "target": ["reef"],
    },
    "chips": {"size": 32, "max_nodata_fraction": 0.5},
    "splits": {"folds": 3},
}
DEMO = ["a1", "a2", "b1", "c1", "e1"]
AOI = {"a1": "A", "a2": "A", "b1": "B", "c1": "C", "e1": "E"}


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real snakemake (this virtualenv's) on the repository's workflow, run in ``workdir``."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        "--snakefile", str(REPO / "workflow" / "Snakefile"),
        "--workflow-profile", str(REPO / "profiles" / "default"),
        "--cores", "2",
        *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(workdir: Path) -> dict[str, int]:
    """The job counts of a dry run, by rule (``{}`` when there is nothing to be done)."""
    out = snakemake(workdir, "--dry-run").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def workspace(tmp_path: Path, config: dict, manifest: list[dict]) -> Path:
    """A project folder: ``config/config.yaml`` and ``config/manifest.csv`` from these."""
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    pd.DataFrame(manifest).to_csv(tmp_path / "config" / "manifest.csv", index=False)
    return tmp_path


def demo_row(name: str) -> dict:
    """A manifest row of a training scene, the demo scene ``name`` (one of :data:`DEMO`)."""
    return {
        "scene_id": name,
        "uri": f"resources/demo/images/{name}.tif",
        "sha256": "",
        "label_uri": f"resources/demo/labels/{name}.tif",
        "role": "train",
        "aoi": AOI[name],
    }


def apply_row(name: str, uri: str | None = None) -> dict:
    """A manifest row of an apply scene (no label), by default the demo quad ``name``."""
    return {**demo_row("a1"), "scene_id": name, "uri": uri or f"resources/demo/images/{name}.tif",
            "label_uri": "", "role": "apply", "aoi": ""}  # fmt: skip


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded demo (config/config.yaml, config/demo_manifest.csv) run whole by the real
    snakemake, once per session: the finished project folder. Tests only read its outputs."""
    work = tmp_path_factory.mktemp("demo")
    (work / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    shutil.copy(REPO / "config" / "demo_manifest.csv", work / "config" / "demo_manifest.csv")
    # A few minutes on 2 idle cores; the margin is for a machine that is busy with other work.
    snakemake(work, timeout=1800)
    return work


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
    from snakemap.core.sections import BandOptions, CleanOptions, DemoOptions, LabelOptions, SplitOptions
    from snakemap.data.acquire import acquire_scene
    from snakemap.data.chips import ChipPaths, write_chips
    from snakemap.data.clean import clean_scene
    from snakemap.data.demo import write_demo_scene
    from snakemap.data.splits import write_folds
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
        "--update-golden",
        action="store_true",
        help="store the golden quality figures and resolved configs anew",
    )
