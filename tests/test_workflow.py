"""The real snakemake on a small config in a temporary directory: outputs, no-op reruns,
a changed scene reruns only its chain, bad scenes end in their state, bad configs stop early."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from snakemap.core.sections import DemoOptions
from snakemap.data.demo import write_demo_scene
from tests.conftest import (
    CONFIG,
    DEMO,
    REPO,
    apply_row,
    demo_row,
    planned_jobs,
    snakemake,
    workspace,
    write_tif,
)

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def served_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("served")
    write_demo_scene("h1", folder / "i.tif", folder / "l.tif", DemoOptions(size=96))
    return (folder / "i.tif").read_bytes(), (folder / "l.tif").read_bytes()


def status(workdir: Path, scene: str) -> dict:
    return json.loads((workdir / "results" / "clean" / scene / "status.json").read_text())


def test_workflow_end_to_end(tmp_path: Path, http_server, served_scene) -> None:
    image, label = served_scene
    garbage = tmp_path / "inputs" / "garbage.tif"
    garbage.parent.mkdir()
    garbage.write_bytes(b"II*\x00" + b"\x17" * 5000)
    three = write_tif(tmp_path / "inputs" / "three.tif", np.ones((3, 96, 96), dtype=np.uint16))
    label_uri = "resources/demo/labels/a1.tif"
    manifest = [demo_row(n) for n in DEMO] + [
        {
            "scene_id": "http1",
            "uri": http_server.serve("/h.tif", image, "500"),
            "sha256": "",
            "label_uri": http_server.serve("/hl.tif", label),
            "role": "train",
            "aoi": "H",
        },
        {
            "scene_id": "trunc1",
            "uri": http_server.serve("/t.tif", image, *["truncate"] * 3),
            "sha256": "",
            "label_uri": label_uri,
            "role": "train",
            "aoi": "T",
        },
        {
            "scene_id": "shamis1",
            "uri": http_server.url("/h.tif"),
            "sha256": "f" * 64,
            "label_uri": label_uri,
            "role": "train",
            "aoi": "S",
        },
        {
            "scene_id": "garbage1",
            "uri": str(garbage),
            "sha256": "",
            "label_uri": label_uri,
            "role": "train",
            "aoi": "G",
        },
        {
            "scene_id": "bands3",
            "uri": three.as_uri(),
            "sha256": "",
            "label_uri": label_uri,
            "role": "calval",
            "aoi": "X",
        },
        {
            "scene_id": "q1",
            "uri": "resources/demo/images/q1.tif",
            "sha256": "",
            "label_uri": "",
            "role": "apply",
            "aoi": "",
        },
    ]
    work = workspace(tmp_path / "work", CONFIG, manifest)
    snakemake(work)

    states = {s: status(work, s) for s in DEMO + ["http1", "trunc1", "shamis1", "garbage1", "bands3"]}
    assert {s: d["status"] for s, d in states.items()} == {
        "a1": "ok",
        "a2": "ok",
        "b1": "ok",
        "c1": "ok",
        "e1": "empty",
        "http1": "ok",
        "trunc1": "corrupt",
        "shamis1": "corrupt",
        "garbage1": "corrupt",
        "bands3": "corrupt",
    }
    assert (
        "truncated download" in states["trunc1"]["reason"] or "IncompleteRead" in states["trunc1"]["reason"]
    )
    assert "sha256 mismatch" in states["shamis1"]["reason"]
    assert states["garbage1"]["reason"].startswith("unreadable:")
    assert states["bands3"]["reason"].startswith("wrong band count")
    assert http_server.hits("/h.tif") >= 2  # the 500, then success (plus the checksum scene)
    assert not (work / "results" / "clean" / "q1").exists()  # apply scenes are not cleaned here

    for s in ("a1", "http1"):
        with rasterio.open(work / "results" / "clean" / s / "image.tif") as src:
            assert src.count == 5 and src.descriptions[-1] == "ndwi"
            assert src.crs.to_epsg() == 32755
    stats = json.loads((work / "results" / "stats" / "bands.json").read_text())
    assert stats["scenes"] == ["a1", "a2", "b1", "c1", "http1"]
    assert [b["name"] for b in stats["bands"]] == ["blue", "green", "red", "nir", "ndwi"]
    folds = pd.read_parquet(work / "results" / "splits" / "folds.parquet")
    assert set(folds["scene_id"]) <= {"a1", "a2", "b1", "c1", "http1"}
    assert (folds.groupby("aoi")["fold"].nunique() == 1).all()
    chips = np.load(work / "results" / "chips" / "a1.image.npy", mmap_mode="r")
    assert chips.shape[1:] == (5, 32, 32) and chips.shape[0] == (folds["scene_id"] == "a1").sum()

    # A second run has nothing to do.
    assert planned_jobs(work) == {}

    # Changing one scene reruns that scene's chain and the two aggregates, nothing else.
    before = {s: (work / "results" / "clean" / s / "status.json").stat().st_mtime_ns for s in states}
    scene = work / "resources" / "demo" / "images" / "b1.tif"
    with rasterio.open(scene, "r+") as dst:
        data = dst.read()
        data[:, :20, :] = 0
        dst.write(data)
    assert planned_jobs(work) == {"acquire": 1, "clean": 1, "chips": 1, "analyze": 1, "folds": 1, "all": 1}
    snakemake(work)
    after = {s: (work / "results" / "clean" / s / "status.json").stat().st_mtime_ns for s in states}
    assert [s for s in states if before[s] != after[s]] == ["b1"]
    assert status(work, "b1")["valid_fraction"] < states["b1"]["valid_fraction"]


def test_bad_config_key_stops_before_any_job(tmp_path: Path) -> None:
    config = dict(CONFIG, chips={"sise": 32})
    work = workspace(tmp_path, config, [demo_row("a1")])
    proc = snakemake(work, check=False)
    assert proc.returncode != 0
    assert "chips: unknown key(s) sise; known: background_fraction" in proc.stderr
    assert not (work / "results").exists() and not (work / "resources").exists()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([demo_row("a1"), demo_row("a1")], "manifest.csv line 3: duplicate scene_id 'a1' (first at line 2)"),
        (
            [demo_row("a1"), dict(demo_row("a1"), scene_id="../evil")],
            "manifest.csv line 3: scene_id '../evil' is not a safe file name",
        ),
        (
            [demo_row("a1"), dict(demo_row("a2"), sensor="s2l1c")],
            "manifest.csv line 3: scene 'a2': sensor 's2l1c' is not in the config's sensors (none defined)",
        ),
    ],
)
def test_bad_manifest_stops_before_any_job(tmp_path: Path, rows: list[dict], message: str) -> None:
    work = workspace(tmp_path, CONFIG, rows)
    proc = snakemake(work, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (work / "results").exists() and not (work / "resources").exists()


def test_tuning_is_told_of_predict_tta_and_reruns_when_it_changes(tmp_path: Path) -> None:
    """The tune rules pass ``predict.tta`` (and nothing else of ``predict``) to the tuning, so a
    threshold is tuned on the probabilities prediction will make."""
    target = "results/ensembles/one/threshold.json"
    tuned = {}
    for tta in (False, True):
        config = dict(
            CONFIG,
            models={"base": {"arch": "Unet", "encoder_name": "mobilenet_v2"}},
            calval={"ensembles": {"one": {"members": {"base": 1.0}, "threshold": "tune"}}},
            predict={"tta": tta, "batch_size": 2},
        )
        work = workspace(tmp_path / str(tta), config, [demo_row("a1"), demo_row("a2")])
        proc = snakemake(work, "--dry-run", "--printshellcmds", target)
        (line,) = [
            line
            for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("Shell command: snakemap tune-threshold ")
        ]
        tuned[tta] = json.loads(line.split("--options ")[1].split(" --out ")[0].strip("'"))
    assert tuned == {False: {}, True: {"predict": {"tta": True}}}


def test_clean_jobs_get_their_own_sensor_and_label_scheme(tmp_path: Path) -> None:
    six = CONFIG["bands"]["names"]
    config = dict(
        CONFIG,
        sensors={"demo6": {"bands": six}, "other": {"bands": list(reversed(six))}},
        label_schemes={"shifted": {10: "land", 11: "water", 13: "reef"}},
    )
    rows = [dict(demo_row("a1"), sensor="demo6", label_scheme="shifted"), demo_row("a2")]
    work = workspace(tmp_path, config, rows)
    proc = snakemake(work, "--dry-run", "--printshellcmds", "results/clean/a1", "results/clean/a2")
    commands = {
        line.split()[4]: line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.startswith("Shell command: snakemap clean ")
    }
    a1, a2 = commands["a1"], commands["a2"]
    assert "--sensor=demo6 --label-scheme=shifted --options" in a1 and "--sensor" not in a2
    options = json.loads(a1.split("--options ")[1].split(" 2> ")[0].strip("'"))
    assert options["sensors"] == {"demo6": {"bands": six, "scale": None, "offset": None, "nodata": None}}
    assert list(options["label_schemes"]) == ["shifted"]  # this scene's entries only
    bad = dict(config, sensors={"demo6": {"bands": six[:3]}})
    proc = snakemake(workspace(tmp_path, bad, rows), check=False)
    assert "sensors.demo6.bands: sensor demo6 has no band 'nir', which bands.select keeps" in proc.stderr
    assert not (work / "results").exists() and not (work / "resources").exists()


def test_lint_is_clean(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    proc = snakemake(tmp_path, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_model_grid_trains_and_reruns_only_what_changed(tmp_path: Path) -> None:
    models = {
        "base": {"encoder_name": "mobilenet_v2", "epochs": 1, "batch_size": 8, "scheduler": "none"},
        "grid": {"arch": ["Unet", "FPN"]},
        "list": [{"name": "fpn-slow", "arch": "FPN", "lr": 0.0001}],
    }
    config = dict(CONFIG, models=models, demo={"size": 96})
    work = workspace(tmp_path, config, [demo_row(n) for n in ("a1", "a2", "b1", "c1")])
    snakemake(work)
    keys = ["arch-Unet", "arch-FPN", "fpn-slow"]
    table = pd.read_csv(work / "results" / "models" / "models.tsv", sep="\t")
    assert table["key"].tolist() == keys and table["lr"].tolist() == [0.001, 0.001, 0.0001]
    for key in keys:
        folder = work / "results" / "models" / key
        assert {"best.ckpt", "last.ckpt", "metrics.csv", "config.yaml"} <= {p.name for p in folder.iterdir()}
        metrics = pd.read_csv(folder / "metrics.csv")
        assert metrics["epoch"].tolist() == [0] and {"val_iou", "val_iou_reef", "train_loss"} <= set(metrics)
        resolved = yaml.safe_load((folder / "config.yaml").read_text())
        assert resolved["bands"] == ["blue", "green", "red", "nir", "ndwi"]
        assert torch_epoch(folder / "last.ckpt") == 0
    assert planned_jobs(work) == {}

    # Resources alone (more runtime after a SLURM timeout, more memory, cores, GPUs) retrain nothing.
    resources = {"runtime": 600, "mem_mb": 16000, "cpus": 3, "gpus": 1}
    (work / "config" / "config.yaml").write_text(
        yaml.safe_dump(dict(config, models=dict(models, base=dict(models["base"], **resources))))
    )
    assert "train" not in planned_jobs(work)
    # A changed learning rate for one model: exactly that model retrains.
    models["list"][0]["lr"] = 0.00005
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(dict(config, models=models)))
    plan = planned_jobs(work)
    assert plan["train"] == 1 and "acquire" not in plan and "chips" not in plan
    # A new grid value adds its model and leaves the trained ones alone.
    models["list"][0]["lr"] = 0.0001
    models["grid"]["arch"].append("UnetPlusPlus")
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(dict(config, models=models)))
    assert planned_jobs(work)["train"] == 1
    # One model rebuilt alone, by its checkpoint.
    proc = snakemake(work, "--dry-run", "--force", "results/models/arch-FPN/best.ckpt")
    assert re.search(r"^train\s+1$", proc.stdout, re.M) and "UnetPlusPlus" not in proc.stdout


def torch_epoch(path: Path) -> int:
    import torch

    return int(torch.load(path, weights_only=True)["epoch"])


def test_two_processes_on_halves_of_the_shards_equal_one(tmp_path: Path) -> None:
    quads = [f"q{i}" for i in range(4)]
    config = dict(
        CONFIG,
        demo={"size": 96},
        models={"base": {"arch": "FPN", "encoder_name": "mobilenet_v2", "epochs": 1, "batch_size": 8}},
        apply={"predictors": ["models/base/best"], "shard_size": 1},
    )
    rows = [demo_row(n) for n in ("a1", "a2", "b1", "c1")]
    rows += [apply_row(q) for q in quads]
    work = workspace(tmp_path, config, rows)
    snakemake(work, "results/models/base/best.ckpt")
    mosaic = "results/maps/models/base/best/mosaic"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    base = [
        str(Path(sys.executable).parent / "snakemake"),
        "--snakefile", str(REPO / "workflow" / "Snakefile"),
        "--cores", "1",
        mosaic,
    ]  # fmt: skip
    # Snakemake's last batch (N/N) waits for all others: batches 1/3 and 2/3 run at the same time
    # on disjoint shards, then a plain run does the rest and the mosaic.
    halves = [
        subprocess.Popen(
            [*base, "--batch", f"mosaic={k}/3"],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in (1, 2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in halves]
    assert [p.returncode for p in halves] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    maps = work / "results" / "maps" / "models" / "base" / "best"
    ran = [
        set(re.findall(r"shard-\d{5}", o.split("Job stats")[-1] if "Job stats" in o else o)) for o in outputs
    ]
    assert ran[0] and ran[1] and not ran[0] & ran[1], ran
    assert {p.stem for p in (maps / "shards").glob("*.json")} == ran[0] | ran[1]
    assert not (maps / "mosaic").exists()
    snakemake(work, mosaic)
    together = {q: rasterio.open(maps / "scenes" / f"{q}.tif").read() for q in quads}
    shutil.rmtree(work / "results" / "maps")
    snakemake(work, mosaic)
    for q in quads:
        np.testing.assert_array_equal(rasterio.open(maps / "scenes" / f"{q}.tif").read(), together[q])
    (zone,) = json.loads((maps / "mosaic" / "index.json").read_text())["zones"].values()
    assert zone["scene_ids"] == quads
    with rasterio.open(maps / "mosaic" / zone["vrt"]) as src:
        assert len(src.files) == 1 + len(quads)


def halves(whole: Path, folder: Path) -> list[Path]:
    """The left and right halves of a scene: two quads tiling its ground."""
    with rasterio.open(whole) as src:
        data, crs, transform, nodata = src.read(), src.crs, src.transform, src.nodata
    half = data.shape[2] // 2
    return [
        write_tif(
            folder / f"{name}.tif",
            data[:, :, cols],
            str(crs),
            transform @ rasterio.Affine.translation(start, 0),
            nodata,
        )
        for name, cols, start in (("left", slice(0, half), 0), ("right", slice(half, None), half))
    ]


def executed_jobs(output: str) -> dict[str, int]:
    """The job counts of a real run's log, by rule."""
    counts: dict[str, int] = {}
    for rule in re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", output, re.MULTILINE):
        counts[rule] = counts.get(rule, 0) + 1
    return counts


