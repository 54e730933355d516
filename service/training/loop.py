"""The training loop: one configuration, one `report(metrics, checkpoint_dir)` call per epoch.

It needs no Ray: under Ray Train the callback is `ray.train.report`, under Tune `tune.report`,
in tests and benchmarks a list append. It resumes exactly from a checkpoint it wrote (model,
optimiser, scheduler, epoch and RNG states), and a diverging run ends with `status: diverged`.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from service.atomic import write_atomic
from service.config.train import TrainConfig
from service.models import build_model, describe, knob_names, model_knobs, towers
from service.training import parallel
from service.training.data import Datasets, build_datasets

Report = Callable[[dict[str, Any], str | None], None]
CHECKPOINT_FILE = "checkpoint.pt"
FINITE_CHECK_EVERY = 50  # steps between divergence checks (each one syncs the device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device("cpu")


def _set_threads(cfg: TrainConfig) -> None:
    # Ray sets OMP_NUM_THREADS to a worker's CPU share; concurrent trials must not oversubscribe.
    threads = cfg.num_threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)


def prepare(cfg: TrainConfig, datasets: Datasets | None = None) -> tuple[nn.Module, Datasets]:
    """Build the datasets (unless given) and the model sized for them (classes from the data)."""
    preset = {**model_knobs(cfg.model), **cfg.model_knobs()}
    if datasets is None:
        datasets = build_datasets(cfg.data, image_size=preset["image_size"],
                                  in_channels=preset["in_channels"], seed=cfg.seed)
    return build_model(cfg.model, **_knobs(cfg, datasets.num_classes)), datasets


def _knobs(cfg: TrainConfig, num_classes: int) -> dict[str, Any]:
    """The model's knobs for data of `num_classes` classes."""
    knobs = cfg.model_knobs()
    if "num_classes" in knob_names(cfg.model):
        knobs["num_classes"] = num_classes
    return knobs


def static_cost(cfg: TrainConfig, num_classes: int) -> dict[str, int]:
    """The model's parameters and forward FLOPs per image (torch.utils.flop_counter, on the
    meta device): fixed per configuration, reported every epoch so that a sweep can trade
    accuracy against them (`budget.metric: [val_acc, flops]`)."""
    info = describe(cfg.model, flops=True, **_knobs(cfg, num_classes))
    return {"params": int(info["params"]), "flops": int(info["flops"])}


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:  # noqa: E501
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _epoch: 1.0)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (`service.atomic`), so a crash never leaves half a file."""
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `fit` (tensors and plain values only: weights_only)."""
    return torch.load(Path(checkpoint_dir) / CHECKPOINT_FILE, map_location="cpu",
                      weights_only=True)


