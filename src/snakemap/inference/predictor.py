"""What maps a batch of windows: the members of a prediction (networks, boosters, rules), how
their probabilities combine (weighted mean, per-class winners, a fallback for scenes unlike the
training data) and how probabilities become classes. :mod:`snakemap.inference.predict` runs a
:class:`Predictor` over a whole scene.

Tensors: windows ``(n, bands, h, w)`` float32 (NaN invalid) in, probabilities ``(n, classes, h,
w)`` out.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from snakemap.core.apply_sections import PredictOptions
from snakemap.core.calval_sections import BaselineOptions
from snakemap.data.stats import STRIP_ROWS, Normalizer, scene_normalizer
from snakemap.inference.readers import SceneReader
from snakemap.inference.shift import BandMoments, shift_score
from snakemap.tasks.augment import flip_mean, flipped
from snakemap.tasks.networks import TrainedModel

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One model of a prediction: its input bands, normalisation, weight and activation.

    ``model`` maps a normalised ``(batch, len(bands), h, w)`` tensor to ``(batch, classes, h, w)``
    scores; ``activation`` turns them into probabilities (``softmax``) or takes them as they are.
    With ``normalize: scene`` the ``normalizer`` is replaced by each scene's own statistics
    (:meth:`Predictor.fit_scene`) before the scene is predicted.
    """

    model: Callable[[torch.Tensor], torch.Tensor]
    bands: list[str]
    normalizer: Normalizer
    weight: float = 1.0
    activation: Literal["softmax", "none"] = "softmax"
    normalize: Literal["dataset", "scene"] = "dataset"
    #: the checkpoint it was loaded from, for messages; ``""`` for a model built in memory
    source: str = ""
    #: ``model`` is ``torch.compile``'s wrapper (:meth:`Predictor.compile`)
    compiled: bool = False
    #: the training scenes' band statistics (``normalizer`` until a scene's own replace them);
    #: None for a member that learnt nothing (a rule)
    training: Normalizer | None = None
    #: a trained model (not a rule): its statistics are the shift score's reference
    learned: bool = True
    #: its map of a flipped window is the flipped map (a rule reads each pixel alone, a booster
    #: symmetric neighbourhoods), so test-time flips would only repeat it: they are skipped
    flip_equivariant: bool = False

    def __post_init__(self) -> None:
        if self.training is None and self.learned:
            self.training = self.normalizer

    @classmethod
    def from_rules(
        cls, baseline: BaselineOptions, classes: list[str], weight: float = 1.0, source: str = ""
    ) -> Member:
        """A rule baseline as a member: its class map as one-hot probabilities (1 for the class of
        the first rule that claims a pixel, or the default, 0 for the others), on the raw cleaned
        bands its rules read."""
        rules = baseline.rule_list()
        if rules is None:
            raise ValueError(f"{source or 'a baseline'}: a product's maps cannot be an ensemble member")
        ruled, default = rules
        bands = sorted(baseline.band_names())
        order = [(rule, classes.index(rule.class_)) for rule in reversed(ruled)]

        def one_hot(x: torch.Tensor) -> torch.Tensor:
            values = x.float().cpu().numpy()
            named = {b: values[:, i] for i, b in enumerate(bands)}
            mapped = np.full(values[:, 0].shape, classes.index(default), dtype=np.int64)
            for rule, k in order:
                mapped[rule.hits(named)] = k
            probs = np.eye(len(classes), dtype=np.float32)[mapped].transpose(0, 3, 1, 2)
            return torch.from_numpy(np.ascontiguousarray(probs)).to(x.device)

        identity = Normalizer(np.zeros(len(bands), dtype=np.float32), np.ones(len(bands), dtype=np.float32))
        return cls(
            one_hot,
            bands,
            identity,
            weight,
            activation="none",
            source=source,
            learned=False,
            flip_equivariant=True,
        )

    def prepare(self, windows: np.ndarray, names: list[str], device: torch.device) -> torch.Tensor:
        """The member's bands of ``(n, bands, h, w)`` windows, normalised, NaN -> 0, on ``device``.

        Done with torch (multi-threaded, or on the GPU) rather than numpy: it is on the hot path.
        """
        x = torch.from_numpy(windows[:, [names.index(b) for b in self.bands]])
        if device.type == "cuda":
            # from page-locked memory the copy runs asynchronously, beside the previous batch
            x = x.pin_memory()
        x = x.to(device, non_blocking=True)
        mean = torch.as_tensor(self.normalizer.mean, device=device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.normalizer.std, device=device).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std).nan_to_num_(0.0)

    @classmethod
    def from_trained(cls, trained: TrainedModel, weight: float = 1.0, source: str = "") -> Member:
        """A member from a checkpoint (``source``) loaded with
        :func:`snakemap.tasks.networks.load_trained`."""
        norm = Normalizer(
            np.asarray(trained.mean, dtype=np.float32), np.asarray(trained.std, dtype=np.float32)
        )
        booster = trained.outputs == "probabilities"  # odd neighbourhoods: flip-equivariant
        return cls(
            trained.network,
            trained.band_names,
            norm,
            weight,
            activation="none" if booster else "softmax",
            normalize=trained.normalize,
            source=source,
            flip_equivariant=booster,
        )


