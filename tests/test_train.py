"""Model grids, local weights, and training that resumes after SIGKILL or a corrupt checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import torch

from snakemap.core.model_sections import ModelOptions
from snakemap.core.sections import ChipOptions
from snakemap.plan.grid import expand, model_id
from snakemap.tasks.networks import WeightsError, build_model
from snakemap.training.resume import JobData, job_fingerprint
from snakemap.training.train import resolve_job
from tests.conftest import demo_chips

EPOCHS = 8
LABELS = {
    "classes": ["land", "water", "reef", "cloud"],
    "remap": {"0": "land", "1": "water", "2": "water", "3": "reef", "4": "cloud"},
}


def test_ids_are_stable_under_key_reordering_and_distinct() -> None:
    a = expand({"base": {"epochs": 1}, "grid": {"lr": [0.001, 0.0001], "arch": ["Unet", "FPN"]}}, 3)
    b = expand({"grid": {"arch": ["Unet", "FPN"], "lr": [0.001, 0.0001]}, "base": {"epochs": 1}}, 3)
    assert (
        [j.key for j in a]
        == [j.key for j in b]
        == [
            "arch-Unet_lr-0.001",
            "arch-Unet_lr-0.0001",
            "arch-FPN_lr-0.001",
            "arch-FPN_lr-0.0001",
        ]
    )
    assert [j.params for j in a] == [j.params for j in b]
    assert model_id({"encoder_weights": "/w/a.pth"}) != model_id({"encoder_weights": "/w_a.pth"})
    assert model_id({"batch_size": 8, "loss.dice": 0.5}) == "bs-8_loss-dice-0.5"


def test_folds_band_sets_and_bad_grids() -> None:
    jobs = expand(
        {
            "base": {"folds": "all"},
            "grid": {"bands": ["tc", "all"]},
            "band_sets": {"tc": ["red", "green", "blue"], "all": None},
        },
        3,
    )
    assert [j.key for j in jobs][:3] == ["bands-tc/fold0", "bands-tc/fold1", "bands-tc/fold2"]
    assert jobs[0].params["bands"] == ["red", "green", "blue"] and jobs[3].params["bands"] is None
    with pytest.raises(ValueError, match=r"models.grid: unknown parameter\(s\) learning_rate"):
        expand({"grid": {"learning_rate": [0.1]}}, 3)
    with pytest.raises(ValueError, match="two models share the id 'x'"):
        expand({"list": [{"name": "x"}, {"name": "x", "lr": 0.1}]}, 3)
    with pytest.raises(ValueError, match="fold 5 does not exist"):
        expand({"base": {"folds": [5]}}, 3)


def test_weights_are_files_never_downloads(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="never downloads weights"):
        build_model("Unet", "resnet18", 6, 3, encoder_weights="imagenet")
    donor = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=2)
    torch.save(donor.state_dict(), tmp_path / "w.pth")
    model = build_model("Unet", "resnet18", 6, 3, encoder_weights=str(tmp_path / "w.pth"))
    torch.testing.assert_close(model.encoder.layer1[0].conv1.weight, donor.encoder.layer1[0].conv1.weight)
    first = model.encoder.conv1.weight
    assert first.shape[1] == 6
    torch.testing.assert_close(first[:, 3], donor.encoder.conv1.weight[:, 0] * 3 / 6)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="does not fit encoder"):
        build_model("Unet", "resnet18", 6, 3, encoder_weights=str(tmp_path / "bad.pth"))


@pytest.fixture(scope="module")
def training_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Chips, folds and statistics of four small demo scenes, made with the package."""
    aois = {"t1": "A", "t2": "B", "t3": "C", "t4": "C"}
    return demo_chips(tmp_path_factory.mktemp("train"), aois, LABELS, ChipOptions(size=32))


