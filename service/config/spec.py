"""Sweep specs: a YAML file -> a validated `SweepSpec` -> Ray Tune's search space.

`load_spec(path)` never shows a traceback: every problem becomes one line of a `SpecError`,
`FILE: field.path: bad value → what is allowed / why`, all at once. Beyond the types, every
searched value and the corners of the space are built by shape arithmetic
(`TrainConfig.with_overrides`), so no trial fails later on a model that cannot exist.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import random
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

from service.config.blocks import (
    MAX_CORNERS,
    NOT_IN_TRAIN,
    NOT_SEARCHABLE,
    STORAGE_SCHEMES,
    AshaScheduler,
    Budget,
    Distribution,
    FloatRange,
    HyperBandScheduler,
    IntRange,
    MedianScheduler,
    NoScheduler,
    OptunaScheduler,
    Resources,
    Scheduler,
    Searcher,
    SpecError,
    Values,
    _line,
    _pruner_problems,
    _Strict,
    default_mode,
)
from service.config.data import AugmentConfig, DataConfig
from service.config.train import TrainConfig
from service.config.yamlfile import read_yaml
from service.models import knob_names, list_models


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
    close = [a for a in allowed if len(key) > 3 and a.startswith(key)][:1] or (  # grace →
        difflib.get_close_matches(key, allowed, n=1))  # grace_period, not brackets
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
    return parse_spec(read_yaml(Path(path), str(path)), str(path))

