"""What runs on each Ray Train worker of a trial: join the worker group's process group, then
`fit` with Ray's report and checkpoint restore. The only Ray code that imports torch, and it
runs only inside the workers (service.tune.trial hands Ray Train a function that imports this
module there)."""

from __future__ import annotations

import datetime
import socket
from typing import Any

import ray.train
import torch
import torch.distributed as dist
from ray.train.collective import broadcast_from_rank_zero
from ray.util import get_node_ip_address

from service.training import parallel
from service.training.loop import fit
from service.tune.actor import storage_error
from service.tune.trial import trial_train_config


def run_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: `fit` with Ray's report and checkpoint restore."""
    cfg = trial_train_config(config["base"], config["sampled"])

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        # `fit` writes a checkpoint on rank 0 only (the workers' states are identical), so Ray
        # gets one per epoch (tests/test_parallel.py, tests/test_ddp.py).
        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        try:
            ray.train.report(metrics, checkpoint=ckpt)
        except OSError as err:  # a full disk: Ray's copy to storage names neither the path
            where = ray.train.get_context().get_storage().experiment_fs_path  # nor ENOSPC
            raise storage_error(err, metrics.get("epoch"), where) from err

    join_process_group(config.get("backend", "gloo"))
    try:
        checkpoint = ray.train.get_checkpoint()  # set when a restarted worker group resumes
        if checkpoint is None:
            fit(cfg, report)
            return
        with checkpoint.as_directory() as ckpt_dir:
            fit(cfg, report, resume_from=ckpt_dir)
    finally:
        parallel.leave_group()


def join_process_group(backend: str, timeout_s: float = 1800.0) -> None:
    """Start the process group of this Ray Train worker group (nothing on one worker).

    Rank 0 picks its address and a free port and Ray Train broadcasts them; every worker then
    joins over TCP. On GPUs each worker first selects the device Ray assigned it."""
    ctx = ray.train.get_context()
    if torch.cuda.is_available():
        # Only GPU workers need it; the module adds start-up time to every CPU trial.
        from ray.train.torch import get_device

        torch.cuda.set_device(get_device())
    if ctx.get_world_size() == 1:
        return
    here = None
    if ctx.get_world_rank() == 0:
        with socket.socket() as sock:
            sock.bind(("", 0))
            here = (get_node_ip_address(), sock.getsockname()[1])
    host, port = broadcast_from_rank_zero(here)
    dist.init_process_group(backend, init_method=f"tcp://{host}:{port}",
                            rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                            timeout=datetime.timedelta(seconds=timeout_s))
