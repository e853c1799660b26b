"""Acquire: copy or download a scene (and its label), verify it, retry transient failures.

Output layout of one scene, ``resources/scenes/{scene}/``:

- ``acquire.json``: always; ``status`` is ``ok`` or ``corrupt`` (the scenes' state words) with
  the reason, and per file the URI, size, sha256 and the number of attempts.
- ``image.tif`` and, when the manifest gives a ``label_uri``, ``label.tif`` (or a vector label
  as ``label.{gpkg,shp,geojson,fgb,parquet,...}``, a Shapefile with its ``.shx``, ``.dbf``,
  ``.prj``): only when ok.

A scene that cannot be acquired is not an error of the run: its record says why, and the clean
step turns it into a corrupt scene while every other scene goes on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any

from snakemap.core.io import atomic_path, write_json
from snakemap.core.sections import AcquireOptions, SensorOptions
from snakemap.core.status import SceneError
from snakemap.core.storage import fsspec_options, local_path, scheme
from snakemap.data.stac_scenes import (
    SIDECAR,
    ItemScene,
    environment,
    is_item,
    read_item,
    resolve,
    write_vrt,
)
from snakemap.data.vector_labels import SHAPEFILE_PARTS, is_vector, vector_suffix

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RECORD = "acquire.json"


class AcquireError(SceneError):
    """A file that could not be acquired, after all retries: its scene is corrupt."""


class _Transient(Exception):
    """A failure worth retrying: a 5xx answer, a dropped connection, a short or bad read."""


@dataclass
class FetchRecord:
    """What was fetched: written into ``acquire.json``."""

    uri: str
    bytes: int
    sha256: str
    attempts: int


def fetch(
    uri: str, dest: str | os.PathLike[str], sha256: str = "", options: AcquireOptions | None = None
) -> FetchRecord:
    """Copy or download ``uri`` to ``dest`` atomically, verifying ``sha256`` when given.

    Transient failures (HTTP 5xx and 429, dropped connections, truncated bodies, checksum
    mismatches of a download) are retried with exponential backoff; anything else fails at once,
    a local file's checksum mismatch too (it will not change).

    Raises:
        AcquireError: naming the URI and the last reason.
    """
    opts = options or AcquireOptions()
    attempts = 1 + max(0, opts.retries)
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            with atomic_path(dest) as tmp:
                size, digest = _copy_to(uri, tmp, opts)
                if sha256 and digest.lower() != sha256.lower():
                    mismatch = f"sha256 mismatch: expected {sha256.lower()}, got {digest}"
                    if local_path(uri) is not None:  # a local file will not change: no retry
                        raise AcquireError(f"{uri}: {mismatch}")
                    raise _Transient(mismatch)
            return FetchRecord(uri=uri, bytes=size, sha256=digest, attempts=attempt)
        except _Transient as exc:
            last = str(exc)
            if attempt < attempts:
                delay = opts.backoff_s * 2 ** (attempt - 1)
                log.warning("%s: attempt %d failed (%s); retrying in %.1fs", uri, attempt, last, delay)
                time.sleep(delay)
        except AcquireError:
            raise
        except Exception as exc:  # any other failure is final and reported
            raise AcquireError(f"{uri}: {type(exc).__name__}: {exc}") from exc
    raise AcquireError(f"{uri}: failed after {attempts} attempts: {last}")


def _copy_to(uri: str, tmp: Path, opts: AcquireOptions) -> tuple[int, str]:
    """Stream ``uri`` into ``tmp``; return its size and sha256."""
    with tmp.open("wb") as out:
        return _send(uri, out, opts)


def _send(uri: str, out: IO[bytes], opts: AcquireOptions) -> tuple[int, str]:
    """Stream ``uri`` into ``out``; return its size and sha256."""
    if urllib.parse.urlparse(uri).scheme.lower() in ("http", "https"):
        return _copy_http(uri, out, opts.timeout_s)
    path = local_path(uri)
    if path is not None:
        if not path.is_file():
            raise AcquireError(f"{uri}: no such file {path}")
        with path.open("rb") as src:
            return _stream(src, out)
    return _copy_fsspec(uri, out, opts)


class _Discard(io.RawIOBase):
    """Where bytes that are only hashed go."""

    def write(self, data: Any) -> int:
        return len(data)


def sha256_of(uri: str, options: AcquireOptions | None = None) -> str:
    """The sha256 of the file at ``uri``, streamed (nothing kept), with ``fetch``'s retries.

    Raises:
        AcquireError: naming the URI and the last reason.
    """
    opts = options or AcquireOptions()
    last = ""
    for attempt in range(1, 2 + max(0, opts.retries)):
        try:
            return _send(uri, _Discard(), opts)[1]  # type: ignore[arg-type]
        except _Transient as exc:
            last = str(exc)
            if attempt <= opts.retries:
                time.sleep(opts.backoff_s * 2 ** (attempt - 1))
        except AcquireError:
            raise
        except Exception as exc:
            raise AcquireError(f"{uri}: {type(exc).__name__}: {exc}") from exc
    raise AcquireError(f"{uri}: failed after {1 + max(0, opts.retries)} attempts: {last}")


def _copy_fsspec(uri: str, out: IO[bytes], opts: AcquireOptions) -> tuple[int, str]:
    """Stream an ``s3://``, ``gs://`` (or other fsspec) object into ``out``."""
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri, **fsspec_options(uri, opts))
        if hasattr(fs, "retries"):  # s3fs's own retry loop: one try per attempt of ours
            fs.retries = 1
        src = fs.open(path, "rb")
    except (ImportError, ValueError) as exc:
        raise AcquireError(
            f"{uri}: cannot open {scheme(uri)}:// ({exc}); install the fsspec filesystem for it "
            "(s3fs for s3://, gcsfs for gs://)"
        ) from exc
    except FileNotFoundError as exc:
        raise AcquireError(f"{uri}: not found") from exc
    except PermissionError as exc:
        raise AcquireError(f"{uri}: access denied ({exc})") from exc
    except OSError as exc:  # s3fs's answer to a 5xx or a dropped connection
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    try:
        with src:
            return _stream(src, out)
    except Exception as exc:  # mid-body (aiohttp's short-body error is no OSError): retry it
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc


def _copy_http(uri: str, out: IO[bytes], timeout_s: float) -> tuple[int, str]:
    request = urllib.request.Request(uri, headers={"User-Agent": "snakemap"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # fetch() sends only http(s) here
            expected = resp.headers.get("Content-Length")
            size, digest = _stream(resp, out)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        raise AcquireError(f"{uri}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    if expected is not None and int(expected) != size:
        raise _Transient(f"truncated download: {size} of {expected} bytes")
    return size, digest


def _stream(src: IO[bytes], out: IO[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def acquire_scene(
    scene_id: str,
    uri: str,
    out_dir: str | os.PathLike[str],
    sha256: str = "",
    label_uri: str = "",
    label_sha256: str = "",
    options: AcquireOptions | None = None,
    sensor: SensorOptions | None = None,
    sensor_name: str = "",
) -> bool:
    """Acquire one scene into ``out_dir`` (see the module docstring for the layout).

    A STAC Item (:mod:`snakemap.data.stac_scenes`) is not copied: its JSON is (``item.json``,
    checked against ``sha256``), its mapped assets are checked to answer (and against their
    ``file:checksum``), and ``image.vrt`` with ``stac.json`` read them where they lie.

    Args:
        sensor: the row's sensor entry (a STAC Item's band assets and mask); None: ``bands.names``.

    Returns:
        True when every file was acquired; False when the record says ``corrupt``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, object] = {"scene_id": scene_id, "status": "ok", "reason": "", "files": {}}
    files: dict[str, object] = {}
    for stale in [
        *out.glob("label.*"),
        out / "image.vrt",
        out / "image.tif",
        out / SIDECAR,
        out / "item.json",
    ]:
        stale.unlink(missing_ok=True)  # what an earlier manifest row left (another format, say)
    if is_item(uri):
        try:
            files["item"] = _acquire_item(uri, out, sha256, options, sensor, sensor_name)
        except SceneError as exc:
            log.error("scene %s: STAC item failed: %s", scene_id, exc)
            record.update(status="corrupt", reason=f"image: {exc}", files=files)
            for partial in (out / "image.vrt", out / SIDECAR, out / "item.json"):
                partial.unlink(missing_ok=True)
            write_json(out / RECORD, record)
            return False
    wanted = [] if is_item(uri) else [("image", uri, sha256, "image.tif")]
    if label_uri and is_vector(label_uri):
        suffix = vector_suffix(label_uri)
        wanted.append(("label", label_uri, label_sha256, f"label{suffix}"))
        if suffix == ".shp":  # its other files beside it: .shx and .dbf required, .prj and .cpg if there
            stem = label_uri[: -len(suffix)]
            wanted += [(f"label{p}", stem + p, "", f"label{p}") for p in SHAPEFILE_PARTS]
    elif label_uri:
        wanted.append(("label", label_uri, label_sha256, "label.tif"))
    for kind, file_uri, checksum, name in wanted:
        try:
            files[kind] = asdict(fetch(file_uri, out / name, checksum, options))
        except AcquireError as exc:
            if kind in ("label.prj", "label.cpg"):
                continue  # optional parts of a Shapefile
            log.error("scene %s: %s failed: %s", scene_id, kind, exc)
            record.update(status="corrupt", reason=f"{kind}: {exc}")
            # Never leave a partial scene: a failed scene holds its record alone.
            for partial in [
                out / "image.tif",
                out / "image.vrt",
                out / SIDECAR,
                out / "item.json",
                *out.glob("label.*"),
            ]:
                partial.unlink(missing_ok=True)
            break
    record["files"] = files
    write_json(out / RECORD, record)
    return record["status"] == "ok"


def _acquire_item(
    uri: str,
    out: Path,
    sha256: str,
    options: AcquireOptions | None,
    sensor: SensorOptions | None,
    sensor_name: str,
) -> dict[str, object]:
    """A STAC Item scene into ``out``: ``item.json``, ``image.vrt``, ``stac.json``; its record.

    Raises:
        SceneError: naming the item and the asset (AcquireError for the item's own file).
    """
    if sensor is None:
        raise SceneError(f"{uri} is a STAC Item: its manifest row needs a sensor (the assets of its bands)")
    opts = options or AcquireOptions()
    fetched = fetch(uri, out / "item.json", sha256, opts)
    item = read_item((out / "item.json").read_bytes(), uri)
    scene = resolve(item, sensor, sensor_name)
    checked = verify_checksums(scene, item, opts)
    env = environment(scene, opts)
    write_vrt(scene, out / "image.vrt", env)
    write_json(out / SIDECAR, scene.sidecar(env))
    return {**asdict(fetched), "item_id": item.id, "assets": scene.paths, "checksums_verified": checked}


def verify_checksums(scene: ItemScene, item: Any, options: AcquireOptions | None = None) -> dict[str, str]:
    """Stream every asset with a ``file:checksum`` (a sha2-256 multihash) and compare.

    Raises:
        SceneError: naming the item and the asset, for a mismatch or an unsupported hash.
    """
    checked = {}
    for key, expected in scene.checksums.items():
        if not expected.startswith("1220"):
            raise SceneError(
                f"STAC item {scene.item_id}: asset {key} file:checksum {expected} is not sha2-256"
            )
        digest = sha256_of(item.assets[key].get_absolute_href(), options)
        if digest != expected[4:].lower():
            raise SceneError(
                f"STAC item {scene.item_id}: asset {key} fails its file:checksum ({expected[4:]} expected, "
                f"{digest} read)"
            )
        checked[key] = digest
    return checked