#: a finished project, the job counts of its first dry run and those of the run that followed
FreshRun = tuple[Path, dict[str, int], dict[str, int]]


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory: pytest.TempPathFactory) -> FreshRun:
    """A new project (a model, an ensemble with a tuned threshold, a baseline, calval sites f1 (ok)
    and e1 (empty), two apply quads with a buffer): the dry run's plan, then the real run's jobs."""
    root = tmp_path_factory.mktemp("fresh")
    inputs = root / "inputs"
    write_demo_scene("w1", inputs / "whole.tif", inputs / "whole.label.tif", DemoOptions(size=192))
    halves(inputs / "whole.tif", inputs)
    config = dict(
        CONFIG,
        # A quick model whose maps vary (one that predicts a single class would hide seams)
        models={
            "base": {
                "arch": "Unet",
                "encoder_name": "mobilenet_v2",
                "epochs": 2,
                "batch_size": 8,
                "lr": 0.01,
                "samples_per_epoch": 64,
                "scheduler": "none",
            }
        },
        # One window per model call, and windows on one grid whatever the scene: with a buffer of a
        # whole stride, a quad's windows are the whole scene's (see PredictOptions.fitted).
        predict={"window": 64, "overlap": 16, "batch_size": 1},
        calval={
            "baselines": {"ndwi": {"index": "ndwi", "above": 0.0, "class": "water", "else": "land"}},
            "ensembles": {"one": {"members": {"base": 1.0}, "threshold": "tune"}},
        },
        apply={
            "predictors": ["models/base/best", "ensembles/one"],
            "shard_size": 1,
            "buffer": 32,
            "outputs": "both",
        },
        # polygons of water and reef patches of at least 500 m² (five 10 m pixels)
        vectorize={"classes": ["water", "reef"], "min_area_m2": 500},
        # areas from a reference sample of each predictor's map, labelled from the scene's labels
        areas={
            "reference_raster": "inputs/whole.label.tif",
            "sample": {"min_per_class": 5, "target_se": 0.05},
        },
    )
    rows = [demo_row(n) for n in ("a1", "a2", "b1", "c1")]
    rows += [
        dict(
            demo_row("a1"),
            scene_id="f1",
            uri="resources/demo/images/f1.tif",
            label_uri="resources/demo/labels/f1.tif",
            role="calval",
            aoi="F",
        ),
        dict(demo_row("e1"), role="calval"),
    ]
    rows += [apply_row(q, f"inputs/{q}.tif") for q in ("left", "right")]
    work = workspace(root, config, rows)
    planned = planned_jobs(work)
    proc = snakemake(work)
    return work, planned, executed_jobs(proc.stdout + proc.stderr)


