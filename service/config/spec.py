"""Sweep specs: a YAML file -> a validated `SweepSpec` -> Ray Tune's search space.

`load_spec(path)` never shows a traceback: every problem becomes one line of a `SpecError`,
`FILE: field.path: bad value → what is allowed / why`, all at once. Beyond the types, every
searched value and the corners of the space are built by shape arithmetic
(`TrainConfig.with_overrides`), so no trial fails later on a model that cannot exist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)

from service.config.ablation import (
    Ablation,
    Confirm,
    SeedSchedule,
    ablation_problems,
    confirm_problems,
    default_scheduler,
)
from service.config.base import SpecError, Strict, problem
from service.config.blocks import (
    NOT_IN_TRAIN,
    STORAGE_SCHEMES,
    Budget,
    Distribution,
    FloatRange,
    IntRange,
    Resources,
    Searcher,
    Values,
)
from service.config.checks import (
    build_error,
    dotted,
    fixed_settings,
    key_problems,
    simplify,
    unknown,
    value_problems,
)
from service.config.data import DataConfig
from service.config.outputs import Notify, Tracking
from service.config.schedulers import (
    AshaScheduler,
    HyperBandScheduler,
    MedianScheduler,
    NoScheduler,
    OptunaScheduler,
    Scheduler,
    pruner_problems,
)
from service.config.train import TrainConfig
from service.config.yamlfile import read_yaml
from service.metrics import default_mode
from service.models import knob_names, list_models


class ModelSpec(Strict):
    """The preset the sweep starts from and its fixed knobs."""

    family: str
    """The preset: a name from service.models.list_models()."""
    knobs: dict[str, JsonValue] = Field(default_factory=dict)
    """Fixed knobs over the preset's own (knob name: value); searched knobs go in `search`."""

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


class SweepSpec(Strict):
    """A whole sweep. model_validate raises ValidationError for wrong types and fields and
    SpecError (unprefixed lines) for cross-field problems; `parse_spec` unifies both."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    """The sweep's name (letters, digits, _ . -; at most 100): its directory in storage."""
    description: str | None = None
    """Free text about the sweep, shown in its report."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Fixed dataset settings; fields left out keep their defaults."""
    model: ModelSpec
    """The model preset and the knobs fixed for every trial."""
    train: TrainSettings = Field(default_factory=TrainSettings)  # type: ignore[valid-type]
    """Fixed training settings; fields left out keep their defaults."""
    search: dict[str, Distribution] = Field(default_factory=dict)
    """Searched settings: a training, data or augmentation field or a model knob, to the
    distribution its values are drawn from; none may also be fixed."""
    ablation: Ablation | None = None
    """Instead of search: whether components matter (a baseline against arms, paired by
    seed)."""
    confirm: Confirm | None = None
    """With search: an ablation study of the best configuration found, run straight after the
    sweep; null: none (`submit --confirm RUN_DIR` confirms a finished sweep later)."""
    budget: Budget = Field(default_factory=Budget)
    """Epochs, trials and seeds, and the metric or objectives optimised."""
    searcher: Searcher = Field(default_factory=Searcher)
    """How configurations are proposed."""
    scheduler: Scheduler = Field(default_factory=AshaScheduler)
    """What stops trials early; default asha (none for several objectives, and for an
    ablation without tune)."""
    resources: Resources = Field(default_factory=Resources)
    """What one trial holds, and how many trials run at once."""
    storage: str = "results"
    """Where the results go: a local directory or a URI (s3, gs, gcs, file, hdfs, abfs,
    abfss)."""
    tracking: Tracking | None = None
    """MLflow / W&B runs per trial (extra: .[tracking]); null: none."""
    notify: Notify | None = None
    """A webhook told when the sweep ends; null: none."""

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

    @model_validator(mode="before")
    @classmethod
    def _ablation_defaults(cls, data: Any) -> Any:
        return default_scheduler(data)

    @model_validator(mode="before")
    @classmethod
    def _pareto_defaults(cls, data: Any) -> Any:
        # Several objectives and no scheduler: none. A scheduler stops trials on one metric, and
        # a cheap model it stopped for its accuracy might belong on the front.
        budget = data.get("budget") if isinstance(data, dict) else None
        if (isinstance(budget, dict) and isinstance(budget.get("metric"), list)
                and "scheduler" not in data):
            return {**data, "scheduler": {"type": "none"}}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> SweepSpec:
        problems = _cross_problems(self)
        if problems:
            raise SpecError(problems)  # not a ValueError, so pydantic lets it through intact
        return self

    @property
    def default_mode(self) -> str:
        """The mode implied by the (first) metric (max for accuracies, min for losses)."""
        return default_mode(self.budget.primary[0])

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
    problems += _objective_problems(spec)
    for key, dist in spec.search.items():
        if spec.searcher.optuna and dist.type == "grid":
            problems.append(problem(f"search.{key}.type", "grid", "Optuna's searcher in Tune "
                                    "cannot grid search; use type: choice, or searcher "
                                    "grid/random"))
        if spec.searcher.type == "grid" and dist.type not in ("grid", "choice"):
            problems.append(problem(f"search.{key}.type", dist.type,
                                    "searcher grid enumerates values: use type grid or choice"))
    if isinstance(spec.scheduler, OptunaScheduler):
        problems += pruner_problems(spec.scheduler, spec.budget.max_epochs)
    grace = getattr(spec.scheduler, "grace_period", 1)
    if grace > spec.budget.max_epochs:
        problems.append(problem("scheduler.grace_period", grace,
                                f"must be at most budget.max_epochs ({spec.budget.max_epochs})"))
    knobs = knob_names(spec.model.family)
    bad_knobs = [problem(f"model.knobs.{k}", v, unknown(k, knobs, "not a knob of the preset"))
                 for k, v in spec.model.knobs.items() if k not in knobs]
    presets = [spec.model.family]
    if isinstance(spec.search.get("model"), Values):
        presets += [v for v in spec.search["model"].values if v in list_models()]
    keys, key_problems_ = key_problems("search", list(spec.search), presets,
                                       fixed_settings(spec))
    problems += bad_knobs + key_problems_
    base = None
    if not bad_knobs:  # else the base cannot be built; every value check would repeat that
        try:
            base = spec.base_config()
        except (ValidationError, ValueError, TypeError) as err:  # check_model: TypeError
            problems.append(_base_problem(spec, err))
    if spec.ablation is not None:
        problems += ablation_problems(spec, base)
    if spec.confirm is not None:
        problems += confirm_problems(spec, presets, base)
    if base is None:
        return problems
    return problems + value_problems(base, "search", {k: spec.search[k] for k in keys})


