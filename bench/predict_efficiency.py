"""Scene prediction: snakemap's predictor against the bare model and against TorchGeo, in one run.

For synthetic 6-band scenes (--sizes, default 2048 x 2048) and a real scene from ../shared/data
(the North Carolina Landsat 7 scene, 15% nodata, which fits one window: no overlap of reads and
model there, so no goal), with the same randomly initialised Unet/resnet18 (6 bands in, 4 classes
out), the same normalisation and the same overlap (context cropped at each side):

  efficiency  the bare model's time on exactly the windows and batches snakemap's predictor used,
              over the predictor's wall time: as apply runs it (read a thread ahead, normalise,
              windows, model, stitch, rows written a thread behind; the COGs are then published
              beside the next scene's model) and for one scene alone (publication after it); all
              warm (after an untimed first run, the model having seen its shapes), the median of
              --repeats back-to-back triples; goal >= 0.95 on multi-window scenes;
  speed       scene pixels/s of snakemap (windows of --window) over TorchGeo's GridGeoSampler +
              DataLoader with centre-crop stitching (patches of --tg-window), the way its users
              write it (TorchGeo has no stitcher of its own), output written as a GeoTIFF;
  coverage    the share of valid input pixels that got a prediction, for both.

    .venv/bin/pip install -e '.[bench]'      # TorchGeo
    .venv/bin/python bench/predict_efficiency.py [--sizes 2048 3072] [--overlap 64] [--window 1024]
        [--tg-window 256] [--no-torchgeo]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from snakemap.core.apply_sections import PredictOptions
from snakemap.core.sections import BandOptions, CleanOptions
from snakemap.data.clean import clean_scene
from snakemap.data.stats import Normalizer
from snakemap.inference.predict import predict_staged
from snakemap.inference.predictor import Member, Predictor
from snakemap.inference.readers import CleanImageReader
from snakemap.tasks.networks import build_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ["a", "b", "c", "d"]


def synthetic_scene(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(0.1, 0.03, (6, size, size)).astype(np.float32)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=6,
        width=size,
        height=size,
        dtype="float32",
        crs="EPSG:32755",
        transform=from_origin(300000, 8000000, 10, 10),
        nodata=float("nan"),
        tiled=True,
        compress="deflate",
    ) as dst:
        dst.write(data)
        for i in range(6):
            dst.set_band_description(i + 1, f"b{i + 1}")


def real_scene(folder: Path) -> Path:
    """The NC Landsat 7 scene, cleaned by snakemap (NaN nodata, named bands)."""
    src = SHARED / "segmentation" / "nc_landsat7_2000_image.tif"
    (folder / "acq").mkdir()
    (folder / "acq" / "image.tif").write_bytes(src.read_bytes())
    (folder / "acq" / "acquire.json").write_text('{"status": "ok", "reason": ""}')
    clean_scene(
        "nc",
        folder / "acq",
        folder / "clean",
        BandOptions(names=[f"b{i}" for i in range(1, 7)]),
        CleanOptions(),
        None,
    )
    return folder / "clean" / "image.tif"


def normalizer(path: Path) -> Normalizer:
    with rasterio.open(path) as src:
        data = src.read(out_dtype="float32")
    return Normalizer(np.nanmean(data, axis=(1, 2)), np.nanstd(data, axis=(1, 2)) + 1e-6)


def run_snakemap(
    path: Path, model: torch.nn.Module, norm: Normalizer, args: argparse.Namespace, out: Path
) -> tuple[list[float], list[float], list[float], dict[str, float]]:
    """The predictor's wall times until its maps are staged, the publication's after it, and the
    bare model's on the same batches, in ``--repeats`` triples (back to back, so that the
    machine's drift hits all alike), after a first pass that is not timed: the first call at a
    new input shape sets up oneDNN's kernels (a tenth of a second and more on a small scene),
    which the bare model's timing never pays.

    Staged: read (a thread ahead), normalise, windows, model, stitch, rows written uncompressed
    (a thread behind). Publication: the COGs compressed from them and renamed into place, which
    apply runs in a thread beside the next scene's model (:meth:`ShardRunner.finish`)."""
    shapes: list[tuple[int, ...]] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return model(x)

    member = Member(recording, [f"b{i}" for i in range(1, 7)], norm)
    predictor = Predictor([member], CLASSES)
    opts = PredictOptions(window=args.window, overlap=args.overlap, batch_size=args.batch_size)
    staged_walls, publish_walls, bares, insides = [], [], [], []
    for run in range(1 + args.repeats):
        shapes.clear()
        reader = CleanImageReader(path)
        start = time.perf_counter()
        figures, staged = predict_staged(reader, predictor, opts, out / "classes.tif", out / "probs.tif")
        wall = time.perf_counter() - start
        staged.publish()
        published = time.perf_counter() - start - wall
        reader.close()
        if run:
            staged_walls.append(wall)
            publish_walls.append(published)
            insides.append(figures["model_seconds"])
            bares.append(bare_time(model, shapes))
    figures["batches_run"] = len(shapes)
    # where the rest goes: outside the model's calls (first read, normalising, stitching), and the
    # model's own calls slowed by the reading and writing threads on the same cores
    figures["outside_s"] = float(np.median([w - i for w, i in zip(staged_walls, insides, strict=True)]))
    figures["inside_over_bare"] = float(np.median([i / b for i, b in zip(insides, bares, strict=True)]))
    return staged_walls, publish_walls, bares, figures


def bare_time(model: torch.nn.Module, shapes: list[tuple[int, ...]]) -> float:
    batches = [torch.randn(*s) for s in shapes]
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model(x).softmax(1)
    return time.perf_counter() - start


