"""The numbers of a sweep report: learning curves, each knob's effect, Optuna's parameter
importance and the model comparison, all read from what a finished sweep left on disk."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import optuna
import optuna.distributions as d

from service.analysis import AnalysisError, load_trial
from service.analysis.aliasing import aliasing_stats
from service.analysis.filters import filter_stats
from service.analysis.load import val_images
from service.models import architecture_knobs, describe, model_knobs
from service.results.records import Summary
from service.results.stats import mean_ci95


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def knob_effects(summary: Summary) -> dict[str, dict[str, Any]]:
    """Per searched knob: per value (choices) or per half of the range (numbers) the number of
    trials, mean score and 95% CI, over the trials that have a score."""
    scored = [(t, summary.score(t)) for t in summary.trials]
    scored = [(t, v) for t, v in scored if v is not None]
    effects = {}
    for knob in summary.searched:
        dist = summary.spec["search"][knob]
        pairs = [(t.config[knob], v) for t, v in scored if knob in t.config]
        groups: dict[str, list[float]] = {}
        if "values" in dist:
            for value in dist["values"]:
                groups[_label(value)] = [v for k, v in pairs if k == value]
        elif pairs:
            cut = statistics.median(k for k, _ in pairs)
            groups[f"<= {_label(cut)}"] = [v for k, v in pairs if k <= cut]
            groups[f"> {_label(cut)}"] = [v for k, v in pairs if k > cut]
        rows = []
        for label, values in groups.items():
            mean, half = mean_ci95(values) if values else (None, None)
            rows.append({"value": label, "n": len(values), "mean": mean, "ci95": half})
        effects[knob] = {"kind": "choice" if "values" in dist else "range", "rows": rows,
                         "points": pairs}
    return effects


def _distribution(dist: dict[str, Any]):
    if "values" in dist:
        return d.CategoricalDistribution(list(dist["values"]))
    if dist["type"] == "int":
        return d.IntDistribution(dist["low"], dist["high"], log=dist.get("log", False))
    return d.FloatDistribution(dist["low"], dist["high"], log=dist.get("log", False))


def importance(summary: Summary) -> dict[str, Any]:
    """Optuna's fANOVA parameter importance over the trials that have a score, or the reason
    it cannot be computed (too few trials, nothing varied)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k: _distribution(summary.spec["search"][k]) for k in summary.searched}
    study = optuna.create_study(direction="maximize" if summary.mode == "max" else "minimize")
    for t in summary.trials:
        value = summary.score(t)
        if value is not None and set(dists) <= set(t.config):
            study.add_trial(optuna.trial.create_trial(
                params={k: t.config[k] for k in dists}, distributions=dists, value=value))
    if len(study.trials) < 2 or not dists:
        return {"error": f"needs at least 2 scored trials and a searched knob "
                         f"(has {len(study.trials)} trials)"}
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as err:  # e.g. every trial has the same parameters
        return {"error": str(err).splitlines()[0]}
    return {"importances": {k: float(v) for k, v in values.items()}, "trials": len(study.trials)}


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
