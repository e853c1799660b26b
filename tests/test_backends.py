"""CPU inference backends in the workflow: `predict.backend: onnxruntime` and `predict.quantize:
int8` in calval, apply and the bundle, compared with torch's maps of the same checkpoint."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio

from snakemap.cli import main
from snakemap.core.config import ConfigError, build
from snakemap.outputs.quantize import quantized_ops
from snakemap.plan.idle import backend_warnings
from tests.conftest import CONFIG, apply_row, calval_row, demo_row, snakemake, workspace

SITES = ["s1", "s2"]
UNET = "results/models/arch-Unet/best"


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo's data with one Unet and one booster, its calval sites and two apply scenes
    predicted in ONNX Runtime with int8 networks, one thread per job; the finished folder and the
    console."""
    config = dict(
        CONFIG,
        demo={"size": 96},
        models={
            "base": {"encoder_name": "mobilenet_v2", "epochs": 2, "batch_size": 8, "scheduler": "none"},
            "grid": {"arch": ["Unet"]},
            "list": [{"name": "gbm", "family": "lightgbm", "boosting": {"rounds": 10, "pixels": 2000}}],
        },
        predict={
            "window": 64,
            "overlap": 8,
            "batch_size": 4,
            "backend": "onnxruntime",
            "quantize": "int8",
            "threads": 1,
        },  # fmt: skip
        calval={"ensembles": {"both": {"members": {"arch-Unet": 1, "gbm": 1}}}},
        apply={"predictors": ["models/arch-Unet/best", "ensembles/both"], "shard_size": 2},
    )
    rows = [demo_row(n) for n in ("a1", "a2", "b1", "c1")]
    rows += [calval_row(s) for s in SITES]
    rows += [apply_row(f"apply_{n}", f"resources/demo/images/{n}.tif") for n in ("a2", "b1")]
    work = workspace(tmp_path_factory.mktemp("int8"), config, rows)
    proc = snakemake(work)
    return work, proc.stdout + proc.stderr


def torch_map(work: Path, site: str, out: Path, *onnx: str) -> np.ndarray:
    """The Unet's map of a calval site predicted in this process: with torch, or with ``onnx``
    (``CHECKPOINT=ONNX``) in ONNX Runtime."""
    options = json.dumps({"predict": {"window": 64, "overlap": 8, "batch_size": 4}})
    argv = ["predict", "--checkpoint", str(work / f"{UNET}.ckpt"), "--options", options,
            "--clean", str(work / "results/clean" / site), "--classes-out", str(out)]  # fmt: skip
    for pair in onnx:
        argv += ["--onnx-model", pair]
    assert main(argv) == 0
    with rasterio.open(out) as src:
        return src.read(1)


@pytest.mark.workflow
def test_calval_and_apply_run_the_int8_network_made_once_per_model(
    int8_run: tuple[Path, str], tmp_path: Path
) -> None:
    work, console = int8_run
    fp32, int8 = work / f"{UNET}.onnx", work / f"{UNET}.int8.onnx"
    assert fp32.exists() and int8.exists() and int8.stat().st_size < fp32.stat().st_size / 2
    assert not list(work.glob("results/models/gbm/*.onnx"))  # a booster runs in LightGBM
    assert "gbm (family lightgbm) have no ONNX graph nor int8 quantization" in console
    # one int8 model per model, whatever the number of shards and sites
    assert console.count("int8 quantization of arch-Unet/best") == 1
    ops = quantized_ops(int8)
    assert ops.loc["Conv", "float32"] == 1 and ops.loc["Conv", "int8"] > 10  # the head's last one stays
    log = (work / "logs/models/arch-Unet/best.int8.log").read_text()
    assert "'float32_nodes': ['/segmentation_head" in log and "'calibration': [" in log
    metadata = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert json.loads(metadata["snakemap"])["model"]["arch"] == "Unet"

    agree_int8, agree_fp32 = [], []
    for site in SITES:
        with rasterio.open(work / "results/calval/models/arch-Unet/best" / f"{site}.tif") as src:
            workflow_map = src.read(1)
        eager = torch_map(work, site, tmp_path / f"{site}.torch.tif")
        in_fp32 = torch_map(work, site, tmp_path / f"{site}.fp32.tif", f"{work / UNET}.ckpt={fp32}")
        in_int8 = torch_map(work, site, tmp_path / f"{site}.int8.tif", f"{work / UNET}.ckpt={int8}")
        np.testing.assert_array_equal(workflow_map, in_int8)  # the workflow ran the int8 network
        valid = eager != 255
        agree_fp32.append((in_fp32[valid] == eager[valid]).mean())
        agree_int8.append((in_int8[valid] == eager[valid]).mean())
    assert min(agree_fp32) > 0.999  # ONNX Runtime fp32: torch's map
    assert min(agree_int8) > 0.9  # int8: close to it
    for predictor in ("models/arch-Unet/best", "ensembles/both"):
        progress = json.loads((work / "results/maps" / predictor / "progress.json").read_text())
        assert progress["ok"] == 2, predictor
    item = json.loads((work / "results/maps/ensembles/both/scenes/apply_a2.stac.json").read_text())
    assert item["properties"]["mlm:framework"] == "LightGBM+ONNX Runtime int8"  # what ran the map


@pytest.mark.workflow
def test_the_bundle_carries_the_int8_network_and_predict_runs_it(
    int8_run: tuple[Path, str], tmp_path: Path
) -> None:
    work, _ = int8_run
    bundle = work / "results/bundles/arch-Unet.zip"
    with zipfile.ZipFile(bundle) as zf:
        assert zf.read("model.onnx") == (work / f"{UNET}.int8.onnx").read_bytes()
        assert json.loads(zf.read("bundle.json"))["format_version"] == 2  # older snakemaps: "upgrade"
    with zipfile.ZipFile(work / "results/bundles/gbm.zip") as zf:
        assert "model.onnx" not in zf.namelist()
    image = work / "resources/demo/images/a2.tif"
    assert (
        main(["predict", "--bundle", str(bundle), str(image), str(tmp_path / "a2.tif"), "--threads", "1"])
        == 0
    )
    with (
        rasterio.open(tmp_path / "a2.tif") as standalone,
        rasterio.open(work / "results/maps/models/arch-Unet/best/scenes/apply_a2.tif") as applied,
    ):
        np.testing.assert_array_equal(standalone.read(1), applied.read(1))  # the same int8 network


def test_the_backend_options_are_checked_when_the_config_loads() -> None:
    assert build("predict", {"backend": "onnxruntime", "quantize": "int8"}).threads == 2
    with pytest.raises(ConfigError, match="quantize: int8 runs in ONNX Runtime: set backend: onnxruntime"):
        build("predict", {"quantize": "int8"})
    with pytest.raises(ConfigError, match="backend"):
        build("predict", {"backend": "tensorrt"})
    ort = build("predict", {"backend": "onnxruntime"})
    assert backend_warnings(build("predict", {}), {"gbm": "lightgbm"}) == []
    assert backend_warnings(ort, {"unet": "network"}) == []
    (line,) = backend_warnings(ort, {"unet": "network", "gbm": "lightgbm"})
    assert line.startswith("predict.backend: onnxruntime: gbm (family lightgbm) have no ONNX graph:")
