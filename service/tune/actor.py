"""A one-worker trial run in Tune's own trial actor: `fit` with Tune's report and checkpoints.

The tune engine (`resources.engine`, the default for one worker). The actor holds the worker's
CPUs and GPUs (`tune.with_resources`; Ray sets its `CUDA_VISIBLE_DEVICES`) and Tune reuses it
from trial to trial, so torch, the dataset cache and the optimiser's first-step imports are
paid once per actor. It imports torch: `service.tune.trial` imports this module only inside the
trial, never in the sweep's driver.

Checkpoints: each epoch's is reported to Tune (`ray.tune.report(metrics, checkpoint=…)`), which
copies it into the trial's directory as `checkpoint_NNNNNN/` before `report` returns; then the
trial adds it to its list of registered checkpoints there (`paths.TUNE_SNAPSHOT`, in Train's
shape), written straight to storage. A trial resumes from the newer of Tune's checkpoint
(`tune.get_checkpoint()`: a restart after `max_failures`) and that list (a checkpoint stored
while the process died, or a driver killed before Tune saved its state), so no epoch is
trained twice; the listed epochs Tune has not had are reported to it first.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np
import ray.tune
import torch

from service.rundir import TUNE_SNAPSHOT, read_checkpoint_list
from service.training.loop import fit


class CheckpointList:
    """A trial's list of registered checkpoints in its Tune directory, on Tune's storage."""

    def __init__(self, storage) -> None:
        self.fs = storage.storage_filesystem
        self.fs.create_dir(storage.trial_fs_path, recursive=True)  # Tune makes it on 1st store
        self.path = f"{storage.trial_fs_path}/{TUNE_SNAPSHOT}"
        self.entries = read_checkpoint_list(self.fs, self.path)  # the whole ones

    def latest(self) -> dict[str, Any] | None:
        return self.entries[-1] if self.entries else None

    def highest_index(self) -> int:
        """The largest `checkpoint_NNNNNN` index listed (-1 with none)."""
        return max((_index(e.get("checkpoint_dir_name")) for e in self.entries), default=-1)

    def add(self, metrics: dict[str, Any], dir_name: str, local_dir: str) -> None:
        """List `local_dir`, about to be stored as `dir_name`, with each file's size."""
        files = {f: os.path.getsize(os.path.join(local_dir, f)) for f in os.listdir(local_dir)}
        entry = {"metrics": metrics, "checkpoint_dir_name": dir_name, "files": files}
        # A name used again (after a restart below our newest) replaces the old entry.
        self.entries = [e for e in self.entries if e.get("checkpoint_dir_name") != dir_name]
        self.entries.append(entry)
        data = json.dumps({"checkpoint_results": self.entries, "latest_checkpoint_result": entry},
                          default=str).encode()
        tmp = f"{self.path}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, self.path)  # a rename on a local disk: never half a list


def checkpoint_name(index: int) -> str:
    """Tune's name for a trial's checkpoint of this index (StorageContext's)."""
    return f"checkpoint_{index:06d}"


def _index(name: Any) -> int:
    try:
        return int(str(name).rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def reset_process_state(seed: int) -> None:
    """What one trial may leave behind in a reused actor, put back: every RNG seeded from the
    trial's seed (fit seeds its own again) and the CUDA cache emptied."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_in_actor(cfg, storage) -> None:
    """Train `cfg` (the trial's TrainConfig) in this actor, resuming from its newest checkpoint."""
    reset_process_state(cfg.seed)
    registered = CheckpointList(storage)
    resume_from, unreported = _resume_point(registered, storage)
    # Tune names the next checkpoint after the last one its driver saw; where our list is newer
    # (a restored driver), continue after ours so that no registered checkpoint is overwritten.
    if registered.highest_index() > storage.current_checkpoint_index:
        storage.current_checkpoint_index = registered.highest_index()

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        ckpt = None
        try:
            if checkpoint_dir is not None:
                ckpt = ray.tune.Checkpoint.from_directory(checkpoint_dir)
                # Listed first: Tune stores it as the next index inside `report`, which a trial
                # that a scheduler stops there never returns from.
                registered.add(metrics, checkpoint_name(storage.current_checkpoint_index + 1),
                               checkpoint_dir)
            ray.tune.report(metrics, checkpoint=ckpt)
        except OSError as err:  # a full disk: Ray's copy to storage names neither the path
            raise storage_error(err, metrics.get("epoch"), storage.trial_fs_path) from err

    # Epochs stored and listed after the checkpoint Tune knows (the process died inside their
    # report, or a restored driver saved its state before them): Tune gets their results now,
    # so that its scheduler and result.json miss no epoch.
    for entry in unreported:
        ray.tune.report(dict(entry.get("metrics") or {}))
    if unreported and unreported[-1].get("metrics", {}).get("epoch", 0) >= cfg.epochs:
        return  # the last epoch was stored: nothing is left to train
    if resume_from is None:
        fit(cfg, report)
        return
    with resume_from.as_directory() as ckpt_dir:  # local storage: the directory itself
        fit(cfg, report, resume_from=ckpt_dir)


def _resume_point(registered: CheckpointList, storage):
    """Where the trial resumes: the newer of Tune's checkpoint and the newest one in our list
    (by their `checkpoint_NNNNNN` index, which only grows), as a ray.tune.Checkpoint or None;
    and the listed entries after Tune's, whose results Tune has not had."""
    tune_ckpt = ray.tune.get_checkpoint()
    known = _index(os.path.basename(tune_ckpt.path)) if tune_ckpt is not None else -1
    newer = [e for e in registered.entries if _index(e.get("checkpoint_dir_name")) > known]
    if not newer:
        return tune_ckpt, []
    newest = f"{storage.trial_fs_path}/{newer[-1]['checkpoint_dir_name']}"
    return ray.tune.Checkpoint(newest, filesystem=storage.storage_filesystem), newer


def storage_error(err: OSError, epoch: Any, where: str) -> OSError:
    """`err` (raised while Ray stored a checkpoint) as one line naming the errno's text and
    `where` the trial's results lie, e.g. "[Errno 28] No space left on device: '…'"."""
    text = os.strerror(err.errno) if err.errno else str(err)
    return OSError(err.errno, f"{text} (storing epoch {epoch}'s checkpoint)", where)