def test_dry_run_of_a_fresh_project_lists_every_job(fresh_run: FreshRun) -> None:
    work, planned, executed = fresh_run
    expected = {
        "acquire": 6,
        "clean": 6,
        "chips": 4,
        "train": 1,
        "tune_threshold": 1,
        "calval_predict": 4,
        "calval_baseline": 2,
        "calval_metrics": 3,
        "apply_inputs_vrt": 1,
        "apply_shard": 4,
        "bundle": 1,
        "sample": 2,
        "label_sample": 2,
        "areas": 2,
        "polygons": 2,
    }
    assert {rule: planned.get(rule) for rule in expected} == expected
    # The run then does exactly that, plus the previews of the sites whose clean ended ok.
    assert executed.pop("report_preview") == 1
    assert executed == planned
    assert planned_jobs(work) == {}  # the empty site's empty files are final outputs, not missing ones


def test_areas_come_with_95_percent_intervals_from_a_labelled_sample(fresh_run: FreshRun) -> None:
    import geopandas as gpd

    work = fresh_run[0]
    with rasterio.open(work / "inputs" / "whole.label.tif") as src:
        source = src.read(1)
    for predictor in ("models/base/best", "ensembles/one"):
        maps = work / "results" / "maps" / predictor
        sample, reference = gpd.read_file(maps / "sample.gpkg"), gpd.read_file(maps / "reference.gpkg")
        assert len(sample) >= 5 and (sample["reference"] == "").all() and sample.crs.to_epsg() == 6933
        assert len(reference) == len(sample) and set(reference["reference"]) <= set(
            CONFIG["labels"]["classes"]
        )
        table = pd.read_csv(maps / "areas.csv").set_index("class")
        mapped = table.drop(index="overall")
        assert set(mapped.index) == set(CONFIG["labels"]["classes"])
        assert 0 <= table.loc["overall", "overall_accuracy"] <= 1
        # the two quads' maps (10 m pixels, buffers overlapping the other half) counted once
        valid = 0
        for quad in ("left", "right"):
            with rasterio.open(maps / "scenes" / f"{quad}.tif") as src:
                valid += int((src.read(1) != 255).sum())
        assert mapped["mapped_ha"].sum() == pytest.approx(valid * 0.01, rel=0.01)
        assert mapped["area_ha"].sum() == pytest.approx(mapped["mapped_ha"].sum(), abs=0.05)  # to 0.01 ha
        # each labelled point's reference is the scene's label there, through labels.remap
        remap = {int(k): v for k, v in CONFIG["labels"]["remap"].items()}
        with rasterio.open(work / "inputs" / "whole.label.tif") as src:
            pts = reference.to_crs(src.crs)
            rows, cols = rasterio.transform.rowcol(src.transform, pts.geometry.x, pts.geometry.y)
        assert [remap[int(v)] for v in source[rows, cols]] == reference["reference"].tolist()


