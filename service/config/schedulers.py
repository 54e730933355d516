"""The scheduler block of a sweep spec: Tune's early-stopping schedulers (ASHA, HyperBand,
the median stopping rule, none) and Optuna's pruners deciding on Tune trials, with the pruner
each describes and the problems Optuna or the budget find in it."""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

import optuna
from pydantic import Field, ValidationInfo, field_validator, model_serializer
from pydantic_core import PydanticCustomError

from service.config.base import Strict, problem


class AshaScheduler(Strict):
    """Asynchronous successive halving on the `epoch` counter (max_t = budget.max_epochs)."""

    type: Literal["asha"] = "asha"
    """asha: asynchronous successive halving."""
    grace_period: int = Field(1, ge=1)
    """Epochs before a trial may be stopped; at most budget.max_epochs."""
    reduction_factor: float = Field(2, gt=1)
    """Rung spacing factor; about 1/reduction_factor of a rung's trials continue; above 1."""
    brackets: int = Field(1, ge=1, le=8)
    """Brackets (1 to 8); bracket k starts comparing at `grace_period * reduction_factor**k`:
    more than one hedges against configurations that start slowly and finish first."""


class HyperBandScheduler(Strict):
    """Synchronous HyperBand (max_t = budget.max_epochs)."""

    type: Literal["hyperband"] = "hyperband"
    """hyperband: synchronous HyperBand."""
    reduction_factor: float = Field(3, gt=1)
    """About 1/reduction_factor of the trials continue at each halving; greater than 1."""


class MedianScheduler(Strict):
    """Stop a trial whose best result is below the median of the others at the same epoch."""

    type: Literal["median"] = "median"
    """median: the median stopping rule."""
    grace_period: int = Field(1, ge=1)
    """Epochs before a trial may be stopped; at most budget.max_epochs."""
    min_samples_required: int = Field(3, ge=1)
    """Other trials that must have reported at an epoch before their median is compared."""


class NoScheduler(Strict):
    """Every trial runs budget.max_epochs epochs."""

    type: Literal["none"] = "none"
    """none: no early stopping (Tune's FIFO scheduler)."""


