"""Model bundles and ONNX exports: what they hold, parity of onnxruntime with torch on a real
scene, and the broken or malicious bundles they refuse."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from snakemap.core.palette import class_colors, rgb
from snakemap.outputs.bundle import (
    FORMAT_VERSION,
    BundleError,
    bundled_model,
    predict_raw,
    read_bundle,
    write_bundle,
)
from snakemap.outputs.export import OnnxNetwork, export_onnx
from snakemap.tasks.networks import build_model
from tests.conftest import write_tif

UKIS_BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]


def checkpoint(path: Path, bands: list[str], classes: list[str]) -> Path:
    """A segmentation checkpoint as training writes it (hyperparameters and the ``model.`` state)."""
    torch.manual_seed(0)
    network = build_model("Unet", "resnet18", len(bands), len(classes))
    hp = {
        "arch": "Unet",
        "encoder_name": "resnet18",
        "classes": classes,
        "band_names": bands,
        "mean": [0.1] * len(bands),
        "std": [0.05] * len(bands),
        "normalize": "dataset",
    }
    state = {f"model.{k}": v for k, v in network.state_dict().items()}
    torch.save({"hyper_parameters": hp, "state_dict": state, "epoch": 3}, path)
    return path


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    ckpt = checkpoint(root / "best.ckpt", [*UKIS_BANDS, "ndwi"], ["land", "water", "shadow", "cloud"])
    sections = {
        "bands": {"names": UKIS_BANDS, "select": None, "indices": ["ndwi"]},
        "clean": {"min_valid_fraction": 0.01},
        "predict": {"window": 256, "overlap": 32, "batch_size": 2, "prob_dtype": "float32"},
        "labels": {"classes": ["land", "water", "shadow", "cloud"]},
        "models": {"ignored": True},
    }
    return write_bundle(ckpt, {"params": {"arch": "Unet"}, "fold": None}, sections, root / "model.zip")


def test_a_bundle_holds_what_prediction_needs(bundle_file: Path) -> None:
    bundle = read_bundle(bundle_file)
    assert bundle.meta["format_version"] == 1 <= FORMAT_VERSION and bundle.task == "segmentation"
    assert bundle.hyper_parameters["band_names"] == [*UKIS_BANDS, "ndwi"]
    assert bundle.hyper_parameters["classes"] == ["land", "water", "shadow", "cloud"]
    assert bundle.section("bands")["indices"] == ["ndwi"] and "models" not in bundle.meta["sections"]
    assert bundle.meta["config"]["params"] == {"arch": "Unet"}
    with zipfile.ZipFile(bundle_file) as zf:
        assert sorted(zf.namelist()) == ["bundle.json", "weights.pt"]


def test_onnxruntime_agrees_with_torch_on_a_real_scene(
    bundle_file: Path, shared_data: Path, tmp_path: Path
) -> None:
    scene = shared_data / "segmentation" / "ukis_landsat7_image.tif"
    bundle = read_bundle(bundle_file)
    onnx_path = export_onnx(bundle, tmp_path / "model.onnx")
    network = OnnxNetwork(onnx_path)
    assert network.meta["model"]["band_names"] == bundle.hyper_parameters["band_names"]
    torch_model = bundled_model(bundle.meta, bundle.state)
    figures = {}
    for name, model in (("torch", torch_model), ("onnx", bundled_model(network.meta, network=network))):
        out, probs = tmp_path / f"{name}.tif", tmp_path / f"{name}.probs.tif"
        figures[name] = predict_raw(bundle.meta, model, scene, out, probs_out=probs)
    with rasterio.open(tmp_path / "torch.probs.tif") as a, rasterio.open(tmp_path / "onnx.probs.tif") as b:
        p_torch, p_onnx = a.read(), b.read()
        assert a.shape == (512, 512) and a.count == 4 and a.dtypes[0] == "float32"
    valid = np.isfinite(p_torch)
    assert valid.mean() > 0.9 and np.array_equal(valid, np.isfinite(p_onnx))
    assert np.abs(p_torch[valid] - p_onnx[valid]).max() < 1e-4
    # different windows on the same scene: the export's batch and window size are dynamic
    assert figures["onnx"]["windows"] >= 1
    # the bundled predict.tta: both backends average the four flips, and the map changes
    meta = {**bundle.meta, "sections": {**bundle.meta["sections"]}}
    meta["sections"]["predict"] = {**meta["sections"]["predict"], "tta": True}
    for name, model in (("torch", torch_model), ("onnx", bundled_model(network.meta, network=network))):
        predict_raw(
            meta, model, scene, tmp_path / f"{name}.tta.tif", probs_out=tmp_path / f"{name}.tta.p.tif"
        )
    with rasterio.open(tmp_path / "torch.tta.p.tif") as a, rasterio.open(tmp_path / "onnx.tta.p.tif") as b:
        t_torch, t_onnx = a.read(), b.read()
    assert np.abs(t_torch[valid] - t_onnx[valid]).max() < 1e-4
    assert np.abs(t_torch[valid] - p_torch[valid]).max() > 0.01


def test_broken_and_malicious_bundles_are_refused(bundle_file: Path, tmp_path: Path) -> None:
    good = zipfile.ZipFile(bundle_file)
    meta, weights = json.loads(good.read("bundle.json")), good.read("weights.pt")

    def make(name: str, members: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
        return path

    future = make(
        "future.zip",
        {"bundle.json": json.dumps(dict(meta, format_version=99)).encode(), "weights.pt": weights},
    )
    escape = make(
        "escape.zip",
        {"bundle.json": json.dumps(meta).encode(), "weights.pt": weights, "../../evil.sh": b"rm"},
    )
    absolute = make(
        "absolute.zip", {"bundle.json": json.dumps(meta).encode(), "/etc/evil": b"x", "weights.pt": weights}
    )
    missing = make("missing.zip", {"bundle.json": json.dumps(meta).encode()})
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(bundle_file.read_bytes()[: bundle_file.stat().st_size // 2])
    cases = {
        future: "format version 99",
        escape: "escape the bundle's folder",
        absolute: "escape the bundle's folder",
        missing: "missing member(s) ['weights.pt']",
        truncated: "unreadable",
    }
    for path, message in cases.items():
        with pytest.raises(BundleError, match=re.escape(message)) as info:
            read_bundle(path)
        assert str(path) in str(info.value)
    # nothing was extracted anywhere
    assert not (tmp_path.parent / "evil.sh").exists() and not Path("/etc/evil").exists()


def predict_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``snakemap predict`` as a user types it."""
    cmd = [str(Path(sys.executable).parent / "snakemap"), "predict", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_bad_input_to_predict_is_one_line_that_says_what_to_do(bundle_file: Path, tmp_path: Path) -> None:
    three = write_tif(tmp_path / "three.tif", np.ones((3, 32, 32), np.uint16))
    six = write_tif(tmp_path / "six.tif", np.ones((6, 32, 32), np.uint16))
    out = str(tmp_path / "map.tif")
    cases = {
        (str(three), out): f"{three} has 3 bands and the bundle's model reads 6 bands (blue, green, red, "
        "nir, swir16, swir22): give a scene with those bands in that order (the bundle has no sensors table "
        "for --sensor)",
        (str(six), out, "--sensor", "s2"): "--sensor s2: the bundle has no sensors table; leave --sensor out",
        (str(tmp_path / "nope.tif"), out): f"{tmp_path / 'nope.tif'}: No such file or directory",
    }
    for args, message in cases.items():
        proc = predict_cli("--bundle", str(bundle_file), *args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines == [lines[0]] and lines[0].startswith("snakemap predict: ") and message in lines[0], (
            lines
        )
        assert not Path(out).exists()
    missing_bundle = predict_cli("--bundle", str(tmp_path / "none.zip"), str(six), out)
    assert missing_bundle.returncode == 2 and "Traceback" not in missing_bundle.stderr
    assert f"bundle {tmp_path / 'none.zip'}: unreadable" in missing_bundle.stderr
    # --debug: the traceback
    debug = subprocess.run(
        [str(Path(sys.executable).parent / "snakemap"), "--debug", "predict", "--bundle", str(bundle_file),
         str(three), out], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_inspect_says_what_a_bundle_holds_and_its_maps_say_what_they_hold(
    bundle_file: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakemap"), "inspect", str(bundle_file)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "task: segmentation" in lines and "model: Unet / resnet18" in lines
    assert "  7. ndwi  mean 0.1, std 0.05" in lines
    palette = class_colors(["land", "water", "shadow", "cloud"])
    assert [f"  {i}: {c} {palette[i]}" for i, c in enumerate(["land", "water", "shadow", "cloud"])] == [
        line for line in lines if re.match(r"  \d: ", line)
    ]
    assert "raw scene bands, in file order: blue, green, red, nir, swir16, swir22" in lines
    assert "sensors (--sensor): none" in lines
    # a map it makes: class names, a colour table (water blue, cloud white), what nodata means
    scene = write_tif(
        tmp_path / "six.tif", np.random.default_rng(0).integers(1, 3000, (6, 64, 64)).astype(np.uint16)
    )
    out = tmp_path / "map.tif"
    assert predict_cli("--bundle", str(bundle_file), str(scene), str(out)).returncode == 0
    with rasterio.open(out) as src:
        assert src.descriptions == ("class",)
        tags = src.tags()
        assert tags["CLASSES"] == "land,water,shadow,cloud" and tags["CLASS_1"] == "water"
        colours = src.colormap(1)
    assert colours[1][:3] == rgb(palette[1]) and colours[3][:3] == (255, 255, 255)
