"""Scenes in object storage: s3:// through fsspec (acquire) and GDAL (apply's reads in place),
against a real S3-protocol server on 127.0.0.1 (moto's, behind a counting, fault-injecting proxy)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from snakemap.cli import main
from snakemap.core.apply_sections import ApplyOptions, PredictOptions
from snakemap.core.config import ConfigError, build
from snakemap.core.sections import AcquireOptions, BandOptions, CleanOptions
from snakemap.core.status import SceneStatus
from snakemap.data.acquire import AcquireError, acquire_scene, fetch
from snakemap.data.clean import clean_scene
from snakemap.data.stats import Normalizer
from snakemap.inference.predictor import Member, Predictor
from snakemap.inference.readers import CleaningReader
from snakemap.inference.scenes import SceneInput
from snakemap.inference.shard import ShardRunner
from tests.objectstore import ObjectStore

#: a Sentinel-2 L1C layout: 13 bands, of which the model uses 4
S2 = ["b01", "b02", "b03", "b04", "b05", "b06", "b07", "b08", "b8a", "b09", "b10", "b11", "b12"]
SELECT = ["b02", "b03", "b04", "b08"]


@pytest.fixture(scope="module")
def server() -> Iterator[ObjectStore]:
    store = ObjectStore().start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def store(server: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ObjectStore:
    """The module's server with no faults and zeroed counts; credentials from the environment only."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    server.faults.clear()
    server.reset_counts()
    return server


def options(store: ObjectStore, **kw: object) -> AcquireOptions:
    values: dict[str, object] = {"retries": 1, "backoff_s": 0.01, "timeout_s": 10.0}
    values.update(endpoint_url=store.endpoint_url, region="eu-central-1", **kw)
    return AcquireOptions(**values)  # type: ignore[arg-type]


def s2_scene(
    path: Path,
    size: int = 256,
    tiled: bool = True,
    seed: int = 0,
    interleave: str = "band",
    west: float = 500000,
) -> Path:
    """A 13-band uint16 GeoTIFF (EPSG:32755, nodata 0), band- or pixel-interleaved, tiled 64 x 64
    or striped."""
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 3000, (13, size, size)).astype(np.uint16)
    data[:, :8, :8] = 0  # a nodata corner
    layout = {"tiled": True, "blockxsize": 64, "blockysize": 64} if tiled else {"tiled": False}
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=13,
        height=size,
        width=size,
        dtype="uint16",
        crs="EPSG:32755",
        transform=from_origin(west, 8000000, 10, 10),
        nodata=0,
        interleave=interleave,
        compress="deflate",
        **layout,
    ) as dst:
        dst.write(data)
        for i, name in enumerate(S2, start=1):
            dst.set_band_description(i, name)
    return path


# --- acquire: downloads through fsspec (s3fs) ---------------------------------------------------


def test_s3_download_verifies_sha256(tmp_path: Path, store: ObjectStore) -> None:
    body = s2_scene(tmp_path / "s.tif", 64).read_bytes()
    uri = store.put("scenes", "t1/s.tif", body)
    digest = hashlib.sha256(body).hexdigest()
    record = fetch(uri, tmp_path / "got.tif", digest, options(store))
    assert (record.bytes, record.sha256, record.attempts) == (len(body), digest, 1)
    assert (tmp_path / "got.tif").read_bytes() == body
    with pytest.raises(AcquireError, match=f"failed after 2 attempts: sha256 mismatch: expected {'0' * 64}"):
        fetch(uri, tmp_path / "bad.tif", "0" * 64, options(store))
    assert not (tmp_path / "bad.tif").exists()


def test_s3_options_reach_the_server(tmp_path: Path, store: ObjectStore) -> None:
    uri = store.put("scenes", "t2/s.tif", b"x" * 1000, public=True)
    fetch(uri, tmp_path / "a.tif", options=options(store, requester_pays=True))
    signed = [h for h in store.seen if "authorization" in h]
    assert signed and all("/eu-central-1/s3/aws4_request" in h["authorization"] for h in signed)
    assert all(h.get("x-amz-request-payer") == "requester" for h in store.seen)
    store.reset_counts()
    fetch(uri, tmp_path / "b.tif", options=options(store, anonymous=True))
    assert store.seen and not any("authorization" in h for h in store.seen)