def test_polygons_per_scene_merged_per_predictor_and_in_the_stac(fresh_run: FreshRun) -> None:
    import geopandas as gpd

    work = fresh_run[0]
    for predictor in ("models/base/best", "ensembles/one"):
        maps = work / "results" / "maps" / predictor
        merged, twin = gpd.read_parquet(maps / "polygons.parquet"), gpd.read_file(maps / "polygons.gpkg")
        assert len(merged) == len(twin) > 0 and merged.crs.to_epsg() == 4326
        assert set(merged["class"]) <= {"water", "reef"} and (merged["area_m2"] >= 500 * 0.99).all()
        for quad in ("left", "right"):
            scene = gpd.read_file(maps / "polygons" / f"{quad}.fgb")
            assert (merged["scene_id"] == quad).sum() == len(scene) and scene.geometry.is_valid.all()
            # the buffer's neighbours are cropped away: polygons cut at the shared edge touch it
            assert scene["mean_probability"].between(0, 1).all() and scene["touches_edge"].any()
            item = json.loads((maps / "scenes" / f"{quad}.stac.json").read_text())
            assert item["assets"]["polygons"]["href"] == f"../polygons/{quad}.fgb"
        collection = json.loads((maps / "collection.json").read_text())
        assert collection["assets"]["polygons"]["href"] == "./polygons.parquet"
        assert collection["assets"]["polygons-gpkg"]["type"] == "application/geopackage+sqlite3"


