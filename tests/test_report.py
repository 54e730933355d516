"""The sweep report on a real sweep's results: tables, effects, importance, model comparison,
the best trial's analyses, and the page checked in a real headless Chromium."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import run_main

from service.config.spec import parse_spec
from service.report import findings as report_findings
from service.report.build import _effects_section
from service.report.data import (
    ablation_example,
    comparable,
    importance,
    importance_study,
    knob_effects,
)
from service.report.doc import Doc
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
    # Each stride's mean is the mean of its trials' val_acc at the epoch of the rule (which
    # strides ASHA let finish depends on timing; a stride with no comparable trial has no mean).
    basis = numbers["effects_basis"]
    left = {t["trial_id"] for t in basis["left_out"]}
    if basis["rule"] == "completed":
        assert basis["epoch"] == summary["spec"]["budget"]["max_epochs"]
        assert left == {t["trial_id"] for t in summary["trials"] if t["status"] != "completed"}
    trials = load_run(report_dir).trials
    rows = {r["value"]: r for r in numbers["effects"]["conv1_stride"]}
    assert set(rows) == {"4", "2"} and sum(r["n"] for r in rows.values()) == len(
        summary["trials"]) - len(left) >= 2
    for stride, row in rows.items():
        values = [h["val_acc"] for t in trials
                  if t.config["conv1_stride"] == int(stride) and t.trial_id not in left
                  for h in t.history if h["epoch"] == basis["epoch"]]
        assert row["n"] == len(values)
        assert row["mean"] == (pytest.approx(sum(values) / len(values)) if values else None)
    imp = numbers["importance"]["importances"]
    assert set(imp) == {"conv1_kernel", "conv1_stride"} and sum(imp.values()) == pytest.approx(1)
    # Importance compares the same trials at the same epoch as the per-value means.
    entry = numbers["importance"]
    assert {k: entry[k] for k in ("rule", "epoch", "trials", "left_out")} == basis
    assert entry["evaluator"] == "PED-ANOVA" and imp == entry["evaluators"]["PED-ANOVA"][
        "importances"]
    for result in entry["evaluators"].values():  # fANOVA's beside it, or why it cannot run
        assert "error" in result or sum(result["importances"].values()) == pytest.approx(1)
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


def render_in_chromium(report: Path, shot: Path) -> tuple[int, int]:
    """Open report.html in a real headless Chromium: (images on the page, images the browser
    decoded), and a 1200x2000 screenshot at `shot` that must show something (not a blank
    page). The page the browser built passes check_page, and every contents link finds its
    heading there. Skips the test when Chromium is not installed."""
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (.ci/run installs it with apt)")
    page = report.as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120)
    body = re.search(r'<body data-images="(\d+)" data-images-loaded="(\d+)" '
                     r'data-anchors="(\d+)" data-anchors-resolved="(\d+)"', dom.stdout)
    assert body, dom.stdout[:2000] + dom.stderr[-2000:]
    assert int(body[3]) >= 3 and body[3] == body[4], body[0]  # every contents link resolves
    check_page(dom.stdout)  # what the browser built: alt texts, precision, no tiny-n intervals
    subprocess.run([browser, *flags, "--window-size=1200,2000", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 2000)
        colours = img.convert("L").getextrema()
    assert colours[1] - colours[0] > 100  # something was drawn, not a blank page
    return int(body[1]), int(body[2])


class _Page(HTMLParser):
    """A report page as read back: visible text, images' alt texts, tables, headings."""

    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.alts: list[str | None] = []
        self.tables: list[list[list[str]]] = []
        self.headings: list[tuple[int, str]] = []
        self._skip = 0
        self._cell: list[str] | None = None
        self._heading: tuple[int, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag == "img":
            self.alts.append(dict(attrs).get("alt"))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = (int(tag[1]), [])

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif re.fullmatch(r"h[1-6]", tag) and self._heading:
            self.headings.append((self._heading[0], "".join(self._heading[1]).strip()))
            self._heading = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading[1].append(data)


def read_page(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    return parsed


INTERVAL = re.compile(r"±|\[[^\]]*,[^\]]*\]")


def check_page(page: str) -> _Page:
    """What every report page must satisfy: each image has alt text (a sentence, not a file
    name), no raw float with more than 4 decimals in the visible text, and no interval in a
    table row whose n is below 3. Returns the parsed page."""
    parsed = read_page(page)
    assert parsed.alts and all(a and len(a.split()) >= 5 and not a.endswith(".png")
                               for a in parsed.alts), parsed.alts
    text = " ".join(parsed.text)
    assert not re.findall(r"\d\.\d{5,}", text), re.findall(r".{40}\d\.\d{5,}.{10}", text)
    for table in parsed.tables:
        head = table[0]
        if "n" not in head:
            continue
        col = head.index("n")
        for row in table[1:]:
            if row[col].isdigit() and int(row[col]) < 3:
                assert not any(INTERVAL.search(c) for c in row), row
    return parsed


def md_page(md: str) -> tuple[list[tuple[int, str]], list[list[list[str]]]]:
    """report.md's headings and tables (cells unescaped)."""
    headings = [(len(m[1]), m[2].strip()) for m in re.finditer(r"^(#{1,6}) (.*)$", md, re.M)]
    tables, current = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|")
                     for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if current is None:
                current = []
                tables.append(current)
            if not all(re.fullmatch(r"-+:?", c) for c in cells):
                current.append(cells)
        else:
            current = None
    return headings, tables


def check_markdown_matches_html(run: Path) -> None:
    """report.md says what report.html says: the same headings and, table by table, the same
    cells (every number written the same way)."""
    parsed = read_page((run / "report.html").read_text())
    headings, tables = md_page((run / "report.md").read_text())
    assert headings == parsed.headings
    assert tables == parsed.tables


NUMBER = re.compile(r"[−+]?\d+(?:,\d{3})*\.\d+(?:%| pts| M)?|\d+%")


def check_findings_numbers(run: Path) -> str:
    """Every decimal or percentage in the findings paragraph is written, the same way,
    somewhere in the sections below it (the findings compute nothing of their own)."""
    md = (run / "report.md").read_text()
    start = md.index("## Findings\n")
    end = md.index("## Contents\n")
    findings, rest = md[start:end], md[:start] + md[end:]
    numbers = NUMBER.findall(findings)
    assert numbers, findings
    for number in numbers:
        assert number in rest, (number, findings)
    return findings.split("\n", 1)[1].strip()


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    images, decoded = render_in_chromium(report_dir / "report.html", tmp_path / "shot.png")
    assert images >= 8 and decoded == images  # every image decoded in the browser
    check_markdown_matches_html(report_dir)
    findings = check_findings_numbers(report_dir)
    summary = load_run(report_dir)
    best = summary.best
    assert findings.startswith(f"Best configuration: trial {best.trial_id}, best val_acc "
                               f"{best.best_val_acc * 100:.1f}%, with conv1_kernel=")
    imp = json.loads((report_dir / "report.json").read_text())["importance"]
    assert (f"By PED-ANOVA importance (Optuna's default evaluator) over "
            f"{report_findings.importance_basis(imp)}, ") in findings
    assert "are associations, not effects" in findings and "Caveats: n = 4 trials;" in findings


@pytest.mark.slow
def test_report_of_a_missing_or_malformed_run_exits_2(tmp_path, capsys):
    from service.report.__main__ import main

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text('{"name": "x", "spec": {}, "trials": [{}]}')
    for run, needle in ((tmp_path / "nope", "nope"), (tmp_path / "bad", "trials.0")):
        proc = run_main(main, [str(run)], capsys)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr


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
    assert "| lrn | False | 2 | 93.0% | — |" in md  # no interval from two trials
    assert f"| lrn | True | 3 | 91.3% | ± {mean_ci95(on)[1] * 100:.1f} pts |" in md
    assert "final epoch (4)" in md and "3 trial(s) left out: 2 stopped early at epoch 2; " \
        "1 diverged." in md
    example = ("ablation: {baseline: {lrn: false, dropout: 0.2}, arms: {with_lrn: {lrn: true}, "
               "dropout_0.375: {dropout: 0.375}}, seeds: 4}")
    assert numbers["ablation_example"] == example and f"```\n{example}\n```" in md
    assert "TPE picks each configuration" in md
    assert numbers["effects_basis"]["rule"] == "completed"


def one_completed_three_cut() -> list:
    """One trial completed at epoch 4 and three stopped early, the earliest at epoch 2."""
    return [trial("c0", True, 0.1, "completed", [0.6, 0.8, 0.9, 0.92]),
            trial("s0", False, 0.3, "stopped-early", [0.5, 0.7, 0.75]),
            trial("s1", False, 0.2, "stopped-early", [0.4, 0.6]),
            trial("s2", True, 0.4, "stopped-early", [0.3, 0.65])]


def test_knob_effects_fall_back_to_the_last_common_epoch():
    summary = summary_of([*one_completed_three_cut(), trial("e0", True, 0.2, "error", [])])
    effects = knob_effects(summary)
    assert effects["rule"] == "common-epoch" and effects["epoch"] == 2
    assert effects["left_out"] == [{"trial_id": "e0", "status": "error", "why": "error"}]
    lrn = {r["value"]: r for r in effects["knobs"]["lrn"]["rows"]}
    assert lrn["True"]["n"] == 2 and lrn["True"]["mean"] == pytest.approx((0.8 + 0.65) / 2)
    assert lrn["False"]["n"] == 2 and lrn["False"]["mean"] == pytest.approx((0.7 + 0.6) / 2)


def test_importance_ranks_only_comparable_trials_by_optunas_default_evaluator(tmp_path):
    import optuna

    completed = [  # c1's final value (0.94) is below its best (0.95): the final one counts
        trial("c0", True, 0.1, "completed", [0.6, 0.8, 0.9, 0.92]),
        trial("c1", True, 0.4, "completed", [0.5, 0.7, 0.95, 0.94]),
        trial("c2", False, 0.2, "completed", [0.6, 0.85, 0.9, 0.96]),
        trial("c3", False, 0.3, "completed", [0.55, 0.8, 0.93, 0.90]),
        trial("c4", True, 0.45, "completed", [0.5, 0.7, 0.85, 0.88]),
    ]
    # ASHA cut s0 at epoch 1 with a value no finished trial reached: not comparable.
    cut = [trial("s0", True, 0.05, "stopped-early", [0.99]),
           trial("d0", False, 0.5, "diverged", [0.1])]
    summary = summary_of(completed + cut)
    imp = importance(summary)
    assert (imp["evaluator"], imp["rule"], imp["epoch"], imp["trials"]) == (
        "PED-ANOVA", "completed", 4, 5)
    assert {t["trial_id"]: t["why"] for t in imp["left_out"]} == {
        "s0": "stopped early at epoch 1", "d0": "diverged"}
    study = importance_study(summary, comparable(summary)["values"])
    assert sorted(t.value for t in study.trials) == [0.88, 0.90, 0.92, 0.94, 0.96]
    # The cut trials change nothing: the same numbers as a sweep without them.
    assert importance(summary_of(completed))["evaluators"] == imp["evaluators"]
    # Pooling s0's best value (the old basis) would have changed the ranking's numbers.
    pooled = importance_study(summary, {t.trial_id: summary.score(t) for t in summary.trials
                                        if summary.score(t) is not None})
    assert len(pooled.trials) == 6
    assert optuna.importance.get_param_importances(pooled) != imp["importances"]
    # The primary is what Optuna's get_param_importances uses with no evaluator given.
    assert optuna.importance.get_param_importances(study) == pytest.approx(imp["importances"])
    assert imp["importances"] == imp["evaluators"]["PED-ANOVA"]["importances"]
    assert imp["evaluators"]["PED-ANOVA"]["top"] == 1  # top 10% of 5 trials: c2
    for name in ("PED-ANOVA", "fANOVA"):
        shares = imp["evaluators"][name]["importances"]
        assert set(shares) == {"lrn", "dropout"} and sum(shares.values()) == pytest.approx(1)
        assert list(shares.values()) == sorted(shares.values(), reverse=True)
    assert importance(summary) == imp  # fixed seeds: the same numbers every time
    text = report_findings._importance(imp)
    assert text.startswith("By PED-ANOVA importance (Optuna's default evaluator) over the 5 "
                           "trials that completed the budget, each at its val_acc at epoch 4, ")
    assert "; fANOVA: " in text
    doc = Doc(tmp_path)
    _effects_section(doc, summary)
    md = "\n".join(doc.md)
    assert "| knob | PED-ANOVA | fANOVA |" in md and "(1 of 5)" in md
    assert "2 trial(s) left out: 1 stopped early at epoch 1; 1 diverged." in md

    # A knob with one value among the comparable trials (lrn: only the cut trial had False)
    # explains nothing there: 0 by both evaluators, though PED-ANOVA's smoothing would not say 0.
    one_lrn = summary_of([completed[0], completed[1], completed[4], cut[0],
                          trial("s1", False, 0.2, "stopped-early", [0.3, 0.99])])
    imp = importance(one_lrn)
    assert imp["trials"] == 3 and imp["constant"] == ["lrn"]
    for name in ("PED-ANOVA", "fANOVA"):
        assert imp["evaluators"][name]["importances"] == {"dropout": 1.0, "lrn": 0.0}
    study = importance_study(one_lrn, comparable(one_lrn)["values"])
    assert optuna.importance.get_param_importances(study)["lrn"] > 0


def test_importance_falls_back_to_the_common_epoch_or_says_why_it_cannot_run():
    summary = summary_of(one_completed_three_cut())
    imp = importance(summary)
    assert (imp["rule"], imp["epoch"], imp["trials"], imp["left_out"]) == (
        "common-epoch", 2, 4, [])
    study = importance_study(summary, comparable(summary)["values"])
    assert sorted(t.value for t in study.trials) == [0.6, 0.65, 0.7, 0.8]
    assert all(sum(e["importances"].values()) == pytest.approx(1)
               for e in imp["evaluators"].values())
    assert "did not fail, each at its val_acc at epoch 2, the last epoch all of them " \
        "reached" in report_findings._importance(imp)
    # One comparable trial: neither evaluator runs, each says why in one line.
    one = importance(summary_of([trial("c0", True, 0.1, "completed", [0.6, 0.8, 0.9, 0.92]),
                                 trial("e0", True, 0.2, "error", [])]))
    why = "needs at least 2 comparable trials (has 1)"
    assert "importances" not in one and one["error"] == why
    assert one["evaluators"] == {"PED-ANOVA": {"error": why}, "fANOVA": {"error": why}}
    same = importance(summary_of([trial("a", True, 0.1, "completed", [0.5, 0.9]),
                                  trial("b", True, 0.1, "completed", [0.6, 0.8])]))
    assert same["error"] == "all 2 comparable trials have the same searched values"


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


MANY = 60  # above report.data.MANY_TRIALS: the per-trial figures aggregate
MANY_SPACE = {"name": "many", "data": {"dataset": "digits", "image_size": 32},
              "model": {"family": "lenet5"}, "train": {"batch_size": 64},
              "search": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
              "budget": {"max_epochs": 4, "num_samples": MANY},
              "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
              "searcher": {"type": "random", "seed": 0}}


def many_trials() -> list[tuple[str, float, str, list[dict]]]:
    """(id, lr, status, per-epoch results) of MANY trials: 48 complete 4 epochs (trial c<i>
    ends at val_acc 0.5 + i/100), 8 are stopped at epoch 2, 2 diverge at epoch 2 (a NaN loss
    after a finite epoch 1) and 2 fail before any result."""
    out = []
    for i in range(48):
        accs = [0.2 + (0.3 + i / 100) * e / 4 for e in range(1, 5)]
        out.append((f"c{i:02d}", 0.01 + i / 600, "completed", accs))
    out += [(f"s{i}", 0.05 + i / 200, "stopped-early", [0.15, 0.2]) for i in range(8)]
    out += [(f"d{i}", 0.09 + i / 200, "diverged", [0.1, float("nan")]) for i in range(2)]
    out += [(f"e{i}", 0.02 + i / 200, "error", []) for i in range(2)]
    return out


def synthesise_run(run: Path, trials) -> Path:
    """A run directory as a sweep leaves it: Tune's trial directories (result.json, one line
    per epoch, NaN as Tune writes it) and summary.json."""
    from service.results.store import write_json

    spec = parse_spec(MANY_SPACE).model_dump(mode="json")
    records = []
    for i, (tid, lr, status, accs) in enumerate(trials):
        rows = [{"epoch": e, "val_acc": a, "train_loss": 1 / e if a == a else float("nan"),
                 "epoch_s": 1.0} for e, a in enumerate(accs, 1)]
        trial_dir = run / f"run_trial_{tid}_{i:05d}_{i}_lr={lr:.4f}_2026-01-01_00-00-00"
        trial_dir.mkdir(parents=True)
        (trial_dir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        records.append(TrialRecord.from_history(
            tid, {"lr": lr}, status, rows, error="RuntimeError: boom" if status == "error"
            else None))
    write_json(run / "summary.json", Summary.ranked(records, name="many", spec=spec,
                                                    searched=["lr"], wall_s=1.0))
    return run


@pytest.fixture(scope="module")
def many_report(tmp_path_factory) -> Path:
    from service.report.build import build_report

    run = synthesise_run(tmp_path_factory.mktemp("many") / "run", many_trials())
    build_report(run, analyses=False)
    return run


def test_many_trials_draw_their_learning_curves_in_aggregate(many_report, tmp_path):
    from service.report.build import build_report

    numbers = json.loads((many_report / "report.json").read_text())
    bands = numbers["curve_bands"]
    assert bands["trials"] == MANY
    assert bands["statuses"] == {"completed": 48, "stopped-early": 8, "diverged": 2,
                                 "error": 2}
    by_epoch = {r["epoch"]: r for r in bands["epochs"]}
    # Epoch 1: every trial with a result; 2: the diverged trials' NaN is no value; 3-4: only
    # the completed trials are left.
    assert [by_epoch[e]["n"] for e in (1, 2, 3, 4)] == [58, 56, 48, 48]
    final = by_epoch[4]  # 0.5 + i/100 for i = 0..47: linear-interpolated percentiles
    assert final["median"] == pytest.approx(0.735)
    assert final["p10"] == pytest.approx(0.547) and final["p90"] == pytest.approx(0.923)
    assert [(b["trial_id"], b["score"]) for b in bands["best"]] == [
        (f"c{i}", pytest.approx(0.5 + i / 100)) for i in (47, 46, 45, 44, 43)]
    md = (many_report / "report.md").read_text()
    assert "60 trials (more than 40): the learning curves in aggregate" in md
    assert "8 stopped early, 4 diverged or failed." in md
    for t in many_trials():  # the table still lists every trial
        assert f"| {t[0]} |" in md
    assert (many_report / "report_files" / "curves.png").stat().st_size > 1000
    assert (many_report / "report_files" / "parallel.png").stat().st_size > 1000

    # A sweep of a few trials keeps one curve per trial: no aggregate, no such paragraph.
    few = synthesise_run(tmp_path / "few", many_trials()[40:52])
    build_report(few, analyses=False)
    assert "curve_bands" not in json.loads((few / "report.json").read_text())
    assert "in aggregate" not in (few / "report.md").read_text()


@pytest.mark.slow
def test_a_report_of_many_trials_renders_in_headless_chromium(many_report, tmp_path):
    images, decoded = render_in_chromium(many_report / "report.html", tmp_path / "shot.png")
    assert images >= 4 and decoded == images  # curves, effects, importance, parallel
    check_markdown_matches_html(many_report)
    check_findings_numbers(many_report)


PARETO_SPACE = {"name": "front", "data": {"dataset": "digits", "image_size": 67},
                "model": {"family": "alexnet"},
                "search": {"conv1_kernel": {"type": "choice", "values": [11, 7]},
                           "width_mult": {"type": "choice", "values": [0.125, 0.25, 0.5]}},
                "budget": {"max_epochs": 3, "num_samples": 8, "metric": ["val_acc", "flops"]},
                "searcher": {"type": "optuna-tpe", "seed": 0}}
# (id, conv1_kernel, width_mult, status, last val_acc, flops): a, c, e and g are the front
# (each cheaper or more accurate than the others); b, d and f are dominated; s was stopped
# early and x failed, so neither is compared.
FRONT_TRIALS = [("a", 7, 0.5, "completed", 0.975, 30.0e6), ("b", 11, 0.5, "completed", 0.95, 31e6),
                ("c", 11, 0.25, "completed", 0.962, 8.7e6), ("d", 7, 0.125, "completed", 0.90,
                                                                        9.1e6),
                ("e", 11, 0.125, "completed", 0.91, 2.4e6), ("f", 7, 0.25, "completed", 0.955,
                                                                        12.2e6),
                ("g", 7, 0.25, "completed", 0.9685, 12.3e6),
                ("s", 11, 0.5, "stopped-early", 0.5, 1.0e6), ("x", 7, 0.5, "error", None, None)]


def front_run(tmp_path: Path, objectives: list[str] | None = None) -> tuple[Path, Summary]:
    """A run directory whose summary.json has the Pareto front of FRONT_TRIALS, as the sweep
    builds it: TrialRecords, then pareto_front over the completed trials' last epochs."""
    from service.results.pareto import PARETO_STATUSES, pareto_front
    from service.results.store import write_json

    space = copy.deepcopy(PARETO_SPACE)
    if objectives:
        space["budget"]["metric"] = objectives
    spec = parse_spec(space).model_dump(mode="json")
    records = []
    for tid, kernel, width, status, acc, flops in FRONT_TRIALS:
        epochs = {"completed": 3, "stopped-early": 1, "error": 0}[status]
        rows = [{"epoch": e, "val_acc": acc - 0.05 * (epochs - e), "val_loss": 1.5 - acc,
                 "flops": flops, "params": flops / 20, "epoch_s": 1.25}
                for e in range(1, epochs + 1)]
        records.append(TrialRecord.from_history(
            tid, {"conv1_kernel": kernel, "width_mult": width}, status, rows,
            error="RuntimeError: boom" if status == "error" else None))
    summary = Summary.ranked(records, name="front", spec=spec,
                             searched=["conv1_kernel", "width_mult"], wall_s=12.0)
    summary.pareto = pareto_front(summary.objectives, {
        t.trial_id: t.final for t in summary.trials if t.status in PARETO_STATUSES})
    run = tmp_path / "run"
    write_json(run / "summary.json", summary)
    return run, summary


def test_the_pareto_section_shows_the_front_in_order(tmp_path):
    from service.report import fmt
    from service.report.build import build_report

    run, summary = front_run(tmp_path)
    assert summary.pareto.trials == ["a", "g", "c", "e"]  # best first on val_acc
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    assert md.index("## Pareto front") < md.index("## Trials")
    rows = next(t for t in md_page(md)[1] if t[0][:3] == ["trial", "val_acc", "flops"])
    assert rows[0] == ["trial", "val_acc", "flops", "conv1_kernel", "width_mult"]
    assert [r[0] for r in rows[1:]] == summary.pareto.trials
    values = summary.pareto.values
    assert rows[1] == ["a", "97.5%", "30.0 M", "7", "0.5"]
    for row in rows[1:]:
        assert row[1:3] == [fmt.percent(values[row[0]][0]), fmt.si(values[row[0]][1])]
    numbers = json.loads((run / "report.json").read_text())["pareto"]
    assert numbers["trials"] == summary.pareto.trials
    assert numbers["hypervolume"] == pytest.approx(summary.pareto.hypervolume)
    # The reference: the worst of each objective (90%, 31 M), a tenth of its range further.
    reference = [0.90 - 0.1 * 0.075, 31e6 + 0.1 * 28.6e6]
    assert numbers["reference"] == summary.pareto.reference == pytest.approx(reference)
    assert numbers["ideal"] == [0.975, 2.4e6]
    assert numbers["compared"] == 7 and numbers["left_out"] == ["s", "x"]
    share = numbers["hypervolume_share"]  # of the box from the reference to (97.5%, 2.4 M)
    box = (0.975 - reference[0]) * (reference[1] - 2.4e6)
    assert share == pytest.approx(summary.pareto.hypervolume / box) and 0 < share < 1
    assert (f"Hypervolume {fmt.si(summary.pareto.hypervolume)} (in val_acc × flops units): the "
            "area of objective space that the front dominates up to the reference point "
            "(val_acc 89.2%, flops 33.9 M), which lies 10% of each objective's range past its "
            "worst value among the compared trials") in md
    assert (run / "report_files" / "pareto.png").stat().st_size > 5000
    page = (run / "report.html").read_text()
    assert 'alt="val_acc against flops for each of the 7 compared trials; the 4 trials' in page
    # The findings name the front's size and its two ends, as the table writes them.
    findings = check_findings_numbers(run)
    assert ("The Pareto front of val_acc and flops holds 4 of the 7 compared trials, from "
            "trial a (val_acc 97.5%, flops 30.0 M) to trial e (val_acc 91.0%, flops 2.40 M); "
            f"its hypervolume is {fmt.percent(share)} of the box") in findings
    assert findings.startswith("Highest on the first objective: trial a, best val_acc 97.5%")
    check_page(page)
    check_markdown_matches_html(run)


def test_a_front_of_three_objectives_plots_the_first_two_and_says_so(tmp_path):
    from service.report.build import build_report

    run, summary = front_run(tmp_path, ["val_acc", "flops", "val_loss"])
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    rows = next(t for t in md_page(md)[1] if t[0][:4] == ["trial", "val_acc", "flops",
                                                          "val_loss"])
    assert [r[0] for r in rows[1:]] == summary.pareto.trials
    assert "only the first two of the 3 objectives are plotted" in md
    assert "the volume of objective space" in md
    numbers = json.loads((run / "report.json").read_text())["pareto"]
    assert numbers["plotted"] == ["val_acc", "flops"]


def test_one_formatting_module_writes_every_number():
    from service.report import fmt

    assert fmt.metric("val_acc", 0.9639) == "96.4%" and fmt.metric("val_acc", None) == "—"
    assert fmt.metric("params", 617992) == "617,992" and fmt.metric("flops", 28551568) == "28.6 M"
    assert fmt.metric("val_loss", 0.12) == "0.120" and fmt.metric("epoch_s", 4.253) == "4.3"
    assert fmt.setting(0.05914) == "0.0591" and fmt.setting(0.28421697) == "0.284"
    assert fmt.setting(0.0123) == "0.0123" and fmt.setting(1e-5) == "1e−5"
    assert fmt.setting(True) == "True" and fmt.setting(512) == "512"
    assert fmt.p_value(0.05914) == "0.059" and fmt.p_value(0.723) == "0.723"
    assert fmt.p_value(0.0031) == "0.0031" and fmt.p_value(0.0004) == "<0.001"
    assert fmt.spread("val_acc", 0.0131) == "± 1.3 pts" and fmt.spread("val_acc", None) == "—"
    assert fmt.signed(-0.00001) == "0.0" and fmt.signed(-0.5) == "−0.5"
    assert fmt.si(1.2e9) == "1.20 G" and fmt.seconds(75.53) == "75.5"


@pytest.mark.slow
def test_a_pareto_report_renders_in_headless_chromium(tmp_path):
    from service.report.build import build_report

    run, _ = front_run(tmp_path)
    build_report(run, analyses=False)
    images, decoded = render_in_chromium(run / "report.html", tmp_path / "shot.png")
    assert images >= 5 and decoded == images  # pareto, curves, effects, importance, parallel
