"""The report's Ablation section, from the run directory's ablation.json (service.results.ablation):
a forest plot of every arm's effect with its interval and verdict, each seed's paired values, the
table of the paired statistics, one plain sentence per arm, the runs left out and, when the arms
were tuned, their tuned values and expected best-of-k curves."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.report import ablation_plots as plots
from service.report import fmt
from service.report.data import MIN_CI_N
from service.rundir import ABLATION

if TYPE_CHECKING:  # build imports this module; the Doc is only passed in
    from service.report.doc import Doc

DASH = fmt.DASH
REQUIRED = ("name", "n", "effect", "ci_low", "ci_high", "verdict")


class Display:
    """How a study's numbers are written: effects as effect * scale + unit (points for an
    accuracy), with as many decimals as one significant digit of the typical interval
    half-width needs (at least one); metric values (means) as report.fmt writes the metric."""

    def __init__(self, data: dict[str, Any]):
        self.scale = float(data.get("scale") or 1.0)
        self.unit = data.get("unit") or ""
        self.alpha = float(data.get("alpha") or 0.05)
        self.metric = data.get("metric") or "metric"
        tested = [r for r in rows_of(data) if tested_row(r)]
        halves = [abs(r["ci_high"] - r["ci_low"]) / 2 * self.scale for r in tested]
        typical = [h for h in halves if h > 0] or [
            abs(r["effect"]) * self.scale for r in tested if r["effect"]]
        self.decimals = (min(6, max(1, -math.floor(math.log10(statistics.median(typical)))))
                         if typical else 2)

    def signed(self, value: float, unit: bool = True) -> str:
        """'−0.3 pts', '+1.5 pts' ('0.0 pts' rather than a signed zero)."""
        return fmt.signed(value * self.scale, self.decimals) + (self.unit if unit else "")

    def size(self, value: float | None) -> str:
        """A magnitude (a half-width, an MDE): '1.3 pts'; a dash for None."""
        if value is None:
            return DASH
        return f"{abs(value) * self.scale:.{self.decimals}f}{self.unit}"

    def value(self, value: float | None) -> str:
        """A metric value (a mean), written for the metric: '95.2%'."""
        return fmt.metric(self.metric, value)

    def p(self, p: float | None) -> str:
        """'<0.001', '0.0031', '0.059', '0.723' (report.fmt.p_value at this study's alpha)."""
        return fmt.p_value(p, self.alpha)

    def effect(self, row: dict[str, Any]) -> str:
        """'−0.5 pts [−0.9, −0.1]': the effect with its t interval; the effect alone below
        MIN_CI_N seeds, where an interval from two values would mean nothing."""
        text = self.signed(row["effect"])
        if row["n"] < MIN_CI_N:
            return text
        return (f"{text} [{self.signed(row['ci_low'], False)}, "
                f"{self.signed(row['ci_high'], False)}]")


def tested_row(row: dict[str, Any]) -> bool:
    """Whether the row has statistics (an arm with fewer than 2 valued seeds has none)."""
    return all(row.get(k) is not None for k in ("effect", "ci_low", "ci_high"))


def rows_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every compared row: the arms, then a factorial design's main effects and interactions."""
    fact = data.get("factorial") or {}
    return [*data["arms"], *fact.get("main_effects", []), *fact.get("interactions", [])]


def load(run_dir: Path) -> dict[str, Any] | None:
    """RUN_DIR/ablation.json, or None when the run is not an ablation study; ValueError with a
    one-line reason when the file is there but not a study's numbers."""
    path = run_dir / ABLATION
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("arms"), list) or not data["arms"]:
        raise ValueError(f"{path}: no list of arms")
    for i, row in enumerate(rows_of(data)):
        missing = [k for k in REQUIRED if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"{path}: row {i} lacks {', '.join(missing)}")
    return data


def _settings(settings: dict[str, Any] | None) -> str:
    return fmt.settings(settings or {})


def _changes(row: dict[str, Any], arms: dict[str, dict[str, Any]]) -> str:
    if "changes" in row:
        return _settings(row["changes"])
    # A factorial effect: the changes of the arms it is made of (an interaction 'a×b').
    return " × ".join(_settings(arms.get(part, {}).get("changes")) or part
                      for part in row["name"].split("×"))


def table_row(row: dict[str, Any], show: Display, arms: dict[str, dict[str, Any]],
              means: bool) -> list[str]:
    """One row of the table, every number written for a reader; no interval below MIN_CI_N
    seeds."""
    n = row["n"]
    wins = row.get("win_share")
    if not tested_row(row):
        return [row["name"], _changes(row, arms), str(n), *[DASH] * 10, row["verdict"]]
    boot = "boot_low" in row and n >= MIN_CI_N
    return [row["name"], _changes(row, arms), str(n),
            show.value(row.get("baseline_mean")) if means else DASH,
            show.value(row.get("arm_mean")) if means else DASH,
            show.effect(row),
            f"[{show.signed(row['boot_low'], False)}, {show.signed(row['boot_high'], False)}]"
            if boot else DASH,
            show.p(row.get("p")), show.p(row.get("p_perm")), show.p(row.get("p_adjusted")),
            DASH if row.get("d_z") is None else fmt.signed(row["d_z"], 2),
            DASH if wins is None else f"{round(wins * n)}/{n}",
            show.size(row.get("mde")), row["verdict"]]


