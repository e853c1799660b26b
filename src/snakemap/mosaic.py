"""Mosaics of the ok scenes: a VRT over their class maps and a downsampled overview COG.

GDAL's command-line tools build them (Debian's ``gdal-bin``, or conda's ``gdal``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from affine import Affine

from snakemap.io import atomic_path, write_cog


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install GDAL's command-line tools ('apt-get install gdal-bin')")
    return path


def build_mosaic(
    maps: Sequence[str | os.PathLike[str]],
    vrt: str | os.PathLike[str],
    overview: str | os.PathLike[str],
    factor: int = 8,
) -> None:
    """Write ``vrt`` over ``maps`` and ``overview``, a COG downsampled by ``factor`` (mode).

    Paths inside the VRT are relative to it, so the results folder can move. With no map at all
    the VRT and overview are still written (1 x 1 pixel of nodata) so that the run completes.
    """
    vrt, overview = Path(vrt), Path(overview)
    vrt.parent.mkdir(parents=True, exist_ok=True)
    if not maps:
        _empty(vrt, overview)
        return
    with atomic_path(vrt, suffix=".vrt") as tmp_vrt:
        listing = tmp_vrt.with_suffix(".txt")
        try:
            listing.write_text("".join(f"{os.path.relpath(m, vrt.parent)}\n" for m in maps))
            subprocess.run([_tool("gdalbuildvrt"), "-q", "-overwrite", "-input_file_list", str(listing),
                            str(tmp_vrt)], check=True, cwd=vrt.parent)  # fmt: skip
        finally:
            listing.unlink(missing_ok=True)
        # The VRT's relative paths hold for its final name in the same folder.
        with atomic_path(overview, suffix=".tif") as tmp_cog:
            pct = f"{100 / factor:g}%"
            subprocess.run([_tool("gdal_translate"), "-q", "-of", "COG", "-outsize", pct, pct, "-r", "mode",
                            "-co", "COMPRESS=DEFLATE", str(tmp_vrt.resolve()), str(tmp_cog)],
                           check=True, cwd=vrt.parent)  # fmt: skip


def _empty(vrt: Path, overview: Path) -> None:
    """No ok scene: a 1 x 1 nodata VRT and overview, so that the run completes."""
    with atomic_path(vrt, suffix=".vrt") as tmp:
        tmp.write_text('<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
                       "<NoDataValue>255</NoDataValue></VRTRasterBand></VRTDataset>\n")  # fmt: skip
    write_cog(overview, np.full((1, 1, 1), 255, dtype=np.uint8), {"crs": None, "transform": Affine.identity(),
                                                                  "nodata": 255})  # fmt: skip
