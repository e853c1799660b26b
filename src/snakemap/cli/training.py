"""The training steps: train one model (one fold), and list the models of the grid."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from snakemap.cli.common import step_options
from snakemap.core.config import ConfigError, build
from snakemap.core.registry import task_named


def _train(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import json

    from snakemap.training.resume import JobData
    from snakemap.training.train import train_job

    job = json.loads(args.job)
    task = task_named(cfg.get("task"))
    classes, ignore_index = [], 255
    if task.labels_required:
        labels = build("labels", cfg["labels"])
        classes, ignore_index = labels.classes, labels.ignore_index
    data = JobData(args.train_indexes, args.calval_indexes or [], args.folds, args.stats)
    train_job(
        args.out, job["params"], job["fold"], classes, ignore_index, data, args.gpus, args.cpus, task.name
    )
    return 0


def _bundle(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import yaml

    from snakemap.outputs.bundle import write_bundle

    resolved = yaml.safe_load(args.resolved.read_text())
    write_bundle(args.checkpoint, resolved, cfg, args.out, task_named(cfg.get("task")).name, args.onnx)
    logging.info("bundle %s (%d bytes)", args.out, args.out.stat().st_size)
    return 0


def _export_onnx(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.outputs.bundle import checkpoint_bundle, read_bundle
    from snakemap.outputs.export import export_onnx

    if bool(args.bundle) == bool(args.checkpoint):
        raise ConfigError("export-onnx takes one of --bundle or --checkpoint")
    if args.bundle:
        bundle = read_bundle(args.bundle)
    else:
        bundle = checkpoint_bundle(args.checkpoint, task_named(cfg.get("task")).name)[0]
    export_onnx(bundle, args.out)
    logging.info("ONNX export %s (%d bytes)", args.out, args.out.stat().st_size)
    return 0


def _quantize_onnx(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from snakemap.outputs.quantize import calibration_windows, quantize_int8, quantized_ops

    windows = calibration_windows(args.checkpoint, args.indexes, args.folds, args.stats)
    done = quantize_int8(args.onnx, windows, args.out)
    ops = quantized_ops(args.out)
    logging.info("int8 %s: %s", args.out, done)
    logging.info("operators (nodes, on int8, float32):\n%s", ops.to_string())
    return 0


def _models_table(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import pandas as pd

    from snakemap.core.io import write_csv
    from snakemap.plan.grid import expand, jobs_table

    jobs = expand(cfg["models"], build("splits", cfg.get("splits")).folds)
    write_csv(pd.DataFrame(jobs_table(jobs)), args.out, sep="\t")
    return 0


def _inspect(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    import json

    from snakemap.outputs.bundle import describe, read_bundle

    meta = read_bundle(args.bundle).meta
    if args.json:
        print(json.dumps(meta, indent=1, sort_keys=True, default=str))
    else:
        print("\n".join([f"{args.bundle}:", *describe(meta)]))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the training steps to the ``snakemap`` command."""
    common = step_options()

    p = sub.add_parser("train", parents=[common], help="train one model (one fold)")
    p.add_argument("--job", required=True, help='JSON: {"params": {...}, "fold": k or null}')
    p.add_argument("--train-indexes", nargs="+", type=Path, required=True, help="chip tables of train scenes")
    p.add_argument("--calval-indexes", nargs="*", type=Path, help="chip tables of calval scenes")
    p.add_argument("--folds", type=Path, required=True)
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the job's folder")
    p.add_argument("--gpus", type=int, help="GPUs given to the job (default: the model's gpus)")
    p.add_argument("--cpus", type=int, help="CPU cores given to the job (default: the model's cpus)")
    p.set_defaults(func=_train)

    p = sub.add_parser("bundle", parents=[common], help="a model's one-file bundle")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--resolved", type=Path, required=True, help="the job's resolved config.yaml")
    p.add_argument("--out", type=Path, required=True, help="results/bundles/{model}.zip")
    p.add_argument(
        "--onnx", type=Path, help="the network's ONNX export to carry (predict.backend: onnxruntime)"
    )
    p.set_defaults(func=_bundle)

    p = sub.add_parser(
        "export-onnx", parents=[common], help="a network bundle's (or checkpoint's) ONNX export"
    )
    p.add_argument("--bundle", type=Path, help="results/bundles/{model}.zip")
    p.add_argument("--checkpoint", type=Path, help="results/models/{model}/{checkpoint}.ckpt")
    p.add_argument("--out", type=Path, required=True, help="results/bundles/{model}.onnx")
    p.set_defaults(func=_export_onnx)

    p = sub.add_parser(
        "quantize-onnx", parents=[common], help="a network's ONNX export quantized to int8 (calibrated)"
    )
    p.add_argument("--onnx", type=Path, required=True, help="results/models/{model}/{checkpoint}.onnx")
    p.add_argument("--checkpoint", type=Path, required=True, help="its checkpoint: bands, statistics, fold")
    p.add_argument(
        "--indexes", nargs="+", type=Path, required=True, help="chip tables of the training scenes"
    )
    p.add_argument("--folds", type=Path, required=True)
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="results/models/{model}/{checkpoint}.int8.onnx")
    p.set_defaults(func=_quantize_onnx)

    p = sub.add_parser("inspect", parents=[common], help="what a bundle holds: classes, bands, sensors")
    p.add_argument("bundle", type=Path, help="a bundle (results/bundles/{model}.zip)")
    p.add_argument("--json", action="store_true", help="its bundle.json as it is")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("models-table", parents=[common], help="list the models of the grid")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_models_table)
