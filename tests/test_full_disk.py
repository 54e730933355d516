"""A full disk mid-sweep, for real: the results directory is a small tmpfs this test mounts,
filled by another writer after the first trial finished. The trials that then need space end as
errors naming the path and ENOSPC, the finished trial and its checkpoints stay intact, the run
exits 4 (its summary cannot be written); once space is freed, `--resume` completes the sweep.

Skipped, saying why, where a tmpfs cannot be mounted (not root, no mount namespace)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import lenet_space
from test_faults import _trained_epochs, kill_sweep
from test_submit import Lines

from service.cli import Exit
from service.rundir import checkpoint_list, read_local_list

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 2

SPACE = lenet_space("full", {"lr": {"type": "grid", "values": [0.05, 0.03, 0.02]}}, EPOCHS,
                    max_concurrent_trials=1)


@contextlib.contextmanager
def small_disk(path: Path, mib: int):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write to `path` until the filesystem refuses (ENOSPC); the file stays."""
    filler = path / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
    return filler


def _digests(run_dir: Path, trial_id: str) -> dict[str, str]:
    """The trial's registered checkpoints and their list, file by file."""
    listed = checkpoint_list(run_dir, trial_id)
    files = [listed] + [p for e in read_local_list(listed)
                        for p in sorted((listed.parent / e["checkpoint_dir_name"]).rglob("*"))]
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file()}


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_a_disk_that_fills_mid_sweep_errors_the_trials_that_need_it_and_resume_finishes(
        tmp_path):
    pytest.importorskip("ray")
    space = tmp_path / "full.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    with small_disk(tmp_path / "disk", 64) as disk:
        cmd = [sys.executable, "-m", "service.submit", str(space), "--results", str(disk),
               "--no-report"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        lines = Lines(proc)
        try:
            line = lines.until(lambda s: s.strip().startswith("results: "), 120)
            run_dir = Path(line.split("results: ", 1)[1].strip())
            line = lines.until(lambda s: " completed " in s, 300)
            first = line.split()[1]
            filler = fill(disk)
            out = lines.rest(600)
            code = proc.wait(timeout=60)
        finally:
            kill_sweep(proc.pid)
        assert code == Exit.WRITE_FAILED, out
        # The trials that needed space failed naming ENOSPC and their own directory.
        failed = set(re.findall(r"No space left on device \(storing epoch \d+'s checkpoint\):"
                                r" '[^']*/run_trial_([0-9a-f]+_\d{5})_[^']*'", out))
        assert failed and first not in failed, out
        assert f"error: {run_dir}" in out, out  # exit 4's one line, with the resume command
        assert f"--resume {run_dir.name}" in out, out
        kept = _digests(run_dir, first)
        assert _trained_epochs(run_dir)[first] == list(range(1, EPOCHS + 1))

        filler.unlink()  # space freed
        again = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True,
                               timeout=600, start_new_session=True)
        assert again.returncode == 0, again.stdout + again.stderr
        summary = json.loads((run_dir / "summary.json").read_text())
        assert [t["status"] for t in summary["trials"]] == ["completed"] * 3, summary["trials"]
        assert len({t["trial_id"] for t in summary["trials"]}) == 3
        assert _digests(run_dir, first) == kept  # the finished trial untouched
    print(f"full disk: {len(failed)} of 3 trials failed with ENOSPC, exit {int(code)}; "
          f"--resume: exit {again.returncode}, 3 completed, the finished trial's "
          f"{len(kept)} files unchanged")
