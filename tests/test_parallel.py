"""Data-parallel trials: two Ray Train workers (DDP over gloo on CPU) against one worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config.train import TrainConfig
from service.training.loop import CHECKPOINT_FILE, fit
from service.training.parallel import per_worker_batch, world


def test_single_process_is_world_of_one():
    assert world() == (0, 1)
    assert per_worker_batch(64, 1) == 64


def test_global_batch_must_split_evenly():
    assert per_worker_batch(64, 2) == 32
    with pytest.raises(ValueError, match="batch_size=65"):
        per_worker_batch(65, 2)


@pytest.mark.slow
def test_two_workers_train_like_one_worker_with_the_same_global_batch(tmp_path):
    ray = pytest.importorskip("ray")
    from ray.train import RunConfig, ScalingConfig

    from service.tune.trial import loop_config, make_trainer

    cfg = TrainConfig(model="lenet5", epochs=8, batch_size=64, num_threads=1)
    single: list[dict] = []
    fit(cfg, lambda m, _c: single.append(m))

    ray.init(num_cpus=2, log_to_driver=False)
    try:
        result = make_trainer(
            loop_config(cfg.model_dump(mode="json"), backend="gloo"),
            ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            RunConfig(name="ddp", storage_path=str(tmp_path)),
        ).fit()
    finally:
        ray.shutdown()
    ddp = result.metrics
    assert ddp["epoch"] == 8 and ddp["status"] == "completed"
    # Same global batch and lr: the curves agree up to the order the samples were drawn in.
    assert abs(ddp["val_acc"] - single[-1]["val_acc"]) <= 0.03
    assert ddp["val_acc"] > 0.9
    # Only rank 0 writes checkpoints: one per epoch.
    ckpts = sorted(p for p in Path(tmp_path, "ddp").glob("checkpoint_*") if p.is_dir())
    assert len(ckpts) == 8 and all((c / CHECKPOINT_FILE).is_file() for c in ckpts)
