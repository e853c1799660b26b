"""Object storage: how fsspec (downloads) and GDAL (reads in place) reach ``s3://``, ``gs://`` and
``http(s)://`` scenes, from the ``acquire`` section of the config.

Credentials never come from the config: fsspec (s3fs, gcsfs) and GDAL read the usual environment
variables and files (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
``AWS_PROFILE``, ``GOOGLE_APPLICATION_CREDENTIALS``). The config says where the store is
(``endpoint_url``, ``region``) and how to ask (``anonymous``, ``requester_pays``).
"""

from __future__ import annotations

import math
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from snakemap.core.sections import AcquireOptions

#: GDAL's virtual file systems for remote schemes
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}

#: schemes read over the network; fsspec downloads them, GDAL reads them in place
REMOTE = ("s3", "gs", "http", "https")


def scheme(uri: str) -> str:
    """The URI's scheme in lower case; ``""`` for a plain path."""
    return urllib.parse.urlparse(uri).scheme.lower()


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names an object in a bucket or on a web server."""
    return scheme(uri) in REMOTE


def fsspec_options(uri: str, options: AcquireOptions) -> dict[str, Any]:
    """Keyword arguments of ``fsspec.open`` (s3fs's or gcsfs's) for ``uri``.

    Retries are :func:`snakemap.data.acquire.fetch`'s (``acquire.retries``): botocore's own are turned
    off (and fetch sets s3fs's to one try), so that a server error costs what the config says.
    """
    kind = scheme(uri)
    if kind == "s3":
        client: dict[str, Any] = {}
        if options.endpoint_url:
            client["endpoint_url"] = options.endpoint_url
        if options.region:
            client["region_name"] = options.region
        timeout = options.timeout_s
        return {
            "anon": options.anonymous,
            "requester_pays": options.requester_pays,
            "client_kwargs": client,
            "config_kwargs": {
                "retries": {"total_max_attempts": 1, "mode": "standard"},
                "connect_timeout": timeout,
                "read_timeout": timeout,
            },
            # each attempt asks the server again (a cached listing would hide a fixed object)
            "skip_instance_cache": True,
        }
    if kind == "gs":
        # gcsfs bills the project it is given, GDAL the one in GS_USER_PROJECT: the same one
        payer: bool | str = options.requester_pays and (os.environ.get("GS_USER_PROJECT") or True)
        found: dict[str, Any] = {"requester_pays": payer, "skip_instance_cache": True}
        if options.anonymous:
            found["token"] = "anon"
        if options.endpoint_url:
            found["endpoint_url"] = options.endpoint_url
        return found
    return {}


def gdal_options(uri: str, options: AcquireOptions) -> dict[str, str]:
    """GDAL config options (for ``rasterio.Env``) that read ``uri`` through ``/vsis3/``,
    ``/vsigs/`` or ``/vsicurl/`` as fsspec would download it.

    An ``http://`` endpoint (MinIO, a local test server) is reached without TLS and with
    path-style addressing (``host/bucket/key``), as s3fs does with an ``endpoint_url``.
    """
    found = {
        # GDAL retries 429 and 5xx answers itself, as fetch() does for downloads
        "GDAL_HTTP_MAX_RETRY": str(max(0, options.retries)),
        "GDAL_HTTP_RETRY_DELAY": str(options.backoff_s),
        "GDAL_HTTP_TIMEOUT": str(max(1, math.ceil(options.timeout_s))),
        # a scene is one object: never list its "folder" (a bucket of 100,000 scenes)
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    }
    kind = scheme(uri)
    if kind == "s3":
        if options.endpoint_url:
            endpoint = urllib.parse.urlparse(options.endpoint_url)
            found["AWS_S3_ENDPOINT"] = endpoint.netloc + endpoint.path.rstrip("/")
            found["AWS_HTTPS"] = "NO" if endpoint.scheme == "http" else "YES"
            found["AWS_VIRTUAL_HOSTING"] = "FALSE"
        if options.region:
            found["AWS_REGION"] = options.region
        if options.anonymous:
            found["AWS_NO_SIGN_REQUEST"] = "YES"
        if options.requester_pays:
            found["AWS_REQUEST_PAYER"] = "requester"
    elif kind == "gs":
        if options.endpoint_url:
            found["CPL_GS_ENDPOINT"] = options.endpoint_url.rstrip("/") + "/"
        if options.anonymous:
            found["GS_NO_SIGN_REQUEST"] = "YES"
    return found


def local_path(uri: str) -> Path | None:
    """The file a local path or ``file://`` URI names; None for any other scheme."""
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(uri).path))
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # C:\... on Windows
        return Path(uri)
    return None


def gdal_path(uri: str, folder: str | os.PathLike[str]) -> str:
    """How GDAL, run in ``folder``, opens a manifest URI.

    A relative local path becomes relative to ``folder`` (so the VRT moves with the project), an
    absolute one stays; http(s), s3 and gs URIs go through GDAL's ``/vsicurl/``, ``/vsis3/`` and
    ``/vsigs/``.

    Raises:
        ValueError: naming the URI, for a scheme GDAL cannot read.
    """
    local = local_path(uri)
    if local is not None and local.is_absolute():
        return str(local)
    if local is not None:
        return os.path.relpath(local.absolute(), Path(folder).absolute())
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme not in _VSI:
        raise ValueError(f"{uri}: GDAL reads no {scheme}:// in a VRT (use a local path, http(s), s3 or gs)")
    return _VSI[scheme] + (uri if scheme.startswith("http") else uri.split("://", 1)[1])