# Optuna's pruners: the settings each takes (Optuna's own parameter names; left out = Optuna's
# default). tests/test_schedulers.py checks the names against Optuna's signatures.
_STEPS = ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials")
PRUNER_SETTINGS = {
    "median": _STEPS,
    "percentile": ("percentile", *_STEPS),
    "successive-halving": ("min_resource", "reduction_factor", "min_early_stopping_rate",
                           "bootstrap_count"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor", "bootstrap_count"),
    "patient": ("patience", "min_delta", "wrapped"),
}
_REQUIRED = {"percentile": "percentile", "patience": "patient"}  # setting -> pruner needing it


class Pruner(Strict):
    """One Optuna pruner and its settings; a setting the chosen pruner does not take is refused
    by name. Unset settings are None and left out of dumps (and of describe_scheduler)."""

    pruner: Literal[tuple(PRUNER_SETTINGS)]  # declared first: the checks below read it
    """The Optuna pruner: median, percentile, successive-halving, hyperband or patient."""
    n_startup_trials: int | None = Field(None, ge=0)
    """median, percentile: trials finished before any pruning."""
    n_warmup_steps: int | None = Field(None, ge=0)
    """median, percentile: epochs of each trial never pruned; at most budget.max_epochs."""
    interval_steps: int | None = Field(None, ge=1)
    """median, percentile: epochs between pruning checks."""
    n_min_trials: int | None = Field(None, ge=1)
    """median, percentile: trials reporting at an epoch before a trial is compared with them."""
    percentile: float | None = Field(None, ge=0, le=100, validate_default=True)
    """percentile (required): trials below this percentile (0 to 100) at an epoch are pruned."""
    min_resource: int | Literal["auto"] | None = None
    """successive-halving, hyperband: epochs of the first rung, at least 1 ("auto":
    successive-halving only, Optuna estimates it)."""
    max_resource: int | None = Field(None, ge=1)
    """hyperband: epochs of the last rung; unset: budget.max_epochs."""
    reduction_factor: int | None = Field(None, ge=2)
    """successive-halving, hyperband: 1/reduction_factor of a rung's trials are promoted."""
    min_early_stopping_rate: int | None = Field(None, ge=0)
    """successive-halving: the minimum early-stopping rate s; the first rung is at
    `min_resource * reduction_factor**s` epochs."""
    bootstrap_count: int | None = Field(None, ge=0)
    """successive-halving, hyperband: trials at a rung before any is promoted."""
    patience: int | None = Field(None, ge=0, validate_default=True)
    """patient (required): epochs without progress before a trial is pruned."""
    min_delta: float | None = Field(None, ge=0)
    """patient: the least change counted as progress."""
    # Annotated without `| None` so that error paths inside `wrapped:` resolve to this model.
    wrapped: Pruner = None  # type: ignore[assignment]
    """patient: the pruner (median, percentile, successive-halving or hyperband) that decides
    once patience runs out; left out: patience alone."""

    @field_validator(*{k for names in PRUNER_SETTINGS.values() for k in names})
    @classmethod
    def _taken_by_pruner(cls, value: Any, info: ValidationInfo) -> Any:
        pruner = info.data.get("pruner")
        if pruner is None:
            return value  # the pruner itself is wrong: that is the error to show
        if value is None and _REQUIRED.get(info.field_name) == pruner:
            raise PydanticCustomError("missing", "required by pruner {pruner}", {"pruner": pruner})
        if value is not None and info.field_name not in PRUNER_SETTINGS[pruner]:
            raise ValueError(f"pruner {pruner} does not take {info.field_name}; it takes "
                             + ", ".join(PRUNER_SETTINGS[pruner]))
        if info.field_name == "min_resource" and value == "auto" and pruner == "hyperband":
            raise ValueError("hyperband's min_resource is a number of epochs (no 'auto')")
        if info.field_name == "min_resource" and isinstance(value, int) and value < 1:
            raise ValueError("min_resource must be at least 1 epoch")
        if info.field_name == "wrapped" and value is not None and value.pruner == "patient":
            raise ValueError("patient wraps median, percentile, successive-halving or hyperband")
        return value

    @model_serializer(mode="wrap")
    def _set_only(self, handler: Any) -> dict[str, Any] | None:
        data = handler(self)  # None for a left-out `wrapped`
        return {k: v for k, v in data.items() if v is not None} if data is not None else None


class OptunaScheduler(Pruner):
    """An Optuna pruner deciding on Tune trials (service.schedulers.OptunaPrunerScheduler)."""

    type: Literal["optuna"] = "optuna"
    """optuna: the Optuna pruner these settings describe."""


def make_pruner(cfg: Pruner, max_epochs: int) -> Any:
    """The `optuna.pruners.BasePruner` that `cfg` describes; settings left out keep Optuna's
    defaults, except hyperband's `max_resource`, which is `max_epochs`."""
    given = {k: v for k, v in cfg.model_dump().items()
             if k not in ("type", "pruner", "wrapped") and v is not None}
    if cfg.pruner == "patient":
        wrapped = make_pruner(cfg.wrapped, max_epochs) if cfg.wrapped is not None else None
        with warnings.catch_warnings():  # "experimental": its interface may change, not its use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.PatientPruner(wrapped, **given)
    if cfg.pruner == "hyperband":
        given.setdefault("max_resource", max_epochs)
    classes = {"median": optuna.pruners.MedianPruner,
               "percentile": optuna.pruners.PercentilePruner,
               "successive-halving": optuna.pruners.SuccessiveHalvingPruner,
               "hyperband": optuna.pruners.HyperbandPruner}
    return classes[cfg.pruner](**given)


def pruner_problems(cfg: Pruner, max_epochs: int, path: str = "scheduler") -> list[str]:
    """Epoch counts beyond the budget, and whatever Optuna itself refuses."""
    problems = [problem(f"{path}.{k}", getattr(cfg, k), f"must be at most budget.max_epochs "
                        f"({max_epochs}): trials never get further")
                for k in ("min_resource", "max_resource", "n_warmup_steps")
                if isinstance(getattr(cfg, k), int) and getattr(cfg, k) > max_epochs]
    low, high = cfg.min_resource, cfg.max_resource or max_epochs
    if cfg.pruner == "hyperband" and isinstance(low, int) and high < low <= max_epochs:
        problems.append(problem(f"{path}.min_resource", low, f"must be at most max_resource "
                                f"({high}{'' if cfg.max_resource else ' = budget.max_epochs'})"))
    if cfg.wrapped is not None:
        problems += pruner_problems(cfg.wrapped, max_epochs, f"{path}.wrapped")
    if not problems and path == "scheduler":
        try:
            make_pruner(cfg, max_epochs)
        except ValueError as err:
            problems.append(problem(path, f"<pruner {cfg.pruner}>", f"Optuna refuses it: {err}"))
    return problems


Scheduler = Annotated[AshaScheduler | HyperBandScheduler | MedianScheduler | OptunaScheduler
                      | NoScheduler, Field(discriminator="type")]
