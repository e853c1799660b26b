"""The manifest check: every bad row named, before any job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from snakemap.plan.manifest import (
    OPTIONAL,
    REQUIRED,
    ManifestError,
    ManifestRow,
    manifest_rows,
    read_manifest,
    scenes_with_role,
)
from snakemap.plan.manifest_fields import parse_bounds

HEADER = "scene_id,uri,sha256,label_uri,role,aoi\n"


def write(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text(HEADER + rows)
    return path


def test_good_manifest_defaults_aoi_to_scene_id(tmp_path: Path) -> None:
    m = read_manifest(write(tmp_path, "a1,a.tif,,a_lab.tif,train,reefA\nq1,q.tif,,,apply,\n"))
    assert list(m.index) == ["a1", "q1"]
    assert m.loc["a1", "aoi"] == "reefA"
    assert m.loc["q1", "aoi"] == "q1"
    assert scenes_with_role(m, "apply") == ["q1"]


def test_manifest_rows_are_typed_text_rows(tmp_path: Path) -> None:
    assert ManifestRow._fields == REQUIRED + OPTIONAL
    m = read_manifest(write(tmp_path, "a1,a.tif,,a_lab.tif,train,reefA\nq1,q.tif,,,apply,\n"))
    assert manifest_rows(m) == [
        ManifestRow("a1", "a.tif", "train", "", "a_lab.tif", "", "reefA", "", "", "", ""),
        ManifestRow("q1", "q.tif", "apply", "", "", "", "q1", "", "", "", ""),
    ]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("g,b.tif,,l.tif,train,x\n", "line 3: duplicate scene_id 'g' (first at line 2)"),
        ("../evil,a.tif,,l.tif,train,x\n", "line 3: scene_id '../evil' is not a safe file name"),
        ("a/b,a.tif,,l.tif,train,x\n", "line 3: scene_id 'a/b' is not a safe file name"),
        (",a.tif,,l.tif,train,x\n", "line 3: scene_id '' is not a safe file name"),
        ("a b,a.tif,,l.tif,train,x\n", "line 3: scene_id 'a b' is not a safe file name"),
        ("ok1,a.tif,,,train,x\n", "line 3: scene 'ok1': role train needs a label_uri"),
        ("ok1,a.tif,,,calval,x\n", "line 3: scene 'ok1': role calval needs a label_uri"),
        ("ok1,a.tif,,l.tif,test,x\n", "line 3: scene 'ok1': unknown role 'test'"),
        ("ok1,a.tif,abc,l.tif,train,x\n", "line 3: scene 'ok1': sha256 'abc' is not 64 hex digits"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, rows: str, expected: str) -> None:
    # A good row at line 2 first: the message must point past it, at line 3.
    with pytest.raises(ManifestError) as err:
        read_manifest(write(tmp_path, "g,g.tif,,g_lab.tif,train,x\n" + rows))
    assert f"{tmp_path / 'manifest.csv'} {expected}" in str(err.value)


def test_all_errors_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as err:
        read_manifest(write(tmp_path, "../evil,a.tif,,,train,x\nb,b.tif,,l.tif,nope,x\n"))
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    assert "line 2" in lines[0] and "line 2" in lines[1] and "line 3" in lines[2]


def test_missing_and_unknown_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("scene_id,uri\na,a.tif\n")
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(path)
    path.write_text("scene_id,uri,role,cloud_cover\na,a.tif,apply,12.5\n")  # what a STAC search adds
    manifest = read_manifest(path)  # kept in the file, ignored
    assert list(manifest.columns) == list(REQUIRED + OPTIONAL) and manifest.loc["a", "uri"] == "a.tif"


def test_parquet_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pd.DataFrame({"scene_id": ["a", "a"], "uri": ["x.tif", "y.tif"], "role": ["apply", "apply"]}).to_parquet(
        path
    )
    with pytest.raises(ManifestError, match="row 2: duplicate scene_id 'a' \\(first at row 1\\)"):
        read_manifest(path)


def test_a_row_with_more_cells_than_the_header_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "a1,a.tif,,a_lab.tif,train,reefA\nq1,q.tif,,,apply,,stray\n")
    with pytest.raises(
        ManifestError,
        match=r"is not a readable CSV table: .*(more cells than|Expected 6 fields in line 3, saw 7)",
    ):
        read_manifest(path)


def test_short_rows_and_blank_lines_read_as_before(tmp_path: Path) -> None:
    """Arrow's reader refuses them; pandas' own, as before, takes short rows' missing cells as empty
    and skips a line of blanks."""
    m = read_manifest(write(tmp_path, "a1,a.tif,,a_lab.tif,train,reefA\n   \nq1,q.tif,,,apply\n"))
    assert list(m.index) == ["a1", "q1"] and m.loc["q1", "aoi"] == "q1" and m.loc["q1", "role"] == "apply"


def test_empty_cells_and_words_that_mean_nothing_to_csv_stay_text(tmp_path: Path) -> None:
    m = read_manifest(write(tmp_path, 'NA,"a,b.tif",,null_lab.tif,train,\nq1, q.tif ,,,apply,\n'))
    assert list(m.index) == ["NA", "q1"]  # not a missing value
    assert m.loc["NA", "uri"] == "a,b.tif" and m.loc["NA", "label_uri"] == "null_lab.tif"
    assert m.loc["q1", "uri"] == " q.tif " and m.loc["q1", "sha256"] == "" and m.loc["q1", "aoi"] == "q1"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_sensor_and_label_scheme_must_name_config_entries(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "scene_id,uri,label_uri,role,sensor,label_scheme\n"
        "s2,s2.tif,s2_lab.tif,train,s2l1c,codes_a\n"
        "l7,l7.tif,,apply,landsat7,\n"
        "x,x.tif,x_lab.tif,calval,,codes_z\n"
    )
    m = read_manifest(path)  # not checked without the tables
    assert m.loc["s2", "sensor"] == "s2l1c" and m.loc["x", "sensor"] == ""
    with pytest.raises(ManifestError) as err:
        read_manifest(path, sensors={"s2l1c": {}}, label_schemes=["codes_a"])
    assert str(err.value).splitlines() == [
        f"{path} line 3: scene 'l7': sensor 'landsat7' is not in the config's sensors (s2l1c)",
        f"{path} line 4: scene 'x': label_scheme 'codes_z' is not in the config's label_schemes (codes_a)",
    ]
    with pytest.raises(
        ManifestError,
        match="line 2: scene 's2': sensor 's2l1c' is not in the config's sensors "
        r"\(none defined\)",
    ):
        read_manifest(path, sensors={}, label_schemes=["codes_a", "codes_z"])
    ok = read_manifest(path, sensors=["s2l1c", "landsat7"], label_schemes=["codes_a", "codes_z"])
    assert ok["label_scheme"].tolist() == ["codes_a", "", "codes_z"]


def test_bounds_and_datetime_columns_are_checked(tmp_path: Path) -> None:
    header = "scene_id,uri,role,label_uri,bounds,datetime\n"
    good = tmp_path / "good.csv"
    good.write_text(
        header + 'a,a.tif,train,l.tif,"-125.5,24,-112,50",2024-05-01T10:30:00Z\nq,q.tif,apply,,,2024-05-02\n'
    )
    m = read_manifest(good)
    assert parse_bounds(m.loc["a", "bounds"]) == (-125.5, 24.0, -112.0, 50.0)
    assert m.loc["q", "bounds"] == "" and m.loc["q", "datetime"] == "2024-05-02"
    bad = tmp_path / "bad.csv"
    rows = [
        'b,b.tif,train,l.tif,"1,2,3",',
        'c,c.tif,train,l.tif,"5,0,1,9",',
        'd,d.tif,apply,,"0,0,1,1",',
        "e,e.tif,apply,,,May 1st",
    ]
    bad.write_text(header + "\n".join(rows) + "\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(bad)
    message = str(info.value)
    assert "line 2: scene 'b': bounds '1,2,3' is not minx,miny,maxx,maxy" in message
    assert "line 3: scene 'c': bounds '5,0,1,9' needs minx < maxx and miny < maxy" in message
    assert "line 4: scene 'd': bounds are for train and calval rows, not apply" in message
    assert "line 5: scene 'e': datetime 'May 1st' is not ISO 8601" in message
    # downscaling's train and calval rows need no label
    (tmp_path / "fields.csv").write_text("scene_id,uri,role\ng,g.tif,train\n")
    assert list(read_manifest(tmp_path / "fields.csv", labels_required=False).index) == ["g"]
    with pytest.raises(ManifestError, match="role train needs a label_uri"):
        read_manifest(tmp_path / "fields.csv")


def test_check_manifest_as_typed_checks_files_and_says_what_it_skipped(tmp_path: Path) -> None:
    scene = tmp_path / "a.tif"
    scene.write_bytes(b"II*\x00")
    good = tmp_path / "good.csv"
    good.write_text(f"scene_id,uri,role,sensor,cloud_cover\na,{scene},apply,s2,3\n")
    cmd = [str(Path(sys.executable).parent / "snakemap"), "check-manifest"]
    proc = subprocess.run([*cmd, str(good)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{good}: 1 scenes apply=1",
        "ignored column(s): cloud_cover",
        "not checked: the sensor and label_scheme entries the rows name (s2) exist in a config: "
        "pass --config FILE",
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        f"scene_id,uri,role\na,{scene},apply\nb,{tmp_path / 'nope.tif'},apply\nc,s3://b/c.tif,apply\n"
    )
    proc = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"snakemap check-manifest: {bad}: 1 local file(s) do not exist:",
        f"b: uri {tmp_path / 'nope.tif'}",
    ]
