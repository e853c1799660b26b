"""Report figures: calval scores of models, ensembles and baselines, training curves, map previews.

Every function writes one PNG (atomically) with seaborn/matplotlib on the Agg backend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import rasterio
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from snakemap.core.io import NODATA_CLASS, atomic_path, read_json
from snakemap.core.palette import class_colors


def _save(fig: Figure, out: str | os.PathLike[str]) -> None:
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def iou_bars(metrics_files: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> None:
    """Per-class IoU (and macro IoU) of every predictor, baselines beside models."""
    rows = []
    for path in metrics_files:
        m = read_json(path)
        overall = m["overall"]
        rows += [
            {"predictor": m["predictor"], "class": c, "IoU": v["iou"]}
            for c, v in overall["per_class"].items()
        ]
        rows.append({"predictor": m["predictor"], "class": "macro", "IoU": overall["macro"]["iou"]})
    table = pd.DataFrame(rows)
    fig, ax = plt.subplots(
        figsize=(max(6, 1.2 * table["class"].nunique() * max(1, table["predictor"].nunique() / 3)), 4)
    )
    sns.barplot(table, x="class", y="IoU", hue="predictor", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_title("IoU at the calval sites")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    _save(fig, out)


def pr_curves(metrics_files: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> None:
    """Precision-recall curves of the target class, the F1-optimal point marked."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    drawn = 0
    for path in metrics_files:
        m = read_json(path)
        if "pr" not in m:
            continue
        pr = m["pr"]
        line = ax.plot(pr["recall"], pr["precision"], label=m["predictor"])[0]
        best = int(np.argmax(pr["f1"]))
        ax.plot(pr["recall"][best], pr["precision"][best], "o", color=line.get_color())
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no single target class: no PR curve", ha="center", va="center")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Target class: precision-recall (dots: best F1)")
    if drawn:
        ax.legend(fontsize=7, loc="lower left")
    _save(fig, out)


