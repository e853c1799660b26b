"""Planning at scale: the checked manifest's cache, shards cut once, progress from shard summaries."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from snakemap.outputs.progress import COUNTS_CACHE, format_progress, progress
from snakemap.plan.manifest import ManifestError, apply_scene_ids, check_manifest, read_manifest
from snakemap.plan.shards import ShardTable

HEADER = "scene_id,uri,sha256,label_uri,role,aoi\n"


def write_manifest(path: Path, n: int, extra: str = "") -> Path:
    rows = "".join(f"q{i:05d},s3://bucket/q{i:05d}.tif,,,apply,\n" for i in range(n))
    path.write_text(HEADER + "t1,t1.tif,,t1_lab.tif,train,reef\n" + rows + extra)
    return path


def test_checked_manifest_is_cached_by_content(tmp_path: Path) -> None:
    path, cache = write_manifest(tmp_path / "m.csv", 50), tmp_path / "cache"
    plain = read_manifest(path)
    first = read_manifest(path, cache=cache)
    (entry,) = cache.glob("*.parquet")
    again = read_manifest(path, cache=cache)
    # the same table, columns, dtypes and index whether checked now or loaded from the cache
    for table in (first, again):
        pd.testing.assert_frame_equal(table, plain)
    assert again.loc["t1", "aoi"] == "reef" and again.loc["q00003", "aoi"] == "q00003"
    # the labels and tables are checked on every read: the entry is the file's alone
    fields = tmp_path / "fields.csv"
    fields.write_text(HEADER + "g1,g1.tif,,,train,\nq1,q1.tif,,,apply,\n")
    assert list(read_manifest(fields, labels_required=False, cache=cache).index) == ["g1", "q1"]
    with pytest.raises(ManifestError, match="fields.csv line 2: scene 'g1': role train needs a label_uri"):
        read_manifest(fields, cache=cache)
    # a changed file is a new key: its mistakes are found, never hidden by the old entry
    path.write_text(path.read_text() + "q00001,x.tif,,,apply,\n")
    with pytest.raises(ManifestError, match=r"line 53: duplicate scene_id 'q00001' \(first at line 4\)"):
        read_manifest(path, cache=cache)
    assert entry in cache.glob("*.parquet")
    # so are the tables the check depends on
    sensed = tmp_path / "s.csv"
    sensed.write_text("scene_id,uri,role,sensor\nq1,q1.tif,apply,s2\nq2,q2.tif,apply,\n")
    assert read_manifest(sensed, sensors=["s2"], cache=cache).loc["q1", "sensor"] == "s2"
    with pytest.raises(ManifestError, match="sensor 's2' is not in the config's sensors"):
        read_manifest(sensed, sensors=["l7"], cache=cache)


def test_a_damaged_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    path, cache = write_manifest(tmp_path / "m.csv", 5), tmp_path / "cache"
    read_manifest(path, cache=cache)
    (entry,) = cache.glob("*.parquet")
    entry.write_bytes(b"PAR1 truncated")
    table = read_manifest(path, cache=cache)
    assert list(table.index) == ["t1"] + [f"q{i:05d}" for i in range(5)]
    assert pd.read_parquet(entry).shape[0] == 6  # written again, whole


def test_apply_scene_ids_are_listed_beside_the_cache(tmp_path: Path) -> None:
    path, cache = write_manifest(tmp_path / "m.csv", 7), tmp_path / "cache"
    expected = [f"q{i:05d}" for i in range(7)]
    assert apply_scene_ids(path) == expected  # no cache: from the checked table
    assert apply_scene_ids(path, cache=cache) == expected
    (listing,) = cache.glob("*.apply.txt")
    assert listing.read_text().splitlines() == expected
    assert apply_scene_ids(path, cache=cache) == expected
    bad = write_manifest(tmp_path / "bad.csv", 2, extra="../evil,x.tif,,,apply,\n")
    with pytest.raises(ManifestError, match="not a safe file name"):
        apply_scene_ids(bad, cache=cache)


def reference_fingerprint(rows: pd.DataFrame) -> str:
    """What the workflow computed before shards were cut once: pandas' CSV of the rows."""
    return hashlib.sha256(rows[["scene_id", "uri", "sha256"]].to_csv(index=False).encode()).hexdigest()[:16]


