"""The blocks of a sweep spec: search distributions, searcher, schedulers (Optuna pruners
included), budget and resources, with the shared error-line helpers. `service.spec` composes
them into `SweepSpec`."""

from __future__ import annotations

import json
import warnings
from typing import Annotated, Any, Literal

import optuna
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_FILE_BYTES = 1 << 20  # a spec is a page of YAML; anything bigger is a mistake or an attack
MAX_CORNERS = 4096  # combinations built exhaustively (each build is shape arithmetic only)
# What fit() reports that a sweep may optimise: the accuracies and losses of every epoch, the
# measured training throughput, and the model's static cost (parameters, forward FLOPs per image).
METRICS = ("val_acc", "best_val_acc", "train_acc", "val_loss", "train_loss", "images_per_s",
           "params", "flops")
LOWER_IS_BETTER = ("params", "flops")  # and every *loss
STORAGE_SCHEMES = ("s3", "gs", "gcs", "file", "hdfs", "abfs", "abfss")  # pyarrow filesystems
NOT_IN_TRAIN = ("model", "knobs", "data", "epochs")  # from model:, data:, budget.max_epochs
NOT_SEARCHABLE = {"knobs": "search knobs one by one", "data": "search data fields one by one",
                  "augmentation": "search augmentation fields one by one (hflip, crop, …)",
                  "epochs": "epochs come from budget.max_epochs (schedulers stop trials early)"}


RDB_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://",
               "mysql://", "mysql+pymysql://")  # what optuna.storages.RDBStorage takes


