"""ONNX: a bundle's network exported with dynamic batch and window size, and run with onnxruntime
in place of the torch network (the same predictor, windows and outputs).

The exported graph: segmentation ``input (batch, bands, h, w)`` normalised -> ``logits (batch,
classes, h, w)``; downscaling ``lr (batch, 1, h, w)`` (and ``aux (batch, A, h*s, w*s)`` when the
model takes auxiliary fields) normalised -> ``field (batch, 1, h*s, w*s)``. The bundle's
``bundle.json`` rides along in the model's metadata under the key ``snakemap``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from snakemap.core.io import atomic_path
from snakemap.core.registry import task_named
from snakemap.outputs.bundle import Bundle


class ExportError(ValueError):
    """A model that has no ONNX export; the message says what runs it instead."""


#: the metadata key of the bundle's description
META_KEY = "snakemap"
OPSET = 18


class _FinalStage(nn.Module):
    """A downscaling network's last stage only (the recurrent network returns one per stage)."""

    def __init__(self, network: nn.Module, aux: bool) -> None:
        super().__init__()
        self.network, self.aux = network, aux

    def forward(self, lr: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        out: list[torch.Tensor] = self.network(lr, aux if self.aux else None)
        return out[-1]


#: what :func:`export_onnx` exports: the module, example inputs, their names, the dynamic axes of
#: each, and the output's name (a task's ``onnx_graph`` hook makes it)
OnnxGraph = tuple[nn.Module, tuple[torch.Tensor, ...], list[str], dict[str, dict[int, str]], list[str]]


def export_onnx(bundle: Bundle, out: str | os.PathLike[str]) -> Path:
    """Export a bundle's network to ONNX (see the module docstring), atomically."""
    import onnx

    module, args, names, axes, outputs = task_named(bundle.task).hook("onnx_graph")(bundle)
    axes[outputs[0]] = {0: "batch", 2: "out_height", 3: "out_width"}
    with atomic_path(out, suffix=".onnx") as tmp:
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(bundle.meta, sort_keys=True, default=str)
        onnx.save(model, str(tmp))
    return Path(out)


def class_graph(bundle: Bundle) -> OnnxGraph:
    """Segmentation: ``input (batch, bands, h, w)`` -> ``logits (batch, classes, h, w)``."""
    from snakemap.tasks.networks import trained_from

    hp = bundle.hyper_parameters
    if hp.get("family", "network") != "network":
        raise ExportError(
            f"a {hp['family']} model has no ONNX export: its bundle holds LightGBM's own text model "
            "(snakemap predict --bundle runs it)"
        )
    module = trained_from(hp, bundle.state).network.eval()
    args = (torch.zeros(1, len(hp["band_names"]), 64, 64),)
    return module, args, ["input"], {"input": {0: "batch", 2: "height", 3: "width"}}, ["logits"]


def field_graph(bundle: Bundle) -> OnnxGraph:
    """Downscaling: ``lr (batch, 1, h, w)`` (and ``aux (batch, A, h*s, w*s)``) -> ``field (batch,
    1, h*s, w*s)``, the network's last stage."""
    from snakemap.tasks.downscaling import downscaler_from

    hp = bundle.hyper_parameters
    bands = len(hp["band_names"])
    trained = downscaler_from(hp, bundle.state)
    aux = bands > 1
    module: nn.Module = _FinalStage(trained.network, aux).eval()
    s = trained.scale
    args: tuple[torch.Tensor, ...] = (torch.zeros(1, 1, 16, 16),)
    names, axes = ["lr"], {"lr": {0: "batch", 2: "height", 3: "width"}}
    if aux:
        args += (torch.zeros(1, bands - 1, 16 * s, 16 * s),)
        names.append("aux")
        axes["aux"] = {0: "batch", 2: "aux_height", 3: "aux_width"}
    return module, args, names, axes, ["field"]


class OnnxNetwork:
    """An onnxruntime session that stands in for a torch network: tensors in, a tensor out (on the
    CPU, float32). ``meta`` is the bundle description stored in the model."""

    def __init__(
        self, path: str | os.PathLike[str] | bytes, threads: int | None = None, source: str = ""
    ) -> None:
        """``path``: an ONNX file, or its bytes (a bundle's ``model.onnx``, named by ``source``);
        ``threads``: ONNX Runtime's intra-op threads (None: one per core)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        model = path if isinstance(path, bytes) else str(path)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            name = source or ("the ONNX model" if isinstance(path, bytes) else path)
            raise ValueError(f"{name} is not a snakemap ONNX export (no {META_KEY!r} metadata)")
        self.meta: dict[str, Any] = json.loads(props[META_KEY])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *tensors: torch.Tensor | None) -> torch.Tensor:
        feed = {
            name: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)
            for name, t in zip(self.inputs, tensors, strict=False)
            if t is not None
        }
        (out,) = self.session.run(None, feed)[:1]
        first = next((t for t in tensors if t is not None), None)
        result = torch.from_numpy(np.asarray(out))
        return result if first is None else result.to(first.device)  # beside the other members

    def eval(self) -> OnnxNetwork:
        return self
