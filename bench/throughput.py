"""Training throughput of every preset at its paper input size, on synthetic data on the device.

No Ray and no download: it runs as one short command on a GPU machine that has only torch and
torchvision (and pydantic for the model registry). For each preset and each variant (fp32,
bf16 autocast, channels_last, torch.compile) it times full training steps (forward, backward,
SGD step) and prints images/s, the model's training FLOPs per image (3x the forward FLOPs from
torch.utils.flop_counter) and the achieved FLOP/s. The last line is the headline as key=value.

    python bench/throughput.py            # every preset, every variant the device supports
    python bench/throughput.py --quick    # CI: small batches, few steps, CPU fp32 only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service.models import build_model, describe, list_models  # noqa: E402

VARIANTS = ("fp32", "bf16", "channels_last", "compile")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(name: str, variant: str, device: torch.device, batch: int, steps: int,
               warmup: int) -> float:
    """Images per second over `steps` timed training steps after `warmup` untimed ones."""
    torch.manual_seed(0)
    model = build_model(name).to(device)
    info = describe(name)
    c, h, w = info["input_size"]
    nhwc = variant in ("channels_last", "compile")
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, c, h, w, device=device).to(memory_format=fmt)
    y = torch.randint(0, info["num_classes"], (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step_model = torch.compile(model) if variant == "compile" else model
    use_bf16 = variant in ("bf16", "channels_last", "compile") and device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = F.cross_entropy(step_model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    """Print one row per preset and variant, then the headline."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU fp32, small batches, 2 steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, help="batch size (default 256 on CUDA, 16 on CPU)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--models", nargs="*", default=list_models())
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch or (256 if device.type == "cuda" else 16)
    steps, warmup = (2, 1) if args.quick else (args.steps, 3)
    if args.quick:
        batch = min(batch, 4)
    variants = ("fp32",) if args.quick or device.type == "cpu" else VARIANTS
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={device} ({gpu}) torch={torch.__version__} batch={batch} steps={steps} "
          f"threads={torch.get_num_threads()}")
    print(f"{'model':<20} {'variant':<14} {'img/s':>10} {'GFLOP/img':>10} {'TFLOP/s':>9}")
    headline = {}
    for name in args.models:
        train_flops = 3 * describe(name, flops=True)["flops"]  # forward + ~2x for backward
        for variant in variants:
            ips = time_steps(name, variant, device, batch, steps, warmup)
            print(f"{name:<20} {variant:<14} {ips:>10.1f} {train_flops / 1e9:>10.3f} "
                  f"{ips * train_flops / 1e12:>9.3f}", flush=True)
            headline[f"{name}_{variant}_img_s"] = round(ips, 1)
    print(" ".join(f"{k}={v}" for k, v in headline.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