def train_cmd(data: dict, out: Path, epochs: int, **resources: int) -> list[str]:
    """The command of a training job; ``resources`` (runtime, mem_mb, ...) go into its parameters."""
    job = {
        "params": {
            "arch": "FPN",
            "encoder_name": "mobilenet_v2",
            "epochs": epochs,
            "batch_size": 8,
            "scheduler": "none",
            "monitor": "val_iou",
            **resources,
        },
        "fold": None,
    }
    return [
        str(Path(sys.executable).parent / "snakemap"), "train",
        "--job", json.dumps(job),
        "--options", json.dumps({"labels": LABELS}),
        "--train-indexes", *map(str, data["indexes"]),
        "--folds", str(data["folds"]),
        "--stats", str(data["stats"]),
        "--out", str(out),
    ]  # fmt: skip


def test_resources_are_not_in_the_resume_fingerprint(training_data: dict) -> None:
    data = JobData(training_data["indexes"], [], training_data["folds"], training_data["stats"])
    stats = json.loads(Path(training_data["stats"]).read_text())

    def fingerprint(**params: object) -> str:
        opts = ModelOptions(arch="FPN", encoder_name="mobilenet_v2", **params)  # type: ignore[arg-type]
        return job_fingerprint(resolve_job(opts, None, LABELS["classes"], 255, stats), data)

    assert fingerprint() == fingerprint(gpus=2, cpus=16, mem_mb=64000, runtime=2880)
    assert fingerprint() != fingerprint(lr=0.01)


def start_and_kill(cmd: list[str], out: Path, log: Path) -> int:
    """Start a training process, SIGKILL it once a checkpoint of epoch >= 1 exists; return that epoch."""
    last = out / "train" / "checkpoints" / "last.ckpt"
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    epoch = -1
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if last.exists():
            try:
                epoch = torch.load(last, weights_only=True)["epoch"]
            except Exception:  # noqa: BLE001 - being written; the next look will do
                continue
            if epoch >= 1:
                break
    assert proc.poll() is None, f"training ended before it could be killed:\n{log.read_text()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Read again: an epoch may have ended between the look and the kill.
    epoch = torch.load(last, weights_only=True)["epoch"]
    assert epoch >= 1
    return epoch


@pytest.mark.slow
def test_sigkill_then_rerun_continues_the_epoch_counter(tmp_path: Path, training_data: dict) -> None:
    out = tmp_path / "model"
    cmd = train_cmd(training_data, out, epochs=EPOCHS)
    killed_at = start_and_kill(cmd, out, tmp_path / "first.log")
    assert killed_at < EPOCHS - 1
    assert not (out / "best.ckpt").exists()  # nothing published by a killed job
    # Rerun as after a SLURM timeout, with more runtime, memory and cores: it resumes all the same.
    cmd = [*train_cmd(training_data, out, EPOCHS, runtime=600, mem_mb=32000, gpus=0), "--cpus", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last_ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert f"resuming from {out / 'train' / 'checkpoints' / 'last.ckpt'} (epoch {killed_at})" in proc.stderr
    metrics = pd.read_csv(out / "metrics.csv")
    # Every epoch appears once: those of the killed run, then the resumed ones.
    assert last_ckpt["epoch"] == EPOCHS - 1
    assert metrics["epoch"].tolist() == list(range(EPOCHS))
    versions = sorted((out / "train" / "logs").glob("version_*/metrics.csv"))
    assert len(versions) == 2
    assert pd.read_csv(versions[1])["epoch"].min() == killed_at + 1
    assert {"best.ckpt", "last.ckpt", "metrics.csv", "config.yaml"} <= {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_corrupt_last_checkpoint_is_kept_aside(tmp_path: Path, training_data: dict) -> None:
    out = tmp_path / "model"
    cmd = train_cmd(training_data, out, epochs=EPOCHS)
    start_and_kill(cmd, out, tmp_path / "first.log")
    last = out / "train" / "checkpoints" / "last.ckpt"
    best_epoch = torch.load(out / "train" / "checkpoints" / "best.ckpt", weights_only=True)["epoch"]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is unreadable" in proc.stderr and "kept aside as" in proc.stderr
    assert "resuming from the best checkpoint" in proc.stderr
    assert f"(epoch {best_epoch})" in proc.stderr
    aside = list((out / "train").glob("last.ckpt.corrupt-*"))
    assert len(aside) == 1 and aside[0].stat().st_size == len(data) // 2
