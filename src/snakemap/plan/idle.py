"""What a config would leave undone: the warnings a run starts with when a section that makes
models, scores or maps is missing, or has nothing to work on. Preparing data alone is a valid
run: these are warnings, never errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snakemap.core.apply_sections import PredictOptions


def idle_warnings(config: Mapping[str, Any], roles: Mapping[str, int]) -> list[str]:
    """One line per stage the run would skip, naming the section or manifest role it lacks.

    Args:
        config: the resolved config.
        roles: manifest rows per role (``{"train": 12, "calval": 2, "apply": 1000}``).
    """
    found = []
    models = config.get("models")
    predictors = (config.get("apply") or {}).get("predictors") or []
    apply_rows, train_rows, calval_rows = (int(roles.get(r, 0)) for r in ("apply", "train", "calval"))
    if not models:
        found.append(
            "no models: section: nothing is trained, so nothing is scored or mapped by a model "
            "(add models: {base: {arch: Unet, ...}}; see the README's 'Your own scenes')"
        )
    elif not train_rows:
        found.append("models: is given, but the manifest has no train rows: nothing can be trained")
    if not calval_rows:
        found.append("the manifest has no calval rows: no model, ensemble or baseline is scored")
    if apply_rows and not predictors:
        found.append(
            f"the manifest has {apply_rows} apply rows, and apply.predictors is empty: nothing is "
            "mapped (name a model or ensemble there, e.g. apply: {predictors: [models/base/best]})"
        )
    if predictors and not apply_rows:
        found.append(
            f"apply.predictors names {', '.join(predictors)}, and the manifest has no apply rows: "
            "nothing is mapped"
        )
    return found


def backend_warnings(predict: PredictOptions, families: Mapping[str, str]) -> list[str]:
    """What ``predict.backend: onnxruntime`` (and ``quantize``) leaves to another runtime: the
    models of ``families`` (model key -> family) that have no ONNX graph, boosters, which run in
    LightGBM's own runtime in every backend."""
    if predict.backend != "onnxruntime":
        return []
    others = sorted(k for k, family in families.items() if family != "network")
    if not others:
        return []
    shown = ", ".join(others[:6]) + (f" and {len(others) - 6} more" if len(others) > 6 else "")
    kinds = ", ".join(sorted({families[k] for k in others}))
    quantized = " nor int8 quantization" if predict.quantize == "int8" else ""
    return [
        f"predict.backend: onnxruntime: {shown} (family {kinds}) have no ONNX graph{quantized}: "
        "they run in their own runtime (LightGBM), the networks in ONNX Runtime"
    ]
