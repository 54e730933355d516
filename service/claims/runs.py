"""Running a claim's spaces with `python -m service.submit` and what the runs cost (CPU-hours,
trials, CPU-seconds per compared trial: the unit of the seeds the paper's effect would need).
Used by `python -m service.claims run` and `measure` (service/claims/registry.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from service.claims.measures import ClaimError
from service.cli import Exit
from service.config.spaces import SHIPPED_SPACES
from service.results.records import Summary
from service.results.store import ResultsError, load_run
from service.rundir import SEED_KEY, SUMMARY, TUNING_DIR

SPACES = SHIPPED_SPACES / "claims"


def cost(runs: list[tuple[Path, Summary]]) -> dict[str, Any]:
    """What the runs cost: wall seconds (an ablation's tuning phases too) times the CPUs their
    plans were sized against, and per compared trial, the seeds' unit of cost."""
    wall = cpu = 0.0
    trials = tuning = 0
    per_trial = []
    for run_dir, run in runs:
        cpus = float((run.plan.get("cluster") or {}).get("CPU", 1.0))
        phases = [(run_dir, run)]
        for path in sorted((run_dir / TUNING_DIR).glob(f"*/{SUMMARY}")):
            try:
                phases.append((path.parent, load_run(path.parent)))
            except ResultsError as err:
                raise ClaimError(str(err)) from None
        for i, (_, phase) in enumerate(phases):
            wall += phase.wall_s or 0.0
            cpu += (phase.wall_s or 0.0) * cpus
            if i:
                tuning += len(phase.trials)
        trials += len(run.trials)
        if run.trials and run.wall_s:
            per_trial.append(run.wall_s * cpus / len(run.trials))
    return {"wall_s": round(wall, 1), "cpu_h": round(cpu / 3600, 3), "trials": trials,
            "tuning_trials": tuning,
            "cpu_s_per_trial": round(sum(per_trial) / len(per_trial), 1) if per_trial else None,
            "trials_per_seed": sum(len(run.trials) // max(1, len({t.config.get(SEED_KEY, 0)
                                                                  for t in run.trials}))
                                   for _, run in runs)}


def claim_spaces(number: int, spaces: tuple[str, ...], variant: str | None = None
                 ) -> list[Path]:
    """The space files of claim `number` (`spaces`, its file names): searchspaces/claims/ or
    its `variant` folder."""
    folder = SPACES / variant if variant else SPACES
    paths = [folder / space for space in spaces]
    if not all(path.is_file() for path in paths):
        have = sorted(d.name for d in SPACES.iterdir() if d.is_dir() and all(
            (d / space).is_file() for space in spaces))
        raise ClaimError(f"claim {number} has no {variant} variant; it has "
                         f"{', '.join(['cpu (default)', *have])}")
    return paths


PASSED_ON = (Exit.BAD_INPUT, Exit.WRITE_FAILED, Exit.INTERRUPTED)  # a sweep's; else exit 3


def run_claim(number: int, spaces: tuple[str, ...], results: Path, extra: list[str],
              variant: str | None = None) -> list[Path]:
    """Run the claim's space(s) with `python -m service.submit`; their run directories."""
    dirs = []
    for path in claim_spaces(number, spaces, variant):
        space = path.name
        cmd = [sys.executable, "-m", "service.submit", str(path), "--results",
               str(results), "--no-report", "-q", *extra]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines or not lines[-1].endswith(SUMMARY):
            code = done.returncode if done.returncode in PASSED_ON else Exit.TRIALS_FAILED
            raise ClaimError(f"{space}: the sweep exited with {done.returncode}", code)
        dirs.append(Path(lines[-1]).parent)
    return dirs
