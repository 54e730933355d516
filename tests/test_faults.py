"""Faults injected for real: a Ray Train worker process killed mid-trial resumes from its last
checkpoint (Ray Train restarts the worker group; `train_worker` restores model, optimiser,
scheduler, epoch and RNG from `ray.train.get_checkpoint()`)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from service.train import CHECKPOINT_FILE, TrainConfig


def train_worker_pids() -> list[int]:
    """PIDs of live Ray Train worker processes (their title starts with ray::RayTrainWorker)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::RayTrainWorker"):
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_killed_worker_resumes_from_its_last_checkpoint(tmp_path):
    ray = pytest.importorskip("ray")
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from service.trial import train_worker

    # 96 px LeNet epochs take seconds, so the kill lands inside a trial, not after it.
    cfg = TrainConfig(model="lenet5", epochs=4, num_threads=1).with_overrides({"image_size": 96})
    run_dir = tmp_path / "kill"
    ray.init(num_cpus=2, log_to_driver=False)
    out: dict = {}

    def fit() -> None:
        out["result"] = TorchTrainer(
            train_worker, train_loop_config={"train_config": cfg.model_dump(mode="json")},
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(name="kill", storage_path=str(tmp_path),
                                 failure_config=FailureConfig(max_failures=1)),
        ).fit()

    def checkpoints() -> list[Path]:  # what is on disk so far, registered or not
        return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())

    thread = threading.Thread(target=fit)
    try:
        thread.start()
        deadline = time.time() + 240
        while len(checkpoints()) < 2:
            assert time.time() < deadline and thread.is_alive(), "no checkpoints appeared"
            time.sleep(0.2)
        victims = train_worker_pids()
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        thread.join(timeout=300)
    finally:
        ray.shutdown()
    result = out["result"]
    assert result.error is None
    assert result.metrics["epoch"] == 4 and result.metrics["status"] == "completed"
    # The checkpoints Ray Train registered (a copy cut short by the kill may leave a partial
    # directory on disk, which Ray never registers and never resumes from).
    registered = [(ckpt.path, metrics["epoch"]) for ckpt, metrics in result.best_checkpoints]
    epochs = [epoch for _, epoch in registered]
    for path, epoch in registered:
        assert torch.load(Path(path) / CHECKPOINT_FILE, weights_only=True)["epoch"] == epoch
    # Every epoch was reached; at most the one in flight when the worker died was run twice.
    assert sorted(set(epochs)) == [1, 2, 3, 4]
    assert len(epochs) - len(set(epochs)) <= 1
    assert epochs == sorted(epochs)