class _Loop:
    """One run's state: model, optimiser, loaders; `epoch()` trains and validates once."""

    def __init__(self, cfg: TrainConfig, datasets: Datasets | None = None):
        self.cfg = cfg
        self.device = _pick_device(cfg.device)
        _seed_everything(cfg.seed)
        self.model, self.data = prepare(cfg, datasets)
        self.cost = static_cost(cfg, self.data.num_classes)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        if cfg.model_parallel == "towers":  # the towers own their halves of the weights
            self.model = towers.split_towers(self.model, self.device).to(
                memory_format=self.memory_format)
        self.opt = _optimizer(cfg, self.model)
        self.sched = _scheduler(cfg, self.opt)
        self.loader_gen = torch.Generator().manual_seed(cfg.seed)
        pin = self.device.type == "cuda"
        # Several Ray Train workers: DDP, a share of each global batch, sharded validation.
        self.rank, self.world = parallel.world()
        self.net = parallel.wrap(self.model, self.device)
        self.sampler = parallel.train_sampler(self.data.train, cfg.seed) if self.world > 1 else None
        self.train_loader = DataLoader(
            self.data.train, parallel.per_worker_batch(cfg.batch_size, self.world),
            shuffle=self.sampler is None, sampler=self.sampler, generator=self.loader_gen,
            num_workers=cfg.num_workers, pin_memory=pin, drop_last=False)
        self.val_loader = DataLoader(parallel.val_shard(self.data.val), max(cfg.batch_size, 256),
                                     num_workers=cfg.num_workers, pin_memory=pin)

    def _batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def train_epoch(self, epoch: int) -> tuple[float, float, int]:
        """One pass over the training set: (mean loss, accuracy, images); NaN loss on divergence.

        Loss and accuracy are over every worker's images; `images` counts this worker's."""
        self.net.train()
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for step, (x, y) in enumerate(self.train_loader):
            x, y = self._batch(x, y)
            with self._autocast():
                logits = self.net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
            # Reading the loss forces a device sync (and, with DDP, an all-reduce): look every
            # FINITE_CHECK_EVERY steps, and at the end through the epoch's summed loss.
            if step % FINITE_CHECK_EVERY == 0 and not parallel.all_finite(loss):
                return math.nan, math.nan, seen
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.model.post_step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        total_loss, total_correct, total_seen = parallel.all_sum(
            loss_sum, correct, torch.tensor(float(seen), device=self.device))
        if not torch.isfinite(total_loss):  # the same on every worker: all stop together
            return math.nan, math.nan, int(total_seen)
        return float(total_loss / total_seen), float(total_correct / total_seen), int(total_seen)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Validation (mean loss, accuracy) over the whole validation set (all shards)."""
        self.net.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        # The bare model, not the DDP wrapper: its forward broadcasts buffers, a collective
        # per batch, which hangs when the ranks' shards have different numbers of batches.
        for x, y in self.val_loader:
            x, y = self._batch(x, y)
            with self._autocast():
                logits = self.model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        loss_sum, correct, total = parallel.all_sum(
            loss_sum, correct, torch.tensor(float(seen), device=self.device))
        return float(loss_sum / total), float(correct / total)

    def state(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything needed to continue exactly where this epoch ended."""
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
               "loader": self.loader_gen.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch": epoch, "rng": rng,
                "history": history, "config": self.cfg.model_dump(mode="json")}

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `state()` dict (the inverse of `state`)."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        self.loader_gen.set_state(rng["loader"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def fit(config: TrainConfig | dict[str, Any], report: Report, *,
        resume_from: str | os.PathLike | None = None,
        checkpoint_root: str | os.PathLike | None = None,
        datasets: Datasets | None = None) -> dict[str, Any]:
    """Train one configuration, calling `report(metrics, checkpoint_dir)` after every epoch.

    Metrics: epoch, train_loss, train_acc, val_loss, val_acc, best_val_acc, lr, epoch_s,
    images_per_s, params, flops (per image), status (running | completed | diverged).
    `checkpoint_dir` holds `checkpoint.pt` for this epoch; unless `checkpoint_root` is given it
    is a temporary directory removed once `report` returns (Ray copies it during the call).
    With several workers only rank 0 writes a checkpoint; the others report None.
    `resume_from` is a checkpoint directory written by an earlier call. `datasets` replaces the
    ones `cfg.data` describes (in-memory data in tests and benchmarks). Returns the last
    metrics reported.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    _set_threads(cfg)
    loop = _Loop(cfg, datasets)
    start_epoch, history = 0, []
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        loop.restore(state)
        start_epoch, history = state["epoch"], list(state["history"])
        if start_epoch >= cfg.epochs and "metrics" in state:
            # Resumed from the final checkpoint (a sweep's driver died after the trial ended,
            # before Tune recorded it): say the last result again instead of training more.
            report(dict(state["metrics"]), None)
            return dict(state["metrics"])
    metrics: dict[str, Any] = history[-1] if history else {}
    best = max((h["val_acc"] for h in history), default=0.0)
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = loop.opt.param_groups[0]["lr"]
        train_loss, train_acc, seen = loop.train_epoch(epoch)
        train_s = time.perf_counter() - t0
        diverged = not math.isfinite(train_loss)
        # A diverged model predicts nothing: it scores 0 so that schedulers rank it last.
        val_loss, val_acc = (math.inf, 0.0) if diverged else loop.evaluate()
        best = max(best, val_acc)
        status = "diverged" if diverged else ("completed" if epoch == cfg.epochs else "running")
        metrics = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                   "val_loss": val_loss, "val_acc": val_acc, "best_val_acc": best, "lr": lr,
                   "epoch_s": time.perf_counter() - t0, "images_per_s": seen / max(train_s, 1e-9),
                   **loop.cost, "status": status}
        if diverged:
            report(metrics, None)
            break
        loop.sched.step()
        history.append({k: metrics[k] for k in ("epoch", "train_loss", "val_loss", "val_acc")})
        if loop.rank == 0:
            state = {**loop.state(epoch, history), "metrics": metrics}
            _report_with_checkpoint(report, metrics, state, checkpoint_root)
        else:  # the workers' states are identical: rank 0's checkpoint is the only one
            report(metrics, None)
    return metrics


def _report_with_checkpoint(report: Report, metrics: dict[str, Any], state: dict[str, Any],
                            checkpoint_root: str | os.PathLike | None) -> None:
    if checkpoint_root is not None:
        ckpt_dir = Path(checkpoint_root) / f"epoch_{metrics['epoch']:04d}"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(ckpt_dir / CHECKPOINT_FILE, state)
        report(metrics, str(ckpt_dir))
        return
    ckpt_dir = Path(tempfile.mkdtemp(prefix="cnn-ablate-ckpt-"))
    try:
        save_checkpoint(ckpt_dir / CHECKPOINT_FILE, state)
        report(metrics, str(ckpt_dir))
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