def test_a_calval_site_that_is_not_ok_is_skipped(fresh_run: FreshRun) -> None:
    work = fresh_run[0]
    calval = work / "results" / "calval"
    for predictor in ("models/base/best", "ensembles/one", "baselines/ndwi"):
        metrics = json.loads((calval / predictor / "metrics.json").read_text())
        assert list(metrics["sites"]) == ["f1"] and metrics["skipped"] == {"e1": "empty: no valid pixels"}
        assert (calval / predictor / "e1.tif").stat().st_size == 0
        with rasterio.open(calval / predictor / "f1.tif") as src:
            assert src.shape == (96, 96)
    assert [p.name for p in (work / "results" / "reports" / "previews").iterdir()] == ["f1.png"]
    summary = pd.read_csv(calval / "summary.csv")
    assert sorted(summary["predictor"]) == ["baselines/ndwi", "ensembles/one", "models/base/best"]


def test_buffered_quads_equal_the_whole_scene(fresh_run: FreshRun) -> None:
    work = fresh_run[0]
    header = "scene_id,uri,role\n"
    (work / "config" / "whole.csv").write_text(header + "whole,inputs/whole.tif,apply\n")
    quads = "left,inputs/left.tif,apply\nright,inputs/right.tif,apply\n"
    (work / "config" / "quads.csv").write_text(header + quads)
    snakemap = str(Path(sys.executable).parent / "snakemap")
    for name, manifest, shards in (
        ("whole", "whole.csv", ["shard-00000"]),
        ("plain", "quads.csv", ["shard-00000", "shard-00001"]),
    ):
        for shard in shards:  # by hand, as the workflow runs a shard but without the VRT
            cmd = [
                snakemap, "apply-shard", shard,
                "--config", "config/config.yaml",
                "--manifest", f"config/{manifest}",
                "--root", f"by_hand/{name}",
                "--checkpoint", "results/models/base/best.ckpt",
            ]  # fmt: skip
            subprocess.run(cmd, cwd=work, check=True, capture_output=True, timeout=600)

    def read(root: Path, scenes: list[str]) -> np.ndarray:
        """Class map and probabilities of side-by-side scenes: ``(1 + classes, rows, cols)``."""
        layers = [
            [rasterio.open(root / "scenes" / sub / f"{s}.tif").read() for sub in ("", "probs")]
            for s in scenes
        ]
        return np.concatenate([np.concatenate(scene) for scene in layers], axis=2)

    expected = read(work / "by_hand" / "whole", ["whole"])
    assert len(np.unique(expected[1:])) > 10  # the model is not constant
    buffered = read(work / "results" / "maps" / "models" / "base" / "best", ["left", "right"])
    np.testing.assert_array_equal(buffered, expected)
    # Without the neighbours' context, the seam shows.
    plain = read(work / "by_hand" / "plain", ["left", "right"])
    assert (plain[:, :, 80:112] != expected[:, :, 80:112]).any()
    (vrt,) = (work / "results" / "maps" / "models" / "base" / "best" / "mosaic").glob("*.vrt")
    with rasterio.open(vrt) as src:
        assert src.shape == (192, 192)