def sentence(row: dict[str, Any], show: Display, shared: set[str]) -> str:
    """'no_lrn: not resolved — −0.3 pts [−1.6, +1.0] (Holm p = 0.620); 6 seeds detect
    ≥ 1.6 pts.'"""
    name, n, verdict = row["name"], row["n"], row["verdict"]
    if not tested_row(row):  # the reason says which seeds lack a value
        return f"{name}: {row.get('reason') or verdict}."
    p = row.get("p_adjusted")
    if p is None:
        text = f"{name}: {verdict} — every one of the {n} seeds moved by " \
               f"{show.signed(row['effect'])}."
    else:
        text = f"{name}: {verdict} — {show.effect(row)} ({holm(show, p)}"
        if verdict == "not resolved" and row.get("mde") is not None:
            text += f"); {n} seeds detect ≥ {show.size(row['mde'])}."
        else:
            text += f", {n} seeds)."
    own = [note for note in row.get("notes", []) if note not in shared]
    return " ".join([text, *(f"{note[0].upper()}{note[1:]}." for note in own)])


def holm(show: Display, p: float) -> str:
    """'Holm p < 0.001', 'Holm p = 0.620'."""
    text = show.p(p)
    return f"Holm p {'< ' + text[1:] if text.startswith('<') else '= ' + text}"


def _shared_notes(rows: list[dict[str, Any]]) -> set[str]:
    notes = [set(r.get("notes", [])) for r in rows]
    return set.intersection(*notes) if len(rows) > 1 else set()


def _intro(data: dict[str, Any], show: Display) -> str:
    base = data.get("baseline") or {}
    settings = _settings(base.get("settings")) or "the spec's settings"
    if base.get("tuned"):
        settings += f"; tuned: {_settings(base['tuned'])}"
    units = show.unit.strip() or f"{data.get('metric', 'the metric')}'s units"
    level = f"{1 - show.alpha:.0%}"
    seeds = ", ".join(map(str, data.get("seeds", []))) or "?"
    return (f"Study {data.get('name', '')} (run {data.get('run_id', '?')}): "
            f"{data.get('design', 'one-at-a-time')} design, {len(data['arms'])} arm(s) against "
            f"the baseline ({settings}), seeds {seeds}, every compared run trained "
            f"for {data.get('epochs', '?')} epochs; {data.get('metric', 'metric')}, "
            f"{'higher' if data.get('mode', 'max') == 'max' else 'lower'} is better. An effect "
            f"is arm − baseline, paired by seed, in {units}. Intervals at {level}: Student t, "
            "and the BCa bootstrap beside it (too narrow below 8 seeds); none below "
            f"{MIN_CI_N} seeds. p: paired t-test; "
            "p_perm: exact sign-flip test; p Holm: the t-test's p adjusted across the arms "
            f"(Holm), which the verdict reads at α = {show.alpha:g}; d_z: mean / sd of the "
            "differences; wins: seeds where the arm did better; MDE: the smallest effect these "
            "seeds detect with 80% power.")


GROUP_HEAD = {"arms": "arm", "main effects": "main effect", "interactions": "interaction"}
PREFIX = {"arms": "", "main effects": "Main effect of ", "interactions": "Interaction "}
HEAD = ["arm", "changes", "n", "baseline mean", "arm mean", "effect [t CI]", "BCa CI", "p",
        "p_perm", "p Holm", "d_z", "wins", "MDE", "verdict"]


def _tuning(doc: Doc, data: dict[str, Any], show: Display) -> None:
    tuning = data["tuning"]
    arms = tuning.get("arms") or {}
    tuned = {"baseline": (data.get("baseline") or {}).get("tuned"),
             **{a["name"]: a.get("tuned") for a in data["arms"]}}
    doc.heading("Equal tuning", level=3)
    space = ", ".join(tuning.get("space") or {}) or "the tuning space"
    doc.para(f"Every arm had the same tuning budget of {tuning.get('trials')} trials over "
             f"{space}; each then trained its best settings with every seed. The curves show "
             f"the expected best {data.get('metric', 'value')} after k of those trials (Dodge et "
             "al. 2019): a curve still rising at the last k may gain from more tuning.")
    rows = []
    for name, arm in arms.items():
        best_k = arm.get("expected_best") or []
        rows.append([name, _settings(arm.get("best") or tuned.get(name)) or DASH,
                     str(len(arm.get("values") or [])),
                     show.value(best_k[-1]) if best_k else DASH])
    doc.table(["arm", "tuned settings", "trials", f"best {data.get('metric', '')}"], rows)
    curves = {name: arm.get("expected_best") or [] for name, arm in arms.items()}
    if any(curves.values()):
        doc.image("ablation_tuning.png", plots.expected_best(curves, data.get("metric", "")),
                  f"The expected best {data.get('metric', 'value')} after k tuning trials, "
                  "k = 1 to the budget, one curve per configuration: the budgets were equal.")


