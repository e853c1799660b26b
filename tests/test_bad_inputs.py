"""A corpus of bad scenes through the real workflow, as training scenes and as apply scenes: each
ends in its state with a clear reason, and the good scenes' outputs stay intact beside them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from snakemap.core.sections import DemoOptions
from snakemap.data.clean import ALL_ZERO, NO_CRS
from snakemap.data.demo import write_demo_scene
from tests.conftest import CONFIG, apply_row, demo_row, planned_jobs, snakemake, workspace, write_tif

pytestmark = pytest.mark.workflow

SIZE = 96
GOOD_TRAIN, GOOD_APPLY = ["a1", "b1"], ["q1", "q2"]
MAPS = Path("results/maps/models/base/best")
#: a state and the start of its reason, per bad scene (train role | apply role where they differ)
EXPECTED: dict[str, tuple[str, str]] = {
    "truncated": ("corrupt", "unreadable: "),
    "zero_byte": ("corrupt", "unreadable: "),
    "random": ("corrupt", "unreadable: "),
    "html": ("corrupt", "unreadable: "),
    "bands3": ("corrupt", "wrong band count: the config names 6 bands"),
    "nodata": ("empty", "no valid pixels"),
    "nan": ("empty", "no valid pixels"),
    "zeros": ("empty", ALL_ZERO),
    "inf": ("ok", ""),
    "no_crs": ("corrupt", NO_CRS),
    "tiny": ("ok", ""),
}
#: as training scenes only: a label of another class table
UNMAPPED = ("corrupt", "label values [")


def corpus(folder: Path) -> dict[str, Path]:
    """The bad scenes (6-band files, or what a failed download leaves) under ``folder``, beside
    ``demo.label.tif`` (their label) and ``other_table.label.tif`` (a label of another class table)."""
    write_demo_scene("w1", folder / "demo.tif", folder / "demo.label.tif", DemoOptions(size=SIZE))
    with rasterio.open(folder / "demo.tif") as src:
        dn, crs, transform = src.read(), src.crs.to_string(), src.transform
    rng = np.random.default_rng(10)
    raw = (folder / "demo.tif").read_bytes()
    files = {name: folder / f"{name}.tif" for name in EXPECTED}
    files["truncated"].write_bytes(raw[: len(raw) // 3])
    files["zero_byte"].write_bytes(b"")
    files["random"].write_bytes(rng.bytes(20000))
    files["html"].write_bytes(
        b"<!DOCTYPE html><html><head><title>503</title></head><body>Service unavailable</body></html>"
    )
    write_tif(files["bands3"], dn[:3], crs, transform)
    write_tif(files["nodata"], np.zeros_like(dn), crs, transform, nodata=0)
    write_tif(files["nan"], np.full(dn.shape, np.nan, np.float32), crs, transform)
    write_tif(files["zeros"], np.zeros_like(dn), crs, transform)
    inf = dn.astype(np.float32)
    inf[:, rng.integers(0, SIZE, 50), rng.integers(0, SIZE, 50)] = np.inf
    write_tif(files["inf"], inf, crs, transform)
    write_tif(files["no_crs"], dn, None, transform)  # type: ignore[arg-type]
    write_tif(files["tiny"], dn[:, :7, :5], crs, transform)
    other_table = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 250).astype(np.uint8)
    write_tif(folder / "other_table.label.tif", other_table, crs, transform)
    return files


def rows(files: dict[str, Path]) -> list[dict]:
    """Training rows (two good demo scenes and the corpus) and apply rows (two good quads and the corpus)."""
    folder = files["inf"].parent
    label, other_table = str(folder / "demo.label.tif"), str(folder / "other_table.label.tif")
    train = [dict(demo_row(n), aoi=n) for n in GOOD_TRAIN]
    train += [
        dict(demo_row("a1"), scene_id=f"t_{n}", uri=str(f), label_uri=label, aoi=n) for n, f in files.items()
    ]
    train.append(
        dict(demo_row("a1"), scene_id="t_unmapped", uri=str(files["inf"]), label_uri=other_table, aoi="u")
    )
    apply = [apply_row(n) for n in GOOD_APPLY]
    apply += [apply_row(f"p_{n}", str(f)) for n, f in files.items()]
    return train + apply


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run of the workflow over the corpus; its working directory."""
    root = tmp_path_factory.mktemp("bad_inputs")
    files = corpus(root / "inputs")
    config = dict(
        CONFIG,
        demo={"size": SIZE},
        splits={"folds": 2},
        models={"base": {"arch": "FPN", "encoder_name": "mobilenet_v2", "epochs": 1, "batch_size": 8}},
        apply={"predictors": ["models/base/best"], "shard_size": 50},
    )
    work = workspace(root / "work", config, rows(files))
    snakemake(work)
    return work


def read_status(path: Path) -> tuple[str, str]:
    status = json.loads(path.read_text())
    return status["status"], status["reason"]


def test_bad_training_scenes_end_in_their_state(bad_run: Path) -> None:
    clean = bad_run / "results" / "clean"
    states = {n: read_status(clean / f"t_{n}" / "status.json") for n in [*EXPECTED, "unmapped"]}
    for name, (state, reason) in {**EXPECTED, "unmapped": UNMAPPED}.items():
        assert states[name][0] == state and states[name][1].startswith(reason), (name, states[name])
        assert (clean / f"t_{name}" / "image.tif").exists() == (state == "ok"), name
    assert "are not in labels.remap: above labels.max_unmapped_fraction 0.01" in states["unmapped"][1]
    with rasterio.open(clean / "t_inf" / "image.tif") as src:  # +inf is invalid data, not a value
        assert np.isfinite(src.read()).all(axis=0).mean() < 1 and not np.isinf(src.read()).any()
    # The good scenes' outputs are intact, and the statistics are those of ok scenes with finite values.
    for name in GOOD_TRAIN:
        assert read_status(clean / name / "status.json") == ("ok", "")
        assert (bad_run / "results" / "chips" / f"{name}.image.npy").exists()
    stats = json.loads((bad_run / "results" / "stats" / "bands.json").read_text())
    assert set(stats["scenes"]) == {*GOOD_TRAIN, "t_inf", "t_tiny"}
    assert all(np.isfinite([b["mean"], b["std"]]).all() for b in stats["bands"])
    assert (bad_run / "results" / "models" / "base" / "best.ckpt").exists()


