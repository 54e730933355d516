"""The sweep report on a real sweep's results: tables, effects, importance, model comparison,
the best trial's analyses, and the page checked in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.report.data import knob_effects
from service.results.records import Summary, TrialRecord
from service.results.stats import mean_ci95

ROOT = Path(__file__).resolve().parents[1]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
        "google-chrome")


@pytest.fixture(scope="module")
def report_dir(alexnet_run, tmp_path_factory) -> Path:
    """A copy of the shared sweep with its report written by the CLI."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(alexnet_run, run)
    proc = subprocess.run([sys.executable, "-m", "service.report", str(run)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(run / "report.html")
    return run


@pytest.mark.slow
def test_report_tables_match_the_summary(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    md = (report_dir / "report.md").read_text()
    for t in summary["trials"]:  # every trial is a row, with its status
        assert re.search(rf"\| {t['trial_id']} \|.*\| {t['status']} \|", md), t["trial_id"]
    numbers = json.loads((report_dir / "report.json").read_text())
    assert set(numbers["effects"]) == set(summary["searched"]) == {"conv1_kernel",
                                                                   "conv1_stride"}
    # The stride-2 mean is the mean of the stride-2 trials' best accuracies.
    stride2 = [t["best_val_acc"] for t in summary["trials"] if t["config"]["conv1_stride"] == 2]
    (row,) = [r for r in numbers["effects"]["conv1_stride"] if r["value"] == "2"]
    assert row["n"] == 2 and row["mean"] == pytest.approx(sum(stride2) / 2)
    imp = numbers["importance"]["importances"]
    assert set(imp) == {"conv1_kernel", "conv1_stride"} and sum(imp.values()) == pytest.approx(1)
    models = numbers["models"]
    assert sorted(m["conv1"] for m in models) == ["11x11/2", "11x11/4", "7x7/2", "7x7/4"]
    for m in models:
        assert m["params"] > 0 and m["flops"] > 0 and m["epoch_s"] > 0
        assert 0 <= m["dead_fraction"] <= 1 and 0 <= m["aliasing"] <= 1
        assert m["aliasing_vs_noise"] > 0
    # FLOPs fall with a larger conv1 stride, as the arithmetic says.
    flops = {m["conv1"]: m["flops"] for m in models}
    assert flops["11x11/4"] < flops["11x11/2"] and flops["7x7/4"] < flops["7x7/2"]
    assert numbers["analysis"]["trial_id"] == summary["best"]["trial_id"]
    assert (report_dir / "analysis" / summary["best"]["trial_id"] / "analysis.json").is_file()


@pytest.mark.slow
def test_report_html_stands_alone(report_dir):
    page = (report_dir / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 8  # curves, effects, importance, parallel and the analyses
    assert all(src.startswith("data:image/png;base64,") for src in images)
    md = (report_dir / "report.md").read_text()
    for name in re.findall(r"\]\((report_files/[^)]+)\)", md):
        assert (report_dir / name).stat().st_size > 1000


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (.ci/run installs it with apt)")
    page = (report_dir / "report.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120)
    body = re.search(r'<body data-images="(\d+)" data-images-loaded="(\d+)"', dom.stdout)
    assert body, dom.stdout[:2000] + dom.stderr[-2000:]
    assert int(body[1]) >= 8 and body[1] == body[2]  # every image decoded in the browser
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1200,2000", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 2000)
        colours = img.convert("L").getextrema()
    assert colours[1] - colours[0] > 100  # something was drawn, not a blank page


@pytest.mark.slow
def test_report_of_a_missing_or_malformed_run_exits_2(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text('{"name": "x", "spec": {}, "trials": [{}]}')
    for run, needle in ((tmp_path / "nope", "nope"), (tmp_path / "bad", "trials.0")):
        proc = subprocess.run([sys.executable, "-m", "service.report", str(run)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
        assert "Traceback" not in proc.stderr


def test_ci95_and_effects_on_hand_made_trials():
    mean, half = mean_ci95([0.5, 0.7])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(12.706 * 0.1414214 / 2 ** 0.5, rel=1e-3)  # t(0.975, 1 dof)
    assert mean_ci95([0.9]) == (0.9, None)
    def trial(i: int, lrn: bool, dropout: float, status: str, accs: list[float]) -> TrialRecord:
        return TrialRecord.from_history(f"t{i}", {"lrn": lrn, "dropout": dropout}, status,
                                        [{"epoch": e + 1, "val_acc": a} for e, a in
                                         enumerate(accs)])

    summary = Summary.ranked([
        trial(0, True, 0.1, "completed", [0.5, 0.9, 0.85]),  # counts with its best, 0.9
        trial(1, True, 0.4, "completed", [0.8]),
        trial(2, False, 0.2, "diverged", [0.1]),
        trial(3, False, 0.3, "stopped-early", [0.6]),
    ], name="hand-made", searched=["lrn", "dropout"],
        spec={"budget": {"metric": "val_acc", "mode": "max"},
              "search": {"lrn": {"type": "choice", "values": [True, False]},
                         "dropout": {"type": "float", "low": 0.0, "high": 0.5}}})
    effects = knob_effects(summary)
    by_value = {r["value"]: r for r in effects["lrn"]["rows"]}
    assert by_value["True"]["n"] == 2 and by_value["True"]["mean"] == pytest.approx(0.85)
    assert by_value["False"]["n"] == 1 and by_value["False"]["ci95"] is None  # diverged: out
    halves = effects["dropout"]["rows"]
    assert [r["n"] for r in halves] == [2, 1]  # split at the median dropout 0.3
