"""summary.json from Tune's results: one record per trial, the best one, the run's facts."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from dataclasses import asdict
from typing import Any

from service.tune.paths import trial_id_of
from service.tune.plan import SweepPlan

FAILED = ("error", "diverged")


def trial_status(metrics: dict[str, Any], error: Exception | None, max_epochs: int) -> str:
    """completed | stopped-early | diverged | error, from a trial's last result."""
    if error is not None:
        return "error"
    if metrics.get("status") == "diverged":
        return "diverged"
    return "completed" if metrics.get("epoch", 0) >= max_epochs else "stopped-early"


def summarize(spec, plan: SweepPlan, results, wall_s: float, searched: list[str]) -> dict:
    """summary.json's content from a Tune ResultGrid."""
    import ray

    trials = []
    for r in results:
        m = r.metrics or {}
        df = r.metrics_dataframe
        accs = df["val_acc"].dropna().tolist() if df is not None and "val_acc" in df else []
        trials.append({
            "trial_id": m.get("trial_id") or trial_id_of(r.path),
            "config": {k: v for k, v in (r.config or {}).items()},
            "status": trial_status(m, r.error, spec.budget.max_epochs),
            "epochs": int(m.get("epoch", 0)),
            "best_val_acc": max(accs) if accs else None,
            "final": {k: m[k] for k in ("val_acc", "val_loss", "train_loss") if k in m},
            "error": _first_line(r.error) if r.error else None,
        })
        if trials[-1]["status"] == "stopped-early":
            trials[-1]["stopped_at"] = trials[-1]["epochs"]  # the epoch a scheduler stopped it
    trials.sort(key=lambda t: _sort_key(t, spec.budget.metric, spec.budget.mode))
    ok = [t for t in trials if t["status"] not in FAILED and t["best_val_acc"] is not None]
    return {
        "name": spec.name, "spec": redacted_spec(spec), "plan": asdict(plan),
        "searched": searched, "trials": trials, "best": ok[0] if ok else None,
        "wall_s": round(wall_s, 2), "ray_version": ray.__version__,
        "torch_version": _version("torch"),  # the workers' torch; the driver never imports it
    }


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, e.g. postgresql://user:***@host/db."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def redacted_spec(spec) -> dict:
    """The spec as recorded in summary.json: an RDB password never lands in a results file."""
    dump = spec.model_dump(mode="json")
    if dump.get("searcher", {}).get("storage"):
        dump["searcher"]["storage"] = redact_url(dump["searcher"]["storage"])
    return dump


def _sort_key(trial: dict, metric: str, mode: str):
    if trial["status"] in FAILED or trial["best_val_acc"] is None:
        return (1, 0.0)
    value = trial["best_val_acc"] if metric == "val_acc" else trial["final"].get(metric, math.inf)
    return (0, -value if mode == "max" else value)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return next((line for line in reversed(text) if line.strip()), type(err).__name__)[:500]


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (temp file + rename) to a local path or a URI."""
    data = json.dumps(payload, indent=2, default=str).encode()
    if "://" in path:
        import pyarrow.fs

        fs, rel = pyarrow.fs.FileSystem.from_uri(path)
        with fs.open_output_stream(rel) as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        # A full disk or a read-only directory: leave no half-written file behind.
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if err.filename is None:
            err.filename = path
        raise