def test_a_bundle_and_its_onnx_export_reproduce_the_workflows_map(fresh_run: FreshRun) -> None:
    """`snakemap predict --bundle` (and `--onnx`) on a raw scene, with nothing of the workflow but
    the bundle, gives the map that the workflow's apply step made of the same scene."""
    work = fresh_run[0]
    bundle, onnx = work / "results/bundles/base.zip", work / "results/bundles/base.onnx"
    assert bundle.stat().st_size > 100_000 and onnx.stat().st_size > 100_000
    elsewhere = work.parent / "elsewhere"  # no config, no results: the bundle alone
    elsewhere.mkdir()
    shutil.copy(bundle, elsewhere / "base.zip")
    shutil.copy(onnx, elsewhere / "base.onnx")
    shutil.copy(work / "inputs/whole.tif", elsewhere / "raw.tif")
    snakemap = str(Path(sys.executable).parent / "snakemap")
    for kind in ("bundle", "onnx"):
        cmd = [snakemap, "predict", f"--{kind}", f"base.{'zip' if kind == 'bundle' else 'onnx'}"]
        cmd += ["raw.tif", f"{kind}.tif"]
        subprocess.run(cmd, cwd=elsewhere, check=True, capture_output=True, timeout=600)
    # the buffered quads of the workflow equal the whole scene's prediction (the test above)
    maps = work / "results/maps/models/base/best/scenes"
    workflow_map = np.concatenate(
        [rasterio.open(maps / f"{q}.tif").read(1) for q in ("left", "right")], axis=1
    )
    with rasterio.open(elsewhere / "bundle.tif") as src, rasterio.open(maps / "left.tif") as ref:
        assert src.crs == ref.crs and src.transform == ref.transform
        np.testing.assert_array_equal(src.read(1), workflow_map)
    with rasterio.open(elsewhere / "onnx.tif") as src:
        agree = (src.read(1) == workflow_map).mean()
    assert agree > 0.999  # onnxruntime's float32 sums differ from torch's by ~1e-6 at class ties


