"""The numbers of a sweep report: learning curves, each knob's effect, Optuna's parameter
importance and the model comparison, all read from what a finished sweep left on disk."""

from __future__ import annotations

import math
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import optuna.distributions as d
import yaml

from service.analysis import AnalysisError, load_trial
from service.analysis.aliasing import aliasing_stats
from service.analysis.filters import filter_stats
from service.analysis.load import val_images
from service.config.confirm import knob_arms
from service.models import architecture_knobs, describe, model_knobs
from service.report import fmt
from service.results.records import Summary, TrialRecord, rank
from service.results.stats import mean_ci95

MIN_CI_N = 3  # fewer values get no interval: n is shown instead
MANY_TRIALS = 40  # above this, per-trial figures aggregate: one line per trial is a blur
BEST_SHOWN = 5  # trials still drawn one by one in an aggregated learning-curve figure


def value_label(value: Any) -> str:
    """A searched value as the per-value table and figure name it (report.fmt.setting)."""
    return fmt.setting(value)


def searched_knobs(summary: Summary) -> list[str]:
    """The knobs the spec's `search:` drew; an ablation study's runs are also told apart by
    their cell and seed (summary.searched), which no search space describes."""
    space = summary.spec.get("search") or {}
    return [k for k in summary.searched if k in space]


def value_at(trial: TrialRecord, metric: str, epoch: int) -> float | None:
    """`trial`'s value of `metric` at `epoch` (its per-epoch history, or its final result when
    that is the epoch); None when it has no finite value there."""
    value = None
    rows = [r for r in trial.history if (_epoch(r) or 0) <= epoch]
    at = [r for r in rows if _epoch(r) == epoch]
    if at:
        value = at[-1].get(metric)
        if value is None and metric == "best_val_acc":  # fit's running maximum of val_acc
            accs = [r["val_acc"] for r in rows if _finite(r.get("val_acc"))]
            value = max(accs) if accs else None
    elif not trial.history and _epoch(trial.final) == epoch:
        value = trial.final.get(metric)
        if value is None and metric == "best_val_acc":
            value = trial.best_val_acc
    return float(value) if _finite(value) else None


def _epoch(row: dict[str, Any]) -> int | None:
    e = row.get("epoch")
    return int(e) if _finite(e) else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _reached(trial: TrialRecord) -> int:
    epochs = [e for e in map(_epoch, trial.history) if e is not None]
    return max(epochs) if epochs else trial.epochs


def _why(trial: TrialRecord, metric: str, epoch: int | None) -> str:
    if trial.status == "stopped-early":
        return f"stopped early at epoch {trial.stopped_at or trial.epochs}"
    if trial.failed:
        return trial.status
    return f"no {metric} at epoch {epoch}"


def comparable(summary: Summary) -> dict[str, Any]:
    """The trials whose values can be compared, each at the same epoch: the completed trials at
    the budget's last epoch when at least 2 have a value there, else every trial that did not
    fail at the last epoch all of them reached. `rule` says which ("completed", "common-epoch"),
    `values` maps trial id to value and `left_out` lists the others with the reason."""
    metric = summary.metric
    max_epochs = summary.spec.get("budget", {}).get("max_epochs") or max(
        (t.epochs for t in summary.trials), default=0)
    done = [t for t in summary.trials if t.status == "completed"]
    values = {t.trial_id: value_at(t, metric, max_epochs) for t in done}
    values = {k: v for k, v in values.items() if v is not None}
    rule, epoch = "completed", max_epochs
    if len(values) < 2:
        pool = [t for t in summary.trials if not t.failed]
        rule, epoch = "common-epoch", min((_reached(t) for t in pool), default=None)
        values = {t.trial_id: value_at(t, metric, epoch) for t in pool} if pool else {}
        values = {k: v for k, v in values.items() if v is not None}
    left_out = [{"trial_id": t.trial_id, "status": t.status, "why": _why(t, metric, epoch)}
                for t in summary.trials if t.trial_id not in values]
    return {"rule": rule, "epoch": epoch, "values": values, "left_out": left_out}


