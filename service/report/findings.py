"""The findings paragraph that opens the report, written from the numbers the sections below
computed (report.json's): the best configuration, the Pareto front, the knobs that mattered by
importance (PED-ANOVA), an ablation study's verdicts, and the caveats: n, the trials left out, and
what the numbers cannot say. It computes no statistic of its own; every number in it is
written by service.report.fmt exactly as the section it comes from writes it."""

from __future__ import annotations

from typing import Any

from service.report import fmt
from service.report.ablation import Display, holm, rows_of, tested_row
from service.report.data import MIN_CI_N
from service.report.pareto import objective_values
from service.results.records import Summary
from service.rundir import SEED_KEY


def left_out_text(left: list[dict[str, Any]]) -> str:
    """'3 trial(s) left out: 2 stopped early at epoch 2; 1 diverged.'"""
    counts: dict[str, int] = {}
    for t in left:
        counts[t["why"]] = counts.get(t["why"], 0) + 1
    if not left:
        return "No trial was left out."
    return (f"{len(left)} trial(s) left out: "
            + "; ".join(f"{n} {why}" for why, n in counts.items()) + ".")


def confounded(summary: Summary) -> str:
    """Why a searcher's per-value means are associations, not effects."""
    searcher = summary.spec.get("searcher", {}).get("type", "")
    return ("TPE picks each configuration from the earlier results, so the knobs are "
            "confounded" if searcher.startswith("optuna-") else
            "the other knobs vary at the same time, so the knobs are confounded")


def searched_settings(summary: Summary, config: dict[str, Any]) -> str:
    """A trial's searched settings as the trials table names them: 'conv1_kernel=11, seed=2'."""
    return ", ".join(f"{'seed' if k == SEED_KEY else k}={fmt.setting(config.get(k))}"
                     for k in summary.searched)


def _best(summary: Summary) -> str:
    best, metric = summary.best, summary.metric
    if best is None:
        return f"No trial has a value of {metric}."
    what = ("Highest on the first objective" if summary.pareto is not None
            else "Best configuration")
    settings = searched_settings(summary, best.config)
    return (f"{what}: trial {best.trial_id}, best {metric} "
            f"{fmt.metric(metric, summary.score(best))}"
            + (f", with {settings}." if settings else "."))


def _front(front: dict[str, Any] | None) -> str:
    if front is None:
        return ""
    objs = front["objectives"]
    names = fmt.join([o["metric"] for o in objs])
    trials = front["trials"]
    if not trials:
        return f"No trial is on the Pareto front of {names}: none completed every epoch."

    def point(t: str) -> str:
        values = ", ".join(f"{o['metric']} {v}" for o, v in
                           zip(objs, objective_values(front, t), strict=True))
        return f"trial {t} ({values})"

    text = (f"The Pareto front of {names} holds {len(trials)} of the {front['compared']} "
            "compared trials, ")
    text += (f"from {point(trials[0])} to {point(trials[-1])}" if len(trials) > 1
             else f"only {point(trials[0])}")
    share = front["hypervolume_share"]
    return text + (f"; its hypervolume is {fmt.percent(share)} of the box between the "
                   "reference point and the best values." if share is not None else ".")


def importance_basis(imp: dict[str, Any]) -> str:
    """Which trials the importance compares, and at which epoch (data.importance's rule)."""
    trials, metric, epoch = fmt.plural(imp["trials"], "trial"), imp["metric"], imp["epoch"]
    if epoch is None:
        return "no comparable trial (every trial failed)"
    if imp["rule"] == "completed":
        return f"the {trials} that completed the budget, each at its {metric} at epoch {epoch}"
    return (f"the {trials} that did not fail, each at its {metric} at epoch {epoch}, the "
            "last epoch all of them reached")


def _importance(imp: dict[str, Any] | None) -> str:
    if not imp or "importances" not in imp:
        return ""
    ranked = list(imp["importances"].items())
    if len(ranked) == 1:
        return f"{ranked[0][0]} is the only searched knob."
    one = set(imp.get("constant") or [])
    head = ranked[0]
    rest = [f"{k} ({fmt.percent(v)}" + (", one value in these trials)" if k in one else ")")
            for k, v in ranked[1:]]
    second = imp["evaluators"].get("fANOVA", {})
    beside = ("; fANOVA: " + ", ".join(f"{k} {fmt.percent(v)}" for k, v in
                                       second["importances"].items())
              if "importances" in second else
              f"; fANOVA could not run ({second['error']})" if "error" in second else "")
    return (f"By {imp['evaluator']} importance (Optuna's default evaluator) over "
            f"{importance_basis(imp)}, {head[0]} mattered most ({fmt.percent(head[1])}), then "
            f"{fmt.join(rest)}{beside}.")


