"""The sweep report on a real sweep's results: tables, effects, importance, model comparison,
the best trial's analyses, and the page checked in a real headless Chromium."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.config.spec import parse_spec
from service.report.build import Doc, _effects_section
from service.report.data import ablation_example, knob_effects
from service.results.records import Summary, TrialRecord
from service.results.stats import mean_ci95
from service.results.store import load_run

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
    # The stride-2 mean is the mean of the stride-2 trials' val_acc at the epoch of the rule.
    basis = numbers["effects_basis"]
    left = {t["trial_id"] for t in basis["left_out"]}
    stride2 = [row["val_acc"] for t in load_run(report_dir).trials
               if t.config["conv1_stride"] == 2 and t.trial_id not in left
               for row in t.history if row["epoch"] == basis["epoch"]]
    if basis["rule"] == "completed":
        assert basis["epoch"] == summary["spec"]["budget"]["max_epochs"]
        assert left == {t["trial_id"] for t in summary["trials"] if t["status"] != "completed"}
    (row,) = [r for r in numbers["effects"]["conv1_stride"] if r["value"] == "2"]
    assert row["n"] == len(stride2) and row["mean"] == pytest.approx(sum(stride2) / len(stride2))
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


def test_ci95_of_two_values_is_t_based():
    mean, half = mean_ci95([0.5, 0.7])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(12.706 * 0.1414214 / 2 ** 0.5, rel=1e-3)  # t(0.975, 1 dof)
    assert mean_ci95([0.9]) == (0.9, None)


def trial(name: str, lrn: bool, dropout: float, status: str, accs: list[float]) -> TrialRecord:
    """A trial record with its per-epoch history attached, as store.load_run attaches it."""
    rows = [{"epoch": e + 1, "val_acc": a} for e, a in enumerate(accs)]
    record = TrialRecord.from_history(name, {"lrn": lrn, "dropout": dropout}, status, rows)
    record.history = rows
    return record


SPACE = {"budget": {"metric": "val_acc", "mode": "max", "max_epochs": 4},
         "searcher": {"type": "optuna-tpe"},
         "search": {"lrn": {"type": "choice", "values": [True, False]},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5}}}


def summary_of(trials: list[TrialRecord]) -> Summary:
    return Summary.ranked(trials, name="hand-made", searched=["lrn", "dropout"], spec=SPACE)


def test_knob_effects_compare_finished_trials_at_the_final_epoch(tmp_path):
    completed = [  # 4 epochs each; c1's final value (0.94) is below its best (0.95)
        trial("c0", True, 0.1, "completed", [0.6, 0.8, 0.9, 0.92]),
        trial("c1", True, 0.4, "completed", [0.5, 0.7, 0.95, 0.94]),
        trial("c2", False, 0.2, "completed", [0.6, 0.85, 0.9, 0.96]),
        trial("c3", False, 0.3, "completed", [0.55, 0.8, 0.93, 0.90]),
        trial("c4", True, 0.45, "completed", [0.5, 0.7, 0.85, 0.88]),
    ]
    cut = [trial("s0", False, 0.35, "stopped-early", [0.2, 0.3]),  # ASHA cut them at epoch 2
           trial("s1", False, 0.15, "stopped-early", [0.25, 0.35]),
           trial("d0", True, 0.05, "diverged", [0.1])]
    summary = summary_of(completed + cut)
    effects = knob_effects(summary)
    assert effects["rule"] == "completed" and effects["epoch"] == 4 and effects["trials"] == 5
    assert {t["trial_id"]: t["why"] for t in effects["left_out"]} == {
        "s0": "stopped early at epoch 2", "s1": "stopped early at epoch 2", "d0": "diverged"}
    final = {t.trial_id: t.history[-1]["val_acc"] for t in completed}
    lrn = {r["value"]: r for r in effects["knobs"]["lrn"]["rows"]}
    on = [final["c0"], final["c1"], final["c4"]]
    assert lrn["True"]["n"] == 3
    assert (lrn["True"]["mean"], lrn["True"]["ci95"]) == pytest.approx(mean_ci95(on))
    # Like for like, lrn=False means 0.93 over 2 trials; the old pooled mean of every trial's
    # best value (0.96, 0.93, 0.3, 0.35) was 0.635 over 4.
    assert lrn["False"]["n"] == 2 and lrn["False"]["mean"] == pytest.approx(0.93)
    assert lrn["False"]["ci95"] is None  # no interval from two values
    dropout = effects["knobs"]["dropout"]["rows"]  # split at the completed trials' median 0.3
    assert [(r["value"], r["n"]) for r in dropout] == [("<= 0.3", 3), ("> 0.3", 2)]
    assert dropout[0]["mean"] == pytest.approx((0.92 + 0.96 + 0.90) / 3)
    assert dropout[1]["ci95"] is None and dropout[1]["mean"] == pytest.approx((0.94 + 0.88) / 2)

    # The report's section shows n, a dash instead of an interval below 3 trials, the rule and
    # the ablation block that would measure the knobs (baseline: the best trial, c2; the other
    # dropout value is the middle of the half of the range that 0.2 is not in).
    doc = Doc(tmp_path)
    numbers = _effects_section(doc, summary)
    md = "\n".join(doc.md)
    assert "| lrn | False | 2 | 0.93 | — |" in md
    assert "| lrn | True | 3 | 0.9133 |" in md
    assert "final epoch (4)" in md and "3 trial(s) left out: 2 stopped early at epoch 2; " \
        "1 diverged." in md
    example = ("ablation: {baseline: {lrn: false, dropout: 0.2}, arms: {with_lrn: {lrn: true}, "
               "dropout_0.375: {dropout: 0.375}}, seeds: 4}")
    assert numbers["ablation_example"] == example and f"```\n{example}\n```" in md
    assert "TPE picks each configuration" in md
    assert numbers["effects_basis"]["rule"] == "completed"


def test_knob_effects_fall_back_to_the_last_common_epoch():
    summary = summary_of([
        trial("c0", True, 0.1, "completed", [0.6, 0.8, 0.9, 0.92]),
        trial("s0", False, 0.3, "stopped-early", [0.5, 0.7, 0.75]),
        trial("s1", False, 0.2, "stopped-early", [0.4, 0.6]),
        trial("s2", True, 0.4, "stopped-early", [0.3, 0.65]),
        trial("e0", True, 0.2, "error", []),
    ])
    effects = knob_effects(summary)
    assert effects["rule"] == "common-epoch" and effects["epoch"] == 2
    assert effects["left_out"] == [{"trial_id": "e0", "status": "error", "why": "error"}]
    lrn = {r["value"]: r for r in effects["knobs"]["lrn"]["rows"]}
    assert lrn["True"]["n"] == 2 and lrn["True"]["mean"] == pytest.approx((0.8 + 0.65) / 2)
    assert lrn["False"]["n"] == 2 and lrn["False"]["mean"] == pytest.approx((0.7 + 0.6) / 2)


def test_the_suggested_ablation_block_is_a_valid_study_of_the_sweep():
    # The sweep's space with its search:, scheduler: and budget.num_samples replaced by the
    # block, as the report's sentence says, passes the spec's own checks.
    space = {"name": "lrn-dropout", "data": {"dataset": "digits", "image_size": 67},
             "model": {"family": "alexnet", "knobs": {"width_mult": 0.25}},
             "budget": {"max_epochs": 4, "num_samples": 8},
             "searcher": {"type": "optuna-tpe", "seed": 0},
             "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
             "search": copy.deepcopy(SPACE["search"])}
    parse_spec(space)
    summary = summary_of([trial("c0", True, 0.1, "completed", [0.6, 0.8, 0.9, 0.92]),
                          trial("c1", False, 0.4, "completed", [0.5, 0.7, 0.95, 0.94])])
    summary.spec.update(space)
    block = ablation_example(summary)
    assert block == ("ablation: {baseline: {lrn: false, dropout: 0.4}, arms: {with_lrn: "
                     "{lrn: true}, dropout_0.125: {dropout: 0.125}}, seeds: 4}")
    study = {k: v for k, v in space.items() if k not in ("search", "scheduler")}
    study["budget"] = {k: v for k, v in space["budget"].items() if k != "num_samples"}
    ablation = parse_spec({**study, **yaml.safe_load(block)}).ablation
    assert list(ablation.cells()) == ["baseline", "with_lrn", "dropout_0.125"]
