"""The predictor: an identity model gives back its input exactly, with no seams, on the input grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from snakemap.core.apply_sections import PredictOptions
from snakemap.core.palette import class_colors, rgb
from snakemap.data.stats import Normalizer
from snakemap.inference.predict import predict_scene
from snakemap.inference.predictor import Member, Predictor
from snakemap.inference.readers import CleanImageReader
from snakemap.inference.windows import padded_origins
from snakemap.inference.writer import read_probabilities
from tests.conftest import write_tif


def identity_predictor(bands: int, tta: bool = False) -> Predictor:
    norm = Normalizer(np.zeros(bands, np.float32), np.ones(bands, np.float32))
    member = Member(lambda x: x, [f"b{i}" for i in range(1, bands + 1)], norm, activation="none")
    return Predictor([member], [f"c{i}" for i in range(bands)], tta=tta)


def scene(path: Path, rows: int, cols: int, bands: int = 3) -> np.ndarray:
    data = np.random.default_rng(rows * cols).random((bands, rows, cols)).astype(np.float32)
    data[:, : rows // 5, : cols // 4] = np.nan  # a nodata corner
    write_tif(
        path, data, crs="EPSG:32633", transform=from_origin(400000, 5000000, 20, 20), nodata=float("nan")
    )
    return data


@pytest.mark.parametrize(
    ("rows", "cols", "window", "overlap", "blend"),
    [
        (150, 230, 64, 8, False),  # windows and overlap that do not divide the scene
        (150, 230, 64, 16, True),
        (40, 25, 64, 8, False),  # a scene smaller than one window
        (97, 33, 32, 5, True),
        (300, 100, 48, 0, False),  # no overlap
        (70, 90, 32, 4, False),  # the last window row reaches past the scene
    ],
)
def test_identity_model_is_exact_without_seams(tmp_path: Path, rows, cols, window, overlap, blend) -> None:
    data = scene(tmp_path / "in.tif", rows, cols)
    opts = PredictOptions(window=window, overlap=overlap, blend=blend, batch_size=3, prob_dtype="float32")
    reader = CleanImageReader(tmp_path / "in.tif")
    figures = predict_scene(reader, identity_predictor(3), opts, tmp_path / "cls.tif", tmp_path / "prob.tif")
    reader.close()
    probs = read_probabilities(tmp_path / "prob.tif")
    valid = np.isfinite(data).all(axis=0)
    assert figures["valid_pixels"] == valid.sum()
    assert np.isnan(probs[:, ~valid]).all()
    if blend:
        np.testing.assert_allclose(probs[:, valid], data[:, valid], rtol=1e-6)
    else:
        np.testing.assert_array_equal(probs[:, valid], data[:, valid])
    with rasterio.open(tmp_path / "cls.tif") as cls, rasterio.open(tmp_path / "in.tif") as src:
        classes = cls.read(1)
        assert (cls.crs, cls.transform, cls.shape) == (src.crs, src.transform, src.shape)
        assert cls.nodata == 255 and cls.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    np.testing.assert_array_equal(classes[valid], data[:, valid].argmax(0))
    assert (classes[~valid] == 255).all()
    assert not list(tmp_path.glob(".*"))  # no staged or temporary files left


def test_uint8_probabilities_and_flip_tta(tmp_path: Path) -> None:
    data = scene(tmp_path / "in.tif", 70, 90)
    reader = CleanImageReader(tmp_path / "in.tif")
    opts = PredictOptions(window=32, overlap=4)
    predict_scene(reader, identity_predictor(3, tta=True), opts, tmp_path / "cls.tif", tmp_path / "prob.tif")
    probs = read_probabilities(tmp_path / "prob.tif")
    valid = np.isfinite(data).all(axis=0)
    np.testing.assert_allclose(probs[:, valid], data[:, valid], atol=0.5 / 250 + 1e-6)
    with rasterio.open(tmp_path / "prob.tif") as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 255 and src.scales[0] == pytest.approx(1 / 250)
        # each band names its class, and the file says how its values read
        assert src.descriptions == ("p(c0)", "p(c1)", "p(c2)")
        assert src.tags()["PROBABILITY"] == "value / 250 (0..250); 255: nodata"
    with rasterio.open(tmp_path / "cls.tif") as src:
        assert src.descriptions == ("class",) and src.tags()["CLASSES"] == "c0,c1,c2"
        assert [src.colormap(1)[i][:3] for i in range(3)] == [
            rgb(c) for c in class_colors(["c0", "c1", "c2"])
        ]


def test_tta_averages_a_network_over_four_flips_and_runs_rules_once() -> None:
    """A network that is not flip-equivariant (it favours class 0 on the left of a window) is
    averaged over the four flips; a rule member, which maps each pixel alone, runs once."""
    from snakemap.core.calval_sections import BaselineOptions

    calls = {"net": 0, "rule": 0}

    def net(x: torch.Tensor) -> torch.Tensor:
        calls["net"] += 1
        left = torch.linspace(1.0, 0.0, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], x.shape[-1])
        return torch.cat([left, 1.0 - left], 1)  # probabilities (activation "none")

    norm = Normalizer(np.zeros(1, np.float32), np.ones(1, np.float32))
    network = Member(net, ["b1"], norm, activation="none")
    rule = Member.from_rules(
        BaselineOptions(rules=[{"expr": "b1", "above": 0.5, "class": "a"}], default="b"), ["a", "b"]
    )
    original = rule.model

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls["rule"] += 1
        return original(x)

    rule.model = counted
    windows = np.random.default_rng(0).uniform(0, 1, (2, 1, 8, 10)).astype(np.float32)
    plain = Predictor([network, rule], ["a", "b"]).probabilities(windows, ["b1"])
    assert calls == {"net": 1, "rule": 1}
    flipped = Predictor([network, rule], ["a", "b"], tta=True).probabilities(windows, ["b1"])
    assert calls == {"net": 1 + 4, "rule": 1 + 1}
    # the network's left-right preference averages out under flips; the rule's half is unchanged
    rule_half = 0.5 * np.stack([windows[:, 0] > 0.5, windows[:, 0] <= 0.5], 1)
    np.testing.assert_allclose(flipped, 0.25 + rule_half, atol=1e-6)
    assert np.abs(plain - flipped).max() > 0.2


def test_threshold_on_a_target_class() -> None:
    p = Predictor([], ["a", "b", "c"], threshold=0.3, target=2)
    probs = np.array([[0.5, 0.2], [0.25, 0.5], [0.25, 0.3]], dtype=np.float32)[:, :, None]
    assert p.classify(probs)[:, 0].tolist() == [0, 2]


def test_padded_origins_cover_everything() -> None:
    assert padded_origins(100, 8, 48) == [-8, 40, 88]
    assert padded_origins(10, 8, 48) == [-8]


def test_crashed_run_leaves_old_outputs(tmp_path: Path) -> None:
    scene(tmp_path / "in.tif", 40, 40)
    (tmp_path / "cls.tif").write_bytes(b"earlier")

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("out of memory")

    member = Member(broken, ["b1"], Normalizer(np.zeros(1, np.float32), np.ones(1, np.float32)))
    with pytest.raises(RuntimeError):
        predict_scene(
            CleanImageReader(tmp_path / "in.tif"),
            Predictor([member], ["x"]),
            PredictOptions(window=32, overlap=4),
            tmp_path / "cls.tif",
        )
    assert (tmp_path / "cls.tif").read_bytes() == b"earlier"
    assert not list(tmp_path.glob(".*"))


@pytest.mark.slow
def test_compiled_networks_give_the_same_maps(tmp_path: Path) -> None:
    """`predict.compile`: the members' networks run through torch.compile, compiled once for all
    scenes; the maps equal the eager ones to float tolerance."""
    data = scene(tmp_path / "in.tif", 70, 90)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)
    ).eval()
    norm = Normalizer(np.full(3, 0.5, np.float32), np.full(3, 0.3, np.float32))

    def run(compile_: bool, name: str) -> tuple[np.ndarray, Predictor]:
        predictor = Predictor([Member(net, ["b1", "b2", "b3"], norm)], ["a", "b", "c", "d"])
        opts = PredictOptions(window=32, overlap=4, batch_size=4, prob_dtype="float32", compile=compile_)
        for k in range(2):  # a second scene reuses the compiled network
            reader = CleanImageReader(tmp_path / "in.tif")
            predict_scene(reader, predictor, opts, tmp_path / f"{name}{k}.tif", tmp_path / f"{name}{k}p.tif")
            reader.close()
        return read_probabilities(tmp_path / f"{name}1p.tif"), predictor

    eager, plain = run(False, "eager")
    compiled, predictor = run(True, "compiled")
    member = predictor.members[0]
    assert member.compiled and member.model is not net and not plain.members[0].compiled
    valid = np.isfinite(data).all(axis=0)
    np.testing.assert_allclose(compiled[:, valid], eager[:, valid], atol=1e-5)
    with rasterio.open(tmp_path / "eager1.tif") as a, rasterio.open(tmp_path / "compiled1.tif") as b:
        assert (a.read(1) != b.read(1)).mean() < 1e-3  # argmax ties may flip at float tolerance
