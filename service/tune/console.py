"""What a sweep prints: its plan before it starts and its table of trials at the end."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from service.config.spec import SweepSpec
from service.results.ablation import sentences
from service.results.records import Summary
from service.rundir import JOURNAL, SEED_KEY, TUNING_DIR, journal_path
from service.tune.plan import describe_scheduler, describe_searcher, seeds_text


def print_plan(plan, spec: SweepSpec, out=None) -> None:
    """The plan in a few lines (also the header of a real run), to `out` (default: the
    sys.stdout of the time of the call)."""
    out = out or sys.stdout
    res = ", ".join(f"{v:g} {k}" for k, v in plan.trial_resources.items())
    at_once = (f"{plan.max_concurrent_trials} at a time" if plan.max_concurrent_trials
               else "as many at a time as the cluster fits")
    cluster = (f"cluster: {plan.cluster['CPU']:g} CPU, {plan.cluster['GPU']:g} GPU"
               if plan.max_concurrent_trials else "the cluster is sized when the sweep starts")
    abl = spec.ablation
    if abl is None:
        print(f"sweep {plan.name}: {plan.trials} trials of up to {plan.max_epochs} epochs, "
              f"{at_once}", file=out)
    else:
        cells = abl.cells()
        runs = f"at most {plan.trials}" if abl.sequential else str(plan.trials)
        print(f"ablation {plan.name}: {len(cells)} configurations x {seeds_text(abl.seeds)} "
              f"seeds = {runs} runs of {plan.max_epochs} epochs each, {at_once}", file=out)
    where = (f"a Ray Train run of {plan.workers_per_trial} worker(s)"
             if spec.resources.uses_train else "fit in a reused Tune trial actor")
    print(f"  each trial: {where} holding {res} ({cluster})", file=out)
    if abl is None:
        print(f"  searching {', '.join(spec.search) or 'nothing'}; searcher {plan.searcher}; "
              f"scheduler {plan.scheduler}; {' and '.join(plan.objectives)}"
              + (" (a Pareto front)" if len(plan.objectives) > 1 else ""), file=out)
        if spec.confirm is not None:
            print(f"  then {confirm_text(spec.confirm)}", file=out)
    else:
        test = ("group-sequential paired t (O'Brien-Fleming spending), Holm" if abl.sequential
                else "Holm")
        futile = (f"; futile below {abl.min_effect:g}" if abl.min_effect is not None else "")
        print(f"  {abl.design}: {', '.join(cells)}; paired by seed; {plan.mode} {plan.metric} "
              f"at epoch {plan.max_epochs}; {test} at alpha {abl.alpha:g}{futile}", file=out)
        base = _settings(abl.baseline) or "the fixed settings"
        print(f"  baseline {base}; arms: {_arms(abl.arms)}", file=out)
        if abl.tune is not None:
            print(f"  tuning first: {len(cells)} x {abl.tune.trials} = {plan.tuning_trials} "
                  f"trials over {', '.join(abl.tune.space)} at seed 0; searcher "
                  f"{describe_searcher(spec)}; scheduler {describe_scheduler(spec)}", file=out)
    print(f"  results: {plan.experiment_dir}", file=out)


def confirm_text(confirm) -> str:
    """A sweep's `confirm:` block in words (the plan's last line before the results)."""
    own = _settings(confirm.baseline)
    arms = ("each searched knob switched to its other values" if confirm.arms is None else
            _arms(confirm.arms))
    return (f"confirms the best configuration{' with ' + own if own else ''} against {arms}, "
            f"on {seeds_text(confirm.seeds)} seeds the sweep did not train")


def _settings(settings: dict[str, Any]) -> str:
    return " ".join(f"{k}={_cell(v)}" for k, v in settings.items())


def _arms(arms: dict[str, dict[str, Any]]) -> str:
    return "; ".join(f"{name} {_settings(changes)}" for name, changes in arms.items())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _objective(metric: str, value: float | str) -> str:
    """An objective's value: counts (parameters, FLOPs per image) with thousands separators."""
    if isinstance(value, str):
        return value
    return f"{value:,.0f}" if metric in ("params", "flops") else f"{value:.4f}"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def error_lines(trials, named: int = 3) -> list[str]:
    """One line per distinct error, with the trials that met it (the first `named` by id):
    `66359_00000: OSError: …`, or `3 trials (a, b, c): data: …: cannot read image (…)`."""
    met: dict[str, list[str]] = {}
    for t in trials:
        if t.error:
            met.setdefault(t.error, []).append(t.trial_id)
    lines = []
    for error, ids in met.items():
        if len(ids) == 1:
            lines.append(f"{ids[0]}: {error}")
            continue
        more = f" and {len(ids) - named} more" if len(ids) > named else ""
        lines.append(f"{len(ids)} trials ({', '.join(ids[:named])}{more}): {error}")
    return lines


