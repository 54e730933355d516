"""Overhead of the service's training code over a plain PyTorch loop, for one configuration
trained two ways, without Ray:

  (a) plain   a PyTorch loop written here (same model, data, optimiser, schedule, seed)
  (b) fit     service.training.loop.fit (checkpoint written every epoch, as in a sweep)

bench/vs_optuna.py compares the service's sweep (on Ray, on each engine) with plain code.

The configuration is the default sweep's model: quarter-width AlexNet at 67 px on digits
(conv1 11x11/4, fc_width 256, dropout 0.25, SGD lr 0.02), because that is what users run
when they run the service; its epoch (~1-2 s on one core) is short enough that per-epoch
costs of fit (checkpoint, report) show. Both call torch.set_num_threads(1), train on the same
in-memory datasets and alternate (a, b, a, b, ...) so that load on the machine hits both
alike; with the same seed and data both end at the same accuracy (printed per pair).

Per-epoch time is measured from the outside, as the interval between the ends of consecutive
epochs (epochs 2..N; epoch 1 carries the warm-up): for (a) the loop's own timestamp, for (b)
the moment fit calls `report`. Whole run: from model building to the end. Also timed: one
checkpoint save (model + optimiser state, as fit writes each epoch) and one pass over the
training data without the model.

    python bench/overhead.py              # 6 epochs, (a)/(b) repeated 3 times
    python bench/overhead.py --quick      # CI: 2 epochs, once each

Ends with `fit_over_plain=<median epoch, (b) / (a)> fit_over_plain_run=<median whole run,
(b) / (a)> plain_epoch_s fit_epoch_s checkpoint_ms data_pass_s`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from service.config.spec import parse_spec  # noqa: E402
from service.config.train import TrainConfig  # noqa: E402
from service.training.loop import fit, prepare  # noqa: E402

SEARCHED = {"fc_width": 256}  # one of the default space's searched values, fixed


def spec_dict(epochs: int) -> dict[str, Any]:
    """A one-trial spec of the default sweep's model with its searched knobs fixed; its
    TrainConfig (with SEARCHED) is what (a) and (b) train."""
    return {
        "name": "overhead",
        "data": {"dataset": "digits", "image_size": 67},
        "model": {"family": "alexnet", "knobs": {"width_mult": 0.25, "conv1_kernel": 11,
                                                 "conv1_stride": 4, "dropout": 0.25,
                                                 "lrn": False}},
        "train": {"optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "lr": 0.02},
        "search": {k: {"type": "choice", "values": [v]} for k, v in SEARCHED.items()},
        "budget": {"max_epochs": epochs, "num_samples": 1, "metric": "val_acc"},
        "searcher": {"type": "random", "seed": 0},
        "scheduler": {"type": "none"},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    }


def plain_loop(cfg: TrainConfig, datasets) -> tuple[list[float], float, float]:
    """(a): the same training written as a plain loop; (epoch end times, whole-run seconds,
    final val_acc)."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model, _ = prepare(cfg, datasets)  # the same module the service builds for this config
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    train = DataLoader(datasets.train, cfg.batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(cfg.seed))
    val = DataLoader(datasets.val, max(cfg.batch_size, 256))
    ends = []
    for _epoch in range(cfg.epochs):
        model.train()
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        for x, y in train:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.post_step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
        model.eval()
        with torch.no_grad():
            val_correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in val)
        sched.step()
        ends.append(time.perf_counter())
    return ends, time.perf_counter() - start, val_correct / len(datasets.val)


def service_fit(cfg: TrainConfig, datasets) -> tuple[list[float], float, dict[str, Any]]:
    """(b): service.training.loop.fit; (report times, whole-run seconds, final val_acc and the sizes
    of what it reports)."""
    ends: list[float] = []
    sizes: dict[str, Any] = {}

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        ends.append(time.perf_counter())
        sizes["val_acc"] = metrics["val_acc"]
        sizes["payload_bytes"] = len(json.dumps(metrics))
        if checkpoint_dir:
            sizes["checkpoint_bytes"] = sum(f.stat().st_size
                                            for f in Path(checkpoint_dir).iterdir())

    start = time.perf_counter()
    fit(cfg, report, datasets=datasets)
    return ends, time.perf_counter() - start, sizes


