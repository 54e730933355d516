"""The blocks of a sweep spec besides the scheduler (`service.config.schedulers`): search
distributions, searcher, budget and resources. `service.config.spec` composes them into
`SweepSpec`."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.config.base import Strict
from service.metrics import METRICS, Mode, default_mode

MAX_FILE_BYTES = 1 << 20  # a spec is a page of YAML; anything bigger is a mistake or an attack
MAX_CORNERS = 4096  # combinations built exhaustively (each build is shape arithmetic only)
STORAGE_SCHEMES = ("s3", "gs", "gcs", "file", "hdfs", "abfs", "abfss")  # pyarrow filesystems
NOT_IN_TRAIN = ("model", "knobs", "data", "epochs")  # from model:, data:, budget.max_epochs
NOT_SEARCHABLE = {"knobs": "search knobs one by one", "data": "search data fields one by one",
                  "augmentation": "search augmentation fields one by one (hflip, crop, …)",
                  "epochs": "epochs come from budget.max_epochs (schedulers stop trials early)"}


RDB_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://",
               "mysql://", "mysql+pymysql://")  # what optuna.storages.RDBStorage takes


# --- search distributions ------------------------------------------------------------------


class Values(Strict):
    """`choice`: one of `values` per trial; `grid`: every one of them (searcher grid/random)."""

    type: Literal["choice", "grid"]
    """choice: one value drawn per trial (searcher grid enumerates them all); grid: every
    value, each in trials of its own (searchers grid and random; Optuna cannot)."""
    values: list[JsonValue] = Field(min_length=1)
    """The candidate values (numbers, strings, booleans, lists or mappings), each listed once."""

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


class IntRange(Strict):
    """An integer in [low, high], BOTH inclusive, a multiple of `step` (log-uniform if `log`)."""

    type: Literal["int"]
    """int: an integer range."""
    log: bool = False  # declared before low/high: their checks read it
    """Sample log-uniformly (needs low > 0 and step 1); false: uniformly."""
    low: int = Field(strict=True)
    """The smallest value, inclusive; an integer (a boolean is refused)."""
    high: int = Field(strict=True)
    """The largest value, inclusive; greater than low."""
    step: int = Field(1, ge=1, strict=True)
    """Spacing of the values: low, low + step, …, high (multiples of it when step > 1)."""
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


class FloatRange(Strict):
    """A float in [low, high] (log-uniform if `log`)."""

    type: Literal["float"]
    """float: a real-valued range."""
    log: bool = False
    """Sample log-uniformly (needs low > 0); false: uniformly."""
    low: float = Field(strict=True, allow_inf_nan=False)
    """The lower bound; a finite number (a boolean is refused, not read as 1.0)."""
    high: float = Field(strict=True, allow_inf_nan=False)
    """The upper bound; a finite number greater than low."""
    _low = field_validator("low")(_check_low)
    _high = field_validator("high")(_check_high)


Distribution = Annotated[Values | IntRange | FloatRange, Field(discriminator="type")]


# --- searcher, scheduler, budget, resources, model -----------------------------------------


class Searcher(Strict):
    """How configurations are proposed: Optuna's TPE, Tune's random/grid variant generator."""

    type: Literal["optuna-tpe", "optuna-nsga2", "random", "grid"] = "optuna-tpe"
    """optuna-tpe / optuna-nsga2: Optuna's TPE or NSGA-II sampler (either takes one metric or
    several objectives); random / grid: Tune's variant generator (grid: choices enumerated)."""
    seed: int | None = 0
    """Seeds the sampler or variant generator and ASHA; null: a new sequence every run."""
    n_startup_trials: int = Field(10, ge=1)
    """optuna-tpe: trials drawn at random before TPE models the results."""
    population_size: int = Field(8, ge=2)
    """optuna-nsga2: trials per generation."""
    storage: str | None = None
    """Optuna searchers: an Optuna RDB storage URL (sqlite:///studies.db,
    postgresql://user@host/db). A later sweep with the same storage and study continues the
    study: the sampler sees every earlier trial. null: Optuna's journal file in the run
    directory (optuna-dashboard opens it), or in memory when the results are remote (s3://…)."""
    study_name: str | None = Field(None, min_length=1)
    """Optuna searchers: the study's name in its storage; null: the spec's name."""

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


Metric = Literal[METRICS]


class Budget(Strict):
    """How much the sweep may spend, and what it optimises: one metric, or several objectives
    (`metric: [val_acc, flops]`) whose Pareto front the sweep searches for."""

    max_epochs: int = Field(10, ge=1)
    """Epochs per trial; also ASHA's and HyperBand's max_t."""
    num_samples: int = Field(8, ge=1)
    """Configurations drawn, each trained `seeds` times (searcher random: per grid point;
    searcher grid runs its grid once and ignores it)."""
    metric: Metric | list[Metric] = "val_acc"
    """One metric to optimise, or a list of two or more objectives (their Pareto front)."""
    mode: Mode | list[Mode] | None = Field(None, validate_default=True)
    """max or min (a list: one per metric), matching each metric's direction; null: those
    directions (max for accuracies and images_per_s, min for losses, params and flops)."""
    seeds: int = Field(1, ge=1)
    """Training runs per configuration; run i trains with train.seed + i."""
    time_budget_s: float | None = Field(None, gt=0)
    """Wall-clock cap for the whole sweep, in seconds; null: none."""

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


class Resources(Strict):
    """What one trial holds; maps onto Ray Train's ScalingConfig and Tune's concurrency."""

    workers_per_trial: int = Field(1, ge=1)
    """Ray Train workers (data parallel) per trial."""
    cpus_per_worker: float = Field(1, gt=0)
    """CPUs each worker reserves; may be a fraction."""
    gpus_per_worker: float = Field(0, ge=0)
    """GPUs each worker reserves; a fraction shares a GPU, above 1 a whole number."""
    max_concurrent_trials: int | None = Field(None, ge=1)
    """Trials running at once; null: as many as the cluster fits."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend of a trial's workers; auto: nccl with GPUs, else gloo."""
    max_failures: int = Field(0, ge=-1)
    """Restarts of a failed trial from its last checkpoint; -1: any number."""
    engine: Literal["auto", "tune", "train"] = "auto"
    """Where a trial runs: tune in Tune's own (reused) trial actor, which holds the worker's
    CPUs/GPUs (one worker only); train as a Ray Train run (its controller and worker group);
    auto picks tune for one worker and train for several (DDP, AlexNet's towers)."""

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


