"""The GPU path on one NVIDIA GPU, in one command that finishes within 5 minutes: training samples/s
and prediction pixels/s of the workflow's default network (Unet/resnet18, 6 bands in, 4 classes)
in float32, bf16 autocast, bf16 + ``channels_last`` (what snakemap's predictor runs on CUDA), and
``torch.compile`` of the last (fixed shapes; its compile time printed apart), beside the bare
forward pass on the same batches.

It imports torch and, where they are installed, segmentation-models-pytorch and timm (the
network the workflow trains); without them it builds the same Unet/resnet18 shape in plain torch
and says so. Nothing else of snakemap, Snakemake or rasterio is needed, so it runs on a machine
that has only Python and torch. Without a CUDA GPU it says so and exits 0 (``--cpu`` measures
the same on the CPU with small sizes: a rehearsal, not a figure).

  training     AdamW steps on batches of --train-batch windows of --window pixels (cross-entropy
               on random labels: the speed of the step, not of learning), samples/s;
  prediction   windows in, class indices back on the host (copy in, forward, softmax, argmax,
               copy out), scene pixels/s of --predict-batch windows; and the bare forward pass
               on the same device-resident batches.

    python bench/gpu.py [--seconds 8] [--window 256] [--train-batch 16] [--predict-batch 32]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def network(bands: int, classes: int) -> tuple[nn.Module, str]:
    """The workflow's Unet/resnet18 (segmentation-models-pytorch), or the same shape in torch."""
    try:
        import segmentation_models_pytorch as smp

        net = smp.Unet("resnet18", encoder_weights=None, in_channels=bands, classes=classes)
        return net, f"segmentation-models-pytorch {smp.__version__} Unet/resnet18"
    except ImportError:
        return PlainUnet(
            bands, classes
        ), "plain-torch Unet/resnet18 (segmentation-models-pytorch not installed)"


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class PlainUnet(nn.Module):
    """A resnet18 encoder (2 basic blocks per stage) and a Unet decoder (256, 128, 64, 32, 16),
    as segmentation-models-pytorch builds it, in plain torch."""

    def __init__(self, bands: int, classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(bands, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(True)
        )
        self.pool = nn.MaxPool2d(3, 2, 1)
        widths = [64, 128, 256, 512]
        self.stages = nn.ModuleList(
            nn.Sequential(_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1))
            for i, (cin, cout) in enumerate(zip([64, *widths[:-1]], widths, strict=True))
        )
        skips, outs = [256, 128, 64, 64, 0], [256, 128, 64, 32, 16]
        ins = [512, *outs[:-1]]
        self.decoder = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(i + s, o, 3, 1, 1, bias=False),
                nn.BatchNorm2d(o),
                nn.ReLU(True),
                nn.Conv2d(o, o, 3, 1, 1, bias=False),
                nn.BatchNorm2d(o),
                nn.ReLU(True),
            )  # fmt: skip
            for i, s, o in zip(ins, skips, outs, strict=True)
        )
        self.head = nn.Conv2d(16, classes, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        y = self.pool(features[0])
        for stage in self.stages:
            y = stage(y)
            features.append(y)
        skips = [features[3], features[2], features[1], features[0], None]
        y = features[4]
        for block, skip in zip(self.decoder, skips, strict=True):
            y = nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
            y = block(y if skip is None else torch.cat([y, skip], 1))
        return self.head(y)


def timed(step: Callable[[], Any], seconds: float, device: torch.device) -> tuple[float, int]:
    """Run ``step`` for about ``seconds`` after two warm-up calls: (seconds per call, calls)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        calls += 1
        if calls % 5 == 0:
            sync()
    sync()
    return (time.perf_counter() - start) / calls, calls


def measure(args: argparse.Namespace, device: torch.device) -> None:
    bands, classes, w = 6, 4, args.window
    _, described = network(bands, classes)
    print(f"network: {described}; windows {w} x {w}, {bands} bands, {classes} classes")
    modes = {
        "fp32": {"autocast": False, "channels_last": False, "compile": False},
        "bf16 autocast": {"autocast": True, "channels_last": False, "compile": False},
        "bf16 + channels_last": {"autocast": True, "channels_last": True, "compile": False},
        "bf16 + channels_last + compile": {"autocast": True, "channels_last": True, "compile": True},
    }
    x_train = torch.randn(args.train_batch, bands, w, w, device=device)
    y_train = torch.randint(0, classes, (args.train_batch, w, w), device=device)
    host = torch.randn(args.predict_batch, bands, w, w).pin_memory() if device.type == "cuda" else None
    host = host if host is not None else torch.randn(args.predict_batch, bands, w, w)
    print(
        f"\n{'mode':<32}{'train samples/s':>16}{'predict px/s':>16}{'bare forward px/s':>19}"
        f"{'predict/bare':>14}{'compile s':>11}"
    )
    for name, mode in modes.items():
        train, predict, bare, compile_s = one_mode(mode, x_train, y_train, host, args, device)
        pixels = args.predict_batch * w * w
        print(
            f"{name:<32}{args.train_batch / train:>16,.1f}{pixels / predict:>16,.0f}"
            f"{pixels / bare:>19,.0f}{bare / predict:>14.3f}{compile_s:>11.1f}",
            flush=True,
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()


def one_mode(
    mode: dict[str, bool],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    host: torch.Tensor,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[float, float, float, float]:
    """Seconds per training step, per prediction batch and per bare forward pass, and the
    compile time (NaN without compile), of a fresh network in one mode."""
    torch.manual_seed(0)
    net, _ = network(x_train.shape[1], 4)
    fmt = torch.channels_last if mode["channels_last"] else torch.contiguous_format
    net = net.to(device).to(memory_format=fmt)
    autocast: Any = (
        torch.autocast(device.type, dtype=torch.bfloat16) if mode["autocast"] else contextlib.nullcontext()
    )
    model: Callable[[torch.Tensor], torch.Tensor] = net
    compile_s = float("nan")
    xt = x_train.to(memory_format=fmt)
    if mode["compile"]:
        model = torch.compile(net)  # fixed shapes: one graph per batch shape and mode
        start = time.perf_counter()
        with autocast:
            model(xt).float().sum().backward()
        net.eval()
        with torch.inference_mode(), autocast:
            model(host.to(device).to(memory_format=fmt))
        if device.type == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - start
        net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def train_step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with autocast:
            loss = nn.functional.cross_entropy(model(xt).float(), y_train)
        loss.backward()
        optimiser.step()

    per_step, _ = timed(train_step, args.seconds, device)
    net.eval()
    resident = host.to(device).to(memory_format=fmt)

    def predict_step() -> None:
        with torch.inference_mode(), autocast:
            x = host.to(device, non_blocking=True).to(memory_format=fmt)
            model(x).float().softmax(1).argmax(1).to(torch.uint8).cpu()

    def bare_step() -> None:
        with torch.inference_mode(), autocast:
            model(resident)

    per_predict, _ = timed(predict_step, args.seconds, device)
    per_bare, _ = timed(bare_step, args.seconds, device)
    return per_step, per_predict, per_bare, compile_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per figure")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--predict-batch", type=int, default=32)
    ap.add_argument("--cpu", action="store_true", help="rehearse on the CPU (small sizes), not a figure")
    args = ap.parse_args()
    print(f"torch {torch.__version__}")
    if args.cpu:
        args.window, args.train_batch, args.predict_batch = 64, 2, 2
        args.seconds = min(args.seconds, 1.0)
        print("CPU rehearsal: small windows and batches; not a GPU figure")
        measure(args, torch.device("cpu"))
        return
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure (--cpu rehearses the check on the CPU)")
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    print(f"GPU: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}")
    measure(args, torch.device("cuda"))


if __name__ == "__main__":
    main()