def confusion_matrices(metrics_files: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> None:
    """Row-normalised confusion matrices (reference rows, predicted columns), one per predictor."""
    metrics = [read_json(p) for p in metrics_files]
    cols = min(3, len(metrics))
    rows = int(np.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics, strict=False):
        cm = np.asarray(m["overall"]["confusion"], dtype=np.float64)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        sns.heatmap(
            norm,
            annot=True,
            fmt=".2f",
            vmin=0,
            vmax=1,
            cmap="Blues",
            cbar=False,
            ax=ax,
            xticklabels=m["classes"],
            yticklabels=m["classes"],
            annot_kws={"size": 7},
        )
        ax.set_title(m["predictor"], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    _save(fig, out)


def training_curves(metrics_csvs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> None:
    """Training loss and validation IoU per epoch of every training job."""
    frames = []
    for path in metrics_csvs:
        table = pd.read_csv(path)
        table["model"] = str(Path(path).parent.relative_to(Path(path).parents[1]))
        frames.append(table)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if frames:
        data = pd.concat(frames, ignore_index=True)
        for ax, col in zip(axes, ("train_loss", "val_iou"), strict=True):
            if col in data:
                sns.lineplot(data, x="epoch", y=col, hue="model", marker="o", ax=ax)
            ax.set_title(col)
    _save(fig, out)


#: Display gamma of the image panel: reflectance is linear in light, screens expect gamma-encoded values.
DISPLAY_GAMMA = 2.2
#: Colour of nodata pixels in the image panel (clouds are white, so nodata is not).
NODATA_GREY = "0.6"
#: Colour of the wrong pixels in a preview's error panel: no class of the palette's
ERROR_COLOR = "#ff00ff"


def stretch(
    bands: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0), gamma: float = DISPLAY_GAMMA
) -> np.ndarray:
    """Stretch each band on its own for display: its percentiles over its finite pixels to 0 and 1.

    Values are clipped to 0..1, then raised to ``1 / gamma`` (the two ends stay at 0 and 1; ``gamma=1``
    is a plain linear stretch). The gamma keeps dark surfaces readable in scenes where bright clouds
    take more than 2% of the pixels and so set the 98th percentile.

    Args:
        bands: ``(C, H, W)`` values, NaN (or inf) where a pixel is invalid.
        percentiles: the low and high percentiles mapped to 0 and 1.
        gamma: display gamma.

    Returns:
        ``(H, W, C)`` float32 in 0..1, NaN where the input is not finite. A constant band maps to 0.
    """
    out = np.full((*bands.shape[1:], bands.shape[0]), np.nan, dtype=np.float32)
    for i, band in enumerate(np.asarray(bands, dtype=np.float64)):
        ok = np.isfinite(band)
        if ok.any():
            lo, hi = np.percentile(band[ok], percentiles)
            out[ok, i] = np.clip((band[ok] - lo) / max(hi - lo, 1e-12), 0, 1) ** (1 / gamma)
    return out


def display_bands(names: Sequence[str | None], count: int) -> list[int]:
    """1-based indexes of the bands shown: red, green, blue by name, else the first three, else the first."""
    lowered = [(n or "").lower() for n in names]
    if all(c in lowered for c in ("red", "green", "blue")):
        return [lowered.index(c) + 1 for c in ("red", "green", "blue")]
    return [1, 2, 3] if count >= 3 else [1]


def image_panel(image: str | os.PathLike[str]) -> np.ndarray:
    """The image panel of a preview: ``(H, W, 4)`` RGBA in 0..1, stretched, transparent where invalid.

    Invalid pixels are the raster's nodata and non-finite values, in any of the shown bands; a one- or
    two-band raster is shown as its first band in grey.
    """
    with rasterio.open(image) as src:
        bands = display_bands(src.descriptions, src.count)
        data = src.read(bands, out_dtype="float32", masked=True).filled(np.nan)
    rgb = stretch(data)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    valid = np.isfinite(rgb).all(axis=-1)
    return np.dstack([np.nan_to_num(rgb), valid]).astype(np.float32)


def preview(
    image: str | os.PathLike[str],
    label: str | os.PathLike[str],
    prediction: str | os.PathLike[str],
    classes: list[str],
    title: str,
    out: str | os.PathLike[str],
    ignore_index: int = 255,
    colors: Sequence[str] | None = None,
) -> None:
    """Image | reference | prediction | errors of one site; classes in ``colors`` (``#rrggbb``
    per class, default :func:`snakemap.core.palette.class_colors`), errors in magenta (no class
    colour is)."""
    with rasterio.open(label) as src:
        ref = src.read(1)
    with rasterio.open(prediction) as src:
        pred = src.read(1)
    palette = list(colors) if colors is not None else class_colors(classes)
    cmap = ListedColormap(palette)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    axes[0].set_facecolor(NODATA_GREY)
    axes[0].imshow(image_panel(image), interpolation="nearest")
    axes[0].set_title("image (2-98% stretch; grey: no data)")
    for ax, data, name in ((axes[1], ref, "reference"), (axes[2], pred, "prediction")):
        shown = np.ma.masked_where((data == ignore_index) | (data == NODATA_CLASS), data)
        ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, interpolation="nearest")
        ax.set_title(name)
    scored = (ref != ignore_index) & (pred != NODATA_CLASS)
    errors = np.full(ref.shape, np.nan)
    errors[scored] = (ref[scored] != pred[scored]).astype(float)
    axes[3].imshow(
        np.ma.masked_invalid(errors),
        cmap=ListedColormap(["#d9d9d9", ERROR_COLOR]),
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    wrong = float(np.nanmean(errors)) if scored.any() else float("nan")
    axes[3].set_title(f"errors (magenta: {wrong:.1%} of scored pixels)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Rectangle((0, 0), 1, 1, facecolor=palette[i], edgecolor="0.3") for i in range(len(classes))]
    fig.legend(handles, classes, loc="lower center", ncol=len(classes), fontsize=8)
    fig.suptitle(title)
    _save(fig, out)


def best_predictor(
    summary_csv: str | os.PathLike[str], kinds: tuple[str, ...] = ("model", "ensemble")
) -> dict[str, Any]:
    """The summary row of the predictor with the highest macro IoU among ``kinds``."""
    table = pd.read_csv(summary_csv)
    table = table[table["kind"].isin(kinds)] if table["kind"].isin(kinds).any() else table
    best = table.sort_values("macro_iou", ascending=False).iloc[0]
    return {str(k): v for k, v in best.items()}


def downscaling_figure(
    truth: str | os.PathLike[str],
    panels: Sequence[tuple[int, str, str | os.PathLike[str], str | os.PathLike[str]]],
    title: str,
    out: str | os.PathLike[str],
) -> None:
    """One row per scale of a downscaling calval site: the true field | the best model's map | its
    error | bicubic's error | predicted against true (model and bicubic).

    Args:
        truth: the site's cleaned image (band 1: the field).
        panels: ``(scale, model name, model map, bicubic map)`` per scale.
    """
    fig, axes = plt.subplots(len(panels), 5, figsize=(20, 4.2 * len(panels)), squeeze=False)
    for row, (scale, name, model_map, bicubic_map) in zip(axes, panels, strict=True):
        with rasterio.open(model_map) as src:
            pred = src.read(1)
        with rasterio.open(bicubic_map) as src:
            bicubic = src.read(1)
        with rasterio.open(truth) as src:
            true = src.read(1, window=((0, pred.shape[0]), (0, pred.shape[1]))).astype(np.float32)
        lo, hi = np.nanpercentile(true, [1, 99]) if np.isfinite(true).any() else (0.0, 1.0)
        err_model, err_bicubic = pred - true, bicubic - true
        finite = np.isfinite(err_bicubic)
        limit = float(np.nanpercentile(np.abs(err_bicubic), 99)) if finite.any() else 1.0
        row[0].imshow(np.ma.masked_invalid(true), cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        row[0].set_title(f"x{scale}: true field")
        row[1].imshow(np.ma.masked_invalid(pred), cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        row[1].set_title(name)
        for ax, err, label in ((row[2], err_model, "model"), (row[3], err_bicubic, "bicubic")):
            ax.imshow(
                np.ma.masked_invalid(err), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
            )
            rmse = float(np.sqrt(np.nanmean(err**2))) if np.isfinite(err).any() else float("nan")
            ax.set_title(f"{label} error (RMSE {rmse:.3g})")
        for ax in row[:4]:
            ax.set_xticks([])
            ax.set_yticks([])
        keep = np.isfinite(true) & np.isfinite(pred) & finite
        rng = np.random.default_rng(0)
        pick = rng.choice(np.flatnonzero(keep), size=min(4000, int(keep.sum())), replace=False)
        t = true.ravel()[pick]
        row[4].scatter(t, bicubic.ravel()[pick], s=2, alpha=0.4, label="bicubic", color="#999999")
        row[4].scatter(t, pred.ravel()[pick], s=2, alpha=0.4, label="model", color="#d62728")
        row[4].plot([lo, hi], [lo, hi], color="black", lw=0.8)
        row[4].set_xlabel("true")
        row[4].set_ylabel("predicted")
        row[4].legend(loc="upper left", markerscale=4)
    fig.suptitle(title)
    _save(fig, out)