def curve_bands(summary: Summary, best: int = BEST_SHOWN) -> dict[str, Any]:
    """The learning curves of many trials in aggregate: per epoch, over the trials with a
    finite value of the metric there (fewer at later epochs once trials stop), n, the median
    and the 10th and 90th percentiles (linear interpolation); the `best` top-scored trials (to
    be drawn individually) and how many trials ended in each status."""
    metric = summary.metric
    max_epochs = summary.spec.get("budget", {}).get("max_epochs") or max(
        (t.epochs for t in summary.trials), default=0)
    epochs = []
    for epoch in range(1, max_epochs + 1):
        values = [v for v in (value_at(t, metric, epoch) for t in summary.trials)
                  if v is not None]
        if values:
            p10, median, p90 = (float(q) for q in np.percentile(values, [10, 50, 90]))
            epochs.append({"epoch": epoch, "n": len(values), "median": median, "p10": p10,
                           "p90": p90})
    statuses: dict[str, int] = {}
    for t in summary.trials:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    top = [{"trial_id": t.trial_id, "score": summary.score(t)}
           for t in rank(summary.trials, metric, summary.mode)
           if summary.score(t) is not None][:best]
    return {"trials": len(summary.trials), "metric": metric, "epochs": epochs, "best": top,
            "statuses": statuses}


def knob_effects(summary: Summary) -> dict[str, Any]:
    """Per searched knob, per value (choices) or per half of the range (numbers): the number of
    comparable trials (`comparable`: each at the same epoch), their mean and the half-width of
    its 95% CI (None when n < 3: an interval from two values means nothing). Returns the rule,
    the epoch, the trials left out and `knobs`: {knob: {kind, rows, points}}."""
    basis = comparable(summary)
    scored = [(t, basis["values"][t.trial_id]) for t in summary.trials
              if t.trial_id in basis["values"]]
    knobs = {}
    for knob in searched_knobs(summary):
        dist = summary.spec["search"][knob]
        pairs = [(t.config[knob], v) for t, v in scored if knob in t.config]
        groups: dict[str, list[float]] = {}
        if "values" in dist:
            for value in dist["values"]:
                groups[value_label(value)] = [v for k, v in pairs if k == value]
        elif pairs:
            cut = statistics.median(k for k, _ in pairs)
            groups[f"<= {value_label(cut)}"] = [v for k, v in pairs if k <= cut]
            groups[f"> {value_label(cut)}"] = [v for k, v in pairs if k > cut]
        rows = []
        for label, values in groups.items():
            mean = statistics.fmean(values) if values else None
            half = mean_ci95(values)[1] if len(values) >= MIN_CI_N else None
            rows.append({"value": label, "n": len(values), "mean": mean, "ci95": half})
        knobs[knob] = {"kind": "choice" if "values" in dist else "range", "rows": rows,
                       "points": pairs}
    return {**{k: basis[k] for k in ("rule", "epoch", "left_out")},
            "trials": len(basis["values"]), "knobs": knobs}


def ablation_example(summary: Summary, seeds: int = 4) -> str | None:
    """The `ablation:` block (YAML, one line) that measures each searched knob's effect: the
    baseline at the best trial's values, arms with the knobs' other values
    (service.config.confirm, as `submit --confirm` runs it); None when no trial has a score or
    nothing is searched."""
    best = summary.best
    if best is None or not searched_knobs(summary):
        return None
    baseline, arms = knob_arms(summary.spec["search"], best.config, searched_knobs(summary))
    if not arms:
        return None
    block = yaml.safe_dump({"baseline": baseline, "arms": arms, "seeds": seeds},
                           default_flow_style=True, sort_keys=False, width=1_000_000)
    return "ablation: " + block.strip()


def _distribution(dist: dict[str, Any]):
    if "values" in dist:
        return d.CategoricalDistribution(list(dist["values"]))
    if dist["type"] == "int":
        return d.IntDistribution(dist["low"], dist["high"], log=dist.get("log", False))
    return d.FloatDistribution(dist["low"], dist["high"], log=dist.get("log", False))


