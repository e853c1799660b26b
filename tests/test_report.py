"""Calval and the HTML report end to end: a real snakemake run on the demo data, then the report
opened in headless Chromium, every figure shown and decoded (no broken images)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import rasterio

from tests.test_workflow import CONFIG, demo_row, snakemake, workspace

CHROMIUM = shutil.which("chromium")
SITES = ["s1", "s2"]


@pytest.fixture(scope="module")
def calval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = dict(
        CONFIG,
        demo={"size": 96},
        models={"base": {"encoder_name": "mobilenet_v2", "epochs": 2, "batch_size": 8, "scheduler": "none"},
                "grid": {"arch": ["Unet", "FPN"]}},  # fmt: skip
        predict={"window": 64, "overlap": 8, "batch_size": 4},
        calval={
            "checkpoints": ["best", "last"],
            "baselines": {"ndwi": {"index": "ndwi", "above": 0.0, "class": "water", "else": "land"}},
            "ensembles": {"both": {"members": {"arch-Unet": 1, "arch-FPN": 2}, "threshold": "tune"},
                          "fixed": {"members": {"arch-Unet": 1}, "threshold": 0.3}},  # fmt: skip
        },
    )
    rows = [demo_row(n) for n in ("a1", "a2", "b1", "c1")]
    rows += [dict(demo_row("a1"), scene_id=s, uri=f"resources/demo/images/{s}.tif",
                  label_uri=f"resources/demo/labels/{s}.tif", role="calval", aoi=s) for s in SITES]  # fmt: skip
    work = workspace(tmp_path_factory.mktemp("calval"), config, rows)
    snakemake(work)
    snakemake(work, "--report", "report.html")
    return work


PREDICTORS = [
    "models/arch-Unet/best", "models/arch-Unet/last", "models/arch-FPN/best", "models/arch-FPN/last",
    "ensembles/both", "ensembles/fixed", "baselines/ndwi",
]  # fmt: skip


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
        assert set(sites["site"]) == {*SITES, "overall"} and set(sites["class"]) == {"land", "water", "reef", "cloud"}
        for site in SITES:
            with rasterio.open(folder / f"{site}.tif") as out, rasterio.open(
                calval_run / "results" / "clean" / site / "image.tif"
            ) as src:
                assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        if not predictor.startswith("baselines/"):
            assert "pr" in metrics and 0 <= metrics["best_threshold"] <= 1  # reef is the single target
    both = json.loads((calval_run / "results" / "calval" / "ensembles" / "both" / "metrics.json").read_text())
    assert both["threshold_used"] == both["best_threshold"]  # tuned on the calval sites
    fixed = json.loads((calval_run / "results" / "calval" / "ensembles" / "fixed" / "metrics.json").read_text())
    assert fixed["threshold_used"] is None  # a fixed threshold is applied in the maps themselves


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")
def test_report_in_headless_chromium(calval_run: Path) -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this test needs it

    report = calval_run / "report.html"
    shots = calval_run / "screenshots"
    shots.mkdir()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    figures = {"Calval": ["IoU by class", "precision-recall", "confusion matrices"], "Training": ["training curves"],
               "Maps": SITES}  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
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
