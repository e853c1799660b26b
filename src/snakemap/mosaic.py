"""Mosaics of the ok scenes: a VRT over their class maps and a downsampled overview COG; and the
VRT of all apply scenes that ``apply.buffer`` reads neighbouring pixels from.

GDAL's command-line tools build them (Debian's ``gdal-bin``, or conda's ``gdal``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from snakemap.acquire import local_path
from snakemap.io import atomic_path, write_cog

log = logging.getLogger(__name__)
#: GDAL's virtual file systems for the remote schemes that scenes come from
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} not found: install GDAL's command-line tools ('apt-get install gdal-bin')"
        )
    return path


def build_mosaic(
    maps: Sequence[str | os.PathLike[str]],
    vrt: str | os.PathLike[str],
    overview: str | os.PathLike[str],
    factor: int = 8,
    resampling: str = "mode",
) -> None:
    """Write ``vrt`` over ``maps`` and ``overview``, a COG downsampled by ``factor`` with GDAL's
    ``resampling`` (``mode`` for class maps, ``average`` for fields).

    Paths inside the VRT are relative to it, so the results folder can move. With no map at all
    the VRT and overview are still written (1 x 1 pixel of nodata) so that the run completes.
    """
    vrt, overview = Path(vrt), Path(overview)
    vrt.parent.mkdir(parents=True, exist_ok=True)
    if not maps:
        _empty(vrt, overview)
        return
    with atomic_path(vrt, suffix=".vrt") as tmp_vrt:
        _build_vrt([os.path.relpath(m, vrt.parent) for m in maps], tmp_vrt)
        # The VRT's relative paths hold for its final name in the same folder.
        with atomic_path(overview, suffix=".tif") as tmp_cog:
            pct = f"{100 / factor:g}%"
            subprocess.run(
                [
                    _tool("gdal_translate"),
                    "-q",
                    "-of",
                    "COG",
                    "-outsize",
                    pct,
                    pct,
                    "-r",
                    resampling,
                    "-co",
                    "COMPRESS=DEFLATE",
                    str(tmp_vrt.resolve()),
                    str(tmp_cog),
                ],
                check=True,
                cwd=vrt.parent,
            )


def _build_vrt(paths: Sequence[str], vrt: Path) -> None:
    """Run gdalbuildvrt into ``vrt`` (absolute) over ``paths``, as GDAL opens them from its folder."""
    listing = vrt.with_suffix(".txt")
    try:
        listing.write_text("".join(f"{p}\n" for p in paths))
        command = [_tool("gdalbuildvrt"), "-q", "-overwrite", "-input_file_list", str(listing), str(vrt)]
        subprocess.run(command, check=True, cwd=vrt.parent)
    finally:
        listing.unlink(missing_ok=True)


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


def build_inputs_vrt(uris: Sequence[str], vrt: str | os.PathLike[str]) -> None:
    """Write ``vrt`` over the scenes at ``uris`` (the apply scenes, quads tiling the ground).

    A scene GDAL cannot add (unreadable, another band count or CRS) is left out with a warning
    in the log: its neighbours then predict without its context.
    """
    vrt = Path(vrt)
    paths = [gdal_path(u, vrt.parent) for u in uris]
    with atomic_path(vrt, suffix=".vrt") as tmp:
        _build_vrt(paths, tmp)
        with rasterio.open(tmp) as src:
            listed = {os.path.normpath(os.path.join(tmp.parent, f)) for f in src.files[1:]}
    for uri, path in zip(uris, paths, strict=True):
        if os.path.normpath(os.path.join(vrt.parent.absolute(), path)) not in listed:
            log.warning("%s is not in %s (GDAL could not add it): its neighbours lack its context", uri, vrt)


def _empty(vrt: Path, overview: Path) -> None:
    """No ok scene: a 1 x 1 nodata VRT and overview, so that the run completes."""
    with atomic_path(vrt, suffix=".vrt") as tmp:
        tmp.write_text(
            '<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
            "<NoDataValue>255</NoDataValue></VRTRasterBand></VRTDataset>\n"
        )
    write_cog(
        overview,
        np.full((1, 1, 1), 255, dtype=np.uint8),
        {"crs": None, "transform": Affine.identity(), "nodata": 255},
    )
