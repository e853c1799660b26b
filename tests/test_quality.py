"""Golden quality: the embedded demo, run by the real snakemake, learns its target.

The demo's own config (config/config.yaml, the demo manifest, the demo scenes its rule writes) is
run whole in a temporary directory, once per session (the ``demo_run`` fixture of conftest.py).
The best model's per-class IoU at the calval site must stay within +-0.05 of the stored values in
``golden/demo_calval.json``, reef IoU at or above 0.60, and its macro IoU above every baseline's:
a change that breaks learning (or the scenes, the chips, the normalisation) fails here.

After an intended change of quality, update the stored values from a run's summary::

    .venv/bin/python -m pytest tests/test_quality.py --update-golden
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.workflow

GOLDEN = Path(__file__).parent / "golden" / "demo_calval.json"
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def demo_summary(demo_run: Path) -> pd.DataFrame:
    """The calval summary of the session's demo run."""
    return pd.read_csv(demo_run / "results" / "calval" / "summary.csv")


def test_demo_best_model_matches_the_golden_ious(
    demo_summary: pd.DataFrame, request: pytest.FixtureRequest
) -> None:
    golden = json.loads(GOLDEN.read_text())
    row = demo_summary.set_index("predictor").loc[golden["predictor"]]
    measured = {c: round(float(row[f"iou_{c}"]), 4) for c in golden["iou"]}
    if request.config.getoption("--update-golden"):
        GOLDEN.write_text(json.dumps({**golden, "iou": measured}, indent=2) + "\n")
    off = {
        c: (measured[c], golden["iou"][c])
        for c in measured
        if abs(measured[c] - golden["iou"][c]) > TOLERANCE
    }
    assert not off, f"per-class IoU (measured, stored) moved by more than {TOLERANCE}: {off}"


def test_demo_best_model_finds_reef_and_beats_every_baseline(demo_summary: pd.DataFrame) -> None:
    models = demo_summary[demo_summary["kind"] == "model"]
    best = models.loc[models["macro_iou"].idxmax()]
    baselines = demo_summary[demo_summary["kind"] == "baseline"]
    assert len(baselines) >= 1
    assert best["iou_reef"] >= 0.60, best.to_dict()
    assert (best["macro_iou"] > baselines["macro_iou"]).all(), demo_summary[["predictor", "macro_iou"]]
    assert set(models["selection"]) == {"held-out fold"}  # no checkpoint was chosen on the calval site
