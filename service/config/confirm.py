"""Explore, then confirm: the ablation study that checks a finished sweep's answer.

The baseline is the sweep's best trial's searched values; each searched knob gets arms that
switch it to its other value(s): every other choice, or for a number range the middle of the
half of the range the best value is not in (the halves the report's per-knob table compares).
The confirmation trains seeds the sweep did not (its trial seeds were train.seed + 0 ..
budget.seeds - 1): a configuration picked as the best of many runs looks better on its own seeds
than it is (the winner's curse). Plain data in and out: the spec dict summary.json keeps.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from service.config.ablation import Confirm

SUFFIX = "-confirm"


def other_values(dist: dict[str, Any], best: Any) -> list[Any]:
    """The values of a knob's search distribution other than `best`: every other choice, or
    the middle of the half of the range that `best` is not in."""
    if "values" in dist:
        return [v for v in dist["values"] if v != best]
    low, high, log = dist["low"], dist["high"], dist.get("log", False)

    def middle(a: float, b: float) -> float:
        return math.sqrt(a * b) if log else (a + b) / 2

    mid = middle(low, high)
    value = middle(mid, high) if best <= mid else middle(low, mid)
    if dist["type"] == "int":
        step = dist.get("step", 1)
        return [min(high, max(low, low + round((value - low) / step) * step))]
    return [float(f"{value:.3g}")]


def arm_name(knob: str, value: Any) -> str:
    """An arm's name from the knob and the value it switches to: no_lrn, dropout_0.375."""
    if isinstance(value, bool):
        return f"{'with' if value else 'no'}_{knob}"
    return f"{knob}_{value:.3g}" if isinstance(value, float) else f"{knob}_{value}"


def knob_arms(search: dict[str, dict[str, Any]], best: dict[str, Any], knobs: list[str]
              ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(baseline, arms): the best trial's value of every searched knob (a float at 3
    significant digits), and one arm per other value of each knob."""
    baseline: dict[str, Any] = {}
    arms: dict[str, dict[str, Any]] = {}
    for knob in knobs:
        value = best.get(knob)
        if value is None:
            continue
        if isinstance(value, float):
            value = float(f"{value:.3g}")
        baseline[knob] = value
        for other in other_values(search[knob], value):
            arms[arm_name(knob, other)] = {knob: other}
    return baseline, arms


def confirmation(spec: dict[str, Any], best: dict[str, Any], knobs: list[str]
                 ) -> dict[str, Any]:
    """The confirmation study's spec document from a finished sweep's validated `spec` (its
    `confirm:` block, if any, sets the baseline's overrides, the arms, seeds, min_effect and
    alpha), its best trial's config `best` and its searched `knobs`: an ablation named
    <name>-confirm, the sweep's fixed settings and budget (no scheduler: every run the full
    budget; no tracking or notify, whose secrets summary.json does not keep), sequential seeds
    by default, starting past the seeds the sweep trained."""
    doc = copy.deepcopy(spec)
    search = doc.pop("search")
    block = doc.pop("confirm", None) or Confirm().model_dump(mode="json")
    baseline, arms = knob_arms(search, best, knobs)
    baseline.update(block["baseline"])
    arms = block["arms"] or arms
    budget = doc.get("budget", {})
    train = doc.setdefault("train", {})
    train["seed"] = int(train.get("seed", 0)) + int(budget.get("seeds", 1))
    doc["budget"] = {k: v for k, v in budget.items() if k not in ("num_samples", "seeds")}
    for name in ("searcher", "scheduler", "notify", "tracking"):  # secrets were redacted
        doc.pop(name, None)
    doc["name"] = f"{spec['name']}{SUFFIX}"
    doc["description"] = f"confirms the best configuration of sweep {spec['name']}"
    doc["ablation"] = {"baseline": baseline, "arms": arms, "seeds": block["seeds"],
                       "min_effect": block["min_effect"], "alpha": block["alpha"]}
    return doc