def intervals(ends: list[float]) -> list[float]:
    """Seconds between consecutive epoch ends (epochs 2..N)."""
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def checkpoint_cost(cfg: TrainConfig, datasets, reps: int = 5) -> float:
    """Mean seconds of one torch.save of model + optimiser state, as fit writes each epoch."""
    from service.training.loop import save_checkpoint

    model, _ = prepare(cfg, datasets)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    for p in model.parameters():  # momentum buffers exist after the first step
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for _ in range(reps):
            save_checkpoint(Path(tmp) / "checkpoint.pt",
                            {"model": model.state_dict(), "optimizer": opt.state_dict()})
        return (time.perf_counter() - t0) / reps


def data_pass(cfg: TrainConfig, datasets) -> float:
    """Seconds of one pass over the training loader alone (per-item transforms + collate)."""
    loader = DataLoader(datasets.train, cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Run (a), (b) interleaved; print per-epoch and whole-run times."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 epochs, (a) and (b) once")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (>= 2; default 6)")
    p.add_argument("--repeats", type=int, default=3, help="(a), (b) pairs (default 3)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats = 2, 1
    if args.epochs < 2 or args.repeats < 1:
        p.exit(2, "error: --epochs must be at least 2 and --repeats at least 1\n")
    torch.set_num_threads(1)
    cfg = parse_spec(spec_dict(args.epochs)).train_config(SEARCHED)
    cfg = cfg.model_copy(update={"num_threads": 1})
    _, datasets = prepare(cfg)
    print(f"alexnet width_mult 0.25 at 67 px on digits, {args.epochs} epochs, 1 thread, "
          f"{args.repeats} (a)/(b) pairs; cpus={os.cpu_count()} torch={torch.__version__} "
          f"load={os.getloadavg()[0]:.2f}", flush=True)
    a_ep, b_ep, a_run, b_run = [], [], [], []
    sizes: dict[str, Any] = {}
    for i in range(args.repeats):
        ends, whole, a_acc = plain_loop(cfg, datasets)
        a_ep += intervals(ends)
        a_run.append(whole)
        ends, whole, sizes = service_fit(cfg, datasets)
        b_ep += intervals(ends)
        b_run.append(whole)
        # Same seed, data and order of random draws: both should end at the same accuracy.
        print(f"  pair {i + 1}: plain {a_run[-1]:.2f}s val_acc {a_acc:.4f}  fit "
              f"{b_run[-1]:.2f}s val_acc {sizes['val_acc']:.4f}", flush=True)
    ckpt_s = checkpoint_cost(cfg, datasets)
    data_s = data_pass(cfg, datasets)
    med = statistics.median
    print(f"{'run':<10} {'epoch s (median)':>17} {'min':>7} {'max':>7} {'whole run s':>12}")
    for name, eps, runs in (("plain (a)", a_ep, a_run), ("fit (b)", b_ep, b_run)):
        print(f"{name:<10} {med(eps):>17.3f} {min(eps):>7.3f} {max(eps):>7.3f} "
              f"{med(runs):>12.2f}")
    print(f"per epoch: checkpoint save {ckpt_s * 1000:.1f} ms ({sizes.get('checkpoint_bytes', 0)}"
          f" bytes), report payload {sizes.get('payload_bytes', 0)} bytes, one pass over the "
          f"training data without the model {data_s:.3f}s")
    headline = {
        "fit_over_plain": med(b_ep) / med(a_ep), "fit_over_plain_run": med(b_run) / med(a_run),
        "plain_epoch_s": med(a_ep), "fit_epoch_s": med(b_ep), "checkpoint_ms": ckpt_s * 1000,
        "data_pass_s": data_s}
    print(" ".join(f"{k}={v:.3f}" for k, v in headline.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
