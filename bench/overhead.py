"""Overhead of the service over a plain PyTorch loop, for one configuration trained three ways:

  (a) plain   a PyTorch loop written here (same model, data, optimiser, schedule, seed)
  (b) fit     service.train.fit without Ray (checkpoint written every epoch, as in a sweep)
  (c) sweep   a one-trial sweep through the service: submit.start_ray, then sweep.run_sweep
              (Tune trial -> Ray Train worker -> fit), exactly the path of `python -m
              service.submit`, with a spec that searches one single-valued choice
  (d) direct  for comparison: the same trial as a Tune function trainable calling fit
              itself (tune.report, no Ray Train), on the same Ray instance as (c)

The configuration is the default sweep's model: quarter-width AlexNet at 67 px on digits
(conv1 11x11/4, fc_width 256, dropout 0.25, SGD lr 0.02), because that is what users run
when they run the service; its epoch (~1-2 s on one core) is short enough that per-epoch
costs of the service (checkpoint, report, Ray) show. Every run uses one torch thread: (a)
and (b) call torch.set_num_threads(1), and Ray gives its 1-CPU worker OMP_NUM_THREADS=1.
(a) and (b) train on the same in-memory datasets and alternate (a, b, a, b, ...) so that
load on the machine hits both alike.

Per-epoch time is measured from the outside, as the interval between the ends of
consecutive epochs (epochs 2..N; epoch 1 carries the warm-up): for (a) the loop's own
timestamp, for (b) the moment fit calls `report`, for (c) and (d) the moment the epoch's
checkpoint lands in the run's storage (its file's mtime; fit saves it after validation and
Ray copies it while reporting). Not the arrival of results at Tune's driver: under Ray Train
those come only when the Train controller polls the worker (every 2 s), which would quantise
the intervals; the mean delay from checkpoint to arrival is reported as the delivery lag.
Ray start-up is `ray.init` as submit does it; trial start latency is from the run's start
(run_sweep / Tuner.fit called) to the moment the first epoch starts (its checkpoint's mtime
minus its own `epoch_s`). Whole run: (a), (b) from model building to the end; (c) run_sweep
including summary.json; (d) Tuner.fit.

    python bench/overhead.py              # 6 epochs, (a)/(b) repeated 3 times
    python bench/overhead.py --quick      # CI: 2 epochs, once each
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
from ray.tune import Callback  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from service.config.spec import parse_spec  # noqa: E402
from service.config.train import TrainConfig  # noqa: E402
from service.training.loop import CHECKPOINT_FILE, fit, prepare  # noqa: E402
from service.tune.plan import plan_sweep  # noqa: E402
from service.tune.progress import Progress  # noqa: E402
from service.tune.runtime import start_ray  # noqa: E402
from service.tune.sweep import run_sweep  # noqa: E402

SEARCHED = {"fc_width": 256}  # the one "searched" value: (c) needs a search block


def spec_dict(epochs: int) -> dict[str, Any]:
    """The one-trial sweep: the default sweep's model with its searched knobs fixed."""
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
    """(b): service.train.fit; (report times, whole-run seconds, final val_acc and the sizes
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


class Stamps(Callback):
    """Notes when Tune's driver receives each result: (epoch, wall time, epoch_s)."""

    rows: list[tuple[int, float, float]] = []  # class-level: Tune may copy the callback

    def on_trial_result(self, iteration, trials, trial, result, **info):
        Stamps.rows.append((result["epoch"], time.time(), result["epoch_s"]))