def test_the_workflows_maps_have_stac_items_and_a_collection(fresh_run: FreshRun) -> None:
    import pystac
    from rasterio.warp import transform

    from snakemap.outputs.stac import validate_offline

    work = fresh_run[0]
    for predictor in ("models/base/best", "ensembles/one"):
        root = work / "results/maps" / predictor
        collection = pystac.Collection.from_file(str(root / "collection.json"))
        validate_offline(collection)
        items = sorted(collection.get_items(), key=lambda i: i.id)
        assert [i.id for i in items] == ["left", "right"]
        for name in ("mosaic-index", "overview"):
            assert (root / collection.assets[name].href).resolve().is_file()
        zones = [k for k in collection.assets if k.startswith("mosaic-") and k != "mosaic-index"]
        assert len(zones) == 1 and (root / collection.assets[zones[0]].href).resolve().is_file()
        for item in items:
            validate_offline(item)
            assert pystac.Item.from_dict(item.to_dict()).to_dict() == item.to_dict()
            href = Path(item.get_self_href()).parent / item.assets["map"].href
            assert href.resolve() == (root / "scenes" / f"{item.id}.tif").resolve()
            with rasterio.open(href) as src:
                left, bottom, right, top = src.bounds
                lons, lats = transform(
                    src.crs, "EPSG:4326", [left, right, right, left], [bottom, bottom, top, top]
                )
            west, south, east, north = item.bbox
            assert all(west <= x <= east for x in lons) and all(south <= y <= north for y in lats)
            classes = item.assets["map"].extra_fields["classification:classes"]
            assert [c["name"] for c in classes] == ["land", "water", "reef", "cloud", "nodata"]
            assert item.properties["mlm:architecture"] == "Unet"
        assert any(link.rel == "via" and link.href.endswith(".ckpt") for link in items[0].links)
    model_item = pystac.Item.from_file(str(work / "results/maps/models/base/best/scenes/left.stac.json"))
    assert any(a.href.endswith("base.onnx") for a in model_item.assets.values())