class SpecError(Exception):
    """An invalid sweep spec; `problems` holds one printable line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _line(path: str, value: Any, why: str) -> str:
    """One problem line; values shown as Python literals ('<…>' for descriptions), cut short."""
    shown = value if isinstance(value, str) and value.startswith("<") else repr(value)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return " ".join(f"{path or '<top level>'}: {shown} → {why}".split())


# --- search distributions ------------------------------------------------------------------


class Values(_Strict):
    """`choice`: one of `values` per trial; `grid`: every one of them (searcher grid/random)."""

    type: Literal["choice", "grid"]
    values: list[JsonValue] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        seen: set[str] = set()  # json.dumps tells 1 from True and from 1.0; == does not
        for i, value in enumerate(values):
            if json.dumps(value, sort_keys=True) in seen:
                raise ValueError(f"values[{i}]={value!r} is listed twice")
            seen.add(json.dumps(value, sort_keys=True))
        return values


def _check_low(low: float, info: ValidationInfo) -> float:
    if info.data.get("log") and low <= 0:
        raise ValueError("log sampling needs low > 0")
    return low


def _check_high(high: float, info: ValidationInfo) -> float:
    if info.data.get("low") is not None and high <= info.data["low"]:
        raise ValueError(f"high must be greater than low ({info.data['low']})")
    return high


class IntRange(_Strict):
    """An integer in [low, high], BOTH inclusive, a multiple of `step` (log-uniform if `log`)."""

    type: Literal["int"]
    log: bool = False  # declared before low/high: their checks read it
    low: int = Field(strict=True)
    high: int = Field(strict=True)
    step: int = Field(1, ge=1, strict=True)
    _low = field_validator("low")(_check_low)
    _high = field_validator("high")(_check_high)

    @field_validator("step")
    @classmethod
    def _step_fits(cls, step: int, info: ValidationInfo) -> int:
        low, high = info.data.get("low"), info.data.get("high")
        if step > 1 and info.data.get("log"):
            raise ValueError("log and step > 1 cannot be combined (Optuna forbids it)")
        # Tune draws multiples of step, Optuna low + k*step: the same values when low is one.
        if step > 1 and None not in (low, high) and (low % step or high % step):
            raise ValueError(f"low ({low}) and high ({high}) must be multiples of step")
        return step


class FloatRange(_Strict):
    """A float in [low, high] (log-uniform if `log`)."""

    type: Literal["float"]
    log: bool = False
    low: float = Field(strict=True, allow_inf_nan=False)  # strict: true is not 1.0
    high: float = Field(strict=True, allow_inf_nan=False)
    _low = field_validator("low")(_check_low)
    _high = field_validator("high")(_check_high)


Distribution = Annotated[Values | IntRange | FloatRange, Field(discriminator="type")]


# --- searcher, scheduler, budget, resources, model -----------------------------------------


class Searcher(_Strict):
    """How configurations are proposed: Optuna's TPE, Tune's random/grid variant generator."""

    # optuna-tpe / optuna-nsga2: Optuna's TPE or NSGA-II sampler (either takes one metric or
    # several objectives); random / grid: Tune's variant generator (grid: choices enumerated)
    type: Literal["optuna-tpe", "optuna-nsga2", "random", "grid"] = "optuna-tpe"
    seed: int | None = 0  # None: a different sequence every run
    n_startup_trials: int = Field(10, ge=1)  # optuna-tpe: random trials before TPE models
    population_size: int = Field(8, ge=2)  # optuna-nsga2: trials per generation
    # optuna-tpe: an Optuna RDB storage URL (sqlite:///studies.db, postgresql://user@host/db).
    # A later sweep with the same storage and study continues the study: TPE sees every
    # earlier trial. None: Optuna's journal file in the run directory (optuna-dashboard opens
    # it), or in memory when the results are remote (s3://…).
    storage: str | None = None
    study_name: str | None = Field(None, min_length=1)  # default: the spec's name

    @field_validator("storage")
    @classmethod
    def _rdb_url(cls, storage: str | None) -> str | None:
        if storage is not None and not storage.startswith(RDB_SCHEMES):
            raise ValueError(f"an Optuna RDB URL starting with {', '.join(RDB_SCHEMES)}")
        return storage

    @model_validator(mode="after")
    def _storage_needs_optuna(self) -> Searcher:
        if not self.optuna and (self.storage or self.study_name):
            raise ValueError(f"storage and study_name belong to the optuna-tpe and "
                             f"optuna-nsga2 searchers, not {self.type}")
        return self

    @property
    def optuna(self) -> bool:
        """Whether an Optuna study proposes the trials (TPE or NSGA-II)."""
        return self.type.startswith("optuna-")


class AshaScheduler(_Strict):
    """Asynchronous successive halving on the `epoch` counter (max_t = budget.max_epochs)."""

    type: Literal["asha"] = "asha"
    grace_period: int = Field(1, ge=1)  # epochs before a trial may be stopped
    reduction_factor: float = Field(2, gt=1)
    # Bracket k starts comparing at grace_period * reduction_factor**k: more than one bracket
    # hedges against configurations that start slowly and finish first.
    brackets: int = Field(1, ge=1, le=8)


class HyperBandScheduler(_Strict):
    """Synchronous HyperBand (max_t = budget.max_epochs)."""

    type: Literal["hyperband"] = "hyperband"
    reduction_factor: float = Field(3, gt=1)


class MedianScheduler(_Strict):
    """Stop a trial whose best result is below the median of the others at the same epoch."""

    type: Literal["median"] = "median"
    grace_period: int = Field(1, ge=1)
    min_samples_required: int = Field(3, ge=1)


class NoScheduler(_Strict):
    """Every trial runs budget.max_epochs epochs."""

    type: Literal["none"] = "none"


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


class Pruner(_Strict):
    """One Optuna pruner and its settings; a setting the chosen pruner does not take is refused
    by name. Unset settings are None and left out of dumps (and of describe_scheduler)."""

    pruner: Literal[tuple(PRUNER_SETTINGS)]  # declared first: the checks below read it
    n_startup_trials: int | None = Field(None, ge=0)  # trials finished before any pruning
    n_warmup_steps: int | None = Field(None, ge=0)  # epochs of each trial never pruned
    interval_steps: int | None = Field(None, ge=1)  # epochs between pruning checks
    n_min_trials: int | None = Field(None, ge=1)  # trials reporting at a step to compare with
    percentile: float | None = Field(None, ge=0, le=100, validate_default=True)  # pruned below it
    min_resource: int | Literal["auto"] | None = None  # epochs of the first rung
    max_resource: int | None = Field(None, ge=1)  # hyperband; None: budget.max_epochs
    reduction_factor: int | None = Field(None, ge=2)  # 1/reduction_factor promoted per rung
    min_early_stopping_rate: int | None = Field(None, ge=0)
    bootstrap_count: int | None = Field(None, ge=0)  # trials at a rung before promoting
    patience: int | None = Field(None, ge=0, validate_default=True)  # epochs without progress
    min_delta: float | None = Field(None, ge=0)  # the least change counted as progress
    # Annotated without `| None` so that error paths inside `wrapped:` resolve to this model;
    # leaving it out (None) means patience alone.
    wrapped: Pruner = None  # type: ignore[assignment]

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


def _pruner_problems(cfg: Pruner, max_epochs: int, path: str = "scheduler") -> list[str]:
    """Epoch counts beyond the budget, and whatever Optuna itself refuses."""
    problems = [_line(f"{path}.{k}", getattr(cfg, k), f"must be at most budget.max_epochs "
                      f"({max_epochs}): trials never get further")
                for k in ("min_resource", "max_resource", "n_warmup_steps")
                if isinstance(getattr(cfg, k), int) and getattr(cfg, k) > max_epochs]
    low, high = cfg.min_resource, cfg.max_resource or max_epochs
    if cfg.pruner == "hyperband" and isinstance(low, int) and high < low <= max_epochs:
        problems.append(_line(f"{path}.min_resource", low, f"must be at most max_resource "
                              f"({high}{'' if cfg.max_resource else ' = budget.max_epochs'})"))
    if cfg.wrapped is not None:
        problems += _pruner_problems(cfg.wrapped, max_epochs, f"{path}.wrapped")
    if not problems and path == "scheduler":
        try:
            make_pruner(cfg, max_epochs)
        except ValueError as err:
            problems.append(_line(path, f"<pruner {cfg.pruner}>", f"Optuna refuses it: {err}"))
    return problems


Scheduler = Annotated[AshaScheduler | HyperBandScheduler | MedianScheduler | OptunaScheduler
                      | NoScheduler, Field(discriminator="type")]


def default_mode(metric: str) -> Literal["max", "min"]:
    """The direction in which `metric` improves: max for accuracies and throughput, min for
    losses and costs."""
    return "min" if metric.endswith("loss") or metric in LOWER_IS_BETTER else "max"


Metric = Literal[METRICS]
Mode = Literal["max", "min"]


class Budget(_Strict):
    """How much the sweep may spend, and what it optimises: one metric, or several objectives
    (`metric: [val_acc, flops]`) whose Pareto front the sweep searches for."""

    max_epochs: int = Field(10, ge=1)  # per trial; also ASHA/HyperBand's max_t
    num_samples: int = Field(8, ge=1)  # configurations drawn (each run `seeds` times)
    metric: Metric | list[Metric] = "val_acc"
    # None: each metric's own direction; a list pairs with a list of metrics
    mode: Mode | list[Mode] | None = Field(None, validate_default=True)
    seeds: int = Field(1, ge=1)  # training seeds per configuration
    time_budget_s: float | None = Field(None, gt=0)  # wall-clock cap for the whole sweep

    # Checked before pydantic tries the union's members, so that a bad value is one line at
    # budget.metric / budget.mode (not one per member, under pydantic's member names).
    @field_validator("metric", mode="before")
    @classmethod
    def _known(cls, metric: Any) -> Any:
        if not isinstance(metric, str | list):
            raise ValueError("a metric's name, or a list of two or more")
        for name in metric if isinstance(metric, list) else [metric]:
            if not isinstance(name, str) or name not in METRICS:
                raise ValueError(f"unknown metric {name!r}; choose one of "
                                 f"{', '.join(map(repr, METRICS))}")
        return metric

    @field_validator("mode", mode="before")
    @classmethod
    def _max_or_min(cls, mode: Any) -> Any:
        if mode is None:
            return mode
        values = mode if isinstance(mode, list) else [mode]
        if not isinstance(mode, str | list) or any(m not in ("max", "min") for m in values):
            raise ValueError("max or min, or a list of them (one per metric)")
        return mode

    @field_validator("metric")
    @classmethod
    def _objectives(cls, metric: str | list[str]) -> str | list[str]:
        if isinstance(metric, list):
            if len(metric) < 2:
                raise ValueError("a list names two or more objectives; one metric is a string")
            if len(set(metric)) != len(metric):
                raise ValueError("an objective is listed twice")
        return metric

    @field_validator("mode")
    @classmethod
    def _from_metric(cls, mode: str | list[str] | None,
                     info: ValidationInfo) -> str | list[str] | None:
        if "metric" not in info.data:
            return mode
        metric = info.data["metric"]
        metrics = metric if isinstance(metric, list) else [metric]
        implied = [default_mode(m) for m in metrics]
        if mode is None:
            return implied if isinstance(metric, list) else implied[0]
        if isinstance(mode, list) != isinstance(metric, list) or (
                isinstance(mode, list) and len(mode) != len(metrics)):
            raise ValueError(f"one mode per metric: {len(metrics)} metric(s), so "
                             f"mode: {implied if isinstance(metric, list) else implied[0]} "
                             f"or leave mode out")
        for m, given, want in zip(metrics, mode if isinstance(mode, list) else [mode], implied,
                                  strict=True):
            if given != want:
                raise ValueError(f"{m} improves towards {want}; use mode: "
                                 f"{implied if isinstance(metric, list) else want} "
                                 f"or leave mode out")
        return mode

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, mode) per objective; one pair for a single metric."""
        if isinstance(self.metric, list):
            return list(zip(self.metric, self.mode, strict=True))  # type: ignore[arg-type]
        return [(self.metric, self.mode or default_mode(self.metric))]

    @property
    def multi_objective(self) -> bool:
        return isinstance(self.metric, list)

    @property
    def primary(self) -> tuple[str, str]:
        """The first objective: what ranks the trials table and names `best`."""
        return self.objectives[0]