def test_s3_500_is_retried(tmp_path: Path, store: ObjectStore) -> None:
    uri = store.put("scenes", "t3/s.tif", b"y" * 5000)
    store.fail(uri, "500")
    record = fetch(uri, tmp_path / "s.tif", options=options(store))
    assert record.attempts == 2 and record.bytes == 5000


def failed_then_corrupt(tmp_path: Path, scene: str, uri: str, opts: AcquireOptions) -> SceneStatus:
    """Acquire a scene that fails, then clean it: its status."""
    assert not acquire_scene(scene, uri, tmp_path / "acq" / scene, options=opts)
    assert sorted(p.name for p in (tmp_path / "acq" / scene).iterdir()) == ["acquire.json"]
    return clean_scene(
        scene, tmp_path / "acq" / scene, tmp_path / "clean" / scene, BandOptions(), CleanOptions(), None
    )


def test_s3_missing_object_ends_corrupt_not_found(tmp_path: Path, store: ObjectStore) -> None:
    store.put("scenes", "t4/other.tif", b"z")
    status = failed_then_corrupt(tmp_path, "gone", "s3://scenes/t4/missing.tif", options(store))
    assert status.status == "corrupt"
    assert "image: s3://scenes/t4/missing.tif: not found" in status.reason


def test_s3_error_mid_download_is_retried_then_corrupt(tmp_path: Path, store: ObjectStore) -> None:
    body = s2_scene(tmp_path / "s.tif", 64).read_bytes()
    uri = store.put("scenes", "t5/s.tif", body)
    store.fail(uri, *["truncate"] * 50)  # every answer announces the whole body and sends half
    status = failed_then_corrupt(tmp_path, "cut", uri, options(store))
    assert status.status == "corrupt"
    assert "failed after 2 attempts" in status.reason and "content length" in status.reason
    assert store.gets["/scenes/t5/s.tif"] >= 2


