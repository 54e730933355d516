"""Ray's lifetime for one sweep: this machine's resources before Ray starts, starting or
joining Ray, and the run directory (a new one, or the unfinished one to resume)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from service.rundir import ABLATION, SUMMARY

# What the Ray started here gives its processes (unless this process's environment says
# otherwise); a cluster keeps its own settings.
EMBEDDED_ENV = {
    # Train's controller polls its workers every 2 s by default, so each epoch of a
    # train-engine trial reaches Tune (and ASHA's decisions) ~2 s late; 0.5 s: ~0.25 s.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # One machine is not preempted: Train's preemption watcher (an actor per trial, ~0.1 GiB
    # each) only costs memory here (bench/default_sweep.py).
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def new_run_id() -> str:
    """A run directory's name: the local time the sweep started."""
    return time.strftime("%Y-%m-%d_%H-%M-%S")


def remote_address(address: str | None) -> str | None:
    """The cluster to join: --address, else RAY_ADDRESS; None means Ray starts here."""
    return address or os.environ.get("RAY_ADDRESS") or None


def find_run(root: str, name: str, wanted: str) -> str:
    """The run id to resume: `wanted`, or the newest run without a summary.json."""
    base = Path(root).expanduser().resolve() / name
    if wanted != "latest":
        if not (base / wanted).is_dir():
            raise FileNotFoundError(f"--resume {wanted}: no run directory {base / wanted}")
        return wanted
    runs = sorted(d.name for d in base.glob("*") if d.is_dir() and not finished(d))
    if not runs:
        raise FileNotFoundError(f"--resume: no unfinished run of {name!r} under {base}")
    return runs[-1]


def finished(run_dir: Path) -> bool:
    """Whether a run wrote everything it ends with: summary.json, and for an ablation study
    also ablation.json (written after it: a study killed in between is still unfinished)."""
    summary = run_dir / SUMMARY
    if not summary.exists():
        return False
    if (run_dir / ABLATION).exists():
        return True
    try:
        return not json.loads(summary.read_text()).get("spec", {}).get("ablation")
    except (OSError, ValueError):
        return False  # a summary cut short: resumable


def check_writable(results: str, name: str) -> None:
    """Refuse, before Ray starts, a local results directory this process cannot write to."""
    if "://" in results:
        return  # a bucket's permissions are checked by Tune when it first writes
    base = Path(results).expanduser().resolve() / name
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise OSError(f"results: cannot write to {base}: {err.strerror or err}") from None


def local_resources(via_ray: bool = False) -> dict[str, float]:
    """This machine's CPUs and GPUs, before Ray starts. A dry run asks torch (it must not
    import Ray); a real run asks Ray's own GPU detection (pynvml, honouring
    CUDA_VISIBLE_DEVICES), so that the driver never holds torch (bench/default_sweep.py)."""
    gpus = None
    if via_ray:
        try:  # a private Ray API (docs/architecture.md); imported only for a real run
            from ray._private.accelerators import get_accelerator_manager_for_resource

            manager = get_accelerator_manager_for_resource("GPU")
            gpus = manager.get_current_node_num_accelerators()
            visible = manager.get_current_process_visible_accelerator_ids()
            if visible is not None:
                gpus = min(gpus, len(visible))
        except (ImportError, AttributeError):  # a Ray without that private module
            gpus = None
    if gpus is None:  # the dry run: it must not import Ray
        import torch

        gpus = torch.cuda.device_count()
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def start_ray(address: str | None, verbose: bool, announce: bool = False) -> bool:
    """Connect to `address` / RAY_ADDRESS, or start Ray here; True when we started it. With
    `announce`, print the Ray dashboard's address (the trials' actors, logs and resources
    while the sweep runs)."""
    if not verbose:
        # Tune's boxed tables and Optuna's per-trial lines drown our own progress lines.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        import optuna  # this module is imported by the dry run too: Ray and Optuna only here

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Pending trials cut off by Ctrl-C have no results yet; Tune warns about each.
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    import ray  # the dry run imports this module and must not import Ray

    if ray.is_initialized():  # a sweep's confirmation runs on the Ray its sweep used
        return False
    address = remote_address(address)
    port = None
    if address is None and not os.environ.get("RAY_API_SERVER_ADDRESS"):
        # Train V2's placement-group cleaner finds the State API by looking for Ray on this
        # machine; with a second Ray running here it fails ("multiple active Ray instances")
        # and trials hang. Ray's processes inherit this variable and ask our dashboard.
        port = free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    if address is None:
        for name, value in EMBEDDED_ENV.items():
            os.environ.setdefault(name, value)
    # The dashboard stays on: Train V2 frees finished trials' placement groups through its
    # State API; without it they are never freed and later trials wait for CPUs. It binds to
    # 127.0.0.1 unless a cluster says otherwise.
    context = ray.init(address=address, include_dashboard=address is None or None,
                       dashboard_port=port, log_to_driver=verbose,
                       logging_level=logging.INFO if verbose else logging.WARNING)
    if announce and context.dashboard_url:
        where = "while the sweep runs" if address is None else "the cluster's"
        print(f"Ray dashboard ({where}): http://{context.dashboard_url}", flush=True)
    return address is None


def stop_ray() -> None:
    """Stop the Ray this process started, or disconnect from a cluster's (a no-op when none)."""
    import ray

    ray.shutdown()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