def test_bad_apply_scenes_end_in_their_state(bad_run: Path) -> None:
    maps = bad_run / MAPS
    for name, (state, reason) in EXPECTED.items():
        found = read_status(maps / "scenes" / f"p_{name}.json")
        assert found[0] == state and found[1].startswith(reason), (name, found)
        assert (maps / "scenes" / f"p_{name}.tif").exists() == (state == "ok"), name
    with rasterio.open(maps / "scenes" / "p_tiny.tif") as src:
        assert src.shape == (7, 5)
    with rasterio.open(maps / "scenes" / "p_inf.tif") as src:
        classes = src.read(1)
    with rasterio.open(bad_run.parent / "inputs" / "inf.tif") as src:
        assert (classes[np.isinf(src.read()).any(axis=0)] == 255).all()
    # The good quads are mapped, and the mosaic covers the ok scenes alone.
    for name in GOOD_APPLY:
        assert read_status(maps / "scenes" / f"{name}.json") == ("ok", "")
        with rasterio.open(maps / "scenes" / f"{name}.tif") as src:
            assert set(np.unique(src.read(1))) <= {0, 1, 2, 3, 255}
    (vrt,) = (maps / "mosaic").glob("*.vrt")
    with rasterio.open(vrt) as src:
        assert sorted(Path(f).name for f in src.files[1:]) == ["p_inf.tif", "p_tiny.tif", "q1.tif", "q2.tif"]
    shard = json.loads((maps / "shards" / "shard-00000.json").read_text())
    assert len(shard["scenes"]) == len(GOOD_APPLY) + len(EXPECTED)


def test_a_mask_band_the_config_does_not_produce_stops_the_dry_run(tmp_path: Path) -> None:
    config = dict(CONFIG, apply={"mask": {"band": "ndmi", "min": 0.0}})
    rows = [
        demo_row("a1"),
        apply_row("q1"),
    ]
    work = workspace(tmp_path, config, rows)
    proc = snakemake(work, "--dry-run", check=False)
    assert proc.returncode != 0
    assert (
        "apply.mask.band 'ndmi' is not among the cleaned bands ['blue', 'green', 'red', 'nir', 'ndwi']"
        in (proc.stdout + proc.stderr)
    )
    assert not (work / "results").exists() and not (work / "resources").exists()


def test_retrying_corrupt_apply_scenes_is_a_one_off(bad_run: Path) -> None:
    """As the README says: the shards retry their corrupt scenes (and only those), and the next
    plain run has nothing to do. Last in this module: it reruns the shard of the shared run."""
    maps = bad_run / MAPS

    def sentinels() -> dict[str, dict]:  # {scene}.json, not the STAC items beside them
        files = (maps / "scenes").glob("*.json")
        return {p.stem: json.loads(p.read_text()) for p in files if not p.name.endswith(".stac.json")}

    before = sentinels()
    snakemake(bad_run, "--forcerun", "apply_shard", "--config", "retry_corrupt=true")
    after = sentinels()
    assert set(after) == set(before)
    retried = {s for s in after if after[s]["finished"] != before[s]["finished"]}
    assert retried == {s for s, e in before.items() if e["status"] == "corrupt"} and retried
    assert all(after[s]["status"] == "corrupt" for s in retried)  # the files are still bad
    assert planned_jobs(bad_run) == {}


def test_a_config_that_makes_nothing_says_so_and_names_the_grid_lacks_stop_it(tmp_path: Path) -> None:
    rows = [demo_row("a1"), apply_row("q1")]
    # no models, no calval rows, apply rows without apply.predictors: data preparation alone, said
    work = workspace(tmp_path / "idle", CONFIG, rows)
    proc = snakemake(work, "--dry-run")
    said = proc.stdout + proc.stderr
    assert "snakemap: no models: section: nothing is trained" in said
    assert "snakemap: the manifest has no calval rows: no model, ensemble or baseline is scored" in said
    assert "snakemap: the manifest has 1 apply rows, and apply.predictors is empty: nothing is mapped" in said
    assert re.search(r"^clean\s+1$", said, re.MULTILINE)  # the scene is still prepared
    model = {"base": {"arch": "FPN", "encoder_name": "mobilenet_v2", "epochs": 1}}
    cases = {
        "predictor": (
            {"models": model, "apply": {"predictors": ["models/unet/best"]}},
            "apply.predictors: models/unet/best names model 'unet', which the grid does not make "
            "(models: base)",
        ),
        "member": (
            {"models": model, "calval": {"ensembles": {"e": {"members": {"base": 1, "unet": 1}}}}},
            "calval.ensembles.e.members: 'unet' is no model of the grid (models: base)",
        ),
        "ensemble": (
            {"models": model, "apply": {"predictors": ["ensembles/e"]}},
            "apply.predictors: ensembles/e: no ensemble 'e' in calval.ensembles (none)",
        ),
    }
    for name, (change, message) in cases.items():
        work = workspace(tmp_path / name, {**CONFIG, **change}, rows)
        proc = snakemake(work, "--dry-run", check=False)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr, name
        assert not (work / "results").exists(), name
