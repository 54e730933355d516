"""Data parallelism for the training loop: a no-op on one process, DDP across Ray Train workers.

Rule for batch and learning rate: `batch_size` is the GLOBAL batch. With W workers each takes
batch_size / W images per step and DDP averages the gradients, so a step sees the same number of
images and the same learning rate applies as on one worker — W workers with batch B train like
one worker with batch B, only faster. Validation is sharded and the sums are all-reduced, so
val_acc is over the whole validation set.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Subset


def leave_group() -> None:
    """End this worker's process group, if it has one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def per_worker_batch(batch_size: int, world_size: int) -> int:
    """This worker's share of the global batch; the global batch must split evenly."""
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size}: the global batch must be divisible by the "
                         f"{world_size} workers of a trial")
    return batch_size // world_size


def train_sampler(data: Dataset, seed: int) -> DistributedSampler:
    """A shuffling sampler giving each worker a disjoint share; `set_epoch` reshuffles."""
    rank, size = world()
    return DistributedSampler(data, num_replicas=size, rank=rank, shuffle=True, seed=seed)


def val_shard(data: Dataset) -> Dataset:
    """Every size-th validation item from this rank (no padding, so nothing counts twice)."""
    rank, size = world()
    return Subset(data, range(rank, len(data), size))


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around `model` when there are several workers; the model itself otherwise."""
    if world()[1] == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_sum(*values: torch.Tensor) -> list[torch.Tensor]:
    """Sum each scalar tensor over all workers (identity on one process)."""
    if world()[1] == 1:
        return list(values)
    packed = torch.stack([v.double() for v in values])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return list(packed.unbind())


def all_finite(loss: torch.Tensor) -> bool:
    """True when the loss is finite on every worker, so that all stop together on divergence
    (one worker leaving the step alone would leave the others waiting in DDP's all-reduce)."""
    ok = torch.isfinite(loss.detach()).to(torch.int32)
    if world()[1] > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok)