# Parameter importance. Optuna 5's default evaluator (get_param_importances with
# evaluator=None: `evaluator = PedAnovaImportanceEvaluator()`) is PED-ANOVA; fANOVA is shown
# beside it. Both return all-zero importances from fewer than 2 trials (Optuna's source).
PRIMARY, SECOND = "PED-ANOVA", "fANOVA"
MIN_IMPORTANCE_TRIALS = 2
TOP_QUANTILE = 0.1  # PED-ANOVA's target_quantile (Optuna's default): reaching the top 10%
PED_ANOVA_STABLE_TOP = 5  # Optuna's docs: at least 5 trials in that top set for stability


def _evaluator(name: str):
    if name == PRIMARY:  # Parzen estimators on a fixed grid: deterministic, it takes no seed
        return optuna.importance.PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE)
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def importance_study(summary: Summary, values: dict[str, float]) -> optuna.Study:
    """An Optuna study of the trials in `values` (trial id -> the metric at one epoch, as
    `comparable` gives them) that set every searched knob: their searched params and that
    value, in the direction of the sweep's mode."""
    dists = {k: _distribution(summary.spec["search"][k]) for k in searched_knobs(summary)}
    study = optuna.create_study(direction="maximize" if summary.mode == "max" else "minimize")
    for t in summary.trials:
        if t.trial_id in values and set(dists) <= set(t.config):
            study.add_trial(optuna.trial.create_trial(
                params={k: t.config[k] for k in dists}, distributions=dists,
                value=values[t.trial_id]))
    return study


def _varying(study: optuna.Study, knobs: list[str]) -> list[str]:
    """The knobs that take more than one value among `study`'s trials."""
    return [k for k in knobs if len({repr(t.params[k]) for t in study.trials}) > 1]


def _cannot(study: optuna.Study, knobs: list[str]) -> str | None:
    """Why no evaluator can rank the knobs of `study`'s trials, or None."""
    trials = study.trials
    if not knobs:
        return "no knob was searched"
    if len(trials) < MIN_IMPORTANCE_TRIALS:
        return (f"needs at least {MIN_IMPORTANCE_TRIALS} comparable trials "
                f"(has {len(trials)})")
    if len({t.value for t in trials}) < 2:
        return f"all {len(trials)} comparable trials have the same value"
    if not _varying(study, knobs):
        return f"all {len(trials)} comparable trials have the same searched values"
    return None


def _evaluate(study: optuna.Study, name: str, knobs: list[str]) -> dict[str, Any]:
    """{importances: knob -> share, summing to 1, largest first} by evaluator `name`, or
    {error: one line}. A knob with one value among the trials explains nothing: 0, unasked
    (PED-ANOVA's Parzen estimators would give it a share of their smoothing)."""
    varying = _varying(study, knobs)
    try:
        with warnings.catch_warnings():  # normalize=False is "experimental"; the few-trials
            warnings.simplefilter("ignore")  # warnings are the report's own caveat instead
            raw = optuna.importance.get_param_importances(
                study, evaluator=_evaluator(name), params=varying, normalize=False)
    except (RuntimeError, ValueError) as err:  # fANOVA: "zero total variance in all trees"
        return {"error": str(err).splitlines()[0]}
    total = sum(raw.values())
    if not total > 0:
        return {"error": "it gives every knob 0"}
    shares = {k: float(v / total) for k, v in raw.items()}
    return {"importances": {**shares, **{k: 0.0 for k in knobs if k not in varying}}}