def test_a_dry_run_after_the_demo_plans_nothing(demo_run: Path) -> None:
    """The whole embedded demo, once finished, is up to date: a dry run has no job to plan."""
    assert (demo_run / "results" / "calval" / "summary.csv").is_file()
    assert planned_jobs(demo_run) == {}


def test_each_train_log_has_one_line_per_epoch_and_no_line_twice(demo_run: Path) -> None:
    import yaml

    epochs = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]["base"]["epochs"]
    logs = sorted((demo_run / "logs" / "train").glob("*.log"))
    assert logs
    for path in logs:
        text = path.read_text()
        assert "\r" not in text  # no progress-bar redraws in a log file
        lines = [line.split(" ", 2)[-1] for line in text.splitlines() if line.strip()]  # without the time
        epoch_lines = [line for line in lines if re.search(r"epoch \d+/\d+: ", line)]
        assert len(epoch_lines) == epochs, path
        assert all("train_loss" in line and "val_loss" in line and "val_iou" in line for line in epoch_lines)
        # each line once: Lightning's own handler no longer repeats what the root logger prints
        assert text.count("Seed set to") == 1 and text.count("GPU available") <= 1, text[:2000]


def test_the_demo_console_is_one_line_per_job_start_and_end(demo_run: Path) -> None:
    """What `make demo` prints (installation aside): under 30 KB, no progress bars, no shell
    commands nor file lists; each job's start is one line, its message, and each end counted."""
    text = (demo_run / "console.txt").read_text()
    assert len(text.encode()) < 30_000 and "\r" not in text
    assert not re.search(r"^\s+(input|output|log|shell|resources): ", text, re.MULTILINE)
    assert "--options" not in text  # no shell command, with its JSON
    started = re.findall(r"^Job (\d+): (.+)$", text, re.MULTILINE)
    finished = re.findall(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$", text, re.MULTILINE)
    total = int(re.findall(r"^(\d+) of \1 steps \(100%\) done$", text, re.MULTILINE)[-1])
    assert len(started) == len(finished) == total > 40
    assert {job for job, _ in started} == {job for job, _ in finished}
    messages = dict(started)
    assert any(m.startswith("train arch-") for m in messages.values())
    assert "apply models/arch-Unet/best to shard-00000" in messages.values()


def test_a_config_elsewhere_runs_in_its_own_workdir_with_paths_beside_it(tmp_path: Path) -> None:
    """Paths in a config and its manifest are relative to those files; the run writes into the
    config's workdir (or --directory), never beside another run's results."""
    project = tmp_path / "project"
    for name in ("a1", "b1"):
        write_demo_scene(
            name,
            project / "data" / f"{name}.tif",
            project / "data" / f"{name}.label.tif",
            DemoOptions(size=64),
        )
    (project / "config" / "examples").mkdir(parents=True)
    rows = "".join(f"{n},../../data/{n}.tif,train,../../data/{n}.label.tif,{n}\n" for n in ("a1", "b1"))
    (project / "config" / "examples" / "mine.csv").write_text("scene_id,uri,role,label_uri,aoi\n" + rows)
    config = {
        **CONFIG,
        "manifest": "mine.csv",
        "workdir": "runs/mine",
        "chips": {"size": 32},
        "splits": {"folds": 2},
    }
    config.pop("demo")
    (project / "config" / "examples" / "mine.yaml").write_text(yaml.safe_dump(config))
    args = ("--configfile", "config/examples/mine.yaml", "--replace-workflow-config")
    snakemake(project, *args)
    run = project / "runs" / "mine"
    for name in ("a1", "b1"):
        assert json.loads((run / "results" / "clean" / name / "status.json").read_text())["status"] == "ok"
    assert (run / "results" / "splits" / "folds.parquet").is_file() and (run / "logs").is_dir()
    assert not (project / "results").exists() and not (project / "resources").exists()
    assert "Nothing to be done" in snakemake(project, *args, "--dry-run").stdout
    # --directory wins over the config's workdir; the paths still resolve from the config's folder
    elsewhere = tmp_path / "elsewhere"
    snakemake(project, *args, "--directory", str(elsewhere))
    assert (elsewhere / "results" / "clean" / "a1" / "status.json").is_file()
    assert not (elsewhere / "runs").exists()
