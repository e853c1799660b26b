"""CPU inference backends side by side in one run: torch eager, ONNX Runtime float32 and ONNX
Runtime int8 (``predict.backend`` and ``predict.quantize``), through snakemap's own predictor.

The model is the UKIS example's (``config/examples/ukis.yaml``: Unet/resnet18, 6 bands and 3
indices in, 4 classes, ``normalize: scene``), trained on the UKIS Sentinel-2 scene (best.ckpt
chosen on its spatial-block fold 0), exported and quantized as the workflow's rules do it
(static QDQ int8, per-channel weights, calibrated on 64 of its training chips, the head's last
convolution in float32). Printed:

  speed       scene pixels/s of each backend on a multi-window scene (the Landsat 7 scene tiled
              4 x 4 with flips: 2048 x 2048, real reflectances; windows of 256, overlap 32,
              batches of 8), the median of --repeats rounds that run the backends in turn, and
              the ratio to torch eager as N.NNx;
  agreement   per class, the share of torch's pixels of that class that the backend maps the same
              (on the Landsat 7 scene, which no model saw);
  IoU         per class on the Landsat 7 scene against its labels, and the difference to torch's;
  operators   which operator types of the int8 model run in int8 and which stay float32;
  machine     the CPU's flags that matter (AVX2, AVX-512, VNNI, AMX), torch and ONNX Runtime.

Goals (issue 25): ORT fp32 >= 1.3x and int8 >= 3.0x torch eager on 2 cores; IoU difference <=
0.005 per class.

    .venv/bin/python bench/predict_backends.py [--threads 2] [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import rasterio
import torch
import yaml
from quality import EXAMPLE, UKIS, iou_per_class, log, read, train_once, ukis_data

from snakemap.core.apply_sections import PredictOptions
from snakemap.inference.predict import predict_scene
from snakemap.inference.predictor import Member, Predictor
from snakemap.inference.readers import CleanImageReader
from snakemap.outputs.bundle import checkpoint_bundle
from snakemap.outputs.export import OnnxNetwork, export_onnx
from snakemap.outputs.quantize import calibration_windows, quantize_int8, quantized_ops
from snakemap.tasks.networks import load_trained

BACKENDS = ("torch eager", "onnxruntime fp32", "onnxruntime int8")
OPTIONS = PredictOptions(window=256, overlap=32, batch_size=8)


def cpu_flags() -> str:
    """The CPU model and the instruction sets that decide int8 speed."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line), "")
    wanted = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16"]
    return f"{name or platform.processor()}; " + " ".join(f for f in wanted if f in flags)


