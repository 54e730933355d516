"""Read one trial of a finished sweep back: summary.json, its registered checkpoints, its model.

Checkpoints come only from the trial's list of registered ones (`paths.checkpoint_list`: Ray
Train's snapshot or ours, by the engine the trial ran on), never from globbing `checkpoint_*`:
a process killed mid-copy can leave an unregistered, partial directory behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from service.config.train import TrainConfig
from service.results import store
from service.results.records import Summary
from service.results.store import ResultsError
from service.rundir import checkpoint_list, local_whole_entries
from service.training.data import Datasets
from service.training.loop import load_checkpoint, prepare


class AnalysisError(ResultsError):
    """A user-facing problem (missing run dir, unknown trial, no checkpoint); one printable line."""


@dataclass
class LoadedTrial:
    """A trial's model (eval mode, CPU, checkpoint weights) with its config and data."""

    model: nn.Module
    config: TrainConfig
    datasets: Datasets
    trial_id: str
    epoch: int
    checkpoint_dir: Path
    checkpoints: list[tuple[int, Path]]  # every registered (epoch, dir), sorted by epoch


def trial_checkpoints(run_dir: str | os.PathLike, trial_id: str) -> list[tuple[int, Path]]:
    """(epoch, checkpoint dir) of every checkpoint registered for a trial, by epoch."""
    snapshot = checkpoint_list(run_dir, trial_id)
    trial_dir = snapshot.parent
    try:
        data = json.loads(snapshot.read_text())
        data["checkpoint_results"]
    except FileNotFoundError:
        raise AnalysisError(f"{snapshot}: no registered checkpoints for trial {trial_id}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AnalysisError(f"{snapshot}: unreadable checkpoint list ({err})") from None
    found = {}
    for entry in local_whole_entries(snapshot, data):  # only those stored whole
        try:
            epoch, name = int(entry["metrics"]["epoch"]), entry["checkpoint_dir_name"]
        except (KeyError, TypeError, ValueError):
            continue  # a result without an epoch cannot be placed on the evolution grid
        found[epoch] = trial_dir / name  # a re-registered epoch: the later entry wins
    return sorted(found.items())


def resolve_trial(summary: Summary, trial: str) -> str:
    """The trial id that `trial` ("best" or an id) names in this summary."""
    if trial == "best":
        if summary.best is None:
            raise AnalysisError("summary.json names no best trial (did every trial fail?)")
        return summary.best.trial_id
    known = [t.trial_id for t in summary.trials]
    if trial not in known:
        raise AnalysisError(f"trial {trial!r}: not in this run; trials are {', '.join(known)}")
    return trial


def load_weights(model: nn.Module, checkpoint_dir: Path) -> dict[str, Any]:
    """Load a checkpoint's weights into `model` (eval mode); returns the checkpoint dict."""
    try:
        state = load_checkpoint(checkpoint_dir)
    except (OSError, RuntimeError, EOFError) as err:
        raise AnalysisError(f"{checkpoint_dir}: unreadable checkpoint ({err})") from None
    model.load_state_dict(state["model"])
    return state


def load_trial(run_dir: str | os.PathLike, trial: str = "best",
               epoch: int | None = None) -> LoadedTrial:
    """A trial's model at `epoch` (default: its last registered checkpoint), config and data."""
    try:  # callers catch AnalysisError for everything that stops one trial's analysis
        summary = store.read_summary(run_dir)
    except ResultsError as err:
        raise AnalysisError(str(err)) from None
    trial_id = resolve_trial(summary, trial)
    checkpoints = trial_checkpoints(run_dir, trial_id)
    if not checkpoints:
        raise AnalysisError(f"trial {trial_id}: no checkpoint was registered")
    by_epoch = dict(checkpoints)
    if epoch is None:
        epoch = checkpoints[-1][0]
    if epoch not in by_epoch:
        raise AnalysisError(f"trial {trial_id}: no checkpoint for epoch {epoch}; "
                            f"epochs are {', '.join(map(str, by_epoch))}")
    try:
        state = load_checkpoint(by_epoch[epoch])
    except (OSError, RuntimeError, EOFError) as err:
        raise AnalysisError(f"{by_epoch[epoch]}: unreadable checkpoint ({err})") from None
    try:
        cfg = TrainConfig.model_validate(state["config"])
    except (ValidationError, ValueError, KeyError) as err:
        raise AnalysisError(f"{by_epoch[epoch]}: its config no longer validates "
                            f"({str(err).splitlines()[0]})") from None
    torch.manual_seed(cfg.seed)  # prepare() initialises weights; keep it reproducible anyway
    model, datasets = prepare(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return LoadedTrial(model, cfg, datasets, trial_id, epoch, by_epoch[epoch], checkpoints)


def val_images(datasets: Datasets, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` validation items as (images (n, C, H, W), labels (n,)); fixed, not random."""
    n = min(n, len(datasets.val))
    items = [datasets.val[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def to_display(images: torch.Tensor, datasets: Datasets | None = None) -> np.ndarray:
    """Normalised (N, C, H, W) images back to [0, 1] as (N, H, W, C) for imshow."""
    x = images.detach().float()
    if datasets is not None and datasets.mean is not None and datasets.std is not None:
        mean = torch.tensor(datasets.mean).view(1, -1, 1, 1)
        std = torch.tensor(datasets.std).view(1, -1, 1, 1)
        x = x * std + mean
    else:  # unknown normalisation: stretch each image to [0, 1]
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()
