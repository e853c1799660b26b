"""Calval and the HTML report end to end: a real snakemake run on the demo data, then the report
opened in headless Chromium, every figure shown and decoded (no broken images). Before that, the
preview's image stretch on real rasters and the table of the best predictor per class."""

from __future__ import annotations

import json
import shutil
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from pyproj import Geod
from rasterio.transform import from_origin

from snakemap.core.config import ConfigError, build
from snakemap.core.io import NODATA_CLASS
from snakemap.core.palette import CYCLE, class_colors, rgb
from snakemap.core.sections import DemoOptions, SensorOptions
from snakemap.data.demo import write_demo_scene
from snakemap.evaluation.areas import estimate
from snakemap.evaluation.report import ERROR_COLOR, NODATA_GREY, display_bands, image_panel, preview, stretch
from snakemap.evaluation.winners import winners, write_winners
from snakemap.inference.class_areas import class_hectares
from snakemap.outputs.quicklook import SceneImage, class_panel, image_overview, quicklook, read_overview
from snakemap.outputs.report_pages import landing, maps_page
from tests.conftest import CONFIG, REPO, calval_row, demo_row, snakemake, workspace, write_tif

CHROMIUM = shutil.which("chromium")
#: headless Chromium, offline
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SITES = ["s1", "s2"]


@pytest.fixture
def demo_site(tmp_path: Path) -> tuple[Path, Path]:
    """The demo's calval site ``site_f1`` (clouds over 9% of it, a swath edge): image and label GeoTIFFs."""
    image, label = tmp_path / "site_f1.tif", tmp_path / "site_f1.label.tif"
    write_demo_scene("site_f1", image, label, DemoOptions())
    return image, label


def test_stretch_maps_each_bands_percentiles_to_0_and_1(demo_site: tuple[Path, Path]) -> None:
    with rasterio.open(demo_site[0]) as src:
        bands = src.read([3, 2, 1], out_dtype="float32", masked=True).filled(np.nan)  # nodata 0 -> NaN
    assert np.isnan(bands).any()
    for gamma in (1.0, 2.2):
        out = stretch(bands, gamma=gamma)
        assert out.shape == (*bands.shape[1:], 3) and out.dtype == np.float32
        for i, band in enumerate(bands):
            ok = np.isfinite(band)
            assert np.array_equal(np.isnan(out[..., i]), ~ok)
            lo, hi = np.percentile(band[ok], [2, 98])
            assert (out[..., i][ok & (band <= lo)] == 0).all() and (out[..., i][ok & (band >= hi)] == 1).all()
            inside = ok & (band > lo) & (band < hi)
            assert ((out[..., i][inside] > 0) & (out[..., i][inside] < 1)).all()
            expected = ((band[inside] - lo) / (hi - lo)) ** (1 / gamma)
            np.testing.assert_allclose(out[..., i][inside], expected, rtol=1e-5)


def test_display_bands_by_name_else_the_first() -> None:
    assert display_bands(["blue", "green", "red", "nir"], 4) == [3, 2, 1]
    assert display_bands(["Red", "Green", "Blue"], 3) == [1, 2, 3]
    assert display_bands(["red", "nir", "swir"], 3) == [1, 2, 3]  # not all three named: the first three
    assert display_bands([None, None], 2) == [1]  # one or two bands: the first, in grey


