"""The metrics a trial reports and how each is read, named once for every layer (the standard
library only): what `service.training.loop.fit` reports every epoch, which of those a sweep may
optimise, the direction each improves in, and which are accuracies (shares in [0, 1])."""

from __future__ import annotations

from typing import Literal

Mode = Literal["max", "min"]  # the direction a metric improves in

# The numbers fit() reports every epoch (besides its string `status`); Tune and Ray Train add
# bookkeeping of their own (timestamp, checkpoint_path, ...), not kept.
FIT_METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "best_val_acc", "lr",
               "epoch_s", "images_per_s", "params", "flops")
# What a sweep may optimise: the accuracies and losses of every epoch, the measured training
# throughput, and the model's static cost (parameters, forward FLOPs per image).
METRICS = ("val_acc", "best_val_acc", "train_acc", "val_loss", "train_loss", "images_per_s",
           "params", "flops")
ACCURACIES = ("val_acc", "best_val_acc", "train_acc")  # shares in [0, 1], shown in points
LOWER_IS_BETTER = ("params", "flops")  # and every *loss


def default_mode(metric: str) -> Mode:
    """The direction in which `metric` improves: max for accuracies and throughput, min for
    losses and costs."""
    return "min" if metric.endswith("loss") or metric in LOWER_IS_BETTER else "max"
