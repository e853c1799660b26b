"""Shared fixtures and helpers: real GeoTIFFs, a real HTTP server on 127.0.0.1, paths to the shared
data, the real snakemake on a small config (and the embedded demo, run once per session).

Test modules import these helpers from ``tests.conftest``, never from one another."""

from __future__ import annotations

import contextlib
import http.server
import json
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


def calval_row(site: str) -> dict:
    """A manifest row of a calval site, ``site``: the demo scene written under that name."""
    return {**demo_row("a1"), "scene_id": site, "uri": f"resources/demo/images/{site}.tif",
            "label_uri": f"resources/demo/labels/{site}.tif", "role": "calval", "aoi": site}  # fmt: skip


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
    proc = snakemake(work, timeout=1800)
    (work / "console.txt").write_text(proc.stdout + proc.stderr)  # what `make demo` prints
    return work


#: the bands of the apply tests' scenes
APPLY_BANDS = ["blue", "green", "red", "nir"]


def random_checkpoint(path: Path, bands: list[str], classes: tuple[str, ...] = ("land", "water")) -> Path:
    """A checkpoint as training writes it (hyperparameters + state dict), with random weights."""
    import torch

    from snakemap.tasks.networks import build_model

    torch.manual_seed(0)
    net = build_model("FPN", "mobilenet_v2", len(bands), len(classes))
    hp = {
        "arch": "FPN",
        "encoder_name": "mobilenet_v2",
        "classes": list(classes),
        "band_names": bands,
        "mean": [100.0] * len(bands),
        "std": [50.0] * len(bands),
    }
    torch.save(
        {"hyper_parameters": hp, "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, path
    )
    return path


def tile(path: Path, data: np.ndarray, west: float, north: float, nodata: float | None = 0) -> Path:
    return write_tif(
        path,
        data,
        crs="EPSG:32755",
        transform=from_origin(west, north, 10, 10),
        nodata=nodata,
        descriptions=APPLY_BANDS[: data.shape[0]],
    )


def scene_data(seed: int, size: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 300, (4, size, size)).astype(np.uint16)


def apply_manifest(path: Path, scenes: dict[str, str]) -> Path:
    rows = "".join(f"{s},{u},apply\n" for s, u in scenes.items())
    path.write_text("scene_id,uri,role\n" + rows)
    return path


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
    from snakemap.core.label_sections import LabelOptions
    from snakemap.core.sections import BandOptions, CleanOptions, DemoOptions, SplitOptions
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


#: the STAC test catalogue (:func:`catalog`): its bands, those at 10 m and at 20 m, their assets
STAC_BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
STAC_FINE, STAC_COARSE = STAC_BANDS[:4], STAC_BANDS[4:]
STAC_ASSETS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir16": "B11", "swir22": "B12"}
STAC_SCL_INVALID = [3, 8, 9]  # cloud shadow, cloud medium and high probability


def write_band(path: Path, data: np.ndarray, res: float, west: float, north: float) -> None:
    profile = dict(driver="COG", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype.name,
                   crs="EPSG:32755", transform=from_origin(west, north, res, res), nodata=0)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A demo scene as a STAC Item (four 10 m bands, two 20 m bands, a 20 m SCL mask, scale 1e-4
    and offset -0.1 in raster:bands, relative hrefs) and its GeoTIFF twin: the seven bands on the
    10 m grid, each 20 m pixel repeated 2 x 2, the same scale and offset in its sensor entry."""
    import pystac
    from pystac.extensions.raster import RasterBand, RasterExtension

    from snakemap.data.demo import synth_scene

    root = tmp_path_factory.mktemp("stac")
    dn, _ = synth_scene("stac1", 96)
    dn = (dn.astype(np.int64) + 1000).clip(1, 65535).astype(np.uint16)  # the offset keeps them positive
    dn[:, :3, :] = 0  # a nodata strip
    west, north = 400000.0, 8100000.0
    coarse = dn[4:, ::2, ::2]  # 20 m: the top-left pixel of each 2 x 2 block
    scl = np.full((48, 48), 4, dtype=np.uint8)  # vegetation
    scl[10:20, 30:40] = 9  # cloud
    scl[30:34, 5:9] = 3  # cloud shadow
    (root / "item").mkdir()
    item = pystac.Item("S2_T55_stac1", None, None, pystac.utils.str_to_datetime("2026-05-01T00:00:00Z"), {})
    from shapely.geometry import box, mapping

    item.geometry, item.bbox = mapping(box(140, -17, 141, -16)), [140, -17, 141, -16]
    for band in STAC_BANDS:
        fine = band in STAC_FINE
        data = dn[STAC_BANDS.index(band)] if fine else coarse[STAC_COARSE.index(band)]
        write_band(root / "item" / f"{STAC_ASSETS[band]}.tif", data, 10.0 if fine else 20.0, west, north)
        asset = pystac.Asset(f"./{STAC_ASSETS[band]}.tif", media_type=pystac.MediaType.COG, roles=["data"])
        item.add_asset(STAC_ASSETS[band], asset)
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(nodata=0, scale=1e-4, offset=-0.1)
        ]
    write_band(root / "item" / "SCL.tif", scl, 20.0, west, north)
    item.add_asset("SCL", pystac.Asset("./SCL.tif", media_type=pystac.MediaType.COG, roles=["data"]))
    (root / "item" / "item.json").write_text(
        json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False))
    )
    twin = np.concatenate([dn[:4], coarse.repeat(2, 1).repeat(2, 2), scl.repeat(2, 0).repeat(2, 1)[None]])
    profile = dict(driver="GTiff", width=96, height=96, count=7, dtype="uint16", crs="EPSG:32755",
                   transform=from_origin(west, north, 10, 10), nodata=0)  # fmt: skip
    with rasterio.open(root / "twin.tif", "w", **profile) as dst:
        dst.write(twin.astype(np.uint16))
    return {"root": root, "item": root / "item" / "item.json", "twin": root / "twin.tif"}


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Files of a folder with HTTP range requests, as GDAL's /vsicurl/ reads COGs."""

    def do_GET(self) -> None:  # the http.server API names it
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start, _, end = wanted[6:].partition("-")
            first, last = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
            body = data[first : last + 1]
        else:
            self.send_response(200)
            body = data
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """``folder`` on a real HTTP server with range requests on 127.0.0.1 (a free port): its URL."""

    def handler(*args: object) -> RangeHandler:
        return RangeHandler(*args, directory=str(folder))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(catalog: dict[str, Path]) -> Iterator[str]:
    """The STAC test catalogue's folder over HTTP, for one test."""
    with serving(catalog["root"]) as url:
        yield url


@pytest.fixture(scope="module")
def served_catalog(catalog: dict[str, Path]) -> Iterator[str]:
    """The STAC test catalogue's folder over HTTP, for a module."""
    with serving(catalog["root"]) as url:
        yield url


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="store the golden quality figures and resolved configs anew",
    )