@pytest.mark.parametrize("uri", ["plain.tif", 'with,comma "and quote".tif'])
def test_shard_table_fingerprints_and_members(uri: str) -> None:
    n = 11
    table = pd.DataFrame(
        {
            "scene_id": [f"s{i}" for i in range(n)] + ["t"],
            "uri": [f"{i}-{uri}" for i in range(n)] + ["t.tif"],
            "sha256": ["ab" * 32 if i % 3 == 0 else "" for i in range(n)] + [""],
            "sensor": ["s2" if i < 5 else "" for i in range(n)] + [""],
            "role": ["apply"] * 5 + ["train"] + ["apply"] * (n - 5),
            "label_uri": [""] * 5 + ["l.tif"] + [""] * (n - 5),
        }
    )
    manifest = check_manifest(table)
    shards = ShardTable(manifest, 4)
    apply_ids = [s for s, r in zip(table["scene_id"], table["role"], strict=True) if r == "apply"]
    assert shards.scene_ids == apply_ids and shards.ids == ["shard-00000", "shard-00001", "shard-00002"]
    for k, shard in enumerate(shards.ids):
        members = apply_ids[4 * k : 4 * k + 4]
        assert shards.members(shard) == members
        assert shards.fingerprint(shard) == reference_fingerprint(manifest.loc[members])
        assert shards.column(shard, "uri") == manifest.loc[members, "uri"].tolist()
    assert shards.sensors("shard-00000") == ["s2"] and shards.sensors("shard-00002") == []
    # a changed URI changes its shard's fingerprint alone
    table.loc[9, "uri"] = "moved.tif"
    moved = ShardTable(check_manifest(table), 4)
    assert [moved.fingerprint(s) == shards.fingerprint(s) for s in shards.ids] == [True, True, False]
    assert ShardTable(check_manifest(table[table["role"] == "train"]), 4).ids == []


def shard_manifest(root: Path, shard: str, ids: list[str], finished: float, corrupt: str = "") -> Path:
    entries = [
        {
            "scene_id": s,
            "status": "corrupt" if s == corrupt else "ok",
            "reason": "bad" if s == corrupt else "",
            "started": finished - 60,
            "finished": finished,
        }
        for s in ids
    ]
    path = root / "shards" / f"{shard}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"shard": shard, "scenes": entries}))
    os.utime(path, (finished, finished))
    return path


def test_progress_keeps_finished_shards_summaries(tmp_path: Path) -> None:
    now = time.time()
    ids = [f"s{i}" for i in range(10)]
    shard_manifest(tmp_path, "shard-00000", ids[:4], now - 3600, corrupt="s1")
    shard_manifest(tmp_path, "shard-00001", ids[4:8], now - 30)
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "s8.json").write_text(
        json.dumps({"scene_id": "s8", "status": "empty", "finished": now})
    )
    first = progress(tmp_path, ids, 4, now=now)
    counts = [first[k] for k in ("ok", "empty", "corrupt", "pending", "shards_done")]
    assert counts == [7, 1, 1, 1, 2]
    assert first["corrupt_scenes"] == [{"scene_id": "s1", "reason": "bad"}]
    assert first["scenes_per_hour"] == 5 / 600 * 3600  # shard-00001's four and s8 finished lately
    kept = json.loads((tmp_path / COUNTS_CACHE).read_text())
    assert kept["shard-00000"]["summary"]["corrupt"] == 1
    # the old shard's summary is used as kept, without reading its manifest again ...
    kept["shard-00000"]["summary"]["ok"] = 99
    (tmp_path / COUNTS_CACHE).write_text(json.dumps(kept))
    assert progress(tmp_path, ids, 4, now=now)["ok"] == 99 + 4
    # ... until a rerun rewrites the manifest (retry_corrupt): then it is read again
    shard_manifest(tmp_path, "shard-00000", ids[:4], now - 3500)
    again = progress(tmp_path, ids, 4, now=now)
    assert (again["ok"], again["corrupt"], again["corrupt_scenes"]) == (8, 0, [])
    # a damaged cache is rebuilt, not trusted
    (tmp_path / COUNTS_CACHE).write_text("{not json")
    assert progress(tmp_path, ids, 4, now=now) == again


def test_cached_or_not_a_manifest_gets_the_same_messages(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "t1,t1.tif,zz,,train,\nq1,q1.tif,,,apply,\n")
    messages = []
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):
        with pytest.raises(ManifestError) as err:
            read_manifest(path, cache=cache)
        messages.append(str(err.value))
    assert messages[0] == messages[1] == messages[2]
    assert "needs a label_uri" in messages[0] and "sha256 'zz'" in messages[0]


