"""The report's Ablation section on ablation.json files built with the real paired statistics
(service.results.paired) from fixed per-seed values: figures, table, sentences, tuning, and no
section for an ordinary sweep."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from service.report.ablation import Display
from service.report.build import build_report
from service.results import ablation as results_ablation
from service.results import paired
from service.results.records import Summary, TrialRecord
from service.results.store import write_json
from service.rundir import ARM_KEY, SEED_KEY

SEEDS = [0, 1, 2, 3, 4, 5]
BASE = {0: 0.95, 1: 0.94, 2: 0.96, 3: 0.95, 4: 0.93, 5: 0.955}
VALUES = {
    "no_lrn": {0: 0.945, 1: 0.95, 2: 0.94, 3: 0.955, 4: 0.925, 5: 0.96},  # noise around 0
    "tiny_lr": {0: 0.22, 1: 0.23, 2: 0.24, 3: 0.21, 4: 0.20, 5: None},  # seed 5 failed
    "same": dict(BASE),  # changes nothing: every difference is exactly 0
}
CHANGES = {"no_lrn": {"lrn": False}, "tiny_lr": {"lr": 1e-5}, "same": {"fc_width": 128}}
SETTINGS = {"lrn": True, "lr": 0.02, "fc_width": 128}
SPACE = {"name": "abl", "data": {"dataset": "digits", "image_size": 67},
         "model": {"family": "alexnet", "knobs": {"width_mult": 0.25}},
         "budget": {"max_epochs": 4, "metric": "val_acc", "mode": "max"},
         "searcher": {"type": "optuna-tpe"}, "scheduler": {"type": "none"},
         "ablation": {"baseline": {"lrn": True}, "arms": {"no_lrn": {"lrn": False}},
                      "seeds": 6}}


def _row(result: paired.ArmResult, **extra: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(dataclasses.asdict(result))), **extra}


def expected_best(values: list[float]) -> list[float]:
    """E[max of k draws without replacement] for k = 1..N (the tuning curve)."""
    v = sorted(values)
    n = len(v)
    return [sum(x * math.comb(i, k - 1) for i, x in enumerate(v) if i >= k - 1) / math.comb(n, k)
            for k in range(1, n + 1)]


WIDE = {s: BASE[s] + 0.004 + 0.001 * s for s in SEEDS}
BOTH = {s: BASE[s] - 0.01 + 0.002 * (s % 2) for s in SEEDS}  # no_lrn and wide together
CELLS = {"no_lrn": VALUES["no_lrn"], "wide": WIDE, "no_lrn+wide": BOTH}
CELL_CHANGES = {"no_lrn": {"lrn": False}, "wide": {"fc_width": 256},
                "no_lrn+wide": {"lrn": False, "fc_width": 256}}


def study(factorial: bool = False, tuning: bool = False) -> dict[str, Any]:
    """ablation.json's content, its numbers from paired.analyse_study on the values above (a
    2x2 factorial design's cells and per-seed contrasts when `factorial`)."""
    values, changes = (CELLS, CELL_CHANGES) if factorial else (VALUES, CHANGES)
    results = paired.analyse_study(BASE, values, "max", 0.05, " pts", 100.0)
    data: dict[str, Any] = {
        "name": "lrn-and-lr", "run_id": "2026-12-01_10-00-00", "metric": "val_acc",
        "mode": "max", "alpha": 0.05, "design": "one-at-a-time", "epochs": 4, "seeds": SEEDS,
        "scale": 100.0, "unit": " pts",
        "baseline": {"settings": SETTINGS, "per_seed": {str(s): v for s, v in BASE.items()},
                     "tuned": None},
        "arms": [_row(r, changes=changes[r.name], settings={**SETTINGS, **changes[r.name]},
                      tuned=None) for r in results],
        "factorial": None, "tuning": None,
        "excluded": [] if factorial else [{"arm": "tiny_lr", "seed": 5, "status": "error",
                                           "why": "RuntimeError: CUDA out of memory"}]}
    if factorial:  # per-seed contrasts, tested against zero as one family
        contrasts = {
            "no_lrn": {s: (CELLS["no_lrn"][s] + BOTH[s] - BASE[s] - WIDE[s]) / 2 for s in SEEDS},
            "wide": {s: (WIDE[s] + BOTH[s] - BASE[s] - CELLS["no_lrn"][s]) / 2 for s in SEEDS},
            "no_lrn×wide": {s: (BOTH[s] - WIDE[s]) - (CELLS["no_lrn"][s] - BASE[s])
                            for s in SEEDS}}
        family = paired.adjusted([paired.contrast(k, v, "max", 0.05, " pts", 100.0)
                                  for k, v in contrasts.items()], " pts", 100.0)
        data["design"] = "factorial"
        data["factorial"] = {"main_effects": [_row(r) for r in family if "×" not in r.name],
                             "interactions": [_row(r) for r in family if "×" in r.name]}
    if tuning:
        values = {"baseline": [0.91, 0.85, 0.95, 0.60, 0.93, 0.88, 0.94, 0.90],
                  "no_lrn": [0.90, 0.70, 0.92, 0.89, 0.94, 0.50, 0.91, 0.93]}
        best = {"baseline": {"lr": 0.03}, "no_lrn": {"lr": 0.05}}
        data["tuning"] = {"trials": 8, "space": {"lr": {"type": "float", "low": 0.001,
                                                        "high": 0.1, "log": True}},
                          "arms": {k: {"best": best[k], "values": v,
                                       "expected_best": expected_best(v)}
                                   for k, v in values.items()}}
        data["baseline"]["tuned"] = best["baseline"]
        data["arms"][0]["tuned"] = best["no_lrn"]
    return data


