"""Peak memory of the streaming band statistics against the size of the scenes they cover.

Writes N float32 scenes (default 8 of 4 x 2048 x 2048, 64 MiB each) to a temporary folder,
then, in fresh processes, measures peak RSS of (a) importing the package and reading one scene
(the floor) and (b) computing the statistics over all scenes, and prints both beside the total
data size. Streaming means (b) stays near (a), far below the total.

    .venv/bin/python bench/analyze_memory.py [--scenes 8] [--size 2048]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

CHILD = """
import resource, sys, time
from pathlib import Path
paths = sorted(Path(sys.argv[1]).glob("*.tif"))
start = time.perf_counter()
if sys.argv[2] == "stats":
    from snakemap.data.stats import band_statistics
    band_statistics(paths, ["b1", "b2", "b3", "b4"])
else:
    import rasterio, snakemap.data.stats
    with rasterio.open(paths[0]) as src:
        src.read()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - start)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.scenes):
            data = rng.normal(0.1, 0.03, (4, args.size, args.size)).astype(np.float32)
            data[:, : args.size // 10] = np.nan
            with rasterio.open(
                Path(tmp) / f"s{i:03d}.tif",
                "w",
                driver="GTiff",
                count=4,
                width=args.size,
                height=args.size,
                dtype="float32",
                crs="EPSG:32755",
                nodata=float("nan"),
                transform=from_origin(0, 0, 10, 10),
                tiled=True,
            ) as dst:
                dst.write(data)
        total_mib = args.scenes * 4 * args.size * args.size * 4 / 2**20
        results = {}
        for mode in ("one-scene", "stats"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, tmp, mode], capture_output=True, text=True, check=True
            )
            rss, seconds = map(float, out.stdout.split())
            results[mode] = (rss, seconds)
    print(f"scenes: {args.scenes} x 4 x {args.size} x {args.size} float32 = {total_mib:.0f} MiB of pixels")
    print(f"peak RSS, import + read one whole scene:      {results['one-scene'][0]:7.0f} MiB")
    print(
        f"peak RSS, statistics over all scenes:         {results['stats'][0]:7.0f} MiB "
        f"({results['stats'][1]:.1f} s, {total_mib / results['stats'][1]:.0f} MiB/s)"
    )
    print(f"ratio peak(statistics) / all pixels:          {results['stats'][0] / total_mib:7.2f}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"wall: {time.perf_counter() - start:.1f} s")