@dataclass(frozen=True)
class PerClass:
    """A per-class winner ensemble (``combine: per_class``): each class is mapped by one member.

    A pixel is class ``k`` where ``k``'s winning member maps it as ``k`` (its own argmax). Where
    several winners claim a pixel, the class first in ``precedence`` has it; where none does, the
    ``fallback`` member's class (the member with the best out-of-fold macro IoU) is used.
    """

    #: per class (in class order), the index of its winning member
    winners: list[int]
    #: class indices, the first claims first
    precedence: list[int]
    #: the member index whose map fills pixels no winner claims
    fallback: int

    def combine(self, probs: list[torch.Tensor], n_classes: int) -> np.ndarray:
        """Each member's ``(n, classes, h, w)`` probabilities -> one-hot ``(n, classes, h, w)``."""
        maps = [p.argmax(1).cpu().numpy() for p in probs]
        out = maps[self.fallback].copy()
        for k in reversed(self.precedence):  # the first in precedence is written last and stays
            out[maps[self.winners[k]] == k] = k
        one_hot: np.ndarray = np.eye(n_classes, dtype=np.float32)[out].transpose(0, 3, 1, 2).copy()
        return one_hot


@dataclass(frozen=True)
class Fallback:
    """The members that alone map a scene unlike the training data (an ensemble's ``fallback``).

    A scene whose shift score (:func:`snakemap.inference.shift.shift_score`, against the learned
    members' training statistics) is above ``shift`` is mapped by the weighted mean of these
    members only, typically the index rules: where the learned members are extrapolating, the
    rules' map is the safer one. Per-class winners are not used on such a scene; a threshold is.
    """

    #: the shift score above which only ``members`` map a scene
    shift: float
    #: the indices of the members that do
    members: list[int]


