"""Global application's throughput and memory: a shard of real-size scenes served over HTTP.

Part 1: a shard of ``--scenes`` generated 6-band uint16 scenes of ``--size`` pixels, served by a
real HTTP server on 127.0.0.1 that waits ``--latency`` seconds before each response, applied by
``snakemap apply-shard`` (Unet/resnet18, random weights) with ``apply.prefetch`` 0 (one scene
after another) and 1 (the next scene downloads, opens and is surveyed while one predicts).
Prints scenes per hour, the model's share of the wall time and the job's peak RSS.

Part 2: peak RSS of one ``--big``-pixel 6-band scene (Sentinel-2's 10980 by default) through apply's
strip-by-strip path, beside the whole-scene path (``read_clean``, as apply worked before), with a
1x1-convolution model so the model's own memory does not hide the scene's.

Every measurement runs in a fresh process; ``ru_maxrss`` of that process is its peak RSS.

    .venv/bin/python bench/apply_throughput.py            # 8 x 4096^2, latency 1 s, big 10980
    .venv/bin/python bench/apply_throughput.py --quick    # 8 x 1024^2, big 4096: a smoke test
    .venv/bin/python bench/apply_throughput.py --parts 1 --prefetch 1   # the full shard, prefetched
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]


def write_scene(path: Path, size: int, seed: int) -> None:
    """A 6-band uint16 tiled GeoTIFF, smooth fields plus noise, written strip by strip."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 6,
        "dtype": "uint16",
        "crs": "EPSG:32755",
        "transform": from_origin(300000 + seed * size * 10, 8000000, 10, 10),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
    }
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for band in range(6):
            dst.set_band_description(band + 1, BANDS[band])
        for top in range(0, size, 512):
            rows = min(512, size - top)
            strip = rng.integers(200, 4000, (6, rows, size), dtype=np.uint16)
            dst.write(strip, window=rasterio.windows.Window(0, top, size, rows))
    tmp.rename(path)


def checkpoint(path: Path) -> None:
    """A checkpoint as training writes it: Unet/resnet18 with random weights, 7 bands in."""
    from snakemap.tasks.networks import build_model

    torch.manual_seed(0)
    hp = {
        "arch": "Unet",
        "encoder_name": "resnet18",
        "classes": ["land", "water"],
        "band_names": [*BANDS, "ndwi"],
        "mean": [0.2] * 7,
        "std": [0.1] * 7,
    }
    state = {f"model.{k}": v for k, v in build_model("Unet", "resnet18", 7, 2).state_dict().items()}
    torch.save({"hyper_parameters": hp, "state_dict": state}, path)


class SlowHandler(http.server.SimpleHTTPRequestHandler):
    latency = 0.0

    def do_GET(self) -> None:
        time.sleep(self.latency)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def serve(folder: Path, latency: float) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A real HTTP server on 127.0.0.1 that waits ``latency`` seconds before each response."""
    handler = type("Handler", (SlowHandler,), {"latency": latency})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(folder), **k)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def measured(child: str, **kwargs: object) -> dict[str, float]:
    """Run ``child`` (a function below) in a fresh process; its figures plus its peak RSS (MiB)."""
    cmd = [sys.executable, __file__, "--child", child, "--kwargs", json.dumps(kwargs, default=str)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def shard(manifest: str, root: str, ckpt: str, prefetch: int) -> dict[str, float]:
    """One shard through the real CLI, as the workflow's rule runs it."""
    from snakemap.cli import main

    options = {
        "bands": {"names": BANDS, "indices": ["ndwi"]},
        "predict": {"window": 512, "overlap": 32, "batch_size": 2},
        "apply": {"shard_size": 1000, "prefetch": prefetch},
        # downloads, as from a plain web server (this one answers no Range requests)
        "acquire": {"read_in_place": False},
    }
    t0 = time.perf_counter()
    cmd = ["apply-shard", "shard-00000", "--manifest", manifest, "--root", root, "--checkpoint", ckpt]
    main([*cmd, "--options", json.dumps(options)])
    wall = time.perf_counter() - t0
    sentinels = [json.loads(p.read_text()) for p in Path(root, "scenes").glob("*.json")]
    return {
        "wall_s": wall,
        "scenes": len(sentinels),
        "ok": sum(s["status"] == "ok" for s in sentinels),
        "model_s": sum(s["extra"].get("model_s", 0.0) for s in sentinels),
        "acquire_s": sum(s["extra"].get("acquire_s", 0.0) for s in sentinels),
    }


