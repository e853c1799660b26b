"""Acquire from local paths, file:// and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from snakemap.core.sections import AcquireOptions
from snakemap.data.acquire import AcquireError, acquire_scene, fetch

FAST = AcquireOptions(retries=2, backoff_s=0.01, timeout_s=5)
BODY = bytes(range(256)) * 400  # 100 kB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_local_path_and_file_uri(tmp_path: Path) -> None:
    src = tmp_path / "src.tif"
    src.write_bytes(BODY)
    for uri in (str(src), src.as_uri()):
        dest = tmp_path / "out" / "copy.tif"
        rec = fetch(uri, dest, sha256=sha(BODY), options=FAST)
        assert dest.read_bytes() == BODY
        assert (rec.bytes, rec.sha256, rec.attempts) == (len(BODY), sha(BODY), 1)


def test_http_500_then_success_is_retried(tmp_path: Path, http_server) -> None:
    url = http_server.serve("/scene.tif", BODY, "500", "500")
    rec = fetch(url, tmp_path / "s.tif", options=FAST)
    assert rec.attempts == 3
    assert http_server.hits("/scene.tif") == 3
    assert (tmp_path / "s.tif").read_bytes() == BODY


def test_truncated_download_is_retried_then_fails(tmp_path: Path, http_server) -> None:
    url = http_server.serve("/t.tif", BODY, "truncate", "truncate", "truncate")
    with pytest.raises(AcquireError, match=r"failed after 3 attempts: .*(truncated download|IncompleteRead)"):
        fetch(url, tmp_path / "t.tif", options=FAST)
    assert not (tmp_path / "t.tif").exists()
    assert leftovers(tmp_path) == []


def test_sha256_mismatch_fails_with_both_checksums(
    tmp_path: Path, http_server, caplog: pytest.LogCaptureFixture
) -> None:
    url = http_server.serve("/m.tif", BODY)
    wrong = "0" * 64
    with pytest.raises(AcquireError, match=f"sha256 mismatch: expected {wrong}, got {sha(BODY)}"):
        fetch(url, tmp_path / "m.tif", sha256=wrong, options=FAST)
    assert not (tmp_path / "m.tif").exists()
    assert http_server.hits("/m.tif") == 3  # a download may come right next time ...
    local = tmp_path / "local.tif"
    local.write_bytes(BODY)
    caplog.clear()
    with pytest.raises(AcquireError, match=f"{local}: sha256 mismatch: expected {wrong}"):
        fetch(str(local), tmp_path / "copy.tif", sha256=wrong, options=FAST)  # ... a local file will not
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    assert not (tmp_path / "copy.tif").exists()


def test_404_is_final_without_retries(tmp_path: Path, http_server) -> None:
    url = http_server.serve("/gone.tif", BODY, "404")
    with pytest.raises(AcquireError, match="HTTP 404"):
        fetch(url, tmp_path / "g.tif", options=FAST)
    assert http_server.hits("/gone.tif") == 1


def test_existing_file_survives_a_failed_fetch(tmp_path: Path, http_server) -> None:
    dest = tmp_path / "keep.tif"
    dest.write_bytes(b"earlier result")
    url = http_server.serve("/bad.tif", BODY, "truncate", "truncate", "truncate")
    with pytest.raises(AcquireError):
        fetch(url, dest, options=FAST)
    assert dest.read_bytes() == b"earlier result"


def test_acquire_scene_record(tmp_path: Path, http_server) -> None:
    img = http_server.serve("/i.tif", BODY)
    lab = http_server.serve("/l.tif", BODY[:1000], "500")
    assert acquire_scene("s1", img, tmp_path / "s1", sha256=sha(BODY), label_uri=lab, options=FAST)
    record = json.loads((tmp_path / "s1" / "acquire.json").read_text())
    assert record["status"] == "ok"
    assert record["files"]["image"]["sha256"] == sha(BODY)
    assert record["files"]["label"]["attempts"] == 2
    assert (tmp_path / "s1" / "label.tif").read_bytes() == BODY[:1000]


def test_failed_label_leaves_no_partial_scene(tmp_path: Path, http_server) -> None:
    img = http_server.serve("/i2.tif", BODY)
    ok = acquire_scene("s2", img, tmp_path / "s2", label_uri=http_server.url("/missing.tif"), options=FAST)
    assert not ok
    record = json.loads((tmp_path / "s2" / "acquire.json").read_text())
    assert record["status"] == "corrupt"
    assert record["reason"].startswith("label: ") and "HTTP 404" in record["reason"]
    assert sorted(p.name for p in (tmp_path / "s2").iterdir()) == ["acquire.json"]


def test_unknown_scheme_is_clear(tmp_path: Path) -> None:
    with pytest.raises(AcquireError, match="nosuch://"):
        fetch("nosuch://bucket/x.tif", tmp_path / "x.tif", options=FAST)
