"""Wall time and peak memory of the embedded default sweep (`python -m service.submit`).

It runs the command in a subprocess (results in a temporary directory) and samples, a few
times a second, the memory of every process that belongs to the run: the submit process's
descendants plus every process whose environment carries this run's tag (Ray's daemons and
workers inherit the driver's environment, even when they are not its children). Both the
sum of RSS (counts shared pages once per process, so it overstates) and the sum of PSS
(shared pages split between their users: the memory the run really holds) are reported.
/proc only: no psutil. The last line is the headline as key=value.

    python bench/default_sweep.py                  # as shipped (8 trials, 8 epochs, confirmed)
    python bench/default_sweep.py --no-confirm     # the sweep alone
    python bench/default_sweep.py --engine train   # the same space, each trial a Train run
    python bench/default_sweep.py --quick          # CI: --max-epochs 2 --num-samples 2, the
                                                   # sweep alone
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG_VAR = "CNN_ABLATE_BENCH_TAG"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _read(path: str, mode: str = "r") -> str | bytes | None:
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:  # the process ended, or is not ours to read
        return None


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (from /proc/<pid>/stat)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:  # the command name may hold spaces: the fields start after its ')'
                out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def run_processes(root: int, tag: str) -> set[int]:
    """The root's descendants and every process whose environment carries `tag`."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    needle = f"{TAG_VAR}={tag}".encode()
    for pid in parents.keys() - found:
        env = _read(f"/proc/{pid}/environ", "rb")
        if env and needle in env.split(b"\0"):
            found.add(pid)
    return found


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) bytes of one process; (0, 0) once it has gone."""
    statm = _read(f"/proc/{pid}/statm")
    rss = int(statm.split()[1]) * PAGE if statm else 0
    rollup = _read(f"/proc/{pid}/smaps_rollup") or ""
    pss = next((int(line.split()[1]) * 1024 for line in rollup.splitlines()
                if line.startswith("Pss:")), 0)
    return rss, pss


class Sampler(threading.Thread):
    """Samples the run's total RSS and PSS every `interval` seconds; keeps the peaks."""

    def __init__(self, root: int, tag: str, interval: float):
        super().__init__(daemon=True)
        self.root, self.tag, self.interval = root, tag, interval
        self.peak_rss = self.peak_pss = self.peak_procs = self.samples = 0
        self.at_peak: dict[str, list[int]] = {}  # process name -> [count, PSS] at peak PSS
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pids = run_processes(self.root, self.tag)
            mem = {pid: memory(pid) for pid in pids}
            rss, pss = (sum(m[i] for m in mem.values()) for i in (0, 1))
            self.peak_rss = max(self.peak_rss, rss)
            if pss > self.peak_pss:
                self.peak_pss, self.at_peak = pss, by_name(mem)
            self.peak_procs = max(self.peak_procs, len(pids))
            self.samples += 1
            self.done.wait(self.interval)


def by_name(mem: dict[int, tuple[int, int]]) -> dict[str, list[int]]:
    """Process name (Ray renames its workers, e.g. ray::IDLE) -> [count, summed PSS]."""
    out: dict[str, list[int]] = {}
    for pid, (_rss, pss) in mem.items():
        argv = (_read(f"/proc/{pid}/cmdline") or "").split("\0")
        name = Path(argv[0]).name
        if name.startswith("python") and len(argv) > 1:  # name the script, not Python
            name = Path(argv[2] if argv[1] == "-m" and len(argv) > 2 else argv[1]).name
        name = name.strip()[:40] or "?"
        entry = out.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += pss
    return out


