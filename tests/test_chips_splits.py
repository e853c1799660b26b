"""Chips from a cleaned scene, and AOI-grouped folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from snakemap.core.sections import ChipOptions, SplitOptions
from snakemap.core.status import SceneStatus
from snakemap.data.chips import ChipPaths, origins_inside, select_chips, write_chips
from snakemap.data.splits import make_folds, write_folds
from tests.conftest import write_tif


def test_origins_inside_cover_the_far_edge() -> None:
    assert origins_inside(100, 32, 32) == [0, 32, 64, 68]
    assert origins_inside(96, 32, 32) == [0, 32, 64]
    assert origins_inside(64, 32, 24) == [0, 24, 32]
    assert origins_inside(20, 32, 32) == []


def scene_arrays() -> tuple[np.ndarray, np.ndarray]:
    image = np.ones((3, 128, 128), dtype=np.float32)
    label = np.zeros((128, 128), dtype=np.uint8)
    label[0:32, 0:32] = 2  # target in the first chip only
    image[:, 96:, 96:] = np.nan  # last chip all nodata
    label[64:96, :] = 255  # a row of unlabelled chips
    return image, label


def test_select_chips_filters_and_records() -> None:
    image, label = scene_arrays()
    table = select_chips(image, label, ChipOptions(size=32, max_nodata_fraction=0.5), [2], 255, "s")
    # 16 windows; the 4 unlabelled ones and the 1 nodata one are dropped.
    assert len(table) == 11
    assert table["chip"].tolist() == list(range(11))
    first = table.iloc[0]
    assert (first["row"], first["col"], first["target_fraction"]) == (0, 0, 1.0)
    assert (table["target_fraction"] > 0).sum() == 1
    assert (table["row"] == 64).sum() == 0


def test_background_fraction_and_max_per_scene_are_seeded() -> None:
    image, label = scene_arrays()
    opts = ChipOptions(size=32, background_fraction=0.5, seed=3)
    table = select_chips(image, label, opts, [2], 255, "s")
    assert (table["target_fraction"] > 0).sum() == 1  # target chips are all kept
    assert (table["target_fraction"] == 0).sum() == 5  # round(0.5 * 10)
    again = select_chips(image, label, opts, [2], 255, "s")
    pd.testing.assert_frame_equal(table, again)
    capped = select_chips(image, label, ChipOptions(size=32, max_per_scene=4), [2], 255, "s")
    assert len(capped) == 4


def test_write_chips_files(tmp_path: Path) -> None:
    image, label = scene_arrays()
    clean = tmp_path / "clean"
    write_tif(clean / "image.tif", image, nodata=float("nan"))
    write_tif(clean / "label.tif", label, nodata=255)
    SceneStatus("s", "ok", band_count=3).write(clean / "status.json")
    paths = ChipPaths(tmp_path / "s.image.npy", tmp_path / "s.label.npy", tmp_path / "s.index.parquet")
    n = write_chips(clean, paths, ChipOptions(size=32, stride=16), [2], 255)
    chips, labels = np.load(paths.image, mmap_mode="r"), np.load(paths.label, mmap_mode="r")
    table = pd.read_parquet(paths.index)
    assert chips.shape == (n, 3, 32, 32) and chips.dtype == np.float32
    assert labels.shape == (n, 32, 32) and labels.dtype == np.uint8
    for row in table.itertuples():
        np.testing.assert_array_equal(labels[row.chip], label[row.row : row.row + 32, row.col : row.col + 32])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_scene_that_is_not_ok_gives_zero_chips(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    SceneStatus("s", "corrupt", reason="bad").write(clean / "status.json")
    paths = ChipPaths(tmp_path / "s.image.npy", tmp_path / "s.label.npy", tmp_path / "s.index.parquet")
    assert write_chips(clean, paths, ChipOptions(size=32), [2], 255) == 0
    assert np.load(paths.image).shape[0] == 0 and len(pd.read_parquet(paths.index)) == 0


def chip_table(n_aoi: int = 6) -> tuple[pd.DataFrame, dict[str, str]]:
    rng = np.random.default_rng(0)
    rows, aois = [], {}
    for s in range(2 * n_aoi):
        aois[f"s{s}"] = f"aoi{s // 2}"
        for c in range(rng.integers(3, 9)):
            rows.append((f"s{s}", c, 32 * c, 0, float(rng.random() < 0.4)))
    return pd.DataFrame(rows, columns=["scene_id", "chip", "row", "col", "target_fraction"]), aois


@pytest.mark.parametrize("method", ["group", "stratified_group"])
def test_no_aoi_in_two_folds(method: str) -> None:
    chips, aois = chip_table()
    folds = make_folds(chips, aois, SplitOptions(folds=3, method=method, seed=1))
    assert set(folds["fold"]) == {0, 1, 2}
    assert (folds.groupby("aoi")["fold"].nunique() == 1).all()
    assert len(folds) == len(chips)
    pd.testing.assert_frame_equal(
        folds, make_folds(chips, aois, SplitOptions(folds=3, method=method, seed=1))
    )


def test_too_few_aois_is_a_clear_error() -> None:
    chips, aois = chip_table(n_aoi=2)
    with pytest.raises(ValueError, match="splits.folds is 3 but the training chips come from only 2 AOI"):
        make_folds(chips, aois, SplitOptions(folds=3))


def test_blocks_make_folds_within_one_aoi() -> None:
    chips, aois = chip_table(n_aoi=1)
    folds = make_folds(chips, aois, SplitOptions(folds=2, method="group", block_size=64))
    assert folds["aoi"].nunique() == 1 and set(folds["fold"]) == {0, 1}
    # chips at rows 0 and 32 share block 0; 64 and 96 share block 1; ...
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    assert folds.loc[folds["chip"] < 2, "group"].str.endswith(":0_0").all()


def test_write_folds(tmp_path: Path) -> None:
    chips, aois = chip_table()
    paths = []
    for scene, part in chips.groupby("scene_id"):
        paths.append(tmp_path / f"{scene}.parquet")
        part.to_parquet(paths[-1])
    empty = tmp_path / "empty.parquet"
    chips.iloc[:0].to_parquet(empty)
    folds = write_folds(paths + [empty], aois, tmp_path / "folds.parquet", SplitOptions(folds=4))
    assert len(pd.read_parquet(tmp_path / "folds.parquet")) == len(chips) == len(folds)
