"""The workflow through a real one-node SLURM on 127.0.0.1: sbatch jobs, GPU requests, the shards as
one job array, a job killed by scancel and resumed, results equal to a local run's, and the
single-allocation mode."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from tests.conftest import CONFIG, REPO, apply_row, demo_row, workspace

# A local SLURM runs the real snakemake's jobs.
pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

SCRIPTS = Path(__file__).parent / "slurm"
BIN = Path(sys.executable).parent
EPOCHS = 8


@pytest.fixture(scope="module")
def slurm() -> None:
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        pytest.skip("slurm-wlm is not installed (make test installs slurm-wlm and munge when run as root)")
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM needs root")
    # `make test` starts SLURM before the suite (snakemake starts slowly while slurm-wlm is
    # installed but its controller is down); it is stopped here only if this fixture started it.
    running = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    subprocess.run(["bash", str(SCRIPTS / "start-slurm.sh")], check=True, timeout=120, capture_output=True)
    yield
    if not running:
        subprocess.run(["bash", str(SCRIPTS / "stop-slurm.sh")], timeout=60)


def config() -> dict:
    return dict(
        CONFIG,
        demo={"size": 96},
        models={
            "base": {
                "encoder_name": "mobilenet_v2",
                "arch": "FPN",
                "epochs": EPOCHS,
                "batch_size": 8,
                "scheduler": "none",
                "gpus": 1,
                "cpus": 1,
                "mem_mb": 3000,
                "runtime": 20,
            }
        },
        predict={"window": 64, "overlap": 8},
        calval={"checkpoints": ["best"]},
        apply={"predictors": ["models/base/best"], "shard_size": 1, "mem_mb": 2000},
        resources={"clean_mem_mb": 1000, "chips_mem_mb": 1000, "analyze_mem_mb": 1000},
    )


def rows() -> list[dict]:
    found = [demo_row(n) for n in ("a1", "a2", "b1", "c1")]
    found.append(
        dict(
            demo_row("a1"),
            scene_id="s1",
            uri="resources/demo/images/s1.tif",
            label_uri="resources/demo/labels/s1.tif",
            role="calval",
            aoi="S",
        )
    )
    found += [apply_row(q) for q in ("q1", "q2")]
    return found


def squeue() -> list[dict[str, str]]:
    """All jobs SLURM still knows (finished ones for MinJobAge): id, array, state, rule, GRES.

    ``id`` is ``<arrayid>_<task>`` for a task of a job array (``array`` is then ``<arrayid>``), the
    job id otherwise (``array`` is empty); the plugin names log files by it.
    """
    fields = "JobArrayID:|,ArrayTaskID:|,ArrayJobID:|,State:|,Comment:|,tres-per-job:|,tres-per-node:|"
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-O", fields], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    jobs = []
    for line in out.splitlines():
        job_id, task, array, state, comment, per_job, per_node = (f.strip() for f in line.split("|")[:7])
        # The plugin's comment is rule_<name>[_wildcards_<values>] (an array's: its first task's
        # wildcards); --gpus=N shows as tres-per-job.
        jobs.append(
            {
                "id": job_id,
                "array": array if task not in ("", "N/A") else "",
                "state": state,
                "rule": comment.split("_wildcards_")[0],
                "gres": f"{per_job} {per_node}",
            }
        )
    return jobs


def last_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - not written yet, or being renamed into place
        return -1


def test_demo_through_slurm(tmp_path: Path, slurm: None) -> None:
    started = time.monotonic()
    work = workspace(tmp_path / "slurm", config(), rows())
    before = {j["id"] for j in squeue()}
    cmd = [
        str(BIN / "snakemake"),
        "--snakefile", str(REPO / "workflow" / "Snakefile"),
        "--profile", str(REPO / "profiles" / "slurm"),
        "--latency-wait", "5",
        "--slurm-init-seconds-before-status-checks", "5",
    ]  # fmt: skip
    with (tmp_path / "snakemake.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    # Cancel the training job once it has checkpointed an epoch: it must be retried and resume.
    last = work / "results" / "models" / "base" / "train" / "checkpoints" / "last.ckpt"
    cancelled = None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None and cancelled is None:
        time.sleep(1)
        if last_epoch(last) >= 1:
            running = [j for j in squeue() if j["rule"] == "rule_train" and j["state"] == "RUNNING"]
            if running:
                cancelled = running[0]["id"]
                subprocess.run(["scancel", cancelled], check=True, timeout=30)
    try:
        proc.wait(timeout=max(60, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    output = (tmp_path / "snakemake.log").read_text()
    assert proc.returncode == 0, output[-5000:]
    assert cancelled is not None, "the training job finished before it could be cancelled"
    wall = time.monotonic() - started

    jobs = [j for j in squeue() if j["id"] not in before]
    by_rule: dict[str, list[dict[str, str]]] = {}
    for j in jobs:
        by_rule.setdefault(j["rule"], []).append(j)
    # Every job went through sbatch (ids, or <arrayid>_<task>, in the plugin's log folder); local
    # rules did not.
    logs = list((work / ".snakemake" / "slurm_logs").glob("rule_*/**/*.log"))
    assert {p.stem for p in logs} >= {j["id"] for j in jobs if j["state"] == "COMPLETED"}
    assert {"rule_clean", "rule_chips", "rule_train", "rule_apply_shard", "rule_calval_predict"} <= set(
        by_rule
    )
    assert "rule_models_table" not in by_rule and "rule_calval_summary" not in by_rule  # localrules
    # GPU rules asked SLURM for a GPU, CPU rules did not.
    assert all("gpu" in j["gres"] for j in by_rule["rule_train"])
    assert all("gpu" not in j["gres"] for j in by_rule["rule_clean"] + by_rule["rule_chips"])
    # The cancelled job was submitted again and resumed from its last checkpoint.
    states = {j["id"]: j["state"] for j in by_rule["rule_train"]}
    assert states[cancelled] == "CANCELLED" and list(states.values()).count("COMPLETED") == 1
    train_logs = "".join(
        p.read_text() for p in (work / ".snakemake" / "slurm_logs").glob("rule_train/**/*.log")
    )
    assert re.search(
        r"resuming from .*last\.ckpt \(epoch [1-9]",
        train_logs + (work / "logs" / "train" / "base.log").read_text(),
    )
    metrics = pd.read_csv(work / "results" / "models" / "base" / "metrics.csv")
    assert metrics["epoch"].tolist() == list(range(EPOCHS))
    # The two shards (shard_size 1) went in one sbatch: tasks 1 and 2 of one job array, each of
    # which mapped its scene; the other rules' jobs are no arrays.
    shards = [j for j in by_rule["rule_apply_shard"] if j["state"] == "COMPLETED"]
    assert len(shards) == 2 and len({j["array"] for j in shards}) == 1, shards
    assert sorted(j["id"] for j in shards) == [f"{shards[0]['array']}_{k}" for k in (1, 2)]
    assert not [j for r, js in by_rule.items() if r != "rule_apply_shard" for j in js if j["array"]]
    assert re.search(rf"Submitted array job .* SLURM job ID {shards[0]['array']}\b", output)
    maps = work / "results" / "maps" / "models" / "base" / "best"
    for k, scene in enumerate(("q1", "q2")):
        (entry,) = json.loads((maps / "shards" / f"shard-{k:05d}.json").read_text())["scenes"]
        assert (entry["scene_id"], entry["status"]) == (scene, "ok")
        with rasterio.open(maps / "scenes" / f"{scene}.tif") as src:
            assert src.crs is not None and (src.read(1) != src.nodata).any()
    index = json.loads((maps / "mosaic" / "index.json").read_text())
    assert sorted(s for zone in index["zones"].values() for s in zone["scene_ids"]) == ["q1", "q2"]
    assert json.loads((maps / "progress.json").read_text())["zones"] == {
        key: zone["scenes"] for key, zone in index["zones"].items()
    }
    print(
        f"\nSLURM demo run: {wall:.0f} s, {len(jobs)} jobs (shards: array {shards[0]['array']}), "
        f"cancelled job {cancelled}"
    )

    # The same workflow on one machine gives the same data products and the same set of results.
    local = workspace(tmp_path / "local", config(), rows())
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--cores", "2"],
        cwd=local,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = {
        p.relative_to(work / "results")
        for p in (work / "results").rglob("*")
        if p.is_file() and "/train/" not in str(p)
    }
    local_files = {
        p.relative_to(local / "results")
        for p in (local / "results").rglob("*")
        if p.is_file() and "/train/" not in str(p)
    }
    assert files == local_files
    for name in ("a1", "b1", "c1", "s1"):
        # the same status, when each ran aside
        timed = ("started", "finished")
        slurm_status = json.loads((work / f"results/clean/{name}/status.json").read_text())
        local_status = json.loads((local / f"results/clean/{name}/status.json").read_text())
        assert {k: v for k, v in slurm_status.items() if k not in timed} == {
            k: v for k, v in local_status.items() if k not in timed
        }
    for name in ("a1", "c1"):
        np.testing.assert_array_equal(
            np.load(work / f"results/chips/{name}.image.npy"),
            np.load(local / f"results/chips/{name}.image.npy"),
        )
    assert json.loads((work / "results/stats/bands.json").read_text()) == json.loads(
        (local / "results/stats/bands.json").read_text()
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(work / "results/splits/folds.parquet"),
        pd.read_parquet(local / "results/splits/folds.parquet"),
    )


def test_single_allocation(tmp_path: Path, slurm: None) -> None:
    """The whole (data) workflow inside one sbatch allocation, with the local executor."""
    work = workspace(tmp_path, dict(config(), models={}, calval={}, apply={}), rows()[:4])
    snakemake = (
        f"{BIN / 'snakemake'} results/splits/folds.parquet --snakefile {REPO / 'workflow' / 'Snakefile'}"
        " --cores 2 --resources gpu=1"
    )
    script = f"cd {work} && echo job=$SLURM_JOB_ID > alloc.txt && {snakemake}"
    proc = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--gres=gpu:1",
            "-c",
            "2",
            "--mem=4000",
            "-o",
            str(work / "job.log"),
            "--wrap",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr + (work / "job.log").read_text()[-3000:]
    assert re.fullmatch(r"job=\d+\n", (work / "alloc.txt").read_text())
    assert (work / "results" / "splits" / "folds.parquet").exists()
    assert "--executor" not in (work / "job.log").read_text()  # local executor inside the allocation


def test_profile_slurm_by_name_from_the_project_root(tmp_path: Path, slurm: None) -> None:
    """`snakemake --profile slurm`, as the Snakemake and plugin docs write it, from the root of a
    fresh clone: the SLURM profile's settings hold (the root's workflow profile sets none that
    differ), and its dry run plans every job for sbatch; nothing goes to the user's home."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    for path in ("src", "workflow", "profiles", "config"):  # the working tree, committed or not
        shutil.rmtree(clone / path)
        shutil.copytree(REPO / path, clone / path, symlinks=True)
    assert (clone / "slurm").is_symlink() and (clone / "slurm" / "config.yaml").is_file()
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    probe = (
        "from snakemake.cli import parse_args; _, a = parse_args(['--profile', 'slurm', '-n']); "
        "print(a.executor, a.latency_wait, a.jobs, a.retries, a.slurm_status_command)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=clone, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["slurm", "60", "1000", "2", "squeue"]
    assert "Using profiles slurm and workflow specific profile profiles/default" in done.stderr
    dry = subprocess.run([str(BIN / "snakemake"), "--profile", "slurm", "-n"], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    assert "This was a dry-run" in dry.stdout + dry.stderr and "train" in dry.stdout + dry.stderr
    assert not (home / ".config").exists()  # no profile copied into the user's home


def test_snakemake_does_not_wait_for_a_controller_that_is_gone(slurm: None) -> None:
    """As `make test` leaves the machine (SLURM's tools installed, its daemons stopped), the SLURM
    plugin's import does not wait for a controller: stop-slurm.sh takes its slurm.conf away.
    The controller is started again for what follows."""
    subprocess.run(["bash", str(SCRIPTS / "stop-slurm.sh")], check=True, timeout=60)
    try:
        conf = Path("/etc/slurm/slurm.conf")
        assert not conf.exists() or "ClusterName=snakemapci" not in conf.read_text()
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "snakemake"), "--version"], check=True, capture_output=True, timeout=60)
        assert time.perf_counter() - t0 < 4.0
    finally:
        subprocess.run(
            ["bash", str(SCRIPTS / "start-slurm.sh")], check=True, timeout=120, capture_output=True
        )