class StampedProgress(Progress, Stamps):
    """run_sweep's own progress callback, also stamping arrivals."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        Stamps.on_trial_result(self, iteration, trials, trial, result, **info)
        return Progress.on_trial_result(self, iteration, trials, trial, result, **info)


def timings(storage: str, s0: float) -> dict[str, Any]:
    """Epoch ends, trial start latency and result delivery lag of the one trial under storage.

    An epoch ends when its checkpoint lands in storage (fit saves it after validation; Ray
    copies it while reporting): the checkpoint files' mtimes. Results reach Tune's driver
    later, and under Ray Train only when its controller polls the worker group (every
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s): arrival times would be quantised to that poll.
    """
    ends = sorted(f.stat().st_mtime for f in Path(storage).rglob(CHECKPOINT_FILE))
    rows = sorted(Stamps.rows)
    if len(ends) != len(rows):
        raise RuntimeError(f"{len(ends)} checkpoints in storage but {len(rows)} results")
    lags = [arrived - end for (_e, arrived, _s), end in zip(rows, ends, strict=True)]
    return {"trial_start_s": ends[0] - rows[0][2] - s0, "ends": ends,
            "lag_s": statistics.fmean(lags)}


def sweep_run(epochs: int) -> dict[str, Any]:
    """(c): a one-trial sweep through run_sweep, as `python -m service.submit` runs it."""
    import ray

    spec = parse_spec(spec_dict(epochs))
    Stamps.rows = []
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        plan = plan_sweep(spec, tmp, ray.cluster_resources(), "run")
        progress = StampedProgress(plan.trials, plan.max_epochs, list(spec.search), quiet=True)
        s0 = time.time()
        summary = run_sweep(spec, plan, progress)
        whole = time.time() - s0
        if summary is None or summary.trials[0].status != "completed":
            raise RuntimeError(f"the one-trial sweep did not complete: {summary}")
        return {"whole_s": whole, **timings(plan.experiment_dir, s0)}


def direct_trial(config: dict[str, Any], train_config: dict[str, Any] | None = None) -> None:
    """A Tune function trainable that runs fit in the trial itself (no Ray Train)."""
    from ray import tune

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=ckpt)

    fit(TrainConfig.model_validate(train_config), report)


def direct_run(cfg: TrainConfig) -> dict[str, Any]:
    """(d), for comparison: the same trial as a plain Tune function trainable holding 1 CPU,
    fit reporting through tune.report. Timed as (c)."""
    from ray import tune

    # num_threads from OMP_NUM_THREADS, which Ray sets to the trial's 1 CPU, as in (c)
    train_config = cfg.model_dump(mode="json") | {"num_threads": None}
    Stamps.rows = []
    with tempfile.TemporaryDirectory(prefix="overhead-direct-") as tmp:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(direct_trial, train_config=train_config),
                                {"CPU": 1}),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0, callbacks=[Stamps()]))
        s0 = time.time()
        tuner.fit()
        whole = time.time() - s0
        return {"whole_s": whole, **timings(tmp, s0)}


def ray_runs(cfg: TrainConfig, epochs: int) -> dict[str, Any]:
    """Start Ray as submit does, run (c) and (d), stop Ray; every phase timed."""
    import ray

    t0 = time.perf_counter()
    start_ray(None, verbose=False)
    out: dict[str, Any] = {"ray_start_s": time.perf_counter() - t0}
    try:
        out["c"] = sweep_run(epochs)
        out["d"] = direct_run(cfg)
    finally:
        t1 = time.perf_counter()
        ray.shutdown()
        out["ray_stop_s"] = time.perf_counter() - t1
    return out


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
    """Run (a), (b) interleaved, then (c) and (d); print per-epoch and whole-run times."""
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
    on_ray = ray_runs(cfg, args.epochs)
    c, d = on_ray["c"], on_ray["d"]
    c_ep, d_ep = intervals(c["ends"]), intervals(d["ends"])
    med = statistics.median
    rows = [("plain (a)", a_ep, med(a_run)), ("fit (b)", b_ep, med(b_run)),
            ("sweep (c)", c_ep, c["whole_s"]), ("direct (d)", d_ep, d["whole_s"])]
    print(f"{'run':<10} {'epoch s (median)':>17} {'min':>7} {'max':>7} {'whole run s':>12}")
    for name, eps, whole in rows:
        print(f"{name:<10} {med(eps):>17.3f} {min(eps):>7.3f} {max(eps):>7.3f} {whole:>12.2f}")
    print(f"ray start {on_ray['ray_start_s']:.2f}s, shutdown {on_ray['ray_stop_s']:.2f}s; trial "
          f"start latency (run start -> first epoch starts): sweep {c['trial_start_s']:.2f}s, "
          f"direct Tune trial {d['trial_start_s']:.2f}s; result delivery lag (checkpoint in "
          f"storage -> result at Tune's driver) sweep {c['lag_s']:.2f}s, direct {d['lag_s']:.2f}s")
    print(f"per epoch: checkpoint save {ckpt_s * 1000:.1f} ms ({sizes.get('checkpoint_bytes', 0)}"
          f" bytes), report payload {sizes.get('payload_bytes', 0)} bytes, one pass over the "
          f"training data without the model {data_s:.3f}s")
    headline = {
        "fit_over_plain": med(b_ep) / med(a_ep), "sweep_over_plain": med(c_ep) / med(a_ep),
        "fit_over_plain_run": med(b_run) / med(a_run),
        "sweep_over_plain_run": c["whole_s"] / med(a_run),
        "direct_over_plain": med(d_ep) / med(a_ep),
        "plain_epoch_s": med(a_ep), "fit_epoch_s": med(b_ep), "sweep_epoch_s": med(c_ep),
        "ray_start_s": on_ray["ray_start_s"], "trial_start_s": c["trial_start_s"],
        "direct_trial_start_s": d["trial_start_s"], "sweep_lag_s": c["lag_s"],
        "checkpoint_ms": ckpt_s * 1000,
        "data_pass_s": data_s}
    print(" ".join(f"{k}={v:.3f}" for k, v in headline.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
