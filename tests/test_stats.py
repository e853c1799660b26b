"""Streaming band statistics against numpy on random rasters, across strips and scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from snakemap.core.status import SceneStatus
from snakemap.data.stats import band_statistics, percentile_from_histogram, write_band_statistics
from tests.conftest import write_tif


def random_scenes(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(42)
    paths, arrays = [], []
    # 1100 rows: more than one 1024-row strip, so strips and scenes are merged.
    for i, rows in enumerate((1100, 37, 300)):
        data = np.stack([rng.normal(100 * (i + 1), 15, (rows, 23)), rng.gamma(2.0, 3.0, (rows, 23))]).astype(
            np.float32
        )
        data[:, rng.random((rows, 23)) < 0.1] = np.nan
        data[1, :3, :] = np.nan  # a band-specific gap
        paths.append(write_tif(tmp_path / f"s{i}.tif", data, nodata=float("nan")))
        arrays.append(data.reshape(2, -1))
    return paths, np.concatenate(arrays, axis=1)


def test_statistics_match_numpy(tmp_path: Path) -> None:
    paths, everything = random_scenes(tmp_path)
    stats = band_statistics(paths, ["a", "b"], bins=65536)
    for b, entry in enumerate(stats):
        v = everything[b][np.isfinite(everything[b])].astype(np.float64)
        assert entry["count"] == v.size
        assert entry["mean"] == pytest.approx(v.mean(), rel=1e-9)
        assert entry["std"] == pytest.approx(v.std(), rel=1e-9)
        assert (entry["min"], entry["max"]) == (v.min(), v.max())
        width = (v.max() - v.min()) / 65536
        for q in (1, 2, 98, 99):
            assert entry[f"p{q}"] == pytest.approx(np.percentile(v, q), abs=2 * width)


def test_percentile_from_histogram_edges() -> None:
    counts = np.array([0, 10, 0, 0])
    assert percentile_from_histogram(counts, 0.0, 4.0, 50) == pytest.approx(1.5)
    assert np.isnan(percentile_from_histogram(np.zeros(4), 0, 1, 50))
    assert percentile_from_histogram(np.array([5]), 2.0, 2.0, 99) == 2.0


def test_write_band_statistics_skips_scenes_that_are_not_ok(tmp_path: Path) -> None:
    paths, _ = random_scenes(tmp_path)
    dirs = []
    for i, path in enumerate(paths):
        d = tmp_path / f"clean{i}"
        d.mkdir()
        path.rename(d / "image.tif")
        SceneStatus(f"s{i}", "ok" if i != 1 else "empty", bands=["a", "b"]).write(d / "status.json")
        dirs.append(d)
    result = write_band_statistics(dirs, tmp_path / "stats" / "bands.json")
    assert result["scenes"] == ["s0", "s2"]
    on_disk = json.loads((tmp_path / "stats" / "bands.json").read_text())
    assert [b["name"] for b in on_disk["bands"]] == ["a", "b"]
    assert on_disk["bands"][0]["count"] == result["bands"][0]["count"]


def test_no_ok_scene_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    SceneStatus("x", "corrupt", reason="bad").write(d / "status.json")
    with pytest.raises(ValueError, match="no ok training scene"):
        write_band_statistics([d], tmp_path / "bands.json")


def test_a_long_step_logs_its_counts_and_eta_now_and_then() -> None:
    from snakemap.core.countdown import Countdown, clock_text

    now = [0.0]
    counted = Countdown(100, "scenes", every_s=10, clock=lambda: now[0])
    lines = []
    for _ in range(100):
        now[0] += 1.0  # a scene a second
        lines.append(counted.step())
    logged = [line for line in lines if line]
    assert len(logged) == 10  # every 10 s, and the last
    assert logged[0] == "10 of 100 scenes (10%), ETA 0:01:30"
    assert logged[-1] == "100 of 100 scenes (100%), ETA 0:00:00"
    assert clock_text(3725) == "1:02:05"