@dataclass
class Predictor:
    """Class probabilities of image windows from one model or a weighted ensemble.

    Args:
        members: the models; probabilities are their weighted mean.
        classes: class names, one per output channel.
        device: where the models run; bf16 autocast is used on CUDA.
        tta: average each network's probabilities over the identity, a horizontal, a vertical
            and a double flip (:data:`snakemap.tasks.augment.FLIPS`); rules and boosters map a
            flipped window the same way, so they are run once.
        threshold: with ``target`` set, a pixel is ``target`` when its probability reaches this,
            otherwise the most probable of the other classes (None: plain argmax).
        target: the class index the threshold applies to.
        winners: ``combine: per_class``: what :class:`PerClass` says maps each class (None: the
            weighted mean of the members).
        fallback: the members that alone map a scene unlike the training data (None: all map
            every scene).
    """

    members: list[Member]
    classes: list[str]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    tta: bool = False
    threshold: float | None = None
    target: int | None = None
    winners: PerClass | None = None
    fallback: Fallback | None = None
    #: the last fitted scene is mapped by the fallback members alone
    fell_back: bool = False
    #: seconds spent in the models alone (for the efficiency benchmark)
    model_seconds: float = 0.0
    #: ``#rrggbb`` per class for the class maps' colour tables (None: the default palette)
    colors: list[str] | None = None

    def compile(self) -> None:
        """Compile each member network with ``torch.compile`` (once; other callables, such as an
        ONNX session, are left as they are). Each new input shape (the last, smaller batch; a
        scene smaller than the window, which gets a fitted one) compiles again, once."""
        for m in self.members:
            if isinstance(m.model, torch.nn.Module) and not m.compiled:
                m.model = torch.compile(m.model)
                m.compiled = True

    def check_context(self, opts: PredictOptions) -> None:
        """Check that each window's kept centre has the context every member reads around a pixel
        (a booster's largest neighbourhood), so that the maps have no seams; tell a booster which
        border of each window the centre crop drops, so that it skips those pixels.

        Raises:
            ValueError: naming the member and the ``predict.overlap`` it needs.
        """
        pad = opts.geometry()[0]
        for member in self.members:
            if hasattr(member.model, "margin"):  # a booster: skip the pixels the centre crop drops
                member.model.margin = 0 if opts.blend else pad
            need = int(getattr(member.model, "context", 0))
            if need > pad:
                overlap = 2 * need if opts.blend else need
                raise ValueError(
                    f"{member.source or 'a model'} reads {need} pixels around each pixel, and "
                    f"predict.overlap {opts.overlap} keeps {pad}: set predict.overlap to at least {overlap}"
                )

    def reference(self) -> dict[str, tuple[float, float]]:
        """Input band -> the training scenes' ``(mean, std)``, as the first member that takes the
        band was trained with (the reference of a scene's shift score)."""
        found: dict[str, tuple[float, float]] = {}
        for member in self.members:
            if member.training is None:
                continue  # a rule: nothing learnt
            for i, band in enumerate(member.bands):
                found.setdefault(band, (float(member.training.mean[i]), float(member.training.std[i])))
        return found

    def fit_scene(self, reader: SceneReader, moments: BandMoments | None = None) -> None:
        """Give ``normalize: scene`` members this scene's own band statistics and, with a
        ``fallback``, decide from the scene's shift score which members map it (one pass over the
        scene, none when its ``moments`` are given and no member standardises by scene)."""
        scene_members = [m for m in self.members if m.normalize == "scene"]
        self.fell_back = False
        count = moments is None and self.fallback is not None
        seen = BandMoments(list(reader.names)) if moments is None else moments

        def strips() -> Iterator[np.ndarray]:
            for r in range(0, reader.height, STRIP_ROWS):
                strip = reader.read_rows(r, min(r + STRIP_ROWS, reader.height))
                if count:
                    seen.add(strip)
                yield strip

        if scene_members:
            norm = scene_normalizer(strips())
            for m in scene_members:
                keep = [reader.names.index(b) for b in m.bands]
                m.normalizer = Normalizer(norm.mean[keep], norm.std[keep])
        elif count:
            for _ in strips():
                pass
        if self.fallback is not None:
            shift = shift_score(seen, self.reference())
            self.fell_back = shift is not None and shift["score"] > self.fallback.shift
            if shift is not None and self.fell_back:
                log.info(
                    "shift %.3f > %g: mapped by %s alone",
                    shift["score"],
                    self.fallback.shift,
                    self.fallback_names(),
                )

    def fallback_names(self) -> list[str]:
        """The sources of the fallback members (for a scene's status)."""
        return [self.members[i].source for i in self.fallback.members] if self.fallback else []

    def probabilities(self, windows: np.ndarray, names: list[str]) -> np.ndarray:
        """``(n, bands, h, w)`` float32 windows (NaN invalid) -> ``(n, classes, h, w)`` probabilities
        (one-hot with per-class winners)."""
        if self.fell_back:
            assert self.fallback is not None
            return self._mean([self.members[i] for i in self.fallback.members], windows, names)
        if self.winners is not None:
            return self.winners.combine(
                [self._run(m, m.prepare(windows, names, self.device)) for m in self.members],
                len(self.classes),
            )
        return self._mean(self.members, windows, names)

    def _mean(self, members: list[Member], windows: np.ndarray, names: list[str]) -> np.ndarray:
        """The weighted mean of ``members``' probabilities of ``windows``."""
        total = None
        weight_sum = sum(m.weight for m in members)
        for member in members:
            probs = self._run(member, member.prepare(windows, names, self.device))
            total = (
                probs * (member.weight / weight_sum)
                if total is None
                else total + probs * (member.weight / weight_sum)
            )
        assert total is not None
        return total.float().cpu().numpy()

    def _run(self, member: Member, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()

        def probabilities(dims: tuple[int, ...]) -> torch.Tensor:
            view = flipped(x, dims)
            if x.is_cuda:
                view = view.contiguous(memory_format=torch.channels_last)
            scores = member.model(view).float()
            return scores.softmax(1) if member.activation == "softmax" else scores

        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if x.is_cuda else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = flip_mean(probabilities, self.tta and not member.flip_equivariant)
        if x.is_cuda:
            torch.cuda.synchronize()
        self.model_seconds += time.perf_counter() - start
        return out

    def classify(self, probs: np.ndarray) -> np.ndarray:
        """``(classes, ...)`` probabilities -> class indices, by argmax or the target threshold."""
        return classify(probs, self.threshold, self.target)


def classify(probs: np.ndarray, threshold: float | None = None, target: int | None = None) -> np.ndarray:
    """``(classes, ...)`` probabilities -> uint8 class indices.

    With ``threshold`` and ``target``, a pixel is ``target`` where its probability reaches the
    threshold (in the units of ``probs``: 0..1, or 0..250 for stored uint8), otherwise the most
    probable of the other classes; without them, the plain argmax.
    """
    if threshold is None or target is None:
        best: np.ndarray = probs.argmax(0)
    else:
        others = probs.astype(np.float32)  # a copy, where -1 is below any probability
        others[target] = -1
        best = np.where(probs[target] >= threshold, target, others.argmax(0))
    return best.astype(np.uint8)