def print_table(summary: Summary, best: bool = True) -> None:
    """All trials sorted by the sweep's metric, then (if `best`) the best configuration; with
    several objectives, each one's last-epoch value and the Pareto front instead."""
    keys, metric = summary.searched, summary.metric
    pareto = summary.pareto
    scores = ([f"{m} (last)" for m, _ in summary.objectives] if pareto else [f"best {metric}"])
    head = ["trial", *("seed" if k == SEED_KEY else k for k in keys), "status", "epochs",
            *scores, *(["front"] if pareto else [])]
    rows = []
    for t in summary.trials:
        values = ([_objective(m, v) for (m, _), v in zip(
                      summary.objectives, pareto.values.get(t.trial_id, ["-"] * len(scores)),
                      strict=True)] if pareto else [_score(summary.score(t))])
        front = (["*" if t.trial_id in pareto.trials else ""] if pareto else [])
        rows.append([t.trial_id, *(_cell(t.config.get(k, "")) for k in keys), t.status,
                     str(t.epochs), *values, *front])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for line in error_lines(summary.trials):
        print(line)
    if pareto:
        objectives = " and ".join(f"{o.mode} {o.metric}" for o in pareto.objectives)
        reference = ", ".join(_objective(m, r) for (m, _), r in zip(
            summary.objectives, pareto.reference or [], strict=False))
        hv = ("" if pareto.hypervolume is None else
              f"; hypervolume {pareto.hypervolume:.4g} up to ({reference})")
        print(f"Pareto front ({objectives}): {len(pareto.trials)} of {len(pareto.values)} "
              f"completed trials: {' '.join(pareto.trials) or 'none'}{hv}")
    elif best and summary.best:
        knobs = " ".join(f"{k}={_cell(summary.best.config.get(k))}" for k in keys)
        print(f"best: {summary.best.trial_id}  {metric} {_score(summary.score(summary.best))}  "
              f"{knobs}")
    print(f"wall time {summary.wall_s or 0:.0f}s")


def dashboard_commands(spec, experiment_dir: str) -> list[str]:
    """The `optuna-dashboard` commands that open the sweep's Optuna study (running or
    finished): one, or one per tuned cell of an ablation; none without an Optuna searcher or
    with results on remote storage."""
    from service.redact import redact_url

    if not spec.searcher.optuna:
        return []
    if spec.searcher.storage:  # the password stays out of the terminal's scrollback
        return [f"optuna-dashboard '{redact_url(spec.searcher.storage)}'"]
    journals = [journal_path(experiment_dir)]
    if spec.ablation is not None and "://" not in experiment_dir:
        journals = sorted(Path(experiment_dir).glob(f"{TUNING_DIR}/*/{JOURNAL}"))
    return [f"optuna-dashboard {shlex.quote(str(j))}" for j in journals if j]


def print_dashboard_commands(spec, experiment_dir: str) -> None:
    for command in dashboard_commands(spec, experiment_dir):
        print(f"Optuna dashboard: {command}  (pip install optuna-dashboard)")


def print_ablation(study: dict[str, Any]) -> None:
    """The arms against the baseline: effect with its interval, p after Holm, verdict; with
    sequential seeds also the look where each arm stopped and its repeated CI."""
    scale, unit = study["scale"], study["unit"].strip()
    seq = bool(study.get("sequential"))
    head = ["arm", "n", f"effect {unit}".strip(), "95% CI", "p (Holm)", "MDE", "verdict"]
    if seq:  # the t interval assumes n fixed in advance; the repeated CI holds at any look
        head[3:4] = ["look", "repeated CI", "t CI (fixed n)"]

    def num(x: float | None, sign: str = "+") -> str:
        return "-" if x is None else f"{x * scale:{sign}.2f}"

    def interval(low: float | None, high: float | None) -> str:
        return "-" if low is None else f"[{num(low)}, {num(high)}]"

    rows = []
    for r in study["arms"]:
        p = "-" if r["p_adjusted"] is None else f"{r['p_adjusted']:.3g}"
        row = [r["name"], str(r["n"]), num(r["effect"]), interval(r["ci_low"], r["ci_high"]),
               p, num(r["mde"], ""), r["verdict"]]
        if seq:
            row[3:3] = [str(r.get("look", "-")), interval(r.get("rci_low"), r.get("rci_high"))]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print(f"ablation: {study['metric']} at epoch {study['epochs']}, arm - baseline, "
          f"paired by seed")
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    for line in sentences(study):
        print(line)