def test_demo_preview_is_not_nearly_black(demo_site: tuple[Path, Path], tmp_path: Path) -> None:
    image, label = demo_site
    panel = image_panel(image)
    valid = panel[..., 3] == 1
    assert panel.shape == (256, 256, 4) and 0.5 < valid.mean() < 1  # the swath edge is transparent
    with rasterio.open(image) as src:
        rgb = src.read([3, 2, 1], out_dtype="float32", masked=True).filled(np.nan)
    assert np.array_equal(valid, np.isfinite(rgb).all(axis=0))
    minmax = [(b - np.nanmin(b)) / (np.nanmax(b) - np.nanmin(b)) for b in rgb]
    dark = float(np.mean([m[valid].mean() for m in minmax]))  # clouds make it about 0.18
    assert panel[valid][:, :3].mean() > max(0.3, 1.6 * dark)
    out = tmp_path / "preview.png"
    preview(image, label, label, ["land", "deep", "shallow", "reef", "cloud"], "site_f1", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_unnamed_bands_show_the_first_three(shared_data: Path) -> None:
    panel = image_panel(shared_data / "scenes" / "RGB.byte.tif")  # three unnamed bands, nodata 0
    with rasterio.open(shared_data / "scenes" / "RGB.byte.tif") as src:
        valid = (src.read() != 0).all(axis=0)
    assert np.array_equal(panel[..., 3] == 1, valid)
    assert 0.2 < panel[valid][:, :3].mean() < 0.8


def _summary(**extra: list[object]) -> pd.DataFrame:
    """A hand-made calval summary: models a and b tie on land, a wins reef, the ensemble (picked on
    calval) wins water, b wins cloud that no baseline predicts."""
    return pd.DataFrame(
        {
            "predictor": ["models/a/best", "models/b/best", "ensembles/e", "baselines/ndwi", "baselines/veg"],
            "kind": ["model", "model", "ensemble", "baseline", "baseline"],
            "macro_iou": [0.65, 0.6, 0.62, 0.4, 0.3],
            "iou_land": [0.8, 0.8, 0.7, 0.6, 0.75],
            "iou_water": [0.7, 0.6, 0.9, 0.85, 0.0],
            "iou_reef": [0.6, 0.3, 0.5, 0.0, 0.1],
            "iou_cloud": [0.5, 0.7, 0.4, 0.0, np.nan],
            **extra,
        }
    )


def test_winners_per_class_against_the_best_baseline(tmp_path: Path) -> None:
    selection = ["held-out fold", "held-out fold", "calval", None, None]
    table = winners(_summary(selection=selection)).set_index("class")
    assert list(table.index) == ["land", "water", "reef", "cloud", "macro"]
    assert table.loc["land", "winner"] == "tie: models/a/best, models/b/best"
    assert table.loc["land", "best_baseline"] == "baselines/veg"
    assert table.loc["land", "margin_points"] == pytest.approx(5.0)
    assert table.loc["water", "winner"] == "ensembles/e (selected on calval)"
    assert table.loc["water", "selection"] == "calval"
    assert table.loc["water", "best_baseline"] == "baselines/ndwi"
    assert table.loc["water", "margin_points"] == pytest.approx(5.0)
    assert table.loc["reef", ["winner", "winner_iou", "best_baseline"]].tolist() == [
        "models/a/best",
        0.6,
        "baselines/veg",
    ]
    assert table.loc["reef", "margin_points"] == pytest.approx(50.0)
    # No baseline predicts cloud: each scores 0 there, so the margin is the winner's whole IoU.
    cloud = table.loc["cloud", ["winner", "best_baseline", "baseline_iou"]].tolist()
    assert cloud == ["models/b/best", "no baseline", 0.0]
    assert table.loc["cloud", "margin_points"] == pytest.approx(70.0)
    assert table.loc["macro", ["winner", "best_baseline"]].tolist() == ["models/a/best", "baselines/ndwi"]
    assert table.loc["macro", "margin_points"] == pytest.approx(25.0)
    # Without baselines there is nothing to beat; without a selection column there is none in the table.
    summary = _summary()
    table = winners(summary[summary["kind"] != "baseline"])
    assert "selection" not in table and (table["best_baseline"] == "no baseline").all()
    assert table["baseline_iou"].isna().all() and table["margin_points"].isna().all()
    _summary().to_csv(tmp_path / "summary.csv", index=False)
    written = write_winners(tmp_path / "summary.csv", tmp_path / "best_by_class.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "best_by_class.csv"), written)


@pytest.fixture(scope="module")
def calval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = dict(
        CONFIG,
        demo={"size": 96},
        models={
            "base": {"encoder_name": "mobilenet_v2", "epochs": 2, "batch_size": 8, "scheduler": "none"},
            "grid": {"arch": ["Unet", "FPN"]},
            # the gradient-boosting family beside the networks, in the same run
            "list": [{"name": "gbm", "family": "lightgbm", "boosting": {"rounds": 20, "pixels": 4000}}],
        },
        predict={"window": 64, "overlap": 8, "batch_size": 4},
        calval={
            "checkpoints": ["best", "last"],
            "baselines": {"ndwi": {"index": "ndwi", "above": 0.0, "class": "water", "else": "land"}},
            "ensembles": {
                "both": {"members": {"arch-Unet": 1, "arch-FPN": 2, "gbm": 1}, "threshold": "tune"},
                "fixed": {"members": {"arch-Unet": 1}, "threshold": 0.3},
                # a model and a rule baseline, the rule weighted far above: its map wins
                "mixed": {"members": {"arch-Unet": 1, "baselines/ndwi": 3}},
                # the model far above the rule, but every site's shift (> 0) is above the fallback's
                "guarded": {
                    "members": {"arch-Unet": 100, "baselines/ndwi": 1},
                    "fallback": {"shift": 1e-9, "members": ["baselines/ndwi"]},
                },
                # weights per model and rule tuned out of fold for the worst case
                "tuned": {"members": {"arch-Unet": 1, "gbm": 1, "baselines/ndwi": 1}, "weights": "tune"},
                # each class by the member best at it out of fold: networks, the booster or the rule
                "winners": {
                    "members": {"arch-Unet": 1, "arch-FPN": 1, "gbm": 1, "baselines/ndwi": 1},
                    "combine": "per_class",
                },
            },
        },
    )
    rows = [demo_row(n) for n in ("a1", "a2", "b1", "c1")]
    rows += [calval_row(s) for s in SITES]
    work = workspace(tmp_path_factory.mktemp("calval"), config, rows)
    snakemake(work)
    snakemake(work, "--report", "report.html")
    return work


PREDICTORS = [
    "models/arch-Unet/best",
    "models/arch-Unet/last",
    "models/arch-FPN/best",
    "models/arch-FPN/last",
    "models/gbm/best",
    "models/gbm/last",
    "ensembles/both",
    "ensembles/fixed",
    "ensembles/mixed",
    "ensembles/guarded",
    "ensembles/tuned",
    "ensembles/winners",
    "baselines/ndwi",
]


@pytest.mark.workflow
def test_every_predictor_is_scored(calval_run: Path) -> None:
    summary = pd.read_csv(calval_run / "results" / "calval" / "summary.csv")
    assert sorted(summary["predictor"]) == sorted(PREDICTORS)
    assert set(summary["kind"]) == {"model", "ensemble", "baseline"}
    for predictor in PREDICTORS:
        folder = calval_run / "results" / "calval" / predictor
        metrics = json.loads((folder / "metrics.json").read_text())
        assert set(metrics["sites"]) == set(SITES)
        # Overall confusion = the sum of the sites'.
        total = sum(pd.DataFrame(metrics["sites"][s]["confusion"]).to_numpy() for s in SITES)
        assert (total == pd.DataFrame(metrics["overall"]["confusion"]).to_numpy()).all()
        sites = pd.read_csv(folder / "sites.csv")
        assert set(sites["site"]) == {*SITES, "overall"} and set(sites["class"]) == {
            "land",
            "water",
            "reef",
            "cloud",
        }
        for site in SITES:
            with (
                rasterio.open(folder / f"{site}.tif") as out,
                rasterio.open(calval_run / "results" / "clean" / site / "image.tif") as src,
            ):
                assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        if not predictor.startswith("baselines/"):
            assert "pr" in metrics and 0 <= metrics["best_threshold"] <= 1  # reef is the single target
    both = json.loads((calval_run / "results" / "calval" / "ensembles" / "both" / "metrics.json").read_text())
    # Tuned out of fold on the training scenes' held-out chips, never on the calval sites it is scored at.
    tuned = json.loads((calval_run / "results" / "ensembles" / "both" / "threshold.json").read_text())
    assert tuned["tuned_on"] == both["threshold_tuned_on"] == "out-of-fold validation chips"
    assert both["threshold_used"] == tuned["threshold"] and tuned["chips"] > 0
    folds = pd.read_parquet(calval_run / "results" / "splits" / "folds.parquet")
    assert tuned["chips"] == int((folds["fold"] == 0).sum())  # every member holds out fold 0
    assert set(summary.set_index("predictor")["selection"].items()) == {
        *((p, "held-out fold") for p in PREDICTORS if not p.startswith("baselines/")),
        ("baselines/ndwi", "fixed rule"),
    }
    fixed = json.loads(
        (calval_run / "results" / "calval" / "ensembles" / "fixed" / "metrics.json").read_text()
    )
    assert fixed["threshold_used"] is None  # a fixed threshold is applied in the maps themselves
    for site in SITES:  # the hybrid ensemble, its rule member weighted 3 to 1: the rule's map
        with (
            rasterio.open(calval_run / "results/calval/ensembles/mixed" / f"{site}.tif") as mixed,
            rasterio.open(calval_run / "results/calval/baselines/ndwi" / f"{site}.tif") as rule,
        ):
            assert (mixed.read(1) == rule.read(1)).all()
    # the fallback: every site mapped by the rule alone, though the model outweighs it 100 to 1
    logs = calval_run / "logs" / "calval" / "ensembles" / "guarded"
    for site in SITES:
        with (
            rasterio.open(calval_run / "results/calval/ensembles/guarded" / f"{site}.tif") as guarded,
            rasterio.open(calval_run / "results/calval/baselines/ndwi" / f"{site}.tif") as rule,
        ):
            assert (guarded.read(1) == rule.read(1)).all()
        assert "mapped by ['baselines/ndwi'] alone" in (logs / f"{site}.log").read_text()


@pytest.mark.workflow
def test_a_booster_trains_bundles_and_predicts_beside_the_networks(calval_run: Path) -> None:
    from snakemap.outputs.bundle import read_bundle

    models = calval_run / "results" / "models"
    metrics = pd.read_csv(models / "gbm" / "metrics.csv")
    assert metrics["round"].max() == 20 and metrics["val_iou"].between(0, 1).all()
    best = torch.load(models / "gbm" / "best.ckpt", weights_only=True)
    hp = best["hyper_parameters"]
    assert hp["family"] == "lightgbm" and hp["booster"].startswith("tree")
    best_round = int(metrics.sort_values(["val_iou", "round"], ascending=[False, True])["round"].iloc[0])
    assert hp["rounds"] == best_round  # best.ckpt is the round best on the held-out fold
    bundles = calval_run / "results" / "bundles"
    assert not (bundles / "gbm.onnx").exists() and (bundles / "arch-Unet.onnx").exists()
    bundle = read_bundle(bundles / "gbm.zip")
    assert bundle.hyper_parameters["booster"] == hp["booster"] and bundle.state == {}
    with zipfile.ZipFile(bundles / "gbm.zip") as zf:
        assert sorted(zf.namelist()) == ["booster.txt", "bundle.json", "weights.pt"]
        assert "booster" not in json.loads(zf.read("bundle.json"))["model"]
    # its calval maps are its own: neither a network's nor the rule's
    with (
        rasterio.open(calval_run / "results/calval/models/gbm/best" / f"{SITES[0]}.tif") as gbm,
        rasterio.open(calval_run / "results/calval/models/arch-Unet/best" / f"{SITES[0]}.tif") as unet,
    ):
        assert gbm.read(1).shape == unet.read(1).shape and (gbm.read(1) != unet.read(1)).any()


@pytest.mark.workflow
def test_a_per_class_ensemble_maps_each_class_by_its_out_of_fold_winner(calval_run: Path) -> None:
    tuned = json.loads((calval_run / "results" / "ensembles" / "winners" / "winners.json").read_text())
    members = tuned["members"]
    assert members[-1] == "baselines/ndwi" and tuned["tuned_on"] == "out-of-fold validation chips"
    folds = pd.read_parquet(calval_run / "results" / "splits" / "folds.parquet")
    assert tuned["chips"] == int((folds["fold"] == 0).sum())
    classes = ["land", "water", "reef", "cloud"]
    for k, c in enumerate(classes):  # each winner has the best out-of-fold IoU of its class
        best = max(tuned["iou"][m][c] for m in members)
        assert (
            tuned["iou"][tuned["winners"][c]][c] == best
            and members[tuned["winner_index"][k]] == tuned["winners"][c]
        )
    assert sorted(tuned["precedence"]) == sorted(classes)
    # its calval map is its members' calval maps combined: each class where its winner maps it,
    # the first in precedence where several do, the fallback's class where none does
    maps_of = {
        m: "baselines/ndwi" if m.startswith("baselines/") else "models/" + Path(m).parent.name + "/best"
        for m in members
    }
    for site in SITES:
        with rasterio.open(calval_run / "results/calval/ensembles/winners" / f"{site}.tif") as src:
            combined = src.read(1)
        member_maps = {}
        for m, folder in maps_of.items():
            with rasterio.open(calval_run / "results/calval" / folder / f"{site}.tif") as src:
                member_maps[m] = src.read(1)
        expected = member_maps[tuned["fallback"]].copy()
        for c in reversed(tuned["precedence"]):
            k = classes.index(c)
            expected[member_maps[tuned["winners"][c]] == k] = k
        valid = combined != 255
        assert valid.any() and (combined[valid] == expected[valid]).all()
    # the report's table of what it chose out of fold, and by how much over the rule
    table = pd.read_csv(calval_run / "results" / "reports" / "per_class_winners.csv")
    assert table["class"].tolist() == classes and set(table["ensemble"]) == {"winners"}
    for row in table.to_dict("records"):
        c = row["class"]
        assert row["winner"] == tuned["winners"][c] and row["best_rule"] == "baselines/ndwi"
        assert row["winner_iou"] == pytest.approx(tuned["iou"][row["winner"]][c], abs=5e-4)
        assert row["margin_points"] == pytest.approx(tuned["margin_points"][c], abs=0.05)
        assert row["claims"] == tuned["precedence"].index(c) + 1
    assert "per-class ensembles: out-of-fold winners" in (calval_run / "report.html").read_text()


@pytest.mark.workflow
def test_an_ensemble_with_tuned_weights_maps_by_its_out_of_fold_weights(calval_run: Path) -> None:
    from snakemap.inference.writer import read_probabilities

    tuned = json.loads((calval_run / "results" / "ensembles" / "tuned" / "weights.json").read_text())
    folds = pd.read_parquet(calval_run / "results" / "splits" / "folds.parquet")
    assert tuned["tuned_on"] == "out-of-fold validation chips"
    assert tuned["chips"] == int((folds["fold"] == 0).sum())  # all three members hold out fold 0
    assert tuned["members"][-1] == "baselines/ndwi" and len(tuned["groups"]) == 3
    assert tuned["tuned"]["worst"] >= tuned["given"]["worst"]
    weights = dict(zip(tuned["members"], tuned["weights"], strict=True))
    assert weights == {
        m: 1.0 * tuned["groups"][m if m.startswith("baselines/") else str(Path(m).parent)]["factor"]
        for m in tuned["members"]
    }
    # its calval map: the members' probabilities (the rule's one-hot) mixed with the tuned weights
    for site in SITES:
        calval = calval_run / "results" / "calval"
        mixed = 0.0
        for m, w in weights.items():
            if m.startswith("baselines/"):
                with rasterio.open(calval / m / f"{site}.tif") as src:
                    rule = src.read(1)
                probs = (np.arange(4)[:, None, None] == rule[None]).astype(np.float32)
            else:
                probs = read_probabilities(
                    calval / "models" / Path(m).parent.name / "best/probs" / f"{site}.tif"
                )
            mixed = mixed + w * np.nan_to_num(probs)
        with rasterio.open(calval / "ensembles" / "tuned" / f"{site}.tif") as src:
            combined = src.read(1)
        top2 = np.sort(mixed, axis=0)[-2:]
        clear = (combined != 255) & (top2[1] - top2[0] > 0.02 * sum(weights.values()))  # no rounding tie
        assert clear.mean() > 0.5 and (combined[clear] == mixed.argmax(0)[clear]).all()


@pytest.mark.workflow
def test_best_by_class_table_is_in_the_report(calval_run: Path) -> None:
    table = pd.read_csv(calval_run / "results" / "reports" / "best_by_class.csv")
    assert table["class"].tolist() == ["cloud", "land", "reef", "water", "macro"]
    contenders = [p for p in PREDICTORS if not p.startswith("baselines/")]
    assert all(any(c in w for c in contenders) for w in table["winner"])
    assert set(table["best_baseline"]) <= {"baselines/ndwi", "no baseline"}
    margin = 100 * (table["winner_iou"] - table["baseline_iou"])  # from the rounded IoUs
    assert ((table["margin_points"] - margin).abs() < 0.2).all()
    assert "best predictor per class" in (calval_run / "report.html").read_text()


@pytest.mark.workflow
def test_the_sites_table_ranks_sites_by_shift(calval_run: Path) -> None:
    from snakemap.evaluation.sites import site_moments
    from snakemap.inference.shift import shift_score

    table = pd.read_csv(calval_run / "results" / "reports" / "sites.csv")
    assert sorted(table["site"]) == sorted(SITES)
    assert table["shift"].is_monotonic_decreasing and (table["shift"] > 0).all()
    stats = json.loads((calval_run / "results" / "stats" / "bands.json").read_text())
    reference = {b["name"]: (b["mean"], b["std"]) for b in stats["bands"]}
    for row in table.to_dict("records"):
        moments = site_moments(calval_run / "results" / "clean" / row["site"] / "image.tif")
        assert row["shift"] == pytest.approx(shift_score(moments, reference)["score"])
        assert row["unlike_training"] == (row["shift"] > 1.0)  # the default shift.threshold
        metrics = json.loads((calval_run / "results/calval" / row["winner"] / "metrics.json").read_text())
        assert row["winner_macro_iou"] == pytest.approx(metrics["sites"][row["site"]]["macro"]["iou"])
        assert row["best_baseline"] == "baselines/ndwi"
        margin = 100 * (row["winner_macro_iou"] - row["baseline_macro_iou"])
        assert row["margin_points"] == pytest.approx(margin, abs=0.01)
    assert "sites: shift and scores" in (calval_run / "report.html").read_text()


@pytest.mark.workflow
@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)"
)
def test_report_in_headless_chromium(calval_run: Path) -> None:
    from playwright.sync_api import sync_playwright

    report = calval_run / "report.html"
    shots = calval_run / "screenshots"
    shots.mkdir()
    figures = {
        "Calval": ["IoU by class", "precision-recall", "confusion matrices"],
        "Training": ["training curves"],
        "Maps": SITES,
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for category, names in figures.items():
            for name in names:
                page.goto(report.as_uri())
                page.get_by_text(category, exact=True).click()
                page.locator("tr", has_text=name).locator("a[iconname=eye]").click()
                page.wait_for_function(
                    "() => [...document.images].some(i => i.src.startsWith('data:image/png') && i.complete)"
                )
                images = page.eval_on_selector_all(
                    "img", "els => els.map(e => [e.src.slice(0, 15), e.naturalWidth, e.naturalHeight])"
                )
                shown = [i for i in images if i[0].startswith("data:image/png")]
                assert shown and all(w > 100 and h > 100 for _, w, h in shown), (category, name, images)
                page.screenshot(path=shots / f"{category}-{name}.png".replace(" ", "_"))
        browser.close()
    assert len(list(shots.glob("*.png"))) == 6


class _Tables(HTMLParser):
    """The tables of an HTML page as lists of rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def html_tables(text: str) -> list[pd.DataFrame]:
    parser = _Tables()
    parser.feed(text)
    return [pd.DataFrame(t[1:], columns=t[0]) for t in parser.tables]


def test_class_colours_default_to_what_people_expect_and_labels_colors_wins() -> None:
    classes = ["clear_land", "water", "cloud", "cloud_shadow", "reef", "thing", "other"]
    labels = build("labels", {"classes": classes, "remap": {0: "clear_land"}, "colors": {"other": "navy"}})
    palette = dict(zip(classes, labels.palette, strict=True))
    r, g, b = rgb(palette["water"])
    assert b > 150 and b > r + 80 and b > g  # water blue
    assert palette["cloud"] == "#ffffff" and max(rgb(palette["cloud_shadow"])) < 100  # white, dark
    assert palette["other"] == "#000080" and len(set(labels.palette)) == len(classes)
    assert ERROR_COLOR not in labels.palette and NODATA_GREY not in labels.palette
    assert class_colors(["a", "b"]) == list(CYCLE[:2])  # unnamed classes: the cycle
    # whole words, and never two classes in one colour
    mixed = ["land", "bare_soil", "coral", "reef", "rice", "street", "ice", "forest", "tree_cover"]
    colours = class_colors(mixed)
    assert len(set(colours)) == len(mixed)
    assert colours[mixed.index("ice")] != colours[mixed.index("rice")] == CYCLE[2]  # rice is no ice
    with pytest.raises(ConfigError, match=r"labels.colors: 'lnd' is not in labels.classes \(land, water\)"):
        build("labels", {"classes": ["land", "water"], "remap": {0: "land"}, "colors": {"lnd": "red"}})
    with pytest.raises(ConfigError, match=r"labels.colors.land: '#12' is not a colour"):
        build("labels", {"classes": ["land", "water"], "remap": {0: "land"}, "colors": {"land": "#12"}})


def test_class_hectares_on_the_ground_projected_and_geographic(tmp_path: Path) -> None:
    classes = np.zeros((50, 40), np.uint8)
    classes[:, 10:] = 1
    classes[0, :] = NODATA_CLASS
    utm = write_tif(tmp_path / "utm.tif", classes, transform=from_origin(500000, 8000000, 30, 30), nodata=255)
    k0 = 0.9996**2  # UTM's areal scale on its central meridian (easting 500000): the ground is larger
    assert class_hectares(utm, ["land", "water", "cloud"]) == pytest.approx(
        {"land": 49 * 10 * 0.09 / k0, "water": 49 * 30 * 0.09 / k0, "cloud": 0.0}, rel=1e-5
    )
    # Web Mercator stretches areas by 1 / cos(lat)^2: 4 at 60 degrees; the ground area is a quarter
    y60 = 8399737.89  # Web Mercator's northing of 60 N
    mercator = write_tif(
        tmp_path / "mercator.tif",
        classes,
        crs="EPSG:3857",
        transform=from_origin(0, y60 + 750, 30, 30),
        nodata=255,
    )
    got = class_hectares(mercator, ["land", "water"])
    assert got is not None and got["land"] == pytest.approx(49 * 10 * 0.09 / 4, rel=0.01)
    # 0.005 degrees a pixel from 60 to 60.25 N: against the ellipsoid's area of the same box
    geo = write_tif(
        tmp_path / "geo.tif",
        classes,
        crs="EPSG:4326",
        transform=from_origin(10.0, 60.25, 0.005, 0.005),
        nodata=255,
    )
    got = class_hectares(geo, ["land", "water"])
    assert got is not None
    geod = Geod(ellps="WGS84")

    def box_ha(west: float, south: float, east: float, north: float) -> float:
        lons = np.r_[np.linspace(west, east, 50), np.linspace(east, west, 50)]
        lats = np.r_[np.full(50, south), np.full(50, north)]
        return abs(geod.polygon_area_perimeter(lons, lats)[0]) / 1e4

    assert got["land"] == pytest.approx(box_ha(10.0, 60.0, 10.05, 60.245), rel=3e-3)
    assert got["water"] == pytest.approx(box_ha(10.05, 60.0, 10.2, 60.245), rel=3e-3)


def test_quicklook_shows_the_overview_in_class_colours_beside_the_scenes_image(tmp_path: Path) -> None:
    from snakemap.outputs.mosaic import build_mosaic

    # two scenes side by side; each band constant, so the image panel's values are known. The
    # second has no nodata value (off its footprint the warp must still say "nothing here") and
    # internal overviews (read from one of them: a constant stays that constant)
    scenes, maps = [], []
    for k, (west, values) in enumerate([(500000, (100, 200, 300)), (500960, (50, 60, 70))]):
        image = np.stack([np.full((96, 96), v, np.uint16) for v in values])
        path = write_tif(
            tmp_path / f"s{k}.tif",
            image,
            transform=from_origin(west, 8000000, 10, 10),
            nodata=0 if k == 0 else None,
            descriptions=["red", "green", "blue"],
        )
        if k == 1:
            with rasterio.open(path, "r+") as dst:
                dst.build_overviews([2, 4], rasterio.enums.Resampling.average)
        scenes.insert(0, SceneImage(f"s{k}", str(path), ["red", "green", "blue"]))
        classes = np.full((96, 96), k, np.uint8)  # s0 all land, s1 all water
        maps.append(
            write_tif(
                tmp_path / f"m{k}.tif", classes, transform=from_origin(west, 8000000, 10, 10), nodata=255
            )
        )
    build_mosaic(maps, tmp_path / "mosaic", tmp_path / "overview.tif", factor=4, resampling="mode")
    data, grid, _ = read_overview(tmp_path / "overview.tif")
    item = SceneImage("item", str(tmp_path / "nope.json"), [], SensorOptions(bands=["red", "green", "blue"]))
    gone = SceneImage("gone", str(tmp_path / "nope.tif"), [])
    image, skipped = image_overview([*scenes, gone, item], grid)
    assert [s.split(":")[0] for s in skipped] == ["gone", "item"]  # a picture: never an error
    for k, values in enumerate([(100, 200, 300), (50, 60, 70)]):
        inside = data == k  # the overview's pixels of scene k, off the seam (where both have some)
        inside[:, 1:] &= inside[:, :-1].copy()
        inside[:, :-1] &= inside[:, 1:].copy()
        assert inside.sum() > 100
        core = inside & np.isfinite(image).all(axis=0)
        assert core.mean() > 0.9 * inside.mean()
        for band, value in enumerate(values):
            np.testing.assert_allclose(image[band][core], value, rtol=1e-5)
    palette = class_colors(["land", "water"])
    panel = class_panel(data, palette)
    assert np.allclose(panel[data == 1][:, :3], np.array(rgb(palette[1])) / 255)
    assert (panel[data == NODATA_CLASS][:, 3] == 0).all()
    out = tmp_path / "quicklook.png"
    shown = quicklook(tmp_path / "overview.tif", scenes, ["land", "water", "cloud"], palette + ["#ffffff"],
                      "demo", out, mapped_ha={"land": 92.16, "water": 92.16}, total_scenes=2)  # fmt: skip
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (shown.scenes, shown.skipped, shown.classes) == (2, [], ["land", "water"])


REASON = "unreadable: <not a TIFF> & more"


def _progress(corrupt: int, unlike: int) -> dict[str, object]:
    return {
        "total": 10, "ok": 6, "empty": 2, "corrupt": corrupt, "pending": 2 - corrupt,
        "done_pct": 80.0 + 10 * corrupt, "scenes_per_hour": 0.0, "eta_s": None, "shards": 5,
        "shards_done": 4,
        "corrupt_scenes": [{"scene_id": f"c{i}", "reason": REASON} for i in range(corrupt)],
        "unlike_scenes": [{"scene_id": f"u{i}", "shift": 3.5 - i} for i in range(unlike)],
        "shift_threshold": 1.0, "mapped_ha": {"land": 300.0, "water": 100.0}, "zones": {},
    }  # fmt: skip


def test_the_maps_page_lists_progress_areas_corrupt_and_unlike_scenes(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_progress(2, 1)))
    (tmp_path / "b.json").write_text(json.dumps(_progress(0, 0)))
    classes = ["land", "water"]
    estimate(np.array([[40, 5], [2, 30]]), [300.0, 100.0], classes).to_csv(
        tmp_path / "areas.csv", index=False
    )
    out = tmp_path / "maps.html"
    maps_page(
        {"models/u/best": tmp_path / "a.json", "ensembles/e": tmp_path / "b.json"},
        {"models/u/best": tmp_path / "areas.csv"},
        classes,
        class_colors(classes),
        out,
    )
    text = out.read_text()
    assert "&lt;not a TIFF&gt; &amp; more" in text and "<not a TIFF>" not in text  # escaped
    tables = html_tables(text)
    progress_table = tables[0].set_index("predictor")
    assert progress_table.loc["models/u/best", ["ok", "empty", "corrupt", "pending"]].tolist() == [
        "6",
        "2",
        "2",
        "0",
    ]
    assert progress_table.loc["ensembles/e", "unlike training"] == "0"
    mapped = tables[1].set_index("class")
    assert mapped.loc["land", "models/u/best ha"] == "300" and mapped.loc["water", "ensembles/e %"] == "25"
    estimates = tables[2].set_index("class")
    assert {"area_ha", "area_low_ha", "area_high_ha", "users_accuracy"} <= set(estimates.columns)
    assert float(estimates.loc["land", "area_low_ha"].replace(",", "")) < float(
        estimates.loc["land", "area_ha"].replace(",", "")
    )
    corrupt = tables[3]
    assert corrupt["scene_id"].tolist() == ["c0", "c1"] and "Corrupt scenes: models/u/best (2)" in text
    assert tables[4]["scene_id"].tolist() == ["u0"] and "Corrupt scenes: ensembles/e (0)" in text
    assert f"background:{class_colors(classes)[1]}" in text  # class cells carry their colour


def test_the_landing_text_renders_the_winners_as_a_table(tmp_path: Path) -> None:
    from docutils.core import publish_parts
    from jinja2 import Environment

    _summary().to_csv(tmp_path / "summary.csv", index=False)
    write_winners(tmp_path / "summary.csv", tmp_path / "best_by_class.csv")
    landing(
        REPO / "workflow" / "report" / "workflow.rst",
        tmp_path / "best_by_class.csv",
        tmp_path / "landing.rst",
    )

    class Snakemake:  # what snakemake --report renders the text with
        config = {"manifest": "config/demo_manifest.csv"}

    rst = Environment().from_string((tmp_path / "landing.rst").read_text()).render(snakemake=Snakemake)
    body = publish_parts(rst, writer="html")["html_body"]
    assert "config/demo_manifest.csv" in body and "Best predictor per class" in body
    table = html_tables(body)[0]
    assert table["class"].tolist() == ["land", "water", "reef", "cloud", "macro"]
    assert table.set_index("class").loc["reef", "winner"] == "models/a/best"


@pytest.mark.workflow
@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)"
)
def test_the_demo_report_opens_on_the_winners_and_shows_the_applied_map(
    demo_run: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    report = tmp_path / "report.html"  # the demo's folder is shared: only its outputs are read
    snakemake(demo_run, "--report", str(report))
    predictor = "models/arch-Unet/best"
    progress = json.loads((demo_run / "results" / "maps" / predictor / "progress.json").read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(report.as_uri())
        # it opens on the winners per class, a table in the page
        landing = page.locator(".prose")
        landing.get_by_text("Best predictor per class").wait_for()
        winners = html_tables(landing.inner_html())[0]
        expected = pd.read_csv(demo_run / "results" / "reports" / "best_by_class.csv")
        assert winners["class"].tolist() == expected["class"].tolist()
        assert winners["winner"].tolist() == expected["winner"].tolist()
        # the quicklook of the applied map: an image, decoded
        page.get_by_text("Applied maps", exact=True).click()
        page.locator("tr", has_text=f"quicklook of {predictor}").locator("a[iconname=eye]").click()
        page.wait_for_function(
            "() => [...document.images].some(i => i.src.startsWith('data:image/png') && i.complete)"
        )
        sizes = page.eval_on_selector_all(
            "img",
            "els => els.filter(e => e.src.startsWith('data:image/png'))"
            ".map(e => [e.naturalWidth, e.naturalHeight])",
        )
        assert sizes and all(w > 600 and h > 200 for w, h in sizes), sizes
        page.screenshot(path=tmp_path / "quicklook.png")
        # the page of progress and areas, shown in the report (not a download)
        page.goto(report.as_uri())
        page.get_by_text("Applied maps", exact=True).click()
        page.locator("tr", has_text="progress, areas").locator("a[iconname=eye]").click()
        frame = page.frame_locator("iframe")
        frame.get_by_text("Mapped area per class").wait_for()
        tables = html_tables(frame.locator("body").inner_html())
        states = tables[0].set_index("predictor").loc[predictor]
        assert [int(states[k]) for k in ("ok", "empty", "corrupt", "pending")] == [
            progress[k] for k in ("ok", "empty", "corrupt", "pending")
        ]
        mapped = tables[1].set_index("class")
        for name, ha in progress["mapped_ha"].items():
            assert float(mapped.loc[name, f"{predictor} ha"].replace(",", "")) == pytest.approx(ha, abs=0.06)
        assert "Area estimates: models/arch-Unet/best" in frame.locator("body").inner_text()
        page.screenshot(path=tmp_path / "maps.png")
        browser.close()