def test_the_cli_takes_the_storage_options_from_the_config(tmp_path: Path, store: ObjectStore) -> None:
    """As the acquire rule runs it: the ``acquire`` section as JSON, credentials in the environment."""
    body = s2_scene(tmp_path / "s.tif", 64).read_bytes()
    uri = store.put("scenes", "t6/s.tif", body)
    section = {"acquire": {"endpoint_url": store.endpoint_url, "region": "eu-west-3", "retries": 0}}
    cmd = [sys.executable, "-m", "snakemap", "acquire", "s", "--uri", uri, "--sha256="]
    cmd += [
        "--label-uri=",
        "--label-sha256=",
        "--out",
        str(tmp_path / "acq"),
        "--options",
        json.dumps(section),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    record = json.loads((tmp_path / "acq" / "acquire.json").read_text())
    assert record["status"] == "ok" and record["files"]["image"]["bytes"] == len(body)
    assert any("/eu-west-3/s3/" in h.get("authorization", "") for h in store.seen)


def test_a_bad_endpoint_names_the_key() -> None:
    with pytest.raises(ConfigError, match="acquire.endpoint_url"):
        build("acquire", {"endpoint_url": "127.0.0.1:9000"})


# --- apply: reads in place through GDAL (/vsis3/) -----------------------------------------------


def blue_predictor() -> Predictor:
    """Land where b02 is above 1500: a map that depends on every pixel read."""
    norm = Normalizer(np.full(4, 1500.0, np.float32), np.full(4, 500.0, np.float32))
    member = Member(lambda x: torch.cat([x[:, :1], -x[:, :1]], 1), SELECT, norm)
    return Predictor([member], ["land", "water"])


def runner(root: Path, store: ObjectStore, **acquire: object) -> ShardRunner:
    return ShardRunner(
        root,
        blue_predictor(),
        BandOptions(names=S2, select=list(SELECT)),
        CleanOptions(),
        PredictOptions(window=64, overlap=8),
        ApplyOptions(prefetch=0),
        options(store, **acquire),
    )


def test_apply_reads_a_tiled_scene_in_place_band_by_band(tmp_path: Path, store: ObjectStore) -> None:
    path = s2_scene(tmp_path / "s.tif", 256)
    uri = store.put("scenes", "t7/s.tif", path)
    size = path.stat().st_size
    runner(tmp_path / "remote", store).run_shard("shard-00000", [SceneInput("s", uri)])
    in_place = store.bytes_sent
    runner(tmp_path / "local", store).run_shard("shard-00000", [SceneInput("s", str(path))])
    with (
        rasterio.open(tmp_path / "remote/scenes/s.tif") as a,
        rasterio.open(tmp_path / "local/scenes/s.tif") as b,
    ):
        assert a.crs == b.crs == "EPSG:32755" and a.transform == b.transform
        remote, local = a.read(1), b.read(1)
    assert np.array_equal(remote, local) and (remote == 0).any() and (remote == 1).any()
    assert SceneStatus.read(tmp_path / "remote/scenes/s.json").status == "ok"
    # 4 of 13 band-interleaved bands: under half of the file crossed the network, and no download
    assert in_place < size / 2, (in_place, size)
    assert not list((tmp_path / "remote").glob(".scratch/*.tif"))


def test_the_reader_reads_only_the_bands_it_needs(tmp_path: Path) -> None:
    path = s2_scene(tmp_path / "s.tif", 64)
    clean = CleanOptions(qa={"band": 11, "values": [5]})  # b10 by number
    bands = BandOptions(names=S2, select=[2, "b08"], indices=[{"name": "ndre", "a": "b8a", "b": "b05"}])
    assert CleaningReader(path, bands, clean).indexes == list(range(1, 14))  # local: every band
    reader = CleaningReader(path, bands, clean, needed_only=True)
    assert reader.indexes == [2, 5, 8, 9, 11] and reader.names == ["b02", "b08", "ndre"]
    with rasterio.open(path) as src:
        stored = src.read().astype(np.float32)
    cleaned = reader.read_rows(0, 64)
    valid = (stored[[1, 4, 7, 8]] != 0).all(axis=0) & (stored[10] != 5)
    assert np.array_equal(np.isfinite(cleaned[0]), valid)
    assert np.array_equal(cleaned[1][valid], stored[7][valid])
    a, b = stored[8][valid], stored[4][valid]
    assert np.allclose(cleaned[2][valid], (a - b) / (a + b))
    reader.close()


def test_apply_downloads_a_pixel_interleaved_scene(tmp_path: Path, store: ObjectStore) -> None:
    """Each block of a pixel-interleaved file (GDAL 3.10's COGs) holds every band: a band subset
    saves nothing there, so it is downloaded; a striped band-interleaved one is read in place."""
    path = s2_scene(tmp_path / "s.tif", 128, interleave="pixel")
    uri = store.put("scenes", "t8/s.tif", path)
    runner(tmp_path / "maps", store).run_shard("shard-00000", [SceneInput("s", uri)])
    assert SceneStatus.read(tmp_path / "maps/scenes/s.json").status == "ok"
    assert store.bytes_sent >= path.stat().st_size
    store.reset_counts()
    striped = s2_scene(tmp_path / "striped.tif", 128, tiled=False)
    uri = store.put("scenes", "t8/striped.tif", striped)
    runner(tmp_path / "maps", store).run_shard("shard-00001", [SceneInput("striped", uri)])
    assert SceneStatus.read(tmp_path / "maps/scenes/striped.json").status == "ok"
    assert store.bytes_sent < 0.6 * striped.stat().st_size


def test_apply_missing_object_is_corrupt_not_found(tmp_path: Path, store: ObjectStore) -> None:
    store.put("scenes", "t9/other.tif", b"z")
    runner(tmp_path / "maps", store).run_shard("shard-00000", [SceneInput("m", "s3://scenes/t9/m.tif")])
    status = SceneStatus.read(tmp_path / "maps/scenes/m.json")
    assert (status.status, status.reason) == ("corrupt", "s3://scenes/t9/m.tif: not found")


def test_apply_server_error_mid_read_in_place_is_corrupt(tmp_path: Path, store: ObjectStore) -> None:
    body = s2_scene(tmp_path / "s.tif", 256).read_bytes()
    uri = store.put("scenes", "t10/s.tif", body)
    # GDAL writes a plain GeoTIFF's IFD after its tiles and reads in 16 KiB-aligned ranges: the
    # header and the IFD read fine, every tile answers 500 (GDAL retries acquire.retries times)
    ifd = int.from_bytes(body[4:8], "little")
    store.fail(uri, *["500"] * 200, start=16384, stop=ifd // 16384 * 16384)
    runner(tmp_path / "maps", store).run_shard("shard-00000", [SceneInput("s", uri)])
    status = SceneStatus.read(tmp_path / "maps/scenes/s.json")
    assert status.status == "corrupt"
    assert (
        status.reason.startswith("unreadable: /vsis3/scenes/t10/s.tif: ")
        and "IReadBlock failed" in status.reason
    )
    assert not (tmp_path / "maps/scenes/s.tif").exists()


def test_apply_in_place_recovers_from_a_transient_error(tmp_path: Path, store: ObjectStore) -> None:
    """One tile's range answers 500 once, mid-read in place: the read recovers (GDAL asks again)
    and the scene ends ok, its map equal to the local scene's."""
    path = s2_scene(tmp_path / "s.tif", 256)
    body = path.read_bytes()
    uri = store.put("scenes", "t12/s.tif", body)
    ifd = int.from_bytes(body[4:8], "little")
    store.fail(uri, "500", start=16384, stop=ifd // 16384 * 16384)
    runner(tmp_path / "remote", store, retries=2).run_shard("shard-00000", [SceneInput("s", uri)])
    assert store.faults["/scenes/t12/s.tif"] == []  # the fault was met
    assert SceneStatus.read(tmp_path / "remote/scenes/s.json").status == "ok"
    runner(tmp_path / "local", store).run_shard("shard-00000", [SceneInput("s", str(path))])
    with (
        rasterio.open(tmp_path / "remote/scenes/s.tif") as a,
        rasterio.open(tmp_path / "local/scenes/s.tif") as b,
    ):
        assert (a.read(1) == b.read(1)).all()


def test_buffered_apply_reads_its_neighbours_from_the_store(tmp_path: Path, store: ObjectStore) -> None:
    """apply.buffer over s3:// scenes: the inputs' VRT is built, and the neighbours read, with the
    acquire section's endpoint and region (GDAL alone would ask AWS)."""
    uris = [
        store.put("scenes", f"t13/{name}.tif", s2_scene(tmp_path / f"{name}.tif", 128, seed=i, west=west))
        for i, (name, west) in enumerate([("a", 500000), ("b", 501280)])
    ]
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "scene_id,uri,role\n" + "".join(f"{n},{u},apply\n" for n, u in zip("ab", uris, strict=True))
    )
    acquire = {"endpoint_url": store.endpoint_url, "region": "eu-central-1", "retries": 1, "backoff_s": 0.01}
    vrt = tmp_path / "maps" / "inputs.vrt"
    main(
        [
            "inputs-vrt",
            "--manifest",
            str(manifest),
            "--out",
            str(vrt),
            "--options",
            json.dumps({"acquire": acquire}),
        ]
    )
    with rasterio.open(vrt) as src:
        assert len(src.files) == 3 and src.width == 256  # the VRT and both scenes, side by side
    shard = ShardRunner(
        tmp_path / "maps",
        blue_predictor(),
        BandOptions(names=S2, select=list(SELECT)),
        CleanOptions(),
        PredictOptions(window=64, overlap=8),
        ApplyOptions(prefetch=0, buffer=16),
        options(store),
        mosaic_vrt=vrt,
    ).run_shard("shard-00000", [SceneInput(n, u) for n, u in zip("ab", uris, strict=True)])
    assert [e["status"] for e in shard["scenes"]] == ["ok", "ok"]


def test_apply_with_sha256_downloads_and_verifies(tmp_path: Path, store: ObjectStore) -> None:
    path = s2_scene(tmp_path / "s.tif", 128)
    uri = store.put("scenes", "t11/s.tif", path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    scenes = [SceneInput("good", uri, digest), SceneInput("bad", uri, "f" * 64)]
    runner(tmp_path / "maps", store).run_shard("shard-00000", scenes)
    good, bad = (SceneStatus.read(tmp_path / f"maps/scenes/{s}.json") for s in ("good", "bad"))
    assert good.status == "ok" and "acquire_s" in good.extra
    assert bad.status == "corrupt" and f"sha256 mismatch: expected {'f' * 64}" in bad.reason


def test_read_in_place_off_downloads(tmp_path: Path, store: ObjectStore) -> None:
    path = s2_scene(tmp_path / "s.tif", 128)
    uri = store.put("scenes", "t12/s.tif", path)
    runner(tmp_path / "maps", store, read_in_place=False).run_shard("shard-00000", [SceneInput("s", uri)])
    status = SceneStatus.read(tmp_path / "maps/scenes/s.json")
    assert status.status == "ok" and "acquire_s" in status.extra
    assert store.bytes_sent >= path.stat().st_size


def test_apply_in_place_sends_the_storage_options(tmp_path: Path, store: ObjectStore) -> None:
    """GDAL's requests carry what s3fs's do: the region in the signature, the requester-pays
    header, and no signature at all when anonymous."""
    path = s2_scene(tmp_path / "s.tif", 256)
    uri = store.put("scenes", "t13/s.tif", path, public=True)
    runner(tmp_path / "signed", store, requester_pays=True).run_shard("shard-00000", [SceneInput("s", uri)])
    assert SceneStatus.read(tmp_path / "signed/scenes/s.json").status == "ok"
    assert store.bytes_sent < path.stat().st_size / 2  # in place, not downloaded
    assert all("/eu-central-1/s3/aws4_request" in h["authorization"] for h in store.seen)
    assert all(h.get("x-amz-request-payer") == "requester" for h in store.seen)
    uri = store.put("scenes", "t13/again.tif", path, public=True)  # not from GDAL's cache of the first
    store.reset_counts()
    runner(tmp_path / "anon", store, anonymous=True).run_shard("shard-00000", [SceneInput("s", uri)])
    assert SceneStatus.read(tmp_path / "anon/scenes/s.json").status == "ok"
    assert store.seen and not any("authorization" in h for h in store.seen)


def test_apply_downloads_from_a_server_without_ranges(tmp_path: Path, http_server) -> None:
    """GDAL cannot read in place from a web server that ignores ``Range``: apply downloads."""
    path = s2_scene(tmp_path / "s.tif", 128)
    uri = http_server.serve("/s.tif", path.read_bytes())
    root = tmp_path / "maps"
    ShardRunner(
        root,
        blue_predictor(),
        BandOptions(names=S2, select=list(SELECT)),
        CleanOptions(),
        PredictOptions(window=64, overlap=8),
        ApplyOptions(),
        AcquireOptions(retries=0),
    ).run_shard("shard-00000", [SceneInput("s", uri)])
    status = SceneStatus.read(root / "scenes/s.json")
    assert status.status == "ok" and "acquire_s" in status.extra
    with rasterio.open(root / "scenes/s.tif") as src:
        assert src.crs == "EPSG:32755" and src.shape == (128, 128)


def test_a_stac_item_in_a_bucket_cleans_like_the_same_item_on_disk(
    store: ObjectStore, tmp_path: Path, catalog: dict[str, Path]
) -> None:
    """Its relative hrefs resolve to s3:// objects, read in place through /vsis3/ with the
    endpoint that the acquire options give (kept for the clean step in stac.json)."""
    import json

    import numpy as np

    from snakemap.core.sections import BandOptions, CleanOptions, SensorOptions
    from snakemap.data.clean import clean_scene
    from tests.conftest import STAC_ASSETS, STAC_BANDS, STAC_SCL_INVALID

    for path in (catalog["root"] / "item").iterdir():
        if path.suffix in (".tif", ".json") and path.name in {
            "item.json",
            *(f"{a}.tif" for a in STAC_ASSETS.values()),
            "SCL.tif",
        }:
            store.put("stac", f"s2/{path.name}", path)
    sensor = SensorOptions(
        bands=STAC_BANDS, assets=STAC_ASSETS, mask={"asset": "SCL", "values": STAC_SCL_INVALID}
    )
    images = {}
    for name, uri in (("bucket", "s3://stac/s2/item.json"), ("disk", str(catalog["item"]))):
        acquired = tmp_path / f"acq-{name}"
        assert acquire_scene(name, uri, acquired, options=options(store), sensor=sensor)
        status = clean_scene(
            name, acquired, tmp_path / name, BandOptions(select=STAC_BANDS), CleanOptions(), None, sensor
        )
        assert status.status == "ok", status.reason
        with rasterio.open(tmp_path / name / "image.tif") as src:
            images[name] = src.read()
    assert "/vsis3/stac/s2/B02.tif" in (tmp_path / "acq-bucket" / "image.vrt").read_text()
    assert (
        json.loads((tmp_path / "acq-bucket" / "stac.json").read_text())["env"]["AWS_VIRTUAL_HOSTING"]
        == "FALSE"
    )
    np.testing.assert_array_equal(images["bucket"], images["disk"])
