"""AlexNet's tower split against the grouped model: same outputs and gradients, and its speed.

Needs torch only (no Ray). On CUDA it builds the paper-size AlexNet (227 px, batch 128) and
compares the grouped model with its two-tower split on cuda:0 (both towers), and with the towers
on cuda:0 / cuda:1 when two GPUs are visible. TF32 is off so that the comparison is fp32 against
fp32; the timed steps are forward + backward. The last line is the headline as key=value.

    python bench/towers_check.py            # CUDA, full size
    python bench/towers_check.py --quick    # small AlexNet, few steps (CPU when no GPU; CI)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service.models import AlexNet, build_model  # noqa: E402
from service.models.towers import TowerAlexNet  # noqa: E402

FULL = dict(image_size=227)  # the paper's AlexNet, 1000 classes
QUICK = dict(image_size=67, width_mult=0.25, fc_width=256, num_classes=10)  # CPU-sized
# Equal up to summation order: one grouped conv and two half convs add in different orders.
TOLERANCE = 1e-4  # max |difference| / max |grouped value|, per tensor (fp32, TF32 off)


def sync() -> None:
    """Wait for every visible GPU, so that a timer sees finished work."""
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)


def no_tf32() -> None:
    """Full fp32 matmuls and convolutions (PyTorch's newer per-backend API when it has one)."""
    if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9; do not mix it with allow_tf32
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def worst_relative_diff(grouped: AlexNet, split: TowerAlexNet, x: torch.Tensor) -> float:
    """Largest relative difference of outputs and every gradient (in the grouped layout)."""
    for model in (grouped, split):
        model.zero_grad(set_to_none=True)
    y_g, y_s = grouped(x), split(x)
    y_g.logsumexp(1).mean().backward()
    y_s.logsumexp(1).mean().backward()
    pairs = [(y_g.detach(), y_s.detach())]
    split_grads = split.grouped_grads()
    pairs += [(p.grad, split_grads[name]) for name, p in grouped.named_parameters()]
    return max(float((a - b.to(a.device)).abs().max() / a.abs().max().clamp_min(1e-30))
               for a, b in pairs)


def images_per_s(model: nn.Module, x: torch.Tensor, steps: int, warmup: int) -> float:
    """Forward + backward images/s over `steps` timed steps after `warmup` untimed ones."""
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(x).logsumexp(1).mean().backward()
    sync()
    return steps * len(x) / (time.perf_counter() - t0)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; bad values and a missing GPU exit 2 with one line."""
    parser = argparse.ArgumentParser(prog="python bench/towers_check.py", description=__doc__
                                     .split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small AlexNet, few steps (CI)")
    parser.add_argument("--batch-size", type=int, help="default: 128 full, 8 quick")
    parser.add_argument("--steps", type=int, help="timed steps; default: 20 full, 3 quick")
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.exit(2, f"error: --{name.replace('_', '-')}={value}: must be >= 1\n")
    if not args.quick and not torch.cuda.is_available():
        parser.exit(2, "error: no CUDA device; run with --quick for the small CPU check\n")
    return args


def main(argv: list[str] | None = None) -> int:
    """Check and time the split; print one line per layout, then key=value results."""
    args = parse(argv)
    cuda = torch.cuda.is_available()
    no_tf32()
    if not cuda:
        torch.set_num_threads(1)
    batch = args.batch_size or (8 if args.quick else 128)
    steps, warmup = args.steps or (3 if args.quick else 20), 1 if args.quick else 5
    dev = torch.device("cuda", 0) if cuda else torch.device("cpu")
    torch.manual_seed(0)
    # Dropout 0: the split draws its masks per tower, so only then are the two comparable.
    grouped = build_model("alexnet", dropout=0.0, **(QUICK if args.quick else FULL)).to(dev)
    cfg = grouped.cfg
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=dev)
    layouts = {"one_device": (dev, dev)}
    if cuda and torch.cuda.device_count() >= 2:
        layouts["two_devices"] = (dev, torch.device("cuda", 1))
    base = images_per_s(grouped, x, steps, warmup)
    print(f"grouped      {base:10.1f} img/s  ({dev}, batch {batch}, {cfg.image_size} px)")
    results = {"grouped_img_s": f"{base:.1f}"}
    worst = 0.0
    for name, devices in layouts.items():
        split = TowerAlexNet.from_grouped(grouped, devices)
        diff = worst_relative_diff(grouped, split, x)
        speed = images_per_s(split, x, steps, warmup)
        worst = max(worst, diff)
        print(f"towers {name:12s} {speed:10.1f} img/s  x{speed / base:.3f} of grouped  "
              f"max rel diff {diff:.2e}  ({devices[0]} / {devices[1]})")
        results[f"{name}_img_s"] = f"{speed:.1f}"
        results[f"{name}_over_grouped"] = f"{speed / base:.3f}"
    ok = worst <= TOLERANCE
    results = {"max_rel_diff": f"{worst:.3e}", "ok": str(ok).lower(), "device": dev.type,
               **results}
    print(" ".join(f"{k}={v}" for k, v in results.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