def run_torchgeo(
    path: Path, model: torch.nn.Module, norm: Normalizer, args: argparse.Namespace, out: Path
) -> float:
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    class Scene(RasterDataset):
        filename_glob = path.name
        is_image = True

    with torch.inference_mode():  # warm, like snakemap's timed run: its batch shape seen once
        model(torch.randn(args.tg_batch_size, 6, args.tg_window, args.tg_window))
    start = time.perf_counter()
    dataset = Scene(paths=str(path.parent))
    size, o = args.tg_window, args.overlap
    sampler = GridGeoSampler(dataset, size=size, stride=size - 2 * o)
    loader = DataLoader(dataset, sampler=sampler, batch_size=args.tg_batch_size, collate_fn=stack_samples)
    with rasterio.open(path) as src:
        profile, transform, shape = src.profile, src.transform, src.shape
    result = np.full(shape, 255, dtype=np.uint8)
    with torch.inference_mode():
        for batch in loader:
            x = torch.from_numpy(norm(batch["image"].numpy()))
            pred = model(x).softmax(1).argmax(1).numpy().astype(np.uint8)
            for p, (xs, ys, _) in zip(pred, batch["bounds"], strict=True):
                col = int(round((xs.start - transform.c) / transform.a))
                row = int(round((transform.f - ys.stop) / -transform.e))
                # Keep each patch's centre, as TorchGeo users stitch (clipped to the scene: the
                # sampler anchors patches at the bottom-left, so the top row may stick out).
                top, left = max(row + o, 0), max(col + o, 0)
                bottom, right = min(row + size - o, shape[0]), min(col + size - o, shape[1])
                if bottom > top and right > left:
                    result[top:bottom, left:right] = p[top - row : bottom - row, left - col : right - col]
    profile.update(count=1, dtype="uint8", nodata=255, compress="deflate", tiled=True)
    with rasterio.open(out / "torchgeo.tif", "w", **profile) as dst:
        dst.write(result[None])
    return time.perf_counter() - start


def coverage(classes: Path, image: Path) -> float:
    with rasterio.open(image) as src:
        valid = np.isfinite(src.read(out_dtype="float32")).all(axis=0)
    with rasterio.open(classes) as src:
        predicted = src.read(1) != 255
    return float((predicted & valid).sum() / valid.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--tg-window", type=int, default=256)
    ap.add_argument("--tg-batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="timed predictor / bare model pairs")
    ap.add_argument("--sizes", type=int, nargs="+", help="synthetic scenes' sides (default: --size)")
    ap.add_argument(
        "--no-torchgeo", dest="torchgeo", action="store_false", help="leave out the TorchGeo comparison"
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", 6, len(CLASSES)).eval()
    print(
        f"torch threads: {torch.get_num_threads()}, model: Unet/resnet18, "
        f"overlap {args.overlap} px per side; snakemap windows {args.window} (batch {args.batch_size}), "
        f"TorchGeo patches {args.tg_window} (batch {args.tg_batch_size})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scenes = {}
        for size in args.sizes or [args.size]:
            scenes[f"synthetic {size}x{size}x6"] = tmp / f"synthetic{size}.tif"
            synthetic_scene(scenes[f"synthetic {size}x{size}x6"], size)
        if SHARED.is_dir():
            (tmp / "nc").mkdir()
            scenes["real: NC Landsat 7 443x489x6"] = real_scene(tmp / "nc")
        else:
            print(f"(no real scene: {SHARED} is absent)")
        for name, path in scenes.items():
            out = tmp / f"out-{path.stem}-{len(name)}"
            out.mkdir()
            norm = normalizer(path)
            with rasterio.open(path) as src:
                pixels = src.width * src.height
            staged, publish, bares, figures = run_snakemap(path, model, norm, args, out)
            walls = [s + p for s, p in zip(staged, publish, strict=True)]
            wall, bare = float(np.median(walls)), float(np.median(bares))
            behind = float(np.median([b / s for b, s in zip(bares, staged, strict=True)]))
            alone = float(np.median([b / w for b, w in zip(bares, walls, strict=True)]))
            tg_wall = run_torchgeo(path, model, norm, args, out) if args.torchgeo else float("nan")
            print(f"\n{name}")
            print(
                f"  snakemap: {figures['windows']} windows in {figures['batches_run']:.0f} batches,"
                f" {wall:.2f} s ({float(np.median(publish)):.2f} s of it publishing the COGs),"
                f" {pixels / wall / 1e6:.3f} Mpx/s, coverage {coverage(out / 'classes.tif', path):.4f}"
            )
            goal = "goal >= 0.95" if figures["windows"] > 1 else "one window: no goal"
            print(
                f"  bare model on the same batches: {bare:.2f} s -> efficiency {behind:.3f} as apply runs it "
                f"(publication beside the next scene; {goal}), {alone:.3f} for a scene alone (published "
                f"after); medians of {args.repeats} back-to-back triples, each one's "
                f"{', '.join(f'{b / s:.3f}' for b, s in zip(bares, staged, strict=True))}"
            )
            print(
                f"  where the rest goes: {figures['outside_s']:.2f} s outside the model's calls (the first "
                f"strip's read, normalising, stitching), and the model's calls "
                f"{100 * (figures['inside_over_bare'] - 1):+.1f}% against the bare model (threads "
                f"reading and writing on the same {torch.get_num_threads()} cores)"
            )
            if not args.torchgeo:
                continue
            print(
                f"  TorchGeo GridGeoSampler + centre crops: {tg_wall:.2f} s, "
                f"{pixels / tg_wall / 1e6:.3f} Mpx/s, coverage {coverage(out / 'torchgeo.tif', path):.4f}"
            )
            print(f"  speed snakemap / TorchGeo: {tg_wall / wall:.2f}x (goal >= 1.5)")


if __name__ == "__main__":
    main()
