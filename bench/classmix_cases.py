"""Class-mix test cases for bench/quality.py, built from the real UKIS Landsat 7 scene (cleaned).

Water is rare in the shared labelled scenes (0.3% of the Sentinel-2 scene, 2.4% of the Landsat 7
one), so the cases are made from the held-out Landsat 7 scene as far as its pixels allow:

- ``L7 full``: the whole scene (another sensor than training).
- ``L7 cloud-free``, ``L7 mostly cloud``, ``L7 mostly land``: ``CROP``-pixel windows (every 32
  pixels): under 2% cloud and shadow with the most water, the most cloud, and the most clear land
  apart from the cloud-free one.
- ``L7 water-rich``: the scene's 32-pixel label chips that are at least half water, tiled 8 x 8
  with random flips and rotations into a 256-pixel image: about two-thirds water, so its own
  statistics are those of a water-rich scene (what ``normalize: scene`` sees on a flood).
- ``L7 at 10 m``: the scene resampled bilinearly to a third of its pixel size (labels: nearest),
  its centre ``3 * CROP`` pixels: the same ground seen at Sentinel-2's 10 m.

Each case is a folder like the workflow's ``results/clean/{scene}``: ``image.tif`` (float32, NaN
nodata, named bands and indices) and ``label.tif`` (uint8 class indices, 255 ignored).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

CROP = 160


def _write(
    folder: Path, image: np.ndarray, label: np.ndarray, names: list[str], crs: object, transform: Affine
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": image.shape[1],
        "width": image.shape[2],
        "crs": crs,
        "transform": transform,
    }
    with rasterio.open(
        folder / "image.tif", "w", count=len(image), dtype="float32", nodata=np.nan, **profile
    ) as dst:
        dst.write(image.astype(np.float32))
        dst.descriptions = tuple(names)
    with rasterio.open(folder / "label.tif", "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write(label.astype(np.uint8)[None])
    return folder


def _window_shares(
    label: np.ndarray, classes: list[str], size: int, step: int = 32
) -> list[tuple[int, int, dict[str, float]]]:
    out = []
    for r in range(0, label.shape[0] - size + 1, step):
        for c in range(0, label.shape[1] - size + 1, step):
            window = label[r : r + size, c : c + size]
            valid = window < len(classes)
            if valid.mean() < 0.9:
                continue
            out.append((r, c, {k: float((window[valid] == i).mean()) for i, k in enumerate(classes)}))
    return out


def build_cases(clean: Path, classes: list[str], work: Path, seed: int = 0) -> dict[str, Path]:
    """The case folders (see the module docstring) of a cleaned, labelled scene, by case name."""
    with rasterio.open(clean / "image.tif") as src:
        image, names, crs, transform = src.read(), list(src.descriptions), src.crs, src.transform
    with rasterio.open(clean / "label.tif") as src:
        label = src.read(1)
    cases = {"L7 full": clean}
    windows = _window_shares(label, classes, CROP)
    clear = [w for w in windows if w[2]["cloud"] + w[2]["cloud_shadow"] < 0.02] or windows
    picks = {
        # cloud-free with as much water as there is (a flood scene's mix)
        "L7 cloud-free": max(clear, key=lambda w: w[2]["water"] - w[2]["cloud"] - w[2]["cloud_shadow"]),
        "L7 mostly cloud": max(windows, key=lambda w: w[2]["cloud"]),
    }
    r0, c0 = picks["L7 cloud-free"][:2]
    apart = [w for w in windows if abs(w[0] - r0) >= CROP or abs(w[1] - c0) >= CROP] or windows
    picks["L7 mostly land"] = max(apart, key=lambda w: w[2]["clear_land"])  # not the cloud-free one
    for name, (r, c, _) in picks.items():
        crop = (slice(r, r + CROP), slice(c, c + CROP))
        moved = transform * Affine.translation(c, r)
        cases[name] = _write(
            work / name.replace(" ", "_"), image[:, crop[0], crop[1]], label[crop], names, crs, moved
        )
    # water-rich: chips at least half water, tiled with flips and rotations
    water = classes.index("water")
    rng = np.random.default_rng(seed)
    chips = []
    for r in range(0, label.shape[0] - 32 + 1, 16):
        for c in range(0, label.shape[1] - 32 + 1, 16):
            lab = label[r : r + 32, c : c + 32]
            if (lab == water).mean() >= 0.5 and np.isfinite(image[:, r : r + 32, c : c + 32]).all():
                chips.append((image[:, r : r + 32, c : c + 32], lab))
    if not chips:
        raise SystemExit(f"{clean}: no 32-pixel chip is half water")
    tiles_img = np.zeros((len(names), 256, 256), np.float32)
    tiles_lab = np.zeros((256, 256), np.uint8)
    for i in range(8):
        for j in range(8):
            img, lab = chips[int(rng.integers(len(chips)))]
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            img, lab = np.rot90(img, k, axes=(1, 2)), np.rot90(lab, k)
            if flip:
                img, lab = img[:, :, ::-1], lab[:, ::-1]
            tiles_img[:, 32 * i : 32 * i + 32, 32 * j : 32 * j + 32] = img
            tiles_lab[32 * i : 32 * i + 32, 32 * j : 32 * j + 32] = lab
    cases["L7 water-rich"] = _write(work / "L7_water-rich", tiles_img, tiles_lab, names, crs, transform)
    # 10 m: bilinear bands, nearest labels, the centre 3 * CROP pixels
    import torch
    import torch.nn.functional as F

    up = F.interpolate(torch.from_numpy(image)[None], scale_factor=3, mode="bilinear", align_corners=False)[
        0
    ].numpy()
    lab_up = np.repeat(np.repeat(label, 3, 0), 3, 1)
    side = 3 * CROP
    r0, c0 = (up.shape[1] - side) // 2, (up.shape[2] - side) // 2
    window = (slice(r0, r0 + side), slice(c0, c0 + side))
    moved = transform * Affine.translation(c0 / 3, r0 / 3) * Affine.scale(1 / 3)
    cases["L7 at 10 m"] = _write(
        work / "L7_at_10m", up[:, window[0], window[1]], lab_up[window], names, crs, moved
    )
    return cases


def shares(folder: Path, classes: list[str]) -> dict[str, float]:
    """The class shares of a case's labelled pixels."""
    with rasterio.open(folder / "label.tif") as src:
        label = src.read(1)
    valid = label < len(classes)
    return {k: round(float((label[valid] == i).mean()), 3) for i, k in enumerate(classes)}
