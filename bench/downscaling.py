"""Downscaling quality on the CONUS 4 km elevation grid, with the workflow's own code and options.

The grid (``../shared/data/downscaling/conus_elevation_4km.tif``, the sea exactly 0 = no data) is
split into 128 x 128 blocks; a seeded 25 % of the blocks with data is the TEST area, the same for
every model, scale and seed. Of the other blocks a seeded 15 % validates (the checkpoint with the
least ``val_rmse`` is kept) and the rest trains:

- the training area (test and validation blocks set to no data) and the validation area (test
  blocks set to no data) are written as two cleaned scenes (``status.json`` + ``image.tif``) under
  ``--work``, and their chips are cut with :func:`snakemap.data.chips.write_chips` (``field=True``);
  the validation chips are those whose centre lies in a validation block;
- each model is a :class:`snakemap.tasks.downscaling.DownscalingTask` trained by Lightning on
  :class:`snakemap.training.datasets.ChipDataset` (``normalize: scene``, each grid by its own statistics) and
  :class:`snakemap.training.datasets.ChipDataModule` (``samples_per_epoch``), then loaded with
  :func:`snakemap.tasks.downscaling.load_downscaler`;
- the WHOLE grid is degraded by block means (:func:`snakemap.tasks.fieldops.degrade`), downscaled by
  :func:`snakemap.tasks.fieldops.downscale_grid` (normalised by the LR grid's own statistics) and by
  the interpolation baselines (:func:`snakemap.tasks.fieldops.interpolate_grid`), and scored with
  :func:`snakemap.core.metrics.error_metrics` on the valid HR cells of the test blocks only.

    .venv/bin/python bench/downscaling.py [--scales 4 8 16] [--archs SRCNN EDSR ...] [--seeds 0 1 2]
        [--quick] [--steps N] [--threads N] [--work DIR] [--fresh]

Every model is also scored on terrain it never saw: the Oetztal SRTM grid (3 arc-seconds, the
Alps), degraded by block means and downscaled whole, as its RMSE over bicubic's (``oetztal
/bicubic``). ``--variants`` compares inputs standardised per grid (``scene``, the default), per
patch (``patch``: each window by its own mean and spread, so the network learns shape rather than
height), an enforced consistency (the output's block means equal the input) and both.

Each model is scored twice, as trained and with ``predict.tta`` (each window's predictions
averaged over its four flips: ``tta /bicubic``, ``oetztal tta``), in windows of ``--window`` LR
cells with ``--overlap`` cropped; a model trained before with other windows is rescored, not
retrained.

Prints one table (RMSE in metres, the median over the seeds, and its ratio to each baseline) and
writes every run's figures to ``WORK/downscaling.json``. A run (scale, arch, seed) that finished
before in ``--work`` with the same settings is reused (its ``result.json``) unless ``--fresh``, so
an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import rasterio
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from snakemap.core.config import ConfigError, build
from snakemap.core.io import read_json, write_cog, write_json
from snakemap.core.metrics import error_metrics
from snakemap.core.sections import ChipOptions
from snakemap.core.status import SceneStatus, status_path
from snakemap.data.chips import ChipPaths, write_chips
from snakemap.data.stats import Normalizer
from snakemap.tasks.downscaling import DownscalingTask, TrainedDownscaler, load_downscaler
from snakemap.tasks.fieldops import METHODS, degrade, downscale_grid, interpolate_grid
from snakemap.tasks.srnets import ARCHS
from snakemap.training.datasets import ChipDataModule, ChipDataset

GRID = Path(__file__).resolve().parents[2] / "shared" / "data" / "downscaling" / "conus_elevation_4km.tif"
#: terrain not trained on: SRTM 3 arc-second elevation of the Oetztal Alps (another continent,
#: source, resolution and relief), degraded and downscaled whole
TRANSFER = GRID.with_name("oetztal_srtm_3arcsec.tif")
#: the options compared: each on top of an architecture's tuned settings
VARIANTS: dict[str, dict[str, Any]] = {
    "scene": {},
    "patch": {"normalize": "patch"},
    "consistency": {"consistency": True},
    "patch+consistency": {"normalize": "patch", "consistency": True},
}
BAND = "elevation"
BLOCK = 128
TEST_FRACTION = 0.25
VAL_FRACTION = 0.15
SPLIT_SEED = 0
IGNORE = 255
MAX_NODATA = 0.5
#: the issue's goals: model RMSE / bicubic RMSE per scale
GOALS = {4: 0.85, 8: 0.90}


@dataclass(frozen=True)
class Config:
    """One architecture's training settings (the ``models`` and ``chips`` config entries)."""

    features: int = 64
    blocks: int = 8
    lr: float = 1e-3
    loss: str = "l1"
    batch_size: int = 16
    epochs: int = 10
    samples_per_epoch: int = 2048
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    #: the step between chips as a fraction of their size
    stride: float = 0.5
    #: chip side in LR cells (at least 64 HR cells)
    chip_lr: int = 8
    #: ``scene`` (each grid by its own statistics) or ``patch`` (each patch by its own, too)
    normalize: str = "scene"
    #: the output's block means are made to equal the LR input
    consistency: bool = False

    def chip_size(self, scale: int) -> int:
        """Chip side in HR cells: a multiple of the scale with at least 8 LR cells of context."""
        return max(64, self.chip_lr * scale)

    @property
    def steps(self) -> int:
        return self.epochs * (self.samples_per_epoch // self.batch_size)


#: the tuned settings per architecture: each trains in about 3-4 minutes on one CPU core (x4, x8;
#: x16's chips of 128 cost 4 times as much). More steps do not help EDSR: its validation RMSE is
#: least after about 700-1300 steps of 8-16 chips and grows after (it overfits the training area).
_SRCNN = Config(features=64, blocks=0, lr=1e-3, loss="l1", batch_size=8, epochs=10, samples_per_epoch=1024)
_EDSR = Config(features=32, blocks=8, lr=2e-3, loss="l1", batch_size=8, epochs=10, samples_per_epoch=1024)
CONFIGS: dict[str, Config] = {"SRCNN": _SRCNN, "RecurrentSRCNN": _SRCNN, "EDSR": _EDSR, "RCAN": _EDSR}


def read_grid(path: Path = GRID) -> tuple[np.ndarray, dict[str, Any]]:
    """The HR field ``(rows, cols)`` float32 with the sea (exactly 0) and nodata as NaN, and its profile."""
    with rasterio.open(path) as src:
        hr = src.read(1).astype(np.float32)
        profile = {"crs": src.crs, "transform": src.transform, "nodata": float("nan")}
    hr[(hr == 0) | ~np.isfinite(hr)] = np.nan
    return hr, profile


@dataclass
class Split:
    """The block of every HR cell and which blocks test and validate."""

    block: np.ndarray  # (rows, cols) int: block number
    test: np.ndarray  # block numbers
    val: np.ndarray

    def mask(self, blocks: np.ndarray) -> np.ndarray:
        return np.isin(self.block, blocks)


def split_blocks(hr: np.ndarray) -> Split:
    """Seeded TEST_FRACTION of the blocks with data for test, VAL_FRACTION of the rest for validation."""
    rows, cols = np.indices(hr.shape)
    block = rows // BLOCK * (-(-hr.shape[1] // BLOCK)) + cols // BLOCK
    with_data = np.unique(block[np.isfinite(hr)])
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.sort(rng.choice(with_data, size=int(round(TEST_FRACTION * len(with_data))), replace=False))
    rest = np.setdiff1d(with_data, test)
    val = np.sort(rng.choice(rest, size=int(round(VAL_FRACTION * len(rest))), replace=False))
    return Split(block, test, val)


def write_scene(clean_dir: Path, field: np.ndarray, profile: dict[str, Any]) -> None:
    """A cleaned scene as the workflow's clean step leaves it: ``image.tif`` and ``status.json``."""
    write_cog(clean_dir / "image.tif", field[None].astype(np.float32), profile, descriptions=[BAND])
    SceneStatus(
        scene_id=clean_dir.name,
        status="ok",
        valid_fraction=float(np.isfinite(field).mean()),
        band_count=1,
        bands=[BAND],
        crs=str(profile["crs"]),
        shape=list(field.shape),
    ).write(status_path(clean_dir))


@dataclass
class Chips:
    """The training chips (all of the training scene's) and the validation chips."""

    train: tuple[Path, np.ndarray]
    val: tuple[Path, np.ndarray]
    size: int


def cut_chips(
    work: Path, hr: np.ndarray, profile: dict[str, Any], split: Split, size: int, stride: int
) -> Chips:
    """Write the two scenes (once) and cut their chips of ``size`` (once per size)."""
    test, val = split.mask(split.test), split.mask(split.val)
    scenes = {"train": np.where(test | val, np.nan, hr), "val": np.where(test, np.nan, hr)}
    indices = {}
    for name, field in scenes.items():
        clean = work / "clean" / name
        if not status_path(clean).exists():
            write_scene(clean, field, profile)
        out = work / "chips" / f"size{size}_stride{stride}"
        paths = ChipPaths(out / f"{name}.image.npy", out / f"{name}.label.npy", out / f"{name}.index.parquet")
        if not paths.index.exists():
            options = ChipOptions(size=size, stride=stride, max_nodata_fraction=MAX_NODATA)
            write_chips(clean, paths, options, [1], IGNORE, field=True)
        indices[name] = paths.index
    train = pd.read_parquet(indices["train"])
    table = pd.read_parquet(indices["val"])
    centre = split.block[table["row"] + size // 2, table["col"] + size // 2]
    return Chips(
        (indices["train"], train["chip"].to_numpy()),
        (indices["val"], table["chip"].to_numpy()[np.isin(centre, split.val)]),
        size,
    )


def train_model(
    arch: str, scale: int, seed: int, cfg: Config, chips: Chips, out: Path
) -> tuple[TrainedDownscaler, float, dict[str, float]]:
    """Train one model as the workflow does; return the best checkpoint's downscaler, the
    training seconds and the best validation figures."""
    L.seed_everything(seed, workers=True, verbose=False)
    unused = Normalizer(np.zeros(1, np.float32), np.ones(1, np.float32))  # normalize: scene
    train = ChipDataset([chips.train], [0], unused, normalize="scene")
    val = ChipDataset([chips.val], [0], unused, normalize="scene")
    module = ChipDataModule(
        train,
        val,
        cfg.batch_size,
        None,
        np.zeros(len(train), dtype=bool),
        seed=seed,
        samples_per_epoch=cfg.samples_per_epoch,
    )
    task = DownscalingTask(
        arch,
        scale,
        [BAND],
        cfg.features,
        cfg.blocks,
        {cfg.loss: 1.0},
        "adamw",
        cfg.lr,
        cfg.weight_decay,
        cfg.scheduler,
        cfg.epochs,
        {"flips": True, "rot90": True},
        cfg.normalize,
        cfg.consistency,
    )
    checkpoint = ModelCheckpoint(
        dirpath=out,
        filename="best",
        monitor="val_rmse",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=cfg.epochs,
        callbacks=[checkpoint],
        logger=CSVLogger(out, name="logs", version=0),
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=module)
    seconds = time.perf_counter() - start
    epoch = int(torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["epoch"])
    logged = pd.read_csv(out / "logs" / "version_0" / "metrics.csv").dropna(subset=["val_ratio"])
    best = logged[logged["epoch"] == epoch].iloc[-1]
    figures = {
        "best_epoch": epoch,
        "val_rmse": float(best["val_rmse"]),
        "val_ratio": float(best["val_ratio"]),
    }
    return load_downscaler(checkpoint.best_model_path), seconds, figures


def score_test(pred: np.ndarray, truth: np.ndarray, cells: np.ndarray) -> dict[str, float]:
    """:func:`error_metrics` on the test cells."""
    return error_metrics(np.where(cells, pred, np.nan), truth)


@dataclass(frozen=True)
class Grids:
    """The LR grids a model is scored on and their HR truth: CONUS (test cells) and Oetztal."""

    lr: np.ndarray
    truth: np.ndarray
    test: np.ndarray
    t_lr: np.ndarray
    t_truth: np.ndarray
    t_cells: np.ndarray


def score_model(
    model: TrainedDownscaler,
    scale: int,
    grids: Grids,
    baselines: dict[str, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """A model's errors on the CONUS test cells and its RMSE on the Oetztal grid, as trained and
    with ``predict.tta`` (``tta_``: each window's field averaged over its four flips), windows of
    ``--window`` LR cells with ``--overlap`` cropped (``prediction``)."""
    record: dict[str, Any] = {"prediction": {"window": args.window, "overlap": args.overlap}}
    for prefix, tta in (("", False), ("tta_", True)):
        flipping = replace(model, tta=tta)
        pred = downscale_grid(grids.lr, scale, flipping, window=args.window, overlap=args.overlap)
        t_pred = downscale_grid(grids.t_lr, scale, flipping, window=args.window, overlap=args.overlap)
        errors = score_test(pred, grids.truth, grids.test)
        t_rmse = score_test(t_pred, grids.t_truth, grids.t_cells)["rmse"]
        record |= {
            f"{prefix}transfer_rmse": t_rmse,
            f"{prefix}transfer_ratio_bicubic": t_rmse / baselines["transfer_bicubic"],
        }
        if tta:
            record |= {"tta_rmse": errors["rmse"], "tta_ratio_bicubic": errors["rmse"] / baselines["bicubic"]}
        else:
            record |= errors | {f"ratio_{m}": errors["rmse"] / baselines[m] for m in METHODS}
    return record


def run(args: argparse.Namespace) -> pd.DataFrame:
    work = Path(args.work)
    hr, profile = read_grid()
    split = split_blocks(hr)
    print(
        f"grid {hr.shape[0]}x{hr.shape[1]}, {np.isfinite(hr).mean():.1%} valid; "
        f"{len(split.test)} test, {len(split.val)} validation blocks of {BLOCK}x{BLOCK} "
        f"(of {len(np.unique(split.block[np.isfinite(hr)]))} with data)",
        flush=True,
    )
    records: list[dict[str, Any]] = []
    baselines: dict[int, dict[str, float]] = {}
    for scale in args.scales:
        h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
        truth = hr[:h, :w]
        lr = degrade(truth, scale)
        test = split.mask(split.test)[:h, :w] & np.isfinite(truth)
        baselines[scale] = {
            m: score_test(interpolate_grid(lr, scale, m), truth, test)["rmse"] for m in METHODS
        }
        print(f"x{scale}: " + ", ".join(f"{m} {v:.2f} m" for m, v in baselines[scale].items()), flush=True)
        transfer = read_grid(TRANSFER)[0]
        th, tw = transfer.shape[0] // scale * scale, transfer.shape[1] // scale * scale
        t_truth = transfer[:th, :tw]
        t_lr = degrade(t_truth, scale)
        t_cells = np.isfinite(t_truth)
        t_bicubic = score_test(interpolate_grid(t_lr, scale, "bicubic"), t_truth, t_cells)["rmse"]
        baselines[scale]["transfer_bicubic"] = t_bicubic
        print(f"x{scale} Oetztal SRTM (not trained on): bicubic {t_bicubic:.2f} m", flush=True)
        for arch, variant in [(a, v) for a in args.archs for v in args.variants]:
            cfg = replace(CONFIGS[arch], **VARIANTS[variant])
            if args.quick:
                cfg = replace(cfg, epochs=2, samples_per_epoch=8 * cfg.batch_size)
            if args.steps:
                cfg = replace(cfg, samples_per_epoch=max(1, args.steps // cfg.epochs) * cfg.batch_size)
            size = cfg.chip_size(scale)
            chips = cut_chips(work, hr, profile, split, size, max(1, round(size * cfg.stride)))
            config = asdict(cfg) | {"chip_size": chips.size, "steps": cfg.steps}
            prediction = {"window": args.window, "overlap": args.overlap}
            for seed in args.seeds:
                name = arch if variant == "scene" else f"{arch} {variant}"
                out = work / "models" / f"x{scale}" / name.replace(" ", "-") / f"seed{seed}"
                done = out / "result.json"
                grids = Grids(lr, truth, test, t_lr, t_truth, t_cells)
                if not args.fresh and done.exists() and read_json(done)["config"] == config:
                    record = read_json(done)  # this very run, trained before: reused
                    if record.get("prediction") != prediction:  # scored with other windows or none
                        model = load_downscaler(out / "best.ckpt")
                        record |= score_model(model, scale, grids, baselines[scale], args)
                        write_json(done, record)
                else:
                    model, seconds, figures = train_model(arch, scale, seed, cfg, chips, out)
                    record = {
                        "scale": scale,
                        "arch": name,
                        "seed": seed,
                        **score_model(model, scale, grids, baselines[scale], args),
                        "train_s": seconds,
                        **figures,
                        "train_chips": len(chips.train[1]),
                        "val_chips": len(chips.val[1]),
                        "threads": torch.get_num_threads(),
                        "config": config,
                    }
                    write_json(done, record)
                records.append(record)
                errors, seconds, figures = record, record["train_s"], record
                print(
                    f"  x{scale} {arch} seed {seed}: RMSE {errors['rmse']:.2f} m "
                    f"({errors['rmse'] / baselines[scale]['bicubic']:.3f} of bicubic), "
                    f"val ratio {figures['val_ratio']:.3f} (epoch {figures['best_epoch']}), {seconds:.0f} s; "
                    f"Oetztal {record['transfer_ratio_bicubic']:.3f} of bicubic",
                    flush=True,
                )
    write_json(
        work / "downscaling.json",
        {"runs": records, "baselines": {str(s): b for s, b in baselines.items()}, "args": vars(args)},
    )
    return summarise(pd.DataFrame(records), baselines)


def summarise(runs: pd.DataFrame, baselines: dict[int, dict[str, float]]) -> pd.DataFrame:
    """One row per scale and arch: the median over seeds, its ratios, the seeds' RMSEs, seconds."""
    rows = []
    for (scale, arch), group in runs.groupby(["scale", "arch"], sort=False):
        rmse = float(group["rmse"].median())
        rows.append(
            {
                "scale": scale,
                "arch": arch,
                "rmse_m": rmse,
                **{f"/{m}": rmse / baselines[int(scale)][m] for m in METHODS},
                "tta /bicubic": float(group["tta_ratio_bicubic"].median()),
                "oetztal /bicubic": float(group["transfer_ratio_bicubic"].median()),
                "oetztal tta": float(group["tta_transfer_ratio_bicubic"].median()),
                "seeds_rmse": " ".join(f"{v:.1f}" for v in group["rmse"]),
                "train_s": round(float(group["train_s"].median())),
                "steps": int(group["config"].iloc[0]["steps"]),
                "chip": int(group["config"].iloc[0]["chip_size"]),
            }
        )
    for scale, values in baselines.items():
        for m in METHODS:
            v = values[m]
            rows.append({"scale": scale, "arch": m, "rmse_m": v} | {f"/{b}": v / values[b] for b in METHODS})
    table = pd.DataFrame(rows).sort_values(["scale", "rmse_m"], kind="stable").reset_index(drop=True)
    for column in ("train_s", "steps", "chip"):  # whole numbers, blank for the baselines
        table[column] = [str(int(v)) if pd.notna(v) else "" for v in table[column]]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["scene"], choices=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="1 seed, x4 only, a tiny budget: a smoke test")
    parser.add_argument("--steps", type=int, help="optimizer steps per model (over the config's epochs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--window", type=int, default=64, help="LR cells per prediction window")
    parser.add_argument("--overlap", type=int, default=8, help="LR cells cropped at a window's inner edges")
    parser.add_argument("--work", default="/tmp/snakemap-downscaling")
    parser.add_argument("--fresh", action="store_true", help="retrain runs already finished in --work")
    args = parser.parse_args()
    try:  # the workflow's check of the two
        build("downscaling", {"window": args.window, "overlap": args.overlap})
    except ConfigError as exc:
        raise SystemExit(f"--window/--overlap: {exc}") from None
    if args.quick:
        args.seeds, args.scales = args.seeds[:1], [4]
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    for message in (
        "many workers",
        "srun",
        "LeafSpec",
        "on_after_batch_transfer",
        "not empty",
        "logging interval",
    ):
        warnings.filterwarnings("ignore", message=f".*{message}.*")
    table = run(args)
    print(f"\nRMSE on the test blocks' cells, median of {len(args.seeds)} seed(s); /method: ratio to it")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
    models = table[~table["arch"].isin(METHODS)]
    for scale, goal in GOALS.items():
        rows = models[models["scale"] == scale]
        if len(rows):
            verdicts = {r["arch"]: r["/bicubic"] <= goal for r in rows.to_dict("records")}
            met = ", ".join(f"{arch} {'met' if ok else 'not met'}" for arch, ok in verdicts.items())
            print(f"goal x{scale}: <= {goal} of bicubic: {met}")
    rows = models[models["scale"] == 4]
    for column, how in (("oetztal /bicubic", ""), ("oetztal tta", ", predict.tta")):
        met = ", ".join(
            f"{r['arch']} {r[column]:.3f} {'met' if r[column] <= 0.85 else 'not met'}"
            for r in rows.to_dict("records")
        )
        if met:
            print(f"goal x4 on the Oetztal SRTM grid (not trained on{how}): <= 0.85 of bicubic: {met}")


if __name__ == "__main__":
    main()