def big_stream(scene: str, root: str) -> dict[str, float]:
    """One big scene through apply's strip-by-strip path, with a 1x1-convolution model and the
    default prediction options (window 256)."""
    from snakemap.core.apply_sections import ApplyOptions, PredictOptions
    from snakemap.core.sections import BandOptions, CleanOptions
    from snakemap.data.stats import Normalizer
    from snakemap.inference.predictor import Member, Predictor
    from snakemap.inference.scenes import SceneInput
    from snakemap.inference.shard import ShardRunner

    os.environ.setdefault("GDAL_CACHEMAX", str(ApplyOptions().gdal_cache_mb))  # as apply-shard does
    baseline = rss_mib()
    norm = Normalizer(np.full(7, 0.2, np.float32), np.full(7, 0.1, np.float32))
    member = Member(torch.nn.Conv2d(7, 2, 1).eval(), [*BANDS, "ndwi"], norm)
    runner = ShardRunner(
        root,
        Predictor([member], ["land", "water"]),
        BandOptions(names=BANDS, indices=["ndwi"]),
        CleanOptions(),
        PredictOptions(),  # the defaults: window 256, overlap 32,
        ApplyOptions(prefetch=0),
    )
    t0 = time.perf_counter()
    done = runner.run_shard("shard-00000", [SceneInput("big", scene)])
    assert done["scenes"][0]["status"] == "ok"
    return {"wall_s": time.perf_counter() - t0, "baseline_mib": baseline}


def big_whole(scene: str) -> dict[str, float]:
    """The whole-scene path that apply took before: the scene read and cleaned in memory."""
    import snakemap.inference.shard  # noqa: F401 - the same imports (and baseline RSS) as the strip path
    from snakemap.core.sections import BandOptions, CleanOptions
    from snakemap.data.clean import judge, read_clean

    baseline = rss_mib()
    t0 = time.perf_counter()
    bands = BandOptions(names=BANDS, indices=["ndwi"])
    cleaned = read_clean(Path(scene), None, bands, CleanOptions(), None)
    assert judge("big", cleaned, CleanOptions(), None).status == "ok"
    return {"wall_s": time.perf_counter() - t0, "baseline_mib": baseline}


def rss_mib() -> float:
    """This process's peak RSS so far, MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CHILDREN = {"shard": shard, "big_stream": big_stream, "big_whole": big_whole}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds before each HTTP response")
    parser.add_argument("--big", type=int, default=10980)
    parser.add_argument("--work", type=Path, default=Path("/tmp/snakemap-apply-bench"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    parser.add_argument(
        "--prefetch", nargs="+", type=int, default=[0, 1], help="apply.prefetch depths of part 1"
    )
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = CHILDREN[args.child](**json.loads(args.kwargs))
        print(json.dumps(dict(figures, rss_mib=rss_mib())))
        return
    if args.quick:
        args.size, args.big = 1024, 4096
    if 1 in args.parts:
        shard_throughput(args)
    if 2 in args.parts:
        big_scene_memory(args)


def shard_throughput(args: argparse.Namespace) -> None:
    work = args.work / f"{args.size}"
    served = work / "served"
    served.mkdir(parents=True, exist_ok=True)
    for i in range(args.scenes):
        write_scene(served / f"s{i}.tif", args.size, i)
    checkpoint(work / "unet.ckpt")
    server, url = serve(served, args.latency)
    manifest = work / "manifest.csv"
    rows = "".join(f"s{i},{url}/s{i}.tif,apply\n" for i in range(args.scenes))
    manifest.write_text("scene_id,uri,role\n" + rows)
    print(
        f"part 1: {args.scenes} scenes of {args.size}x{args.size}x6 uint16 over HTTP"
        f" (latency {args.latency:g} s), Unet/resnet18, window 512, {torch.get_num_threads()} threads"
    )
    for prefetch in args.prefetch:
        root = work / f"maps-prefetch{prefetch}"
        shutil.rmtree(root, ignore_errors=True)
        f = measured("shard", manifest=manifest, root=root, ckpt=work / "unet.ckpt", prefetch=prefetch)
        print(
            f"  prefetch {prefetch}: {f['ok']:.0f}/{f['scenes']:.0f} ok, {f['wall_s']:.1f} s,"
            f" {3600 * f['scenes'] / f['wall_s']:.0f} scenes/h, model share {f['model_s'] / f['wall_s']:.3f}"
            f" (goal >= 0.90), downloads {f['acquire_s']:.1f} s, peak RSS {f['rss_mib']:.0f} MiB"
        )
    server.shutdown()


def big_scene_memory(args: argparse.Namespace) -> None:
    big = args.work / f"big{args.big}.tif"
    write_scene(big, args.big, 99)
    print(f"part 2: one {args.big}x{args.big}x6 uint16 scene ({big.stat().st_size / 2**20:.0f} MiB on disk)")
    root = args.work / "maps-big"
    shutil.rmtree(root, ignore_errors=True)
    stream = measured("big_stream", scene=big, root=root)
    whole = measured("big_whole", scene=big)
    for name, f in (
        ("apply, strip by strip (read, clean, predict, write)", stream),
        ("whole-scene path (read and clean alone, no prediction)", whole),
    ):
        print(
            f"  {name}: peak RSS {f['rss_mib']:.0f} MiB ({f['rss_mib'] - f['baseline_mib']:.0f} MiB above"
            f" the {f['baseline_mib']:.0f} MiB of the imports), {f['wall_s']:.1f} s"
        )
    ratio = stream["rss_mib"] / whole["rss_mib"]
    print(f"  goal: strip by strip <= 1536 MiB at peak; strips / whole {ratio:.2f}")


if __name__ == "__main__":
    main()