def _space_with_engine(tmp: Path, engine: str) -> str:
    """The shipped default space with `resources.engine` set, written to `tmp`."""
    import yaml

    spec = yaml.safe_load((ROOT / "service" / "searchspaces" / "default.yaml").read_text())
    spec.setdefault("resources", {})["engine"] = engine
    path = tmp / f"default-{engine}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    """Run the default sweep under the sampler; print wall time, peak memory, the headline."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="--max-epochs 2 --num-samples 2")
    p.add_argument("--no-confirm", action="store_true",
                   help="the sweep without its confirmation (submit --no-confirm)")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between samples")
    p.add_argument("--engine", choices=["tune", "train"],
                   help="the default space with resources.engine set to this (default: as "
                        "shipped, auto)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="interrupt the sweep (Ctrl-C) after this many seconds (default 1800)")
    args = p.parse_args(argv)
    if not 0.01 <= args.interval <= 10:
        p.exit(2, "error: --interval must be between 0.01 and 10 seconds\n")
    if args.timeout <= 0:
        p.exit(2, "error: --timeout must be positive\n")
    tag = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="default-sweep-") as tmp:
        cmd = [sys.executable, "-m", "service.submit", "--results", tmp, "-q"]
        if args.engine:
            cmd.insert(3, _space_with_engine(Path(tmp), args.engine))
        if args.quick:
            cmd += ["--max-epochs", "2", "--num-samples", "2"]
        if args.quick or args.no_confirm:
            cmd += ["--no-confirm"]
        print("command: " + " ".join(cmd[1:]) + f"  (cpus={os.cpu_count()}, "
              f"load={os.getloadavg()[0]:.2f})", flush=True)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, TAG_VAR: tag},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = Sampler(proc.pid, tag, args.interval)
        sampler.start()
        try:
            out, err = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            # A sweep whose trials wait forever for CPUs (leaked placement groups) would
            # hang CI; Ctrl-C lets submit stop Ray cleanly.
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate()
            err += f"\ntimed out after {args.timeout:g}s (peak PSS so far " \
                   f"{sampler.peak_pss / 2**30:.2f} GiB)"
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        lines = out.strip().splitlines()
        if proc.returncode != 0 or not lines or not lines[-1].endswith("summary.json"):
            tail = (err.strip().splitlines() or ["no output"])[-1]
            print(f"error: the sweep exited with {proc.returncode}: {tail}", file=sys.stderr)
            return 1
        summaries = [json.loads(Path(line).read_text()) for line in lines
                     if line.endswith("summary.json")]
    print("\n".join(line for line in lines if not line.endswith("summary.json")))
    print_results(wall, summaries, sampler)
    return 0


def print_results(wall: float, summaries: list[dict], sampler: Sampler) -> None:
    """Wall time and memory in words, the processes at the peak, then the headline."""
    gib = 2**30
    summary, confirmed = summaries[0], summaries[1:]  # the sweep's, then its confirmation's
    confirm = f", its confirmation {confirmed[0]['wall_s']:.1f}s" if confirmed else ""
    print(f"wall {wall:.1f}s (whole command; the sweep itself {summary['wall_s']:.1f}s{confirm}), "
          f"peak PSS {sampler.peak_pss / gib:.2f} GiB, peak RSS sum "
          f"{sampler.peak_rss / gib:.2f} GiB over up to {sampler.peak_procs} processes "
          f"({sampler.samples} samples)")
    top = sorted(sampler.at_peak.items(), key=lambda kv: -kv[1][1])
    print("at peak PSS: " + ", ".join(f"{name} x{n} {pss / gib:.2f} GiB"
                                      for name, (n, pss) in top))
    best = summary["best"]["best_val_acc"] if summary["best"] else 0.0
    confirm_wall = f"confirm_wall_s={confirmed[0]['wall_s']:.1f} " if confirmed else ""
    print(f"wall_s={wall:.1f} sweep_wall_s={summary['wall_s']:.1f} {confirm_wall}"
          f"peak_pss_gib={sampler.peak_pss / gib:.3f} peak_rss_gib={sampler.peak_rss / gib:.3f} "
          f"trials={len(summary['trials'])} best_val_acc={best:.4f}")


if __name__ == "__main__":
    raise SystemExit(main())