def _objective_problems(spec: SweepSpec) -> list[str]:
    """Several objectives: a search for the Pareto front, so nothing may stop a trial on one
    of them, and every trial is its own configuration."""
    if not spec.budget.multi_objective:
        return []
    metric = spec.budget.metric
    problems = []
    if spec.scheduler.type != "none":
        problems.append(problem("scheduler.type", spec.scheduler.type, f"budget.metric names "
                                f"{len(metric)} objectives: a scheduler stops trials on one "
                                f"metric and could cut a trial that belongs on the Pareto front; "
                                f"use scheduler none (the default with several objectives)"))
    if spec.ablation is not None:
        problems.append(problem("budget.metric", metric, "an ablation compares arms on one "
                                "metric; name one"))
    if spec.budget.seeds > 1:
        problems.append(problem("budget.seeds", spec.budget.seeds, "several objectives are "
                                "searched one trial per configuration; use seeds: 1"))
    return problems


def _base_problem(spec: SweepSpec, err: Exception) -> str:
    why = build_error(err)
    blamed = re.match(r"(?:knobs\.)?(\w+)=", why)
    name = blamed.group(1) if blamed else ""
    # Point at the fixed setting the model blames, where the spec sets it.
    for block, values in (("model.knobs", spec.model.knobs),
                          ("data", spec.data.model_dump(include=spec.data.model_fields_set))):
        if name in values:
            return problem(f"{block}.{name}", values[name], simplify(why, name, values[name]))
    return problem("model", spec.model.family, f"the fixed settings do not build: {why}")


# --- pydantic errors -> problem lines -------------------------------------------------------


def _tags(members: Any) -> dict[str, type[BaseModel]]:
    return {tag: m for m in members for tag in get_args(m.model_fields["type"].annotation)}


# Where pydantic puts a union's tag into `loc` (after search.<key>, after scheduler).
_DISTRIBUTIONS = _tags([Values, IntRange, FloatRange])
_SEEDS = {"number": int, "schedule": SeedSchedule}
_UNIONS = {("search",): (2, _DISTRIBUTIONS), ("ablation", "tune", "space"): (4, _DISTRIBUTIONS),
           ("ablation", "seeds"): (2, _SEEDS), ("confirm", "seeds"): (2, _SEEDS),
           ("scheduler",): (1, _tags([AshaScheduler, HyperBandScheduler, MedianScheduler,
                                      NoScheduler, OptunaScheduler]))}


def _walk(loc: tuple[Any, ...]) -> tuple[str, Any, dict[str, Any]]:
    """The path to show for a pydantic `loc` (union tags left out: they are not fields), the
    model class found there (None if none) and the tags of the union there, if any."""
    tag_at, tags = next(((at, tags) for prefix, (at, tags) in _UNIONS.items()
                         if tuple(loc[:len(prefix)]) == prefix), (-1, {}))
    node: Any = SweepSpec
    shown = []
    for i, part in enumerate(loc):
        if i == tag_at:
            node = tags.get(part)
            continue
        shown.append(part)
        field = getattr(node, "model_fields", {}).get(part) if isinstance(part, str) else None
        node = field.annotation if field else None
        if get_args(node) and type(None) in get_args(node):  # `X | None`: the model X
            node = next(a for a in get_args(node) if a is not type(None))
    return dotted(shown), node, tags if len(loc) == tag_at else {}


def _pydantic_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors(include_url=False):
        (path, _, tags), value = _walk(e["loc"]), e.get("input")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            value, msg = "<missing>", "required"
        elif e["type"] == "extra_forbidden":
            parent = _walk(e["loc"][:-1])[1]  # the model that has no such field
            msg = unknown(str(e["loc"][-1]), list(getattr(parent, "model_fields", [])),
                           "unknown field")
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            value = value.get("type", "<missing>") if isinstance(value, dict) else value
            path, msg = f"{path}.type", f"type must be one of {', '.join(tags)}"
        problems.append(problem(path, value, msg))
    return problems


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate a loaded YAML document; every problem is raised at once, as a SpecError."""
    if not isinstance(data, dict):
        kind = "<empty>" if data is None else f"<{type(data).__name__}>"
        why = "a spec is a mapping (name:, model:, …)"
        raise SpecError([f"{source}: {problem('', kind, why)}"])
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError([f"{source}: {p}" for p in _pydantic_problems(err)]) from None
    except SpecError as err:
        raise SpecError([f"{source}: {p}" for p in err.problems]) from None


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate a sweep spec file; raises SpecError, one line per problem."""
    return parse_spec(read_yaml(Path(path), str(path)), str(path))