def _top(study: optuna.Study) -> int:
    """How many trials PED-ANOVA's top quantile holds (ties at the cut included)."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    losses = sorted(sign * t.value for t in study.trials)
    return sum(v <= losses[math.ceil(TOP_QUANTILE * len(losses)) - 1] for v in losses)


def importance(summary: Summary) -> dict[str, Any]:
    """Each searched knob's importance over the comparable trials only (`comparable`: each at
    the same epoch, so a trial ASHA cut early is not ranked against a finished one): PED-ANOVA,
    Optuna's default evaluator, as `importances` and in `evaluators` beside fANOVA (seed 0),
    each normalised to sum to 1 or with the one-line reason it cannot run. With the rule, the
    epoch, the number of trials, those left out, the knobs with one value among them
    (`constant`, 0 by both) and PED-ANOVA's top-quantile count."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    basis = comparable(summary)
    study = importance_study(summary, basis["values"])
    out: dict[str, Any] = {"evaluator": PRIMARY, "metric": summary.metric,
                           "rule": basis["rule"], "epoch": basis["epoch"],
                           "trials": len(study.trials), "left_out": basis["left_out"]}
    knobs = searched_knobs(summary)
    why = _cannot(study, knobs)
    evaluators = {name: {"error": why} if why else _evaluate(study, name, knobs)
                  for name in (PRIMARY, SECOND)}
    out["constant"] = [] if why else [k for k in knobs if k not in _varying(study, knobs)]
    if "importances" in evaluators[PRIMARY]:
        evaluators[PRIMARY].update(top=_top(study), top_quantile=TOP_QUANTILE)
        out["importances"] = evaluators[PRIMARY]["importances"]
    else:
        out["error"] = evaluators[PRIMARY]["error"]
    return {**out, "evaluators": evaluators}


def architecture(trial: dict[str, Any], spec: dict[str, Any]) -> tuple:
    """What makes a trial's network a different model (not how it was trained): its preset and
    the values of the preset's architecture knobs that the trial's config sets (the searched
    ones; the spec's fixed knobs are the same in every trial)."""
    config = trial["config"]
    model = config.get("model", spec["model"]["family"])
    # A searched list (widths) is a tuple here: the key must be hashable to group by it.
    return (model, *((k, tuple(config[k]) if isinstance(config[k], list) else config[k])
                     for k in architecture_knobs(model) if k in config))


def model_groups(summary: Summary) -> list[dict[str, Any]]:
    """Trials grouped by architecture, each with its best trial and mean seconds per epoch."""
    groups: dict[tuple, list] = {}
    for t in summary.trials:
        # architecture() reads a trial as summary.json holds it.
        groups.setdefault(architecture(t.model_dump(), summary.spec), []).append(t)
    out = []
    for key, trials in groups.items():
        scored = [(summary.score(t), t) for t in trials]
        scored = [(v, t) for v, t in scored if v is not None]
        best = (max if summary.mode == "max" else min)(
            scored, key=lambda p: p[0]) if scored else (None, None)
        epoch_s = [h["epoch_s"] for t in trials for h in t.history
                   if isinstance(h.get("epoch_s"), int | float)]
        out.append({"model": key[0], "knobs": dict(key[1:]), "trials": len(trials),
                    "best": best[0], "best_trial": best[1].trial_id if best[1] else None,
                    "epoch_s": statistics.fmean(epoch_s) if epoch_s else None})
    return out


def describe_group(group: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Parameters, FLOPs per image and conv1 kernel/stride of a group's architecture."""
    knobs = {**spec["model"].get("knobs", {}), **group["knobs"]}
    if spec["data"].get("image_size"):
        knobs["image_size"] = spec["data"]["image_size"]
    allowed = model_knobs(group["model"])
    knobs = {k: v for k, v in knobs.items() if k in allowed}
    info = describe(group["model"], flops=True, **knobs)
    merged = {**allowed, **knobs}
    return {"params": info["params"], "flops": info.get("flops"),
            "conv1": f"{merged.get('conv1_kernel', 5)}x{merged.get('conv1_kernel', 5)}/"
                     f"{merged.get('conv1_stride', 1)}"}


def conv_health(run_dir: Path, trial_id: str, images: int = 64) -> dict[str, Any]:
    """Dead conv1 filters and layer-2 aliasing of a trial's last checkpoint."""
    try:
        loaded = load_trial(run_dir, trial_id)
    except AnalysisError as err:
        return {"error": str(err)}
    x, _ = val_images(loaded.datasets, images)
    out: dict[str, Any] = {"dead_fraction": filter_stats(loaded.model)["dead_fraction"]}
    try:
        stats = aliasing_stats(loaded.model, x)
        # The raw share depends on the map size; over white noise's share it compares sizes.
        out["aliasing"], out["aliasing_vs_noise"] = stats["aliasing"], stats["aliasing_vs_noise"]
    except ValueError as err:  # a model without a second conv layer
        out["aliasing_error"] = str(err)
    return out