def tiled_scene(clean: Path, out: Path, times: int = 4) -> Path:
    """The cleaned scene tiled ``times`` x ``times`` with alternating flips (seamless edges)."""
    with rasterio.open(clean / "image.tif") as src:
        image, profile, names = src.read(), src.profile, src.descriptions
    rows = []
    for r in range(times):
        row = [image[:, :: -1 if r % 2 else 1, :: -1 if c % 2 else 1] for c in range(times)]
        rows.append(np.concatenate(row, axis=2))
    big = np.ascontiguousarray(np.concatenate(rows, axis=1))
    profile.update(height=big.shape[1], width=big.shape[2], tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(big)
        dst.descriptions = names
    return out


def predictor(checkpoint: Path, onnx: Path | None, threads: int) -> Predictor:
    trained = load_trained(checkpoint)
    member = Member.from_trained(trained, 1.0, str(checkpoint))
    if onnx is not None:
        member.model = OnnxNetwork(onnx, threads)
    return Predictor([member], trained.classes)


def run(pred: Predictor, image: Path, out: Path) -> tuple[float, np.ndarray]:
    """Seconds to predict a whole scene (read, windows, model, stitch, COG) and its class map."""
    reader = CleanImageReader(image)
    try:
        start = time.perf_counter()
        predict_scene(reader, pred, OPTIONS, out)
        seconds = time.perf_counter() - start
    finally:
        reader.close()
    return seconds, read(out, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="snakemap-backends-"))
    torch.set_num_threads(args.threads)
    log(f"machine: {cpu_flags()}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{args.threads} threads")  # fmt: skip

    _, l7, data = ukis_data(work)
    base = yaml.safe_load(EXAMPLE.read_text())["models"]["base"]
    params = {k: v for k, v in base.items() if k != "folds"} | {"seed": 0}
    ckpt = train_once(work / "model", params, 0, UKIS, data)
    fp32, int8 = work / "model" / "best.onnx", work / "model" / "best.int8.onnx"
    export_onnx(checkpoint_bundle(ckpt)[0], fp32)
    start = time.perf_counter()
    done = quantize_int8(fp32, calibration_windows(ckpt, data.train_indexes, data.folds, data.stats), int8)
    log(f"int8 quantization in {time.perf_counter() - start:.1f} s: {done}")
    ops = quantized_ops(int8)

    predictors = {
        "torch eager": predictor(ckpt, None, args.threads),
        "onnxruntime fp32": predictor(ckpt, fp32, args.threads),
        "onnxruntime int8": predictor(ckpt, int8, args.threads),
    }
    scene = tiled_scene(l7, work / "tiled.tif")
    with rasterio.open(scene) as src:
        pixels = src.width * src.height
    for pred in predictors.values():  # warm: shapes seen, sessions initialised
        run(pred, scene, work / "warm.tif")
    seconds: dict[str, list[float]] = {name: [] for name in BACKENDS}
    for _ in range(args.repeats):
        for name, pred in predictors.items():
            seconds[name].append(run(pred, scene, work / f"{name.replace(' ', '_')}.tif")[0])
    rate = {name: pixels / statistics.median(s) for name, s in seconds.items()}

    truth = read(l7 / "label.tif", 1)
    maps = {name: run(pred, l7 / "image.tif", work / f"l7_{name.replace(' ', '_')}.tif")[1]
            for name, pred in predictors.items()}  # fmt: skip
    ious = {name: iou_per_class(m, truth, UKIS.classes) for name, m in maps.items()}
    reference = maps["torch eager"]
    agreement: dict[str, dict[str, float]] = {}
    for name, m in maps.items():
        agreement[name] = {}
        for k, c in enumerate(UKIS.classes):
            mine = reference == k
            agreement[name][c] = float((m[mine] == k).mean()) if mine.any() else float("nan")

    print(f"\nscene {int(np.sqrt(pixels))} x {int(np.sqrt(pixels))}, windows {OPTIONS.window}, overlap "
          f"{OPTIONS.overlap}, batches {OPTIONS.batch_size}; median of {args.repeats} rounds")  # fmt: skip
    print(f"{'backend':<20}{'pixels/s':>12}{'vs torch':>10}{'seconds':>9}")
    for name in BACKENDS:
        print(f"{name:<20}{rate[name]:>12,.0f}{rate[name] / rate['torch eager']:>9.2f}x"
              f"{statistics.median(seconds[name]):>9.2f}")  # fmt: skip
    print("\nLandsat 7 scene (not trained on): per class, agreement with torch's map / IoU / IoU - torch's")
    print(f"{'backend':<20}" + "".join(f"{c:>28}" for c in UKIS.classes))
    for name in BACKENDS:
        cells = [
            f"{agreement[name][c]:.4f} / {ious[name][c]:.3f} / {ious[name][c] - ious['torch eager'][c]:+.4f}"
            for c in UKIS.classes
        ]
        print(f"{name:<20}" + "".join(f"{cell:>28}" for cell in cells))
    print("\nint8 model's operators (nodes, run on int8, float32):")
    print(ops.to_string())
    shape_ops = {"Shape", "Gather", "Unsqueeze", "Slice", "Concat", "Cast", "Reshape"}
    fp32_ops = sorted(set(ops.index[ops["float32"] > 0]) - shape_ops)
    print(
        f"kept in float32 by choice: {done['float32_nodes']}; compute operators with float32 nodes: "
        f"{fp32_ops} (the Shape, Gather, Unsqueeze, Slice and some Concat nodes are shape arithmetic)"
    )
    worst = max(abs(ious[n][c] - ious["torch eager"][c]) for n in BACKENDS[1:] for c in UKIS.classes)
    goals: dict[str, Any] = {
        "ORT fp32 >= 1.30x": rate["onnxruntime fp32"] / rate["torch eager"] >= 1.3,
        "ORT int8 >= 3.00x": rate["onnxruntime int8"] / rate["torch eager"] >= 3.0,
        f"IoU difference <= 0.005 (worst {worst:.4f})": worst <= 0.005,
    }
    print("\ngoals: " + "; ".join(f"{g}: {'met' if ok else 'NOT met'}" for g, ok in goals.items()))


if __name__ == "__main__":
    main()