def test_ids_with_line_breaks_and_empty_cells(tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_text('scene_id,uri,role\n"abc\n",a.tif,apply\nq1,q1.tif,apply\n')
    with pytest.raises(ManifestError, match="line 2: scene_id 'abc\\\\n' is not a safe file name"):
        apply_scene_ids(broken, cache=tmp_path / "cache")
    # empty cells of a Parquet manifest (nulls) are empty, not the text "nan"
    table = pd.DataFrame(
        {
            "scene_id": ["q1", "q2"],
            "uri": ["q1.tif", "q2.tif"],
            "role": ["apply", "apply"],
            "sha256": [None, "ab" * 32],
        }
    )
    table.to_parquet(tmp_path / "m.parquet")
    for cache in (None, tmp_path / "cache"):
        checked = read_manifest(tmp_path / "m.parquet", cache=cache)
        assert checked["sha256"].tolist() == ["", "ab" * 32]
    shards = ShardTable(checked, 1)
    assert shards.fingerprint("shard-00000") == reference_fingerprint(checked.loc[["q1"]])
    # a shard past the end (a target named before the manifest shrank) has no rows
    header_only = hashlib.sha256(b"scene_id,uri,sha256\n").hexdigest()[:16]
    assert shards.fingerprint("shard-00007") == header_only and shards.members("shard-00007") == []


def test_kept_summaries_count_no_recent_scene_once_old(tmp_path: Path) -> None:
    now = time.time()
    ids = [f"s{i}" for i in range(4)]
    shard_manifest(tmp_path, "shard-00000", ids, now - 30)
    assert progress(tmp_path, ids, 4, now=now)["scenes_per_hour"] == 4 / 600 * 3600
    later = progress(tmp_path, ids, 4, now=now + 3600)  # the kept summary counted 4 recent ones
    assert (later["ok"], later["scenes_per_hour"], later["eta_s"]) == (4, 0.0, 0.0)
    # a finished run still says what it ran at: 4 scenes in the minute from first start to last finish
    assert later["run_scenes_per_hour"] == pytest.approx(4 * 60)
    assert "0 scenes/h in the last 10 min, 240 over the run; ETA done" in format_progress("p", later)
    (tmp_path / COUNTS_CACHE).write_text(json.dumps({"shard-00000": {"key": "x"}}))  # another shape
    assert progress(tmp_path, ids, 4, now=now + 3600) == later
    (tmp_path / COUNTS_CACHE).write_text("[1, 2]")
    assert progress(tmp_path, ids, 4, now=now + 3600) == later
    # the shard job began ten minutes before its last scene ended (models loaded, scenes listed)
    path = tmp_path / "shards" / "shard-00000.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "started": now - 30 - 600}))
    os.utime(path, (now - 20, now - 20))
    assert progress(tmp_path, ids, 4, now=now + 3600)["run_scenes_per_hour"] == pytest.approx(4 * 6)


def test_shard_fingerprints_are_kept_beside_the_cached_manifest(tmp_path: Path) -> None:
    path, cache = write_manifest(tmp_path / "m.csv", 10), tmp_path / "cache"
    plain = ShardTable(read_manifest(path), 4)
    expected = {s: plain.fingerprint(s) for s in plain.ids}
    assert list(expected) == ["shard-00000", "shard-00001", "shard-00002"]
    assert ShardTable(read_manifest(path, cache=cache), 4).fingerprints() == expected
    (kept,) = cache.glob("*.shards-4.json")
    assert json.loads(kept.read_text()) == expected
    # read back on the next plan (a planted value shows it is used, not recomputed) ...
    kept.write_text(json.dumps({**expected, "shard-00001": "from-the-cache"}))
    assert ShardTable(read_manifest(path, cache=cache), 4).fingerprint("shard-00001") == "from-the-cache"
    # ... for its shard size only, and a kept file for other shards is not trusted
    assert ShardTable(read_manifest(path, cache=cache), 3).fingerprints() == {
        s: ShardTable(read_manifest(path), 3).fingerprint(s)
        for s in ("shard-00000", "shard-00001", "shard-00002", "shard-00003")
    }
    kept.write_text(json.dumps({"shard-00000": "x"}))
    assert ShardTable(read_manifest(path, cache=cache), 4).fingerprints() == expected


def test_manifest_rows_resolve_beside_the_manifest_and_keep_their_fingerprints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snakemap.core.paths import LAUNCH_ENV

    folder = tmp_path / "config"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "q1.tif").write_bytes(b"")
    (folder / "resources" / "demo").mkdir(parents=True)  # a leftover beside it: the run's own path
    (folder / "resources" / "demo" / "q3.tif").write_bytes(b"")
    (folder / "m.csv").write_text(
        "scene_id,uri,role\nq1,data/q1.tif,apply\nq2,s3://bucket/q2.tif,apply\nq3,resources/demo/q3.tif,apply\n"
    )
    monkeypatch.delenv(LAUNCH_ENV, raising=False)
    monkeypatch.chdir(folder)  # read where it lies: nothing to rebase
    own = read_manifest("m.csv")
    monkeypatch.chdir(tmp_path)  # read from the project: rows beside the manifest, run paths as written
    moved = read_manifest("config/m.csv")
    assert moved["uri"].tolist() == ["config/data/q1.tif", "s3://bucket/q2.tif", "resources/demo/q3.tif"]
    assert own["uri"].tolist() == ["data/q1.tif", "s3://bucket/q2.tif", "resources/demo/q3.tif"]
    assert ShardTable(moved, 2).fingerprints() == ShardTable(own, 2).fingerprints()
