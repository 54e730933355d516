"""The benchmarks' --quick modes keep working (their numbers belong in docs, not in asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_quick(script: str, timeout: int = 600) -> tuple[list[str], dict[str, float]]:
    """Run `bench/<script> --quick`; its output lines and its headline (the last line)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick"],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return lines, {k: float(v) for k, v in (pair.split("=") for pair in lines[-1].split())}


@pytest.mark.slow
def test_overhead_quick_times_a_plain_loop_and_fit():
    lines, h = run_quick("overhead.py")
    assert sorted(h) == sorted(("fit_over_plain", "fit_over_plain_run", "plain_epoch_s",
                                "fit_epoch_s", "checkpoint_ms", "data_pass_s"))
    for key, value in h.items():
        assert value > 0, key
    # (a) and (b) do the same work: same seed and data, so the same final accuracy.
    pair = next(line for line in lines if line.strip().startswith("pair 1:")).split()
    accs = [pair[i + 1] for i, word in enumerate(pair) if word == "val_acc"]
    assert len(accs) == 2 and accs[0] == accs[1], pair


@pytest.mark.slow
def test_search_efficiency_quick_compares_every_strategy_with_the_grid():
    lines, h = run_quick("search_efficiency.py")
    assert h["seeds"] == 1 and 0 < h["grid_best"] <= 1
    for name in ("random", "tpe_asha", "tpe_pruner", "optuna"):
        # The grid saw every configuration to the end: nothing can beat it, nor cost more.
        assert h[f"{name}_gap_pts"] >= 0, name
        assert 0 < h[f"{name}_epochs_ratio"] <= 1, name
    # Random search without early stopping runs each of its 4 trials (of 4 configs) to the end.
    assert h["random_epochs_ratio"] == 1.0
    assert any(line.startswith("tpe-asha ") for line in lines)


@pytest.mark.slow
def test_default_sweep_quick_reports_wall_time_and_peak_memory():
    _, h = run_quick("default_sweep.py")
    assert h["trials"] == 2 and 0 < h["best_val_acc"] <= 1
    assert 0 < h["sweep_wall_s"] <= h["wall_s"]
    # Ray's daemons and two torch workers hold far more than 100 MiB; PSS never exceeds RSS.
    assert 0.1 < h["peak_pss_gib"] <= h["peak_rss_gib"]


def engine_headlines(lines: list[str]) -> dict[str, dict[str, float]]:
    """A benchmark's `engine=NAME key=value ...` lines, by engine."""
    out = {}
    for line in lines:
        if line.startswith("engine="):
            pairs = dict(pair.split("=") for pair in line.split())
            engine = pairs.pop("engine")
            out[engine] = {k: float(v) for k, v in pairs.items()}
    return out


@pytest.mark.slow
def test_vs_optuna_quick_runs_the_same_work_both_ways_on_each_engine():
    lines, h = run_quick("vs_optuna.py")
    assert h["trials"] == 2 and h["epochs"] == 1
    for key, value in h.items():
        assert value > 0, key
    sweeps = engine_headlines(lines)
    assert sorted(sweeps) == ["train", "tune"], lines
    assert any(line.startswith("sweep tune ") for line in lines)
    assert any(line.startswith("sweep train ") for line in lines)
    for engine, sweep in sweeps.items():
        # Identical-work mode: no early stopping on either side, so every trial trains every
        # epoch, on either engine.
        assert sweep["sweep_epochs"] == h["optuna_epochs"] == h["trials"] * h["epochs"], engine
        for key, value in sweep.items():
            assert value > 0, (engine, key)
    # One Ray for both sweeps: started once.
    assert sweeps["tune"]["ray_start_s"] == sweeps["train"]["ray_start_s"]


def test_search_table_averages_training_seeds():
    # --train-seeds N: each configuration's curve is the per-epoch mean of N real runs.
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_eff", ROOT / "bench" /
                                                  "search_efficiency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = bench.build_table({"lr": [0.1]}, 2, train_seeds=2)
    row = table["curves"][0]
    a, b = row["val_acc_per_seed"]
    assert a != b  # two seeds, two different runs
    assert row["val_acc"] == [round((x + y) / 2, 6) for x, y in zip(a, b, strict=True)]
    assert table["train_seeds"] == 2
    one = bench.build_table({"lr": [0.1]}, 2)["curves"][0]
    assert one["val_acc"] == a and "val_acc_per_seed" not in one  # seed 0 alone, as before


@pytest.mark.slow
def test_gpu_check_script_runs_its_benchmarks(tmp_path: Path):
    # The prepared GPU command, in its quick mode on CPU: every benchmark runs, outputs land.
    import os

    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "QUICK": "1", "OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # bench/throughput.py --quick, as the script runs it: a row and a headline number per preset
    # (not run again on its own: no benchmark runs twice in the suite).
    for name, presets in (("alexnet", ["alexnet"]),
                          ("rest", ["lenet5", "lenet5-1998", "zfnet", "alexnet-one-tower",
                                    "alexnet-torchvision"])):
        lines = (tmp_path / f"throughput_{name}.txt").read_text().strip().splitlines()
        headline = dict(pair.split("=") for pair in lines[-1].split())
        for preset in presets:
            assert float(headline[f"{preset}_fp32_img_s"]) > 0, preset
            assert any(line.startswith(preset + " ") for line in lines), preset
    assert (tmp_path / "towers_check.txt").read_text().strip()
    assert "torch" in (tmp_path / "machine.txt").read_text()


@pytest.mark.slow
def test_scale_quick_runs_two_sweep_sizes_and_times_the_report():
    lines, h = run_quick("scale.py")
    assert h["per_trial_ratio"] > 0 and h["report_s"] > 0 and h["leaks"] >= 0
    assert "rss_mb_per_trial" in h  # a slope (a missing one would not parse as a number)
    table = [line.split() for line in lines if line.split()[:1] in (["2"], ["4"])]
    assert [row[0] for row in table] == ["2", "4"]  # one row per N, each its own sweep
    for row in table:
        assert row[-2:] == ["completed", row[0]]  # every one-epoch trial ran its epoch
    assert sum(line.strip().startswith(("per_trial_ratio ", "rss_mb_per_trial ", "leaks ",
                                        "report_s ")) for line in lines) == 4  # the targets
