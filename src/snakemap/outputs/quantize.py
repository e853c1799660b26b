"""A network's ONNX export quantized to int8 for ONNX Runtime on the CPU, made once per model.

Static QDQ quantization (ONNX Runtime's ``quantize_static``): weights int8 per output channel,
activations uint8 with ranges calibrated on the model's own training chips (the folds it trained
on, normalised as it normalises them), which is what CPUs with VNNI run as int8 convolutions.
The nodes that write the output (the segmentation head's last convolution) stay float32: the
class scores there decide every pixel's argmax, and they cost little. The result keeps the
export's ``snakemap`` metadata, so :class:`snakemap.outputs.export.OnnxNetwork` runs it as it
runs the float32 export.

Calibration windows: ``(n, bands, h, w)`` float32, normalised, NaN set to 0 (the predictor's
:meth:`snakemap.inference.predictor.Member.prepare`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from snakemap.core.io import atomic_path, read_json
from snakemap.evaluation.tuning import TuningMember, held_out_chips

#: calibration windows drawn from the training chips (spread over them, seeded)
CALIBRATION_WINDOWS = 64


def calibration_windows(
    checkpoint: str | os.PathLike[str],
    indexes: Sequence[str | os.PathLike[str]],
    folds: str | os.PathLike[str],
    stats: str | os.PathLike[str],
    count: int = CALIBRATION_WINDOWS,
    seed: int = 0,
) -> np.ndarray:
    """Up to ``count`` of the chips a checkpoint trained on (every fold but its held-out one),
    its input bands normalised as it was trained (by the training statistics, or by each chip's
    scene's own with ``normalize: scene``): ``(n, bands, h, w)`` float32."""
    from snakemap.tasks.networks import read_checkpoint
    from snakemap.training.datasets import scene_statistics

    hp, _ = read_checkpoint(checkpoint)
    held_out = TuningMember.from_checkpoint(checkpoint).held_out
    names = [b["name"] for b in read_json(stats)["bands"]]
    keep = [names.index(b) for b in hp["band_names"]]
    pool = [
        (part, int(chip))
        for part in held_out_chips(indexes, folds)
        if part.fold != held_out
        for chip in part.chips
    ]
    if not pool:
        raise ValueError(f"{checkpoint}: no training chip to calibrate its int8 quantization on")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(pool), size=min(count, len(pool)), replace=False))
    windows = []
    for i in picked:
        part, chip = pool[i]
        if hp.get("normalize", "dataset") == "scene":
            norm = scene_statistics(part.index, keep)
            mean, std = np.asarray(norm.mean), np.asarray(norm.std)
        else:
            mean, std = np.asarray(hp["mean"]), np.asarray(hp["std"])
        window = np.asarray(part.images[chip], dtype=np.float32)[keep]
        windows.append((window - mean.reshape(-1, 1, 1)) / std.reshape(-1, 1, 1))
    normalised: np.ndarray = np.nan_to_num(np.stack(windows), nan=0.0).astype(np.float32)
    return normalised


def output_nodes(model: Any) -> list[str]:
    """The names of the nodes that write the graph's outputs, back through shape-only nodes
    (the head's last convolution of a segmentation network)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    passthrough = {"Identity", "Reshape", "Resize", "Upsample", "Cast", "Transpose"}
    found: list[str] = []
    frontier = [o.name for o in model.graph.output]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None:
            continue
        found.append(node.name)
        if node.op_type in passthrough:
            frontier += [i for i in node.input[:1] if i]
    return found


def quantize_int8(
    onnx_path: str | os.PathLike[str], windows: np.ndarray, out: str | os.PathLike[str]
) -> dict[str, Any]:
    """Quantize a network's ONNX export to int8 (see the module docstring), atomically.

    Returns:
        What was done: the nodes kept in float32, the calibration windows' shape, the sizes.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Windows(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            self.batches = iter([{name: windows[i : i + 8]} for i in range(0, len(windows), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    source = onnx.load(str(onnx_path))
    name = source.graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        keep = output_nodes(model)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            model,
            quantized,
            Windows(name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
            calibrate_method=CalibrationMethod.MinMax,
        )
        result = onnx.load(str(quantized))
        del result.metadata_props[:]
        result.metadata_props.extend(source.metadata_props)  # the bundle description rides along
        with atomic_path(out, suffix=".onnx") as tmp_out:
            onnx.save(result, str(tmp_out))
    return {
        "float32_nodes": keep,
        "calibration": list(windows.shape),
        "bytes": {"float32": Path(onnx_path).stat().st_size, "int8": Path(out).stat().st_size},
    }


def quantized_ops(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Per operator type of an int8 QDQ model: nodes in all, how many run in int8 (their output is
    quantized again: a QuantizeLinear reads it) and how many stay float32."""
    import onnx

    model = onnx.load(str(path))
    quantized = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input[:1]}
    rows: dict[str, dict[str, int]] = {}
    for node in model.graph.node:
        if node.op_type in {"QuantizeLinear", "DequantizeLinear"}:
            continue
        row = rows.setdefault(node.op_type, {"nodes": 0, "int8": 0})
        row["nodes"] += 1
        row["int8"] += int(any(o in quantized for o in node.output))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["float32"] = table["nodes"] - table["int8"]
    return table.sort_values("nodes", ascending=False)
