"""The training loop on two real processes (torch.distributed over gloo, no Ray): validation is
sharded and all-reduced, and only rank 0 writes a checkpoint.

One run of `fit` on two spawned processes serves both tests: LeNet-5 on digits for 2 epochs,
each rank with a checkpoint_root of its own, on a validation set whose odd items (rank 1's
shard) carry a wrong label, so that the two shards' accuracies are far apart and only the
all-reduced sums give the accuracy over the whole set."""

from __future__ import annotations

import json
import multiprocessing
import socket
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from service.config.train import TrainConfig
from service.training.data import Datasets
from service.training.loop import CHECKPOINT_FILE, fit, load_checkpoint, prepare

CFG = TrainConfig(model="lenet5", epochs=2, batch_size=64, lr=0.05, num_threads=1)
WORLD = 2


class Relabelled(Dataset):
    """The first `n` items of `base`, every odd one with the next class's label instead of its
    own: a model that learned the digits is right on the even items, wrong on the odd ones."""

    def __init__(self, base: Dataset, n: int, num_classes: int):
        self.base, self.n, self.k = base, n, num_classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, (int(y) + 1) % self.k if i % 2 else int(y)


def datasets() -> Datasets:
    _, data = prepare(CFG)
    n = len(data.val) - (1 - len(data.val) % 2)  # odd: a padded shard would count one twice
    return Datasets(data.train, Relabelled(data.val, n, data.num_classes), data.num_classes,
                    data.in_channels, data.image_size, data.mean, data.std)


def _rank(rank: int, port: int, out: str) -> None:
    """One process of the group: fit, recording each report and whether its directory held a
    checkpoint when it was reported."""
    import datetime

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    reports = []

    def report(metrics, checkpoint_dir):
        has = checkpoint_dir is not None and (Path(checkpoint_dir) / CHECKPOINT_FILE).is_file()
        reports.append({"metrics": metrics, "checkpoint_dir": checkpoint_dir, "has": has})

    try:
        fit(CFG, report, checkpoint_root=Path(out) / f"ckpt-rank{rank}", datasets=datasets())
        # Both ranks leave together: a rank whose peer has already torn the group down can
        # abort in gloo's threads at exit ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(reports))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, list[list[dict]]]:
    out = tmp_path_factory.mktemp("ddp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(r, port, str(out))) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=180)
            assert p.exitcode == 0, f"rank exited with {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: Dataset, items) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` on `items` of `data`, on this process."""
    x = torch.stack([data[i][0] for i in items])
    y = torch.tensor([data[i][1] for i in items])
    logits = model.eval()(x).float()
    return (float((logits.argmax(1) == y).double().mean()),
            float(torch.nn.functional.cross_entropy(logits, y)))


@pytest.mark.slow
def test_validation_is_sharded_and_all_reduced_over_the_whole_set(two_ranks):
    out, reports = two_ranks
    data = datasets()
    model, _ = prepare(CFG, data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks, so that no near-tie flips an argmax
    try:
        for epoch in range(1, CFG.epochs + 1):
            state = load_checkpoint(out / "ckpt-rank0" / f"epoch_{epoch:04d}")
            model.load_state_dict(state["model"])
            whole = accuracy(model, data.val, range(len(data.val)))
            shards = [accuracy(model, data.val, range(r, len(data.val), WORLD))[0]
                      for r in range(WORLD)]
            # The test's power: each rank's own shard scores far from the whole set.
            assert shards[0] - shards[1] > 0.3, shards
            for rank in range(WORLD):
                got = reports[rank][epoch - 1]["metrics"]
                assert got["epoch"] == epoch
                assert got["val_acc"] == pytest.approx(whole[0], abs=1e-12), (rank, shards)
                assert got["val_loss"] == pytest.approx(whole[1], rel=1e-4)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_only_rank_0_writes_a_checkpoint(two_ranks):
    out, reports = two_ranks
    assert [r["has"] for r in reports[0]] == [True] * CFG.epochs
    assert sorted(p.name for p in (out / "ckpt-rank0").iterdir()) == [
        f"epoch_{e:04d}" for e in range(1, CFG.epochs + 1)]
    # Rank 1 reports every epoch, with no checkpoint, and writes nothing.
    assert [r["metrics"]["epoch"] for r in reports[1]] == list(range(1, CFG.epochs + 1))
    assert [r["checkpoint_dir"] for r in reports[1]] == [None] * CFG.epochs
    assert not (out / "ckpt-rank1").exists()