class Resources(_Strict):
    """What one trial holds; maps onto Ray Train's ScalingConfig and Tune's concurrency."""

    workers_per_trial: int = Field(1, ge=1)  # Ray Train workers (data parallel) per trial
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)  # a fraction shares a GPU between trials
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: as many as the cluster fits
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl with GPUs, else gloo
    max_failures: int = Field(0, ge=-1)  # restarts of a trial from its last checkpoint; -1: any
    # Where a trial runs: `tune` in Tune's own (reused) trial actor, which holds the worker's
    # CPUs/GPUs; `train` as a Ray Train run (its controller and worker group); `auto` (the
    # default) picks tune for one worker and train for several (DDP, AlexNet's towers).
    engine: Literal["auto", "tune", "train"] = "auto"

    @field_validator("gpus_per_worker")
    @classmethod
    def _whole_above_one(cls, gpus: float) -> float:
        if gpus > 1 and gpus != int(gpus):
            raise ValueError("above 1, GPUs per worker must be a whole number (Ray's rule)")
        return gpus

    @field_validator("engine")
    @classmethod
    def _tune_runs_one_worker(cls, engine: str, info: ValidationInfo) -> str:
        workers = info.data.get("workers_per_trial", 1)
        if engine == "tune" and workers > 1:
            raise ValueError(f"the tune engine runs one worker per trial, not {workers}; use "
                             "train (or auto) for several workers")
        return engine

    @property
    def uses_train(self) -> bool:
        """Whether a trial is a Ray Train run rather than `fit` in Tune's trial actor."""
        return self.engine == "train" or (self.engine == "auto" and self.workers_per_trial > 1)

    @field_validator("backend")
    @classmethod
    def _nccl_needs_gpus(cls, backend: str, info: ValidationInfo) -> str:
        if backend == "nccl" and info.data.get("gpus_per_worker") == 0:
            raise ValueError("nccl needs GPUs (gpus_per_worker > 0); use gloo or auto")
        return backend


