"""The ukis example's model against simple baselines, on the same calval pixels.

After `snakemake --configfile config/examples/ukis.yaml --replace-workflow-config`, compares per
class IoU on the Landsat 7 calval chips (results/chips/ukis_l7.*):

  model        the trained model's best checkpoint (argmax over its classes)
  water        NDWI = (green - nir) / (green + nir) > 0
  cloud        mean of blue, green, red reflectance > 0.3, and the best threshold found by a
               sweep on these very pixels (an optimistic upper bound for the baseline)

    .venv/bin/python bench/ukis_baselines.py [--results results] [--model base]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from snakemap.stats import Normalizer
from snakemap.metrics import confusion_matrix, scores
from snakemap.models import load_trained


def binary_iou(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    cm = confusion_matrix(truth[valid].astype(np.uint8), pred[valid].astype(np.uint8), 2)
    return scores(cm, ["other", "this"])["per_class"]["this"]["iou"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--model", default="base")
    args = ap.parse_args()
    chips = np.load(args.results / "chips" / "ukis_l7.image.npy")
    labels = np.load(args.results / "chips" / "ukis_l7.label.npy")
    hp = load_trained(args.results / "models" / args.model / "best.ckpt")
    names = ["blue", "green", "red", "nir", "swir16", "swir22", "ndwi", "mndwi"]
    x = Normalizer(np.asarray(hp.mean, np.float32), np.asarray(hp.std, np.float32))(
        chips[:, [names.index(b) for b in hp.band_names]]
    )
    with torch.no_grad():
        pred = torch.cat([hp.network(torch.from_numpy(x[i : i + 32])).argmax(1) for i in range(0, len(x), 32)]).numpy()
    classes = list(hp.classes)
    valid = labels != 255
    model = scores(confusion_matrix(labels, pred.astype(np.uint8), len(classes), 255), classes)["per_class"]
    water, cloud = classes.index("water"), classes.index("cloud")
    ndwi = chips[:, names.index("ndwi")]
    brightness = chips[:, :3].mean(axis=1)
    sweep = {t: binary_iou(brightness > t, labels == cloud, valid) for t in np.arange(0.05, 0.8, 0.01)}
    best_t = max(sweep, key=sweep.get)
    print(f"calval pixels: {int(valid.sum())} in {len(chips)} chips of the Landsat 7 scene "
          f"(water {int((labels == water).sum())}, cloud {int((labels == cloud).sum())})")  # fmt: skip
    print(f"{'class':8s} {'model IoU':>10s} {'baseline':>34s}")
    print(f"{'water':8s} {model['water']['iou']:10.3f} {'NDWI > 0':>24s} {binary_iou(ndwi > 0, labels == water, valid):9.3f}")
    print(f"{'cloud':8s} {model['cloud']['iou']:10.3f} {'mean(B,G,R) > 0.30':>24s} "
          f"{binary_iou(brightness > 0.3, labels == cloud, valid):9.3f}")  # fmt: skip
    print(f"{'':8s} {'':10s} {f'mean(B,G,R) > {best_t:.2f} (tuned)':>24s} {sweep[best_t]:9.3f}")
    print("other classes, model IoU: " + ", ".join(f"{c} {model[c]['iou']:.3f}" for c in classes if c not in ("water", "cloud")))


if __name__ == "__main__":
    main()
