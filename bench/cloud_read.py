"""Apply's reads of an s3:// scene: the whole file downloaded, or 4 of its 13 bands read in place.

A 13-band 2048 x 2048 uint16 scene (smooth fields plus sensor noise, deflate: 109 MB raw, 80 MB
stored) goes into a real S3 server on 127.0.0.1 (moto, behind a proxy that counts the bytes it
sends and can play a slower network), in two layouts:

- ``band``: tiled 512 x 512, band-interleaved (each tile holds one band);
- ``cog``: GDAL 3.10's COG driver (tiled 512 x 512, pixel-interleaved: each tile holds all 13).

Each is read the way apply reads it (:meth:`snakemap.inference.scenes.ScenePreparer.prepare`: acquire or
open, then the survey pass; then the prediction pass, strip by strip), with ``bands.select``
keeping 4 bands, once with ``acquire.read_in_place: false`` (download, then read the local copy,
all 13 bands, as apply reads local scenes) and once with it on (the 4 bands alone). Printed: bytes
the server sent, requests, wall seconds; on loopback and on a simulated 200 Mbit/s link with 20 ms
per request.

Run: ``.venv/bin/python bench/cloud_read.py`` (about 80 s).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin
from scipy.ndimage import zoom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.objectstore

from tests.objectstore import ObjectStore

from snakemap.core.apply_sections import ApplyOptions, PredictOptions
from snakemap.core.sections import AcquireOptions, BandOptions, CleanOptions
from snakemap.inference.readers import SURVEY_ROWS
from snakemap.inference.scenes import SceneInput
from snakemap.inference.shard import ShardRunner

S2 = ["b01", "b02", "b03", "b04", "b05", "b06", "b07", "b08", "b8a", "b09", "b10", "b11", "b12"]
SELECT = ["b02", "b03", "b04", "b08"]


def scene(size: int, seed: int = 0) -> np.ndarray:
    """``(13, size, size)`` uint16: per band a smooth field (fields, rivers, hills at a few
    hundred metres) scaled like reflectance DN, plus noise of a few DN."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((13, size // 64, size // 64)).astype(np.float32)
    fine = rng.random((13, size // 8, size // 8)).astype(np.float32)
    out = np.empty((13, size, size), np.uint16)
    for b in range(13):
        field = zoom(coarse[b], 64, order=1) * 2500 + zoom(fine[b], 8, order=0) * 400
        out[b] = np.clip(field + 300 + rng.normal(0, 12, (size, size)), 1, 10000).astype(np.uint16)
    return out


def write_layouts(folder: Path, size: int) -> dict[str, Path]:
    """The scene as a band-interleaved tiled GeoTIFF and as a (pixel-interleaved) COG."""
    data = scene(size)
    band = folder / "band.tif"
    profile = {
        "driver": "GTiff",
        "count": 13,
        "height": size,
        "width": size,
        "dtype": "uint16",
        "crs": "EPSG:32755",
        "transform": from_origin(500000, 8000000, 10, 10),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "interleave": "band",
        "compress": "deflate",
    }
    with rasterio.open(band, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(S2, start=1):
            dst.set_band_description(i, name)
    cog = folder / "cog.tif"
    rasterio.shutil.copy(band, cog, driver="COG", compress="DEFLATE", blocksize=512, overviews="NONE")
    return {"band": band, "cog": cog}


def read_like_apply(root: Path, uri: str, options: AcquireOptions) -> None:
    """prepare() (acquire or open in place, survey), then every strip once more as prediction does."""
    runner = ShardRunner(
        root,
        None,
        BandOptions(names=S2, select=list(SELECT)),
        CleanOptions(),
        PredictOptions(),
        ApplyOptions(),
        options,
    )
    prepared = runner.preparer.prepare(SceneInput("s", uri))
    assert prepared.reader is not None and prepared.status is not None, prepared.status
    assert prepared.status.status == "ok", prepared.status
    reader = prepared.reader
    for top in range(0, reader.height, SURVEY_ROWS):
        reader.read_rows(top, min(top + SURVEY_ROWS, reader.height))
    reader.close()
    prepared.scratch.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048, help="rows and columns of the scene")
    args = parser.parse_args()
    # as `snakemap apply-shard` sets it: the block cache that keeps the survey's blocks for prediction
    os.environ.setdefault("GDAL_CACHEMAX", str(ApplyOptions().gdal_cache_mb))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    store = ObjectStore().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            files = write_layouts(folder, args.size)
            print(f"scene: 13 x {args.size} x {args.size} uint16, {len(SELECT)} bands selected ({SELECT})")
            for name, path in files.items():
                print(f"  {name}: {path.stat().st_size / 1e6:.1f} MB")
            print(f"{'layout':6} {'network':22} {'read':9} {'MB sent':>8} {'requests':>8} {'seconds':>8}")
            run = 0
            for network, latency, mbps in (("loopback", 0.0, 0.0), ("200 Mbit/s, 20 ms/req", 0.02, 200.0)):
                store.latency_s, store.mbps = latency, mbps
                for name, path in files.items():
                    for in_place in (False, True):
                        run += 1  # a new object each time: nothing comes from GDAL's or s3fs's caches
                        uri = store.put("bench", f"{run}/{name}.tif", path)
                        options = AcquireOptions(endpoint_url=store.endpoint_url, read_in_place=in_place)
                        store.reset_counts()
                        t0 = time.perf_counter()
                        read_like_apply(folder / f"maps{run}", uri, options)
                        seconds = time.perf_counter() - t0
                        how = "in place" if in_place else "download"
                        print(
                            f"{name:6} {network:22} {how:9} {store.bytes_sent / 1e6:8.1f} "
                            f"{store.requests:8d} {seconds:8.2f}"
                        )
    finally:
        store.stop()


if __name__ == "__main__":
    main()