def run_dir(tmp_path: Path, ablation: dict[str, Any] | None) -> Path:
    """A run directory: summary.json of the study's runs (one per arm and seed) and, when
    given, ablation.json."""
    trials = []
    cells = CELLS if ablation and ablation["design"] == "factorial" else VALUES
    for arm, values in {"baseline": BASE, **cells}.items():
        for seed, value in values.items():
            status = "completed" if value is not None else "error"
            rows = [{"epoch": e, "val_acc": value - 0.1 * (4 - e)} for e in range(1, 5)
                    ] if value is not None else []
            trials.append(TrialRecord.from_history(
                f"{arm}-{seed}", {ARM_KEY: arm, SEED_KEY: seed}, status, rows))
    run = tmp_path / "run"
    # As an ablation's compare phase records it: runs told apart by cell and seed, no search.
    write_json(run / "summary.json", Summary.ranked(trials, name="abl", spec=SPACE,
                                                    searched=[ARM_KEY, SEED_KEY]))
    if ablation is not None:
        write_json(run / "ablation.json", ablation)
    return run


def pts(value: float) -> str:
    """A difference of accuracies in signed points at one decimal, as the report writes it."""
    text = f"{value * 100:+.1f}"
    return "0.0" if float(text) == 0 else text.replace("-", "−")


