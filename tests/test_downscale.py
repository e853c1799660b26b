"""Downscaling's array operations and files: degradation, interpolation, windowed prediction and
the output grid, on synthetic fields and the real CONUS elevation grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from snakemap.core.metrics import error_metrics
from snakemap.inference.fields import downscale_raster
from snakemap.tasks.downscaling import training_pair
from snakemap.tasks.fieldops import (
    METHODS,
    GridStats,
    block_mean,
    degrade,
    downscale_grid,
    fill_nearest,
    interpolate_grid,
    upsample,
)
from snakemap.tasks.srnets import ARCHS, build_srnet
from tests.conftest import write_tif


def test_constant_and_linear_fields_come_back_exactly_where_they_should() -> None:
    rows, cols = np.mgrid[0:64, 0:48].astype(np.float32)
    constant = np.full((64, 48), 7.25, dtype=np.float32)
    linear = 3 * rows - 2 * cols + 5
    for scale in (2, 4, 8):
        lr = degrade(constant, scale)
        assert lr.shape == (64 // scale, 48 // scale)
        for method in METHODS:
            np.testing.assert_allclose(interpolate_grid(lr, scale, method), constant, rtol=0, atol=1e-5)
        # a block mean of a linear field is its value at the block's centre: bilinear interpolation
        # between centres gives the field back away from the outermost half cell of LR cells
        back = interpolate_grid(degrade(linear, scale), scale, "bilinear")
        inner = (slice(scale, -scale), slice(scale, -scale))
        np.testing.assert_allclose(back[inner], linear[inner], rtol=0, atol=1e-3)
        assert np.abs(back - linear).max() > 0.1  # the edges are extrapolated flat, as they should


def test_nodata_never_leaks_into_valid_cells() -> None:
    field = np.full((16, 16), 10.0, dtype=np.float32)
    field[:4, :4] = np.nan  # one whole LR block (x4) without data
    field[4:8, 4:6] = np.nan  # half a block
    field[8:12, 8:12] = -9999.0  # a nodata value would dominate a plain mean; NaN is what we use
    field[8:12, 8:12] = np.nan
    lr = degrade(field, 4)
    assert np.isnan(lr[0, 0])  # no data at all: no value
    assert lr[1, 1] == 10.0  # the mean of the valid half only
    assert np.isnan(lr[2, 2])
    assert np.nanmax(np.abs(lr - 10.0)) == 0.0
    filled = fill_nearest(lr)
    assert np.isfinite(filled).all() and (filled == 10.0).all()
    # the interpolated map is NaN exactly where the LR cell had no data
    up = interpolate_grid(lr, 4, "bicubic")
    assert np.isnan(up[:4, :4]).all() and np.isfinite(up[4:8, 4:8]).all()
    # a training pair's target keeps the gaps (the loss skips them); its input has none
    images = torch.from_numpy(np.nan_to_num(field))[None, None]
    labels = torch.from_numpy(np.isfinite(field).astype(np.int64))[None]
    lr_t, hr_t = training_pair(images, labels, 4)
    assert torch.isfinite(lr_t).all() and float(lr_t.max()) == 10.0 and float(lr_t.min()) == 10.0
    assert torch.equal(torch.isnan(hr_t[0, 0]), torch.from_numpy(np.isnan(field)))


def test_every_network_maps_lr_to_hr_and_the_recurrent_one_has_a_stage_per_doubling() -> None:
    lr, aux = torch.zeros(2, 1, 8, 8), torch.zeros(2, 2, 64, 64)
    for arch in ARCHS:
        out = build_srnet(arch, 8, aux_channels=2, features=8, blocks=2)(lr, aux)
        assert out[-1].shape == (2, 1, 64, 64)
        # residual on bicubic: a zero input gives a field near 0, not the network's bias alone
        assert len(out) == (3 if arch == "RecurrentSRCNN" else 1)
    with pytest.raises(ValueError, match="power of 2"):
        build_srnet("RecurrentSRCNN", 3)
    with pytest.raises(ValueError, match="unknown downscaling arch"):
        build_srnet("Unet", 4)


def test_windowed_prediction_has_no_seams() -> None:
    torch.manual_seed(0)
    net = build_srnet("SRCNN", 4, features=8).eval()

    def model(lr: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
        out: list[torch.Tensor] = net(lr, aux)
        return out[-1]

    rng = np.random.default_rng(0)
    lr = rng.normal(size=(37, 29)).astype(np.float32).cumsum(0)
    lr[5:9, 3:6] = np.nan
    whole = downscale_grid(lr, 4, model, window=64, overlap=0)
    tiled = downscale_grid(lr, 4, model, window=12, overlap=4, batch_size=3)
    assert whole.shape == tiled.shape == (148, 116)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)
    assert np.isnan(tiled[20:36, 12:24]).all() and np.isfinite(tiled).sum() == 148 * 116 - 16 * 12
    # the identity model (bicubic alone) is the bicubic baseline
    plain = downscale_grid(lr, 4, lambda x, a: upsample(x, 4), window=10, overlap=3)
    np.testing.assert_allclose(plain, interpolate_grid(lr, 4, "bicubic"), rtol=0, atol=1e-3)


def test_grid_statistics_and_error_metrics() -> None:
    assert GridStats.of(np.array([[1.0, 3.0], [np.nan, np.nan]], dtype=np.float32)) == GridStats(2.0, 1.0)
    assert GridStats.of(np.full((3, 3), 5.0, dtype=np.float32)).std == 1.0  # constant: no division by 0
    pred = np.array([1.0, 2.0, np.nan, 4.0])
    truth = np.array([1.0, 4.0, 3.0, np.nan])
    m = error_metrics(pred, truth)
    assert m == {"rmse": pytest.approx(np.sqrt(2)), "mae": 1.0, "bias": -1.0, "max_error": 2.0, "cells": 2}


def test_a_downscaled_grid_has_s_times_the_cells_on_the_same_bounds(
    tmp_path: Path, shared_data: Path
) -> None:
    # 150x200 cells of the real CONUS elevation grid; the sea (0 in the file) has no data
    with rasterio.open(shared_data / "downscaling" / "conus_elevation_4km.tif") as src:
        window = rasterio.windows.Window(0, 400, 200, 150)
        field = src.read(1, window=window).astype(np.float32)
        crs, transform = src.crs, src.window_transform(window)
    field[field == 0] = np.nan
    assert np.isnan(field).any() and np.isfinite(field).any()
    lr_path = write_tif(
        tmp_path / "lr.tif", field, crs=crs.to_string(), transform=transform, nodata=float("nan")
    )
    torch.manual_seed(0)
    net = build_srnet("EDSR", 4, features=8, blocks=1).eval()
    figures = downscale_raster(
        lr_path, tmp_path / "hr.tif", lambda x, a: net(x, a)[-1], 4, window=32, overlap=6
    )
    with rasterio.open(lr_path) as lr, rasterio.open(tmp_path / "hr.tif") as hr:
        assert (hr.height, hr.width) == (4 * lr.height, 4 * lr.width)
        assert hr.crs == lr.crs
        assert hr.bounds == pytest.approx(lr.bounds)
        assert hr.res == pytest.approx((lr.res[0] / 4, lr.res[1] / 4))
        out = hr.read(1)
    assert figures["output_shape"] == [600, 800]
    np.testing.assert_array_equal(np.isnan(out), np.repeat(np.repeat(np.isnan(field), 4, 0), 4, 1))
    assert block_mean(torch.from_numpy(out), 4).shape == field.shape


@pytest.mark.workflow
def test_the_ice_thickness_example_runs_end_to_end(tmp_path: Path, shared_data: Path) -> None:
    """The downscaling example with surface elevation as an auxiliary channel, through a real
    snakemake (one short epoch per model): metrics table with the baselines, the apply map."""
    import json
    import shutil

    import pandas as pd
    import yaml

    from tests.conftest import REPO, snakemake

    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    (tmp_path / "shared").symlink_to(shared_data.parent)
    config = yaml.safe_load((work / "config/examples/downscaling_ice.yaml").read_text())
    config["models"]["base"].update(epochs=1, samples_per_epoch=32, features=8, blocks=1)
    config["models"]["grid"] = {"arch": ["RecurrentSRCNN", "EDSR"]}
    (work / "config/examples/test.yaml").write_text(yaml.safe_dump(config))  # paths are relative to it
    snakemake(work, "--configfile", "config/examples/test.yaml", "--replace-workflow-config")
    run = work / config["workdir"]  # the example writes into its own workdir

    table = pd.read_csv(run / "results/reports/scale_x4.csv").set_index("predictor")
    assert set(table.index) == {
        "models/arch-RecurrentSRCNN/best",
        "models/arch-EDSR/best",
        "baselines/bicubic-x4",
        "baselines/bilinear-x4",
        "baselines/nearest-x4",
    }
    assert (table["cells"] == 4525).all()  # the calval site's valid cells (its third of the glacier)
    assert table.loc["baselines/bicubic-x4", "rmse_ratio_bicubic"] == 1.0
    assert (table.loc["baselines/nearest-x4", "rmse_ratio_bicubic"]) > 1.0  # blocky is worse
    for column in ("rmse", "mae", "bias", "max_error", "rmse_ratio_bilinear", "rmse_ratio_nearest"):
        assert table[column].notna().all()
    assert table.loc["models/arch-EDSR/best", "selection"] == "held-out fold"
    # the auxiliary field joined the cleaned field; the model knows it by name
    status = json.loads((run / "results/clean/hef_west/status.json").read_text())
    assert status["bands"] == ["thickness", "surface"]
    resolved = yaml.safe_load((run / "results/models/arch-EDSR/config.yaml").read_text())
    assert resolved["task"] == "downscaling" and resolved["bands"] == ["thickness", "surface"]
    assert (run / "results/reports/downscaling/hef_west.png").stat().st_size > 10_000
    # the applied map: 4 x the rows and columns on the same bounds, NaN off the glacier
    with (
        rasterio.open(shared_data / "downscaling/hintereisferner_ice_thickness_25m.tif") as src,
        rasterio.open(run / "results/maps/models/arch-EDSR/best/scenes/hef_apply.tif") as out,
    ):
        assert (out.height, out.width) == (4 * src.height, 4 * src.width)
        assert out.bounds == pytest.approx(src.bounds) and out.crs == src.crs
        thickness = src.read(1)
        mapped = out.read(1)
    glacier = np.repeat(np.repeat(thickness > 0, 4, 0), 4, 1)
    np.testing.assert_array_equal(np.isfinite(mapped), glacier)
    assert 0 < np.nanmedian(mapped) < 200
    assert len(list((run / "results/maps/models/arch-EDSR/best/mosaic").glob("*.vrt"))) == 1


def test_patch_standardised_networks_learn_shape_and_keep_the_input_on_average(tmp_path: Path) -> None:
    from snakemap.tasks.downscaling import DownscalingTask, load_downscaler
    from snakemap.tasks.srnets import PatchStandardized

    torch.manual_seed(0)
    lr = torch.randn(2, 1, 12, 12) * 3 + 5
    for arch in ("EDSR", "RecurrentSRCNN"):
        task = DownscalingTask(
            arch, 4, ["elevation"], features=8, blocks=1, normalize="patch", consistency=True
        )
        net = task.model.eval()
        assert isinstance(net, PatchStandardized)
        with torch.no_grad():
            outs = net(lr)
            shifted = net(lr + 100.0)[-1]
        for out in outs:  # every stage's block means are the LR input
            s = out.shape[-1] // lr.shape[-1]
            torch.testing.assert_close(torch.nn.functional.avg_pool2d(out, s), lr, atol=1e-4, rtol=0)
        # a patch 100 m higher comes out 100 m higher, the same shape
        torch.testing.assert_close(shifted, outs[-1] + 100.0, atol=1e-3, rtol=0)
        # the checkpoint keeps the wrapper: the loaded downscaler predicts the same
        trainer_state = {"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}
        torch.save(trainer_state, tmp_path / f"{arch}.ckpt")
        loaded = load_downscaler(tmp_path / f"{arch}.ckpt")
        with torch.no_grad():
            torch.testing.assert_close(loaded(lr, None), outs[-1])
    plain = DownscalingTask("EDSR", 4, ["elevation"], features=8, blocks=1).model
    assert not isinstance(plain, PatchStandardized)  # the default keeps the checkpoints' layout
    # the bundle's ONNX export runs the same wrapped network
    from snakemap.outputs.bundle import read_bundle, write_bundle
    from snakemap.outputs.export import OnnxNetwork, export_onnx

    bundle = write_bundle(tmp_path / "EDSR.ckpt", {"params": {}}, {}, tmp_path / "b.zip", "downscaling")
    export_onnx(read_bundle(bundle), tmp_path / "b.onnx")
    expected = load_downscaler(tmp_path / "EDSR.ckpt")(lr, None)
    torch.testing.assert_close(OnnxNetwork(tmp_path / "b.onnx")(lr), expected, atol=1e-3, rtol=1e-4)


def test_patch_options_are_refused_for_class_maps() -> None:
    import yaml

    from snakemap.core.config import ConfigError, load_config
    from tests.conftest import REPO

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for models, where in [
        ({"base": {"normalize": "patch"}}, "models.base"),
        ({"list": [{"name": "a", "consistency": True}]}, r"models.list\[0\]"),
        ({"grid": {"normalize": ["scene", "patch"]}}, "models.grid"),
    ]:
        with pytest.raises(ConfigError, match=f"{where}: normalize: patch and consistency are for task"):
            load_config({**config, "models": models})


def test_a_window_the_overlap_crops_away_is_refused_at_load() -> None:
    from snakemap.core.config import ConfigError, build

    for window, overlap in ((8, 4), (6, 4)):
        with pytest.raises(ConfigError, match=f"downscaling: overlap {overlap} crops a window of {window}"):
            build("downscaling", {"window": window, "overlap": overlap})
    assert build("downscaling", {"window": 9, "overlap": 4}).window == 9


def test_predict_tta_averages_the_four_flips_of_a_downscaled_field(tmp_path: Path) -> None:
    """``predict.tta`` through ``snakemap downscale``: the map of a flipped grid is the flipped map
    (a network is not flip-equivariant on its own), and the output still averages to the input."""
    import json

    from snakemap.cli import main
    from snakemap.tasks.downscaling import DownscalingTask

    torch.manual_seed(0)
    task = DownscalingTask(
        "EDSR", 4, ["elevation"], features=8, blocks=1, normalize="patch", consistency=True
    )
    ckpt = tmp_path / "edsr.ckpt"
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}, ckpt)
    rng = np.random.default_rng(1)
    # a rough slope, 40 cells wide: windows of 16 start at 0, 8, 16 and 24, the same set mirrored
    # (a width whose windows do not mirror would map a mirrored grid with other window edges)
    field = (rng.normal(size=(24, 40)).cumsum(0).cumsum(1) + 500).astype(np.float32)
    transform = rasterio.transform.from_origin(600000, 5200000, 1000, 1000)
    maps: dict[tuple[bool, bool], np.ndarray] = {}
    for tta in (False, True):
        for flip in (False, True):
            lr = field[:, ::-1] if flip else field
            src = write_tif(tmp_path / f"lr{int(flip)}.tif", lr, crs="EPSG:32632", transform=transform)
            out = tmp_path / f"hr{int(tta)}{int(flip)}.tif"
            argv = ["downscale", "--checkpoint", str(ckpt), "--input", str(src), "--out", str(out)]
            options = {"predict": {"tta": tta}, "downscaling": {"window": 16, "overlap": 4}}
            assert main([*argv, "--options", json.dumps(options)]) == 0
            with rasterio.open(out) as hr:
                maps[tta, flip] = hr.read(1)
    plain_gap = np.abs(maps[False, True][:, ::-1] - maps[False, False]).max()
    assert plain_gap > 1e-2  # the network alone maps a mirrored grid differently
    np.testing.assert_allclose(maps[True, True][:, ::-1], maps[True, False], rtol=0, atol=1e-3)
    assert np.abs(maps[True, False] - maps[False, False]).max() > 1e-2  # tta changed the map
    np.testing.assert_allclose(degrade(maps[True, False], 4), field, rtol=0, atol=1e-2)  # consistent
    # with an auxiliary field, it is flipped with the input: the averaged map is flip-equivariant
    from snakemap.tasks.downscaling import load_downscaler

    task = DownscalingTask("EDSR", 4, ["thickness", "surface"], features=8, blocks=1)
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}, ckpt)
    lr, aux = torch.randn(1, 1, 10, 12), torch.randn(1, 1, 40, 48)
    with torch.no_grad():
        for tta in (False, True):
            model = load_downscaler(ckpt, tta=tta)
            gap = (model(lr.flip(-1), aux.flip(-1)).flip(-1) - model(lr, aux)).abs().max()
            assert (gap < 1e-5) if tta else (gap > 1e-3)