def _verdicts(study: dict[str, Any]) -> list[str]:
    if "error" in study:
        return [f"The ablation study's numbers could not be read ({study['error']})."]
    show = Display(study)
    fact = study.get("factorial") or {}
    kind = {id(r): "main effect of " for r in fact.get("main_effects", [])}
    kind.update({id(r): "interaction " for r in fact.get("interactions", [])})
    resolved, unresolved = [], []
    for row in rows_of(study):
        name = kind.get(id(row), "") + row["name"]
        if not tested_row(row):
            unresolved.append(f"{name} ({row.get('reason') or 'no test'})")
        elif row["verdict"] in ("helps", "hurts"):
            resolved.append(f"{name} {row['verdict']} ({show.effect(row)}, "
                            f"{holm(show, row['p_adjusted'])})")
        else:
            detect = (f"; {row['n']} seeds detect ≥ {show.size(row['mde'])}"
                      if row.get("mde") is not None else "")
            if (row["n"] >= MIN_CI_N and row.get("p") is not None
                    and (row["ci_low"] > 0 or row["ci_high"] < 0)):
                detect += (f"; its interval excludes zero, p = {show.p(row['p'])}, but not "
                           f"after Holm's adjustment, {holm(show, row['p_adjusted'])}")
            unresolved.append(f"{name} ({show.effect(row)}{detect})")
    text = (f"Ablation ({study.get('design', 'one-at-a-time')} design, "
            f"{fmt.plural(len(study['arms']), 'arm')} against the baseline, verdicts at "
            f"Holm-adjusted α = {show.alpha:g}): ")
    if not resolved:
        return [f"{text}no comparison is resolved: {fmt.join(unresolved)}."]
    parts = [fmt.join(resolved)]
    if unresolved:
        parts.append(f"not resolved: {fmt.join(unresolved)}")
    return [text + "; ".join(parts) + "."]


def _sweep_caveats(summary: Summary, numbers: dict[str, Any]) -> list[str]:
    basis, effects = numbers.get("effects_basis"), numbers.get("effects") or {}
    out = []
    if basis:
        compared = (f"the {basis['trials']} that completed the budget, at epoch {basis['epoch']}"
                    if basis["rule"] == "completed" else
                    f"{basis['trials']} trials at epoch {basis['epoch']}, the last epoch all "
                    "of them reached")
        out.append(f"n = {len(summary.trials)} trials; the per-value means compare {compared}. "
                   f"{left_out_text(basis['left_out'])}")
        rows = [r for knob_rows in effects.values() for r in knob_rows]
        few = [r for r in rows if r["n"] < MIN_CI_N]
        if few:
            share = f"All {len(rows)}" if len(few) == len(rows) else \
                f"{len(few)} of the {len(rows)}"
            out.append(f"{share} per-value means rest on fewer than {MIN_CI_N} trials "
                       f"(smallest n = {min(r['n'] for r in few)}) and show no interval.")
        out.append("Per-value means and importances are associations, not effects: "
                   f"{confounded(summary)}; only an ablation study measures a knob's effect.")
    if numbers.get("pareto"):
        front = numbers["pareto"]
        out.append(f"The front compares only trials that completed every epoch "
                   f"({len(front['left_out'])} left out).")
    return out


def _study_caveats(study: dict[str, Any]) -> list[str]:
    if "error" in study:
        return []
    seeds = study.get("seeds") or []
    out = [f"every comparison pairs at most {fmt.plural(len(seeds), 'seed')} "
           f"({', '.join(map(str, seeds))}); not resolved means these seeds cannot tell, not "
           "that there is no effect (the detectable sizes above)."]
    notes = [{*r.get("notes", [])} for r in rows_of(study)]
    shared = set.intersection(*notes) if len(notes) > 1 else set()
    out += [f"Every arm: {note}." for note in sorted(shared)]
    excluded = study.get("excluded") or []
    if excluded:
        out.append(f"{len(excluded)} run(s) left out (no value at epoch {study.get('epochs')}).")
    return out


def paragraph(summary: Summary, numbers: dict[str, Any]) -> str:
    """The findings, one paragraph, from report.json's numbers (`numbers`)."""
    study = numbers.get("ablation")
    parts = _verdicts(study) if study is not None else [_best(summary)]
    parts += [_front(numbers.get("pareto")), _importance(numbers.get("importance"))]
    caveats = (_study_caveats(study) if study is not None else []) + _sweep_caveats(
        summary, numbers)
    if caveats:
        parts.append("Caveats: " + " ".join(caveats))
    return " ".join(p for p in parts if p)