def _looks(doc: Doc, seq: dict[str, Any]) -> None:
    """Sequential seeds: the schedule, the boundary plot and every look's decisions."""
    sched = seq["schedule"]
    futile = (f"; an arm stops as futile once {sched['max']} seeds could no longer detect an "
              f"effect of {seq['min_effect']:g}" if seq.get("min_effect") is not None else "")
    doc.para(f"Sequential seeds: every cell trained {sched['start']} seeds, then the arms not "
             f"yet decided (with the baseline) {sched['step']} more at each look, up to "
             f"{sched['max']}. Each look tests every undecided arm's paired t statistic against "
             "a group-sequential boundary (Lan-DeMets O'Brien-Fleming spending, Holm across the "
             f"arms) that keeps the family-wise error over arms and looks at alpha{futile}. "
             "Verdicts give the look and n where they were reached; the repeated CI holds at a "
             "data-dependent stop, the plain t interval beside it does not.")
    doc.image("ablation_boundaries.png", plots.boundaries(seq["looks"], sched["max"]),
              "Each arm's paired t statistic at each look against its boundary (dashed, ±); "
              "an arm stops where it crosses, or at the last look.")
    doc.table(["look", "arm", "n", "t", "boundary", "decision"],
              [[str(r["look"]), r["arm"], str(r["n"]),
                "-" if r["statistic"] is None else f"{r['statistic']:+.3g}",
                "-" if r["boundary"] is None else f"±{r['boundary']:.3g}", r["decision"]]
               for r in seq["looks"]])


def section(doc: Doc, run_dir: Path) -> dict[str, Any] | None:
    """The Ablation section when RUN_DIR holds ablation.json (None otherwise): figures, table,
    sentences and tuning; returns the section's numbers for report.json."""
    try:
        data = load(run_dir)
    except ValueError as err:
        doc.heading("Ablation")
        doc.para(f"Not shown: {err}.")
        return {"error": str(err)}
    if data is None:
        return None
    show = Display(data)
    metric = data.get("metric", "metric")
    fact = data.get("factorial") or {}
    groups = [("arms", data["arms"]), ("main effects", fact.get("main_effects", [])),
              ("interactions", fact.get("interactions", []))]
    groups = [(label, rows) for label, rows in groups if rows]
    arms = {a["name"]: a for a in data["arms"]}
    doc.heading("Ablation")
    doc.para(_intro(data, show))
    labelled = [(label, [(r, f"{show.effect(r)} {r['verdict']}")
                         for r in rows if tested_row(r)]) for label, rows in groups]
    labelled = [(label, rows) for label, rows in labelled if rows]
    if labelled:
        doc.image("ablation_forest.png", plots.forest(
            labelled, show.scale, show.unit, metric, data.get("mode", "max"), show.alpha),
            f"Forest plot: each arm's effect on {metric} (arm − baseline, paired by seed) "
            f"with its {1 - show.alpha:.0%} t interval around zero, coloured by its verdict.")
    seq = data.get("sequential")
    if seq:
        _looks(doc, seq)
    if any(a.get("per_seed") for a in data["arms"]):
        doc.image("ablation_seeds.png", plots.paired_seeds(data["arms"], metric),
                  f"Each seed's {metric} under the baseline joined to the same seed's value "
                  "under each arm; green where the arm did better, red where worse.")
    for label, rows in groups:
        if label != "arms":
            doc.heading(label.capitalize(), level=3)
            doc.para("A main effect is the mean of the cells with the arm minus those without; an "
                     "interaction, the difference of differences; each tested against zero per "
                     "seed, Holm-adjusted across the main effects and interactions together."
                     if label == "main effects" else "Interactions of two arms' changes.")
        doc.table([GROUP_HEAD[label], *HEAD[1:]],
                  [table_row(r, show, arms, label == "arms") for r in rows])
    shared = _shared_notes(rows_of(data))
    sentences = [{"group": label, "name": r["name"],
                  "text": f"{PREFIX[label]}{sentence(r, show, shared)}"}
                 for label, rows in groups for r in rows]
    for s in sentences:
        doc.para(s["text"])
    for note in sorted(shared):
        doc.para(f"Every arm: {note}.")
    excluded = data.get("excluded") or []
    if excluded:
        doc.para(f"{len(excluded)} run(s) left out (no value at epoch {data.get('epochs')}); "
                 "each comparison pairs only the seeds where both runs have a value:")
        doc.table(["arm", "seed", "status", "why"],
                  [[str(e.get("arm")), str(e.get("seed")), str(e.get("status")),
                    e.get("why", "")]
                   for e in excluded])
    if data.get("tuning"):
        _tuning(doc, data, show)
    return {**data, "sentences": sentences}
