"""Segmentation networks from segmentation-models-pytorch, with local pretrained weights only.

Nothing is fetched at run time: ``encoder_weights`` is a path to a weights file (a state dict of
the encoder, or of a whole smp model whose ``encoder.*`` keys are used), or null.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
from torch import nn

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """Pretrained weights that cannot be used; the message says why and what to do."""


def build_model(
    arch: str, encoder_name: str, in_channels: int, classes: int, encoder_weights: str | None = None
) -> nn.Module:
    """Build ``arch`` (e.g. ``Unet``, ``DeepLabV3Plus``) with ``encoder_name`` (e.g. ``resnet18``).

    The model maps ``(batch, in_channels, H, W)`` to logits ``(batch, classes, H, W)``.

    Raises:
        WeightsError: ``encoder_weights`` names a download (such as ``imagenet``) rather than a
            file, the file is missing, or its tensors do not fit the encoder.
        ValueError: an unknown architecture or encoder.
    """
    try:
        model: nn.Module = smp.create_model(
            arch, encoder_name=encoder_name, encoder_weights=None, in_channels=in_channels, classes=classes
        )
    except KeyError as exc:
        raise ValueError(
            f"unknown architecture or encoder: arch={arch!r}, encoder_name={encoder_name!r}: {exc}"
        ) from exc
    if encoder_weights:
        load_encoder_weights(model, encoder_weights)
    return model


def load_encoder_weights(model: nn.Module, path: str) -> None:
    """Load a local weights file into ``model.encoder`` (``weights_only=True``).

    A first convolution with a different number of input channels is adapted the way smp does
    for ``in_channels != 3``: the pretrained kernels are cycled over the new channels and scaled.
    """
    file = Path(path)
    if not file.is_file():
        hint = (
            " (it looks like a name to download; snakemap never downloads weights: download the file "
            "once and give its path)"
            if "/" not in path and not file.suffix
            else ""
        )
        raise WeightsError(f"encoder_weights {path!r} is not a file{hint}")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    encoder = model.get_submodule("encoder")
    own = encoder.state_dict()
    for key, value in list(state.items()):
        if key in own and own[key].ndim == 4 and value.ndim == 4 and own[key].shape[1] != value.shape[1]:
            state[key] = _adapt_first_conv(value, own[key].shape[1])
    usable = {k: v for k, v in state.items() if k in own}
    wrong = [k for k, v in usable.items() if tuple(v.shape) != tuple(own[k].shape)]
    if not usable or wrong:
        raise WeightsError(
            f"encoder_weights {path}: does not fit encoder {encoder_name(model)} "
            f"({len(usable)} matching names, shapes differ for {wrong[:3]})"
        )
    # smp's encoders override load_state_dict (dropping classifier heads): use the plain one.
    nn.Module.load_state_dict(encoder, usable, strict=False)
    skipped, missing = len(state) - len(usable), len(own) - len(usable)
    if skipped or missing:
        log.warning(
            "encoder_weights %s: %d tensors not used (e.g. a classifier head), %d encoder tensors "
            "left at random",
            path,
            skipped,
            missing,
        )


def encoder_name(model: nn.Module) -> str:
    """The class name of a model's encoder, for messages."""
    return type(model.get_submodule("encoder")).__name__


def _adapt_first_conv(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """``(out, c, k, k)`` kernels to ``(out, channels, k, k)``, cycling and rescaling inputs."""
    reps = [weight[:, i % weight.shape[1]] for i in range(channels)]
    return torch.stack(reps, dim=1) * weight.shape[1] / channels


@dataclass
class TrainedModel:
    """A trained network with what prediction needs to know about its inputs and outputs."""

    #: maps normalised ``(batch, len(band_names), H, W)`` to logits ``(batch, len(classes), H, W)``:
    #: a torch module, or an ONNX session standing in for one (:class:`snakemap.outputs.export.OnnxNetwork`)
    network: Any
    classes: list[str]
    band_names: list[str]
    mean: list[float]
    std: list[float]
    #: ``dataset``: normalise with ``mean`` and ``std``; ``scene``: with each scene's own statistics
    normalize: Literal["dataset", "scene"] = "dataset"
    #: what ``network`` returns: ``logits`` (a network) or ``probabilities`` (a booster)
    outputs: Literal["logits", "probabilities"] = "logits"


def load_trained(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> TrainedModel:
    """Load a training checkpoint for inference, without Lightning (a quicker start).

    The checkpoint is read with ``weights_only=True``; its hyperparameters give the architecture,
    classes, input bands and their statistics. The pretrained-weights file used in training is not
    read again.
    """
    hp, state = read_checkpoint(checkpoint, map_location)
    return trained_from(hp, state, map_location)


def read_checkpoint(
    checkpoint: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A training checkpoint's hyperparameters and its network's state dict (Lightning's
    ``model.`` prefix removed), read with ``weights_only=True``."""
    ckpt = torch.load(checkpoint, map_location=map_location, weights_only=True)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return dict(ckpt["hyper_parameters"]), state


def trained_from(
    hp: dict[str, Any], state: dict[str, torch.Tensor], map_location: str | torch.device = "cpu"
) -> TrainedModel:
    """A :class:`TrainedModel` from a checkpoint's (or a bundle's) hyperparameters and the
    network's state dict (empty for a booster, ``family: lightgbm``, whose text model the
    hyperparameters hold)."""
    if hp.get("family") == "lightgbm":
        from snakemap.tasks.boosting import booster_from

        return trained_around(booster_from(hp), hp)
    network = build_model(hp["arch"], hp["encoder_name"], len(hp["band_names"]), len(hp["classes"]))
    network.load_state_dict(state)
    network.to(map_location).eval()
    return TrainedModel(
        network,
        list(hp["classes"]),
        list(hp["band_names"]),
        list(hp["mean"]),
        list(hp["std"]),
        hp.get("normalize", "dataset"),
    )


def trained_around(network: Any, hp: dict[str, Any]) -> TrainedModel:
    """A trained model whose network is ``network`` (an ONNX Runtime session, say), with the
    classes, bands and statistics of the hyper-parameters ``hp``."""
    bands, normalize = list(hp["band_names"]), hp.get("normalize", "dataset")
    outputs: Literal["logits", "probabilities"] = (
        "probabilities" if hp.get("family") == "lightgbm" else "logits"
    )
    return TrainedModel(
        network, list(hp["classes"]), bands, list(hp["mean"]), list(hp["std"]), normalize, outputs
    )
