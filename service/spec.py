"""Sweep specs: a YAML file -> a validated `SweepSpec` -> Ray Tune's search space.

`load_spec(path)` never shows a traceback: every problem becomes one line of a `SpecError`,
`FILE: field.path: bad value → what is allowed / why`, all at once. Beyond the types, every
searched value and the corners of the space are built by shape arithmetic
(`TrainConfig.with_overrides`), so no trial fails later on a model that cannot exist.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import random
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    create_model,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .data import AugmentConfig, DataConfig
from .models import knob_names, list_models
from .train import TrainConfig

MAX_FILE_BYTES = 1 << 20  # a spec is a page of YAML; anything bigger is a mistake or an attack
MAX_CORNERS = 4096  # combinations built exhaustively (each build is shape arithmetic only)
METRICS = ("val_acc", "best_val_acc", "train_acc", "val_loss", "train_loss")  # fit() reports them
STORAGE_SCHEMES = ("s3", "gs", "gcs", "file", "hdfs", "abfs", "abfss")  # pyarrow filesystems
NOT_IN_TRAIN = ("model", "knobs", "data", "epochs")  # from model:, data:, budget.max_epochs
NOT_SEARCHABLE = {"knobs": "search knobs one by one", "data": "search data fields one by one",
                  "augmentation": "search augmentation fields one by one (hflip, crop, …)",
                  "epochs": "epochs come from budget.max_epochs (schedulers stop trials early)"}


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

    type: Literal["optuna-tpe", "random", "grid"] = "optuna-tpe"  # grid: choices enumerated
    seed: int | None = 0  # None: a different sequence every run
    n_startup_trials: int = Field(10, ge=1)  # optuna-tpe: random trials before TPE models


class AshaScheduler(_Strict):
    """Asynchronous successive halving on the `epoch` counter (max_t = budget.max_epochs)."""

    type: Literal["asha"] = "asha"
    grace_period: int = Field(1, ge=1)  # epochs before a trial may be stopped
    reduction_factor: float = Field(2, gt=1)


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
    import optuna  # lazily: specs are loaded and checked without Optuna

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
    """The direction in which `metric` improves: max for accuracies, min for losses."""
    return "min" if metric.endswith("loss") else "max"


class Budget(_Strict):
    """How much the sweep may spend, and what it optimises."""

    max_epochs: int = Field(10, ge=1)  # per trial; also ASHA/HyperBand's max_t
    num_samples: int = Field(8, ge=1)  # configurations drawn (each run `seeds` times)
    metric: Literal[METRICS] = "val_acc"
    mode: Literal["max", "min"] | None = Field(None, validate_default=True)  # None: from metric
    seeds: int = Field(1, ge=1)  # training seeds per configuration
    time_budget_s: float | None = Field(None, gt=0)  # wall-clock cap for the whole sweep

    @field_validator("mode")
    @classmethod
    def _from_metric(cls, mode: str | None, info: ValidationInfo) -> str | None:
        if "metric" not in info.data:
            return mode
        implied = default_mode(info.data["metric"])
        if mode not in (None, implied):
            raise ValueError(f"{info.data['metric']} improves towards {implied}; "
                             f"use mode: {implied} or leave mode out")
        return implied


class Resources(_Strict):
    """What one trial holds; maps onto Ray Train's ScalingConfig and Tune's concurrency."""

    workers_per_trial: int = Field(1, ge=1)  # Ray Train workers (data parallel) per trial
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)  # a fraction shares a GPU between trials
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: as many as the cluster fits
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl with GPUs, else gloo
    max_failures: int = Field(0, ge=-1)  # worker-group restarts per trial; -1: unlimited

    @field_validator("gpus_per_worker")
    @classmethod
    def _whole_above_one(cls, gpus: float) -> float:
        if gpus > 1 and gpus != int(gpus):
            raise ValueError("above 1, GPUs per worker must be a whole number (Ray's rule)")
        return gpus

    @field_validator("backend")
    @classmethod
    def _nccl_needs_gpus(cls, backend: str, info: ValidationInfo) -> str:
        if backend == "nccl" and info.data.get("gpus_per_worker") == 0:
            raise ValueError("nccl needs GPUs (gpus_per_worker > 0); use gloo or auto")
        return backend


class ModelSpec(_Strict):
    """The preset the sweep starts from and its fixed knobs."""

    family: str  # a name from service.models.list_models()
    knobs: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("family")
    @classmethod
    def _known(cls, family: str) -> str:
        if family not in list_models():
            raise ValueError(f"unknown model; choose one of {', '.join(list_models())}")
        return family


# Derived from TrainConfig, field for field, so that the `train:` block can never drift from it.
TrainSettings = create_model(
    "TrainSettings", __config__=ConfigDict(extra="forbid"),
    __doc__="Fixed training settings: TrainConfig's fields but model, knobs, data and epochs.",
    **{n: (f.annotation, f) for n, f in TrainConfig.model_fields.items() if n not in NOT_IN_TRAIN})


class SweepSpec(_Strict):
    """A whole sweep. model_validate raises ValidationError for wrong types and fields and
    SpecError (unprefixed lines) for cross-field problems; `parse_spec` unifies both."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)  # a directory in results
    description: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSpec
    train: TrainSettings = Field(default_factory=TrainSettings)  # type: ignore[valid-type]
    search: dict[str, Distribution] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)
    searcher: Searcher = Field(default_factory=Searcher)
    scheduler: Scheduler = Field(default_factory=AshaScheduler)
    resources: Resources = Field(default_factory=Resources)
    storage: str = "results"  # a local directory or a URI (s3://, gs://, file://)

    @field_validator("name")
    @classmethod
    def _not_dots(cls, name: str) -> str:
        if set(name) == {"."}:
            raise ValueError("a name of dots only would escape the results directory")
        return name

    @field_validator("storage")
    @classmethod
    def _storage(cls, storage: str) -> str:
        scheme = storage.split("://", 1)[0] if "://" in storage else ""
        if not storage.strip() or scheme not in ("", *STORAGE_SCHEMES):
            raise ValueError(f"a directory or a URI with scheme {', '.join(STORAGE_SCHEMES)}")
        return storage

    @field_serializer("data", "train")
    def _given_only(self, block: BaseModel, info: Any) -> dict[str, Any]:
        # Left out means "the library default". Dumped defaults would become fixed settings on
        # reload, and a fixed setting may not also be searched.
        return block.model_dump(mode=info.mode, exclude_unset=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> SweepSpec:
        problems = _cross_problems(self)
        if problems:
            raise SpecError(problems)  # not a ValueError, so pydantic lets it through intact
        return self

    @property
    def default_mode(self) -> str:
        """The mode implied by budget.metric (max for accuracies, min for losses)."""
        return default_mode(self.budget.metric)

    def base_config(self) -> TrainConfig:
        """The TrainConfig every trial starts from (epochs = budget.max_epochs)."""
        return TrainConfig(model=self.model.family, knobs=dict(self.model.knobs), data=self.data,
                           epochs=self.budget.max_epochs, **self.train.model_dump())

    def train_config(self, sampled: dict[str, Any]) -> TrainConfig:
        """One trial's TrainConfig: the base with the sampled `key: value`s routed in."""
        return self.base_config().with_overrides(sampled)


# --- cross-field checks --------------------------------------------------------------------


def _cross_problems(spec: SweepSpec) -> list[str]:
    problems = []
    for key, dist in spec.search.items():
        if spec.searcher.type == "optuna-tpe" and dist.type == "grid":
            problems.append(_line(f"search.{key}.type", "grid", "Optuna's searcher in Tune "
                                  "cannot grid search; use type: choice, or searcher grid/random"))
        if spec.searcher.type == "grid" and dist.type not in ("grid", "choice"):
            problems.append(_line(f"search.{key}.type", dist.type,
                                  "searcher grid enumerates values: use type grid or choice"))
    if isinstance(spec.scheduler, OptunaScheduler):
        problems += _pruner_problems(spec.scheduler, spec.budget.max_epochs)
    grace = getattr(spec.scheduler, "grace_period", 1)
    if grace > spec.budget.max_epochs:
        problems.append(_line("scheduler.grace_period", grace,
                              f"must be at most budget.max_epochs ({spec.budget.max_epochs})"))
    knobs = knob_names(spec.model.family)
    bad_knobs = [_line(f"model.knobs.{k}", v, _unknown(k, knobs, "not a knob of the preset"))
                 for k, v in spec.model.knobs.items() if k not in knobs]
    keys, key_problems = _search_keys(spec)
    problems += bad_knobs + key_problems
    if bad_knobs:
        return problems  # the base cannot be built; every value check would repeat that
    try:
        base = spec.base_config()
    except (ValidationError, ValueError, TypeError) as err:  # check_model may raise TypeError
        return problems + [_base_problem(spec, err)]
    ok: dict[str, list[Any]] = {}
    for key in keys:  # every value alone, then the corners of those that passed
        dist, ok[key] = spec.search[key], []
        points = ([(f"values[{i}]", v) for i, v in enumerate(dist.values)]
                  if isinstance(dist, Values) else [("low", dist.low), ("high", dist.high)])
        for suffix, value in points:
            why = _failure(base, {key: value})
            if why is None:
                ok[key].append(value)
            else:
                problems.append(_line(f"search.{key}.{suffix}", value, _simplify(why, key, value)))
    return problems + _corner_problems(base, ok)


def _unknown(key: str, allowed: list[str], what: str) -> str:
    close = difflib.get_close_matches(key, allowed, n=1) or [
        a for a in allowed if len(key) > 3 and a.startswith(key)][:1]  # grace → grace_period
    return f"{what}{f' (did you mean {close[0]!r}?)' if close else ''}; allowed: " + (
        ", ".join(allowed))


def _search_keys(spec: SweepSpec) -> tuple[list[str], list[str]]:
    """The searched keys fit for value checks, and the problems of the others."""
    presets = [spec.model.family]
    if isinstance(spec.search.get("model"), Values):
        presets += [v for v in spec.search["model"].values if v in list_models()]
    groups = {"training": [k for k in TrainConfig.model_fields if k not in NOT_IN_TRAIN[1:]],
              "data": [k for k in DataConfig.model_fields if k != "augmentation"],
              "augmentation": list(AugmentConfig.model_fields),
              "model knobs": sorted({k for p in presets for k in knob_names(p)}
                                    - set(DataConfig.model_fields))}  # image_size goes to data
    allowed = [k for names in groups.values() for k in names]
    fixed = {**{k: "model.knobs" for k in spec.model.knobs},
             **{k: "train" for k in spec.train.model_fields_set},
             **{k: "data" for k in spec.data.model_fields_set - {"augmentation"}},
             **{k: "data.augmentation" for k in spec.data.augmentation.model_fields_set}}
    keys, problems = [], []
    for key in spec.search:
        if key in NOT_SEARCHABLE:
            problems.append(_line(f"search.{key}", "<key>", NOT_SEARCHABLE[key]))
        elif key not in allowed:
            listing = "; ".join(f"{group}: {', '.join(names)}" for group, names in groups.items())
            why = _unknown(key, allowed, "unknown key").split("; allowed:")[0]
            problems.append(_line(f"search.{key}", "<key>", f"{why}; {listing}"))
        elif key in fixed:
            problems.append(_line(f"search.{key}", "<key>", f"also fixed in {fixed[key]}.{key}; "
                                  "a setting is either fixed or searched"))
        else:
            keys.append(key)
    return keys, problems


def _build_error(err: Exception) -> str:
    """Why a TrainConfig could not be built, on one line."""
    if not isinstance(err, ValidationError):
        return str(err)
    return "; ".join((f"{_dotted(e['loc'])}: " if e["loc"] else "")
                     + e["msg"].removeprefix("Value error, ") for e in err.errors())


def _simplify(why: str, key: str, value: Any) -> str:
    """"conv1_kernel='x': must be …" about the value at hand → "conv1_kernel must be …"."""
    rest = why.removeprefix(f"{key}={value!r}: ")
    if rest == why:
        return why
    return f"{key} {rest}" if rest.startswith("must") else f"{key}: {rest}"


def _base_problem(spec: SweepSpec, err: Exception) -> str:
    why = _build_error(err)
    blamed = re.match(r"(?:knobs\.)?(\w+)=", why)
    name = blamed.group(1) if blamed else ""
    # Point at the fixed setting the model blames, where the spec sets it.
    for block, values in (("model.knobs", spec.model.knobs),
                          ("data", spec.data.model_dump(include=spec.data.model_fields_set))):
        if name in values:
            return _line(f"{block}.{name}", values[name], _simplify(why, name, values[name]))
    return _line("model", spec.model.family, f"the fixed settings do not build: {why}")


def _failure(base: TrainConfig, overrides: dict[str, Any]) -> str | None:
    """Why `base.with_overrides(overrides)` fails, or None when it builds."""
    try:
        base.with_overrides(overrides)
    except (ValidationError, ValueError, TypeError) as err:
        return _build_error(err)
    return None


def _corner_problems(base: TrainConfig, ok: dict[str, list[Any]]) -> list[str]:
    """Combinations of searched values (both ends of ranges) that the model cannot build."""
    keys = [k for k, values in ok.items() if values]
    if len(keys) < 2:
        return []  # single values were checked one by one already
    if math.prod(len(ok[k]) for k in keys) <= MAX_CORNERS:
        combos: Any = itertools.product(*(ok[k] for k in keys))
    else:
        # Too many to build all: the single-key variations were checked one by one above; add
        # a seeded sample of MAX_CORNERS combinations (the same sample on every run).
        rng = random.Random(0)
        combos = ([rng.choice(ok[k]) for k in keys] for _ in range(MAX_CORNERS))
    failing: list[dict[str, Any]] = []
    for values in combos:
        combo = dict(zip(keys, values, strict=True))
        if any(f.items() <= combo.items() for f in failing) or _failure(base, combo) is None:
            continue
        for k in list(combo):  # back to the base value while it still fails: the least cause
            smaller = {kk: v for kk, v in combo.items() if kk != k}
            if _failure(base, smaller) is not None:
                combo = smaller
        failing.append(combo)
    return [_line("search", "<" + ", ".join(f"{k}={v!r}" for k, v in c.items()) + ">",
                  f"this combination cannot be built: {_failure(base, c)}") for c in failing]


# --- pydantic errors -> problem lines -------------------------------------------------------


def _dotted(parts: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _tags(members: Any) -> dict[str, type[BaseModel]]:
    return {tag: m for m in members for tag in get_args(m.model_fields["type"].annotation)}


# Where pydantic puts a union's tag into `loc` (after search.<key>, after scheduler).
_UNIONS = {"search": (2, _tags([Values, IntRange, FloatRange])),
           "scheduler": (1, _tags([AshaScheduler, HyperBandScheduler, MedianScheduler,
                                   NoScheduler, OptunaScheduler]))}


def _walk(loc: tuple[Any, ...]) -> tuple[str, Any, dict[str, Any]]:
    """The path to show for a pydantic `loc` (union tags left out: they are not fields), the
    model class found there (None if none) and the tags of the union there, if any."""
    tag_at, tags = _UNIONS.get(loc[0], (-1, {})) if loc else (-1, {})
    node: Any = SweepSpec
    shown = []
    for i, part in enumerate(loc):
        if i == tag_at:
            node = tags.get(part)
            continue
        shown.append(part)
        field = getattr(node, "model_fields", {}).get(part) if isinstance(part, str) else None
        node = field.annotation if field else None
    return _dotted(shown), node, tags if len(loc) == tag_at else {}


def _pydantic_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors(include_url=False):
        (path, _, tags), value = _walk(e["loc"]), e.get("input")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            value, msg = "<missing>", "required"
        elif e["type"] == "extra_forbidden":
            parent = _walk(e["loc"][:-1])[1]  # the model that has no such field
            msg = _unknown(str(e["loc"][-1]), list(getattr(parent, "model_fields", [])),
                           "unknown field")
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            value = value.get("type", "<missing>") if isinstance(value, dict) else value
            path, msg = f"{path}.type", f"type must be one of {', '.join(tags)}"
        problems.append(_line(path, value, msg))
    return problems


# --- YAML ----------------------------------------------------------------------------------


class _SpecLoader(yaml.SafeLoader):
    """safe_load, plus: aliases refused (no alias bombs; a spec is small enough to write out),
    duplicate keys refused (PyYAML keeps the last one silently), and `1e-3` read as a float
    (YAML 1.1 wants `1.0e-3`, so PyYAML would hand the float fields a string)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} is not allowed in a sweep spec",
                event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key.value!r}", key.start_mark)
                seen.add(key.value)
        return super().construct_mapping(node, deep=deep)


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _read_yaml(path: Path, source: str) -> Any:
    def fail(where: str, value: Any, why: str) -> SpecError:
        return SpecError([f"{source}: {_line(where, value, why)}"])

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise fail("<file>", f"<{path.stat().st_size} bytes>", "a spec is at most 1 MiB")
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # bounded even where the size lied (a pipe)
    except FileNotFoundError:
        raise fail("<file>", "<missing>", "no such file") from None
    except OSError as err:
        raise fail("<file>", "<unreadable>", err.strerror or str(err)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise fail("<file>", "<over 1 MiB>", "a spec is at most 1 MiB")
    try:
        return yaml.load(raw.decode("utf-8"), Loader=_SpecLoader)  # noqa: S506 (safe loader)
    except UnicodeDecodeError as err:
        raise fail(f"byte {err.start}", f"<0x{raw[err.start]:02x}>",
                   "not UTF-8 text; a spec is a YAML file") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        lines = mark.buffer.splitlines() if mark and mark.buffer else []
        line = lines[mark.line].strip() if mark and mark.line < len(lines) else "end of file"
        raise fail(f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<yaml>",
                   f"<{line}>", f"not valid YAML: {err.context or ''} {err.problem}") from None
    except yaml.YAMLError as err:
        raise fail("<yaml>", "<text>", f"not valid YAML: {err}") from None
    except RecursionError:
        raise fail("<yaml>", "<text>", "nested too deeply") from None


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate a loaded YAML document; every problem is raised at once, as a SpecError."""
    if not isinstance(data, dict):
        kind = "<empty>" if data is None else f"<{type(data).__name__}>"
        raise SpecError([f"{source}: {_line('', kind, 'a spec is a mapping (name:, model:, …)')}"])
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError([f"{source}: {p}" for p in _pydantic_problems(err)]) from None
    except SpecError as err:
        raise SpecError([f"{source}: {p}" for p in err.problems]) from None


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate a sweep spec file; raises SpecError, one line per problem."""
    return parse_spec(_read_yaml(Path(path), str(path)), str(path))


def tune_param_space(spec: SweepSpec) -> dict[str, Any]:
    """`search` as Ray Tune sampling objects; the one place that knows Tune's conventions."""
    from ray import tune  # lazily: specs are loaded and checked without Ray

    space: dict[str, Any] = {}
    for key, dist in spec.search.items():
        if isinstance(dist, Values):  # searcher grid enumerates choices too
            grid = dist.type == "grid" or spec.searcher.type == "grid"
            space[key] = (tune.grid_search if grid else tune.choice)(list(dist.values))
        elif isinstance(dist, FloatRange):
            space[key] = (tune.loguniform if dist.log else tune.uniform)(dist.low, dist.high)
        elif dist.step > 1:  # qrandint includes its upper bound (for q > 1)
            space[key] = tune.qrandint(dist.low, dist.high, dist.step)
        else:  # randint and lograndint exclude theirs: ours is inclusive
            space[key] = (tune.lograndint if dist.log else tune.randint)(dist.low, dist.high + 1)
    return space