def table(md: str, first: str) -> dict[str, list[str]]:
    """The Markdown table whose header starts with `first`: row name -> its cells."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(head, cells, strict=True))
    return rows


def test_numbers_are_written_for_a_reader():
    show = Display(study())
    assert show.decimals == 1  # typical half-widths of 1-3 points: one decimal
    assert show.signed(-0.0032) == "−0.3 pts" and show.signed(0.0141) == "+1.4 pts"
    assert show.signed(-0.00001) == "0.0 pts"  # no signed zero
    assert show.size(0.0131) == "1.3 pts" and show.size(None) == "—"
    assert show.p(0.05914) == "0.059" and show.p(0.0031) == "0.0031"
    assert show.p(0.0004) == "<0.001" and show.p(None) == "—" and show.p(0.62) == "0.620"
    assert show.p(0.0496) == "0.0496"  # three decimals would round it up to alpha, 0.05
    assert show.value(0.9517) == "95.2%"  # a mean of an accuracy: percent, one decimal
    row = {"effect": -0.005, "ci_low": -0.009, "ci_high": -0.001, "n": 6}
    assert show.effect(row) == "−0.5 pts [−0.9, −0.1]"
    assert show.effect({**row, "n": 2}) == "−0.5 pts"  # no interval from two seeds
    # Intervals a tenth of a point wide need a second decimal.
    narrow = study()
    for arm in narrow["arms"]:
        if arm["ci_low"] is not None:
            mid = (arm["ci_low"] + arm["ci_high"]) / 2
            arm["ci_low"], arm["ci_high"] = mid - 0.0004, mid + 0.0004
    assert Display(narrow).decimals == 2


def test_the_report_opens_with_the_ablation_section(tmp_path):
    data = study()
    run = run_dir(tmp_path, data)
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    assert md.index("## Ablation") < md.index("## Trials")
    rows = table(md, "arm")
    assert list(rows) == ["no_lrn", "tiny_lr", "same"]
    results = {r["name"]: r for r in data["arms"]}

    # tiny_lr: five seeds pair (seed 5 failed); every seed lost about 72.5 points.
    tiny = rows["tiny_lr"]
    d = [VALUES["tiny_lr"][s] - BASE[s] for s in range(5)]
    mean, sd = sum(d) / 5, math.sqrt(sum((x - sum(d) / 5) ** 2 for x in d) / 4)
    half = 2.776 * sd / math.sqrt(5)  # t(0.975, 4 dof)
    assert tiny["n"] == "5" and tiny["verdict"] == "hurts" and tiny["changes"] == "lr=1e−5"
    effect = f"−{abs(mean) * 100:.1f} pts [{pts(mean - half)}, {pts(mean + half)}]"
    assert tiny["effect [t CI]"] == effect
    assert tiny["p Holm"] == "<0.001" and tiny["wins"] == "0/5" and tiny["d_z"].startswith("−")
    assert tiny["baseline mean"] == f"{sum(BASE[s] for s in range(5)) / 5 * 100:.1f}%"
    assert f"tiny_lr: hurts — {effect} (Holm p < 0.001, 5 seeds)." in md

    # no_lrn: noise around zero, not resolved, with the smallest effect 6 seeds detect.
    nolrn = results["no_lrn"]
    assert rows["no_lrn"]["verdict"] == "not resolved" == nolrn["verdict"]
    assert rows["no_lrn"]["MDE"] == f"{nolrn['mde'] * 100:.1f} pts"
    assert nolrn["p"] >= 0.01 and rows["no_lrn"]["p"] == f"{nolrn['p']:.3f}"
    k = round(nolrn["win_share"] * 6)
    assert rows["no_lrn"]["wins"] == f"{k}/6" and k == 3
    assert (f"no_lrn: not resolved — {pts(nolrn['effect'])} pts [{pts(nolrn['ci_low'])}, "
            f"{pts(nolrn['ci_high'])}] (Holm p = {nolrn['p_adjusted']:.3f}); 6 seeds detect "
            f"≥ {nolrn['mde'] * 100:.1f} pts.") in md

    # same: no spread, so no p, d_z or MDE; a dash, never "None" or "nan".
    same = rows["same"]
    assert [same[c] for c in ("p", "p Holm", "d_z", "MDE")] == ["—"] * 4
    assert same["effect [t CI]"] == "0.0 pts [0.0, 0.0]" and same["verdict"] == "not resolved"
    assert "same: not resolved — every one of the 6 seeds moved by 0.0 pts." in md
    ablation_part = md[md.index("## Ablation"):md.index("## The study's runs")]
    assert not re.search(r"None|nan|\d\.\d{5}", ablation_part)  # no raw floats

    # the runs left out, and the figures in both versions of the page
    assert table(md, "arm | seed")["tiny_lr"] == {
        "arm": "tiny_lr", "seed": "5", "status": "error",
        "why": "RuntimeError: CUDA out of memory"}
    for name in ("ablation_forest.png", "ablation_seeds.png"):
        assert (run / "report_files" / name).stat().st_size > 5000
    page = (run / "report.html").read_text()
    assert page.index('<h2 id="ablation">Ablation</h2>') < page.index('<h2 id="trials">')
    assert 'alt="Forest plot: each arm&#x27;s effect on val_acc' in page
    numbers = json.loads((run / "report.json").read_text())["ablation"]
    assert numbers["arms"] == data["arms"]
    assert [(s["group"], s["name"]) for s in numbers["sentences"]] == [
        ("arms", name) for name in VALUES]


def test_factorial_effects_and_equal_tuning(tmp_path):
    data = study(factorial=True, tuning=True)
    run = run_dir(tmp_path, data)
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    assert md.index("### Main effects") < md.index("### Interactions") < md.index("## Trials")
    assert list(table(md, "arm")) == ["no_lrn", "wide", "no_lrn+wide"]
    main = table(md, "main effect")
    assert list(main) == ["no_lrn", "wide"] and main["wide"]["changes"] == "fc_width=256"
    (inter,) = data["factorial"]["interactions"]
    row = table(md, "interaction")["no_lrn×wide"]
    assert row["changes"] == "lrn=False × fc_width=256"
    assert row["baseline mean"] == "—"  # a contrast against zero has no means
    assert row["verdict"] == inter["verdict"] and row["n"] == "6"
    # The arm no_lrn and the main effect no_lrn each get their own sentence.
    effect = data["factorial"]["main_effects"][0]
    assert md.count("\nno_lrn: ") == 1 and f"\nMain effect of no_lrn: {effect['verdict']} — " in md
    assert f"\nInteraction no_lrn×wide: {inter['verdict']} — " in md
    numbers = json.loads((run / "report.json").read_text())["ablation"]
    assert [s["group"] for s in numbers["sentences"]] == ["arms"] * 3 + ["main effects"] * 2 + [
        "interactions"]

    assert "Every arm had the same tuning budget of 8 trials over lr;" in md
    tuned = table(md, "arm | tuned settings")
    assert tuned["baseline"]["tuned settings"] == "lr=0.03"
    assert tuned["no_lrn"]["best val_acc"] == "94.0%"  # expected best of 8: the best
    assert (run / "report_files" / "ablation_tuning.png").stat().st_size > 5000
    assert "tuned: lr=0.03" in md  # the baseline's tuned settings in the introduction


def test_no_ablation_json_no_section_and_a_broken_one_says_why(tmp_path):
    run = run_dir(tmp_path, None)
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    assert "Ablation" not in md and "ablation" not in json.loads(
        (run / "report.json").read_text())
    (run / "ablation.json").write_text('{"arms": [{"name": "x"}]}')
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    assert md.index("## Ablation") < md.index("## Trials")
    assert "ablation.json: row 0 lacks n, effect, ci_low, ci_high, verdict" in md


def test_the_section_reads_what_results_ablation_writes(tmp_path):
    # ablation.json as the study's own writer builds it, from the same per-seed values.
    cells = {"baseline": SETTINGS, **{k: {**SETTINGS, **c} for k, c in CHANGES.items()}}
    data = results_ablation.study(
        name="lrn-and-lr", run_id="r1", metric="val_acc", mode="max", alpha=0.05,
        design="one-at-a-time", epochs=4, seeds=SEEDS, cells=cells, changes=CHANGES,
        values={"baseline": BASE, **VALUES}, excluded=study()["excluded"])
    assert [a["name"] for a in data["arms"]] == [a["name"] for a in study()["arms"]]
    run = run_dir(tmp_path, data)
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    rows = table(md, "arm")
    assert [r["verdict"] for r in rows.values()] == ["not resolved", "hurts", "not resolved"]
    assert rows["tiny_lr"]["n"] == "5" and rows["same"]["p"] == "—"
    assert "No knob was searched." in md  # cell and seed are no searched knobs


def test_an_arm_without_two_valued_seeds_is_listed_with_its_reason(tmp_path):
    cells = {"baseline": SETTINGS, **{k: {**SETTINGS, **c} for k, c in CHANGES.items()},
             "broken": {**SETTINGS, "lr": 9.0}}
    data = results_ablation.study(
        name="lrn-and-lr", run_id="r1", metric="val_acc", mode="max", alpha=0.05,
        design="one-at-a-time", epochs=4, seeds=SEEDS, cells=cells,
        changes={**CHANGES, "broken": {"lr": 9.0}},
        values={"baseline": BASE, **VALUES, "broken": {s: None for s in BASE}},
        excluded=[{"arm": "broken", "seed": s, "status": "diverged", "why": "non-finite loss"}
                  for s in BASE])
    run = run_dir(tmp_path, data)
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    rows = table(md, "arm")
    assert rows["broken"]["verdict"] == "not resolved" and rows["broken"]["n"] == "0"
    assert rows["broken"]["effect [t CI]"] == "—"
    assert "broken: not resolved: only 0 seed(s) have a value" in md
    assert rows["tiny_lr"]["verdict"] == "hurts"  # the others are still tested


def test_an_arm_of_two_seeds_shows_no_interval_anywhere(tmp_path):
    from test_report import check_findings_numbers, check_markdown_matches_html, check_page

    two = {0: 0.955, 1: 0.93, **{s: None for s in SEEDS[2:]}}  # seeds 2-5 failed
    cells = {"baseline": SETTINGS, **{k: {**SETTINGS, **c} for k, c in CHANGES.items()},
             "two": {**SETTINGS, "fc_width": 64}}
    data = results_ablation.study(
        name="lrn-and-lr", run_id="r1", metric="val_acc", mode="max", alpha=0.05,
        design="one-at-a-time", epochs=4, seeds=SEEDS, cells=cells,
        changes={**CHANGES, "two": {"fc_width": 64}},
        values={"baseline": BASE, **VALUES, "two": two},
        excluded=[{"arm": "two", "seed": s, "status": "error", "why": "boom"} for s in SEEDS[2:]])
    (row,) = [a for a in data["arms"] if a["name"] == "two"]
    assert row["n"] == 2 and row["ci_low"] is not None  # the statistics have an interval ...
    run = run_dir(tmp_path, data)
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    cells_of = table(md, "arm")["two"]  # ... the report shows none from two seeds
    effect = f"{pts(row['effect'])} pts"
    assert cells_of["n"] == "2" and cells_of["effect [t CI]"] == effect
    assert cells_of["BCa CI"] == "—"
    (text,) = [s for s in md.splitlines() if s.startswith("two: ")]
    assert "[" not in text and "±" not in text and text.startswith(f"two: {row['verdict']} — "
                                                                   f"{effect} (")
    check_page((run / "report.html").read_text())
    check_markdown_matches_html(run)
    # The findings give each arm's verdict with the table's own cells.
    findings = check_findings_numbers(run)
    rows = table(md, "arm")
    assert f"tiny_lr hurts ({rows['tiny_lr']['effect [t CI]']}, Holm p < 0.001)" in findings
    assert (f"no_lrn ({rows['no_lrn']['effect [t CI]']}; 6 seeds detect ≥ "
            f"{rows['no_lrn']['MDE']})") in findings
    assert f"two ({effect}" in findings and "not resolved: " in findings
    assert "every comparison pairs at most 6 seeds (0, 1, 2, 3, 4, 5)" in findings
    assert "4 run(s) left out (no value at epoch 4)." in findings


def test_the_findings_say_when_an_interval_excludes_zero_but_holm_does_not(tmp_path):
    from service.report import findings

    data = study()
    arm = data["arms"][0]  # no_lrn, as the shipped study's zfnet_conv1: −0.5 [−0.9, −0.1]
    arm.update(effect=-0.005, ci_low=-0.009, ci_high=-0.001, p=0.028, p_adjusted=0.114,
               mde=0.006, verdict="not resolved")
    summary = Summary.ranked([], name="abl", spec=SPACE)
    text = findings.paragraph(summary, {"ablation": data, "effects": {}})
    assert ("no_lrn (−0.5 pts [−0.9, −0.1]; 6 seeds detect ≥ 0.6 pts; its interval excludes "
            "zero, p = 0.028, but not after Holm's adjustment, Holm p = 0.114)") in text
    assert text.startswith("Ablation (one-at-a-time design, 3 arms against the baseline, "
                           "verdicts at Holm-adjusted α = 0.05): tiny_lr hurts (")


def test_a_sequential_study_shows_its_looks_and_each_arms_stopping_look(tmp_path):
    # Looks at n = 3 and n = 6 (max 6): the looks' records as service.results.sequential makes
    # them, the arms' verdicts taken from where each stopped.
    from service.results import sequential

    cells = {"baseline": SETTINGS, **{k: {**SETTINGS, **c} for k, c in CHANGES.items()}}
    data = results_ablation.study(
        name="lrn-and-lr", run_id="r1", metric="val_acc", mode="max", alpha=0.05,
        design="one-at-a-time", epochs=4, seeds=SEEDS, cells=cells, changes=CHANGES,
        values={"baseline": BASE, **VALUES})
    diffs = {a: [VALUES[a][s] - BASE[s] if VALUES[a][s] is not None else math.nan
                 for s in SEEDS] for a in CHANGES}
    first = sequential.look({a: d[:3] for a, d in diffs.items()}, [3], 6)
    decided = {r["arm"]: r["decision"] for r in first if r["decision"] != "continue"}
    assert decided == {"tiny_lr": "hurts"}  # 70 points down at every seed
    second = sequential.look({a: d for a, d in diffs.items() if a not in decided}, [3, 6], 6,
                             decided=decided)
    data = results_ablation.with_looks(data, {"start": 3, "max": 6, "step": 3}, None,
                                       first + second)
    run = run_dir(tmp_path, data)
    build_report(run, analyses=False)
    md = (run / "report.md").read_text()
    assert "Sequential seeds: every cell trained 3 seeds" in md
    assert (run / "report_files" / "ablation_boundaries.png").stat().st_size > 1000
    start = md.index("| look | arm |")  # one row per arm tested at a look
    looks = [c.strip("| ").split(" | ") for c in md[start:].splitlines()[2:5]]
    assert [(r[0], r[1], r[2], r[5]) for r in looks] == [
        ("1", "no_lrn", "3", "continue"), ("1", "tiny_lr", "3", "hurts"),
        ("1", "same", "3", "continue")]
    rows = table(md, "arm")
    final = {r["arm"]: r for r in first + second}  # the last record of each arm
    for arm, row in rows.items():
        assert row["verdict"] == (final[arm]["verdict"] or "not resolved"), (arm, row)
    assert all(a["look"] == final[a["name"]]["look"] for a in data["arms"])
