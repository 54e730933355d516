"""Checks shared by a spec's blocks (`search`, `ablation`): which keys a trial may set, whether
a setting builds a model (shape arithmetic through `TrainConfig.with_overrides`, no torch), and
the wording of the resulting problem lines."""

from __future__ import annotations

import difflib
import itertools
import math
import random
from typing import Any

from pydantic import ValidationError

from service.config.base import problem
from service.config.blocks import MAX_CORNERS, NOT_IN_TRAIN, NOT_SEARCHABLE, Values
from service.config.data import AugmentConfig, DataConfig
from service.config.train import TrainConfig
from service.models import knob_names


def unknown(key: str, allowed: list[str], what: str) -> str:
    close = [a for a in allowed if len(key) > 3 and a.startswith(key)][:1] or (  # grace →
        difflib.get_close_matches(key, allowed, n=1))  # grace_period, not brackets
    return f"{what}{f' (did you mean {close[0]!r}?)' if close else ''}; allowed: " + (
        ", ".join(allowed))


def dotted(parts: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def build_error(err: Exception) -> str:
    """Why a TrainConfig could not be built, on one line."""
    if not isinstance(err, ValidationError):
        return str(err)
    return "; ".join((f"{dotted(e['loc'])}: " if e["loc"] else "")
                     + e["msg"].removeprefix("Value error, ") for e in err.errors())


def simplify(why: str, key: str, value: Any) -> str:
    """"conv1_kernel='x': must be …" about the value at hand → "conv1_kernel must be …"."""
    rest = why.removeprefix(f"{key}={value!r}: ")
    if rest == why:
        return why
    return f"{key} {rest}" if rest.startswith("must") else f"{key}: {rest}"


def failure(base: TrainConfig, overrides: dict[str, Any]) -> str | None:
    """Why `base.with_overrides(overrides)` fails, or None when it builds."""
    try:
        base.with_overrides(overrides)
    except (ValidationError, ValueError, TypeError) as err:  # check_model may raise TypeError
        return build_error(err)
    return None


def key_groups(presets: list[str]) -> dict[str, list[str]]:
    """The keys a trial may set, by where they go (for the presets the spec may build)."""
    return {"training": [k for k in TrainConfig.model_fields if k not in NOT_IN_TRAIN[1:]],
            "data": [k for k in DataConfig.model_fields if k != "augmentation"],
            "augmentation": list(AugmentConfig.model_fields),
            "model knobs": sorted({k for p in presets for k in knob_names(p)}
                                  - set(DataConfig.model_fields))}  # image_size goes to data


def fixed_settings(spec: Any) -> dict[str, str]:
    """Each setting the spec fixes, and the block that fixes it."""
    return {**{k: "model.knobs" for k in spec.model.knobs},
            **{k: "train" for k in spec.train.model_fields_set},
            **{k: "data" for k in spec.data.model_fields_set - {"augmentation"}},
            **{k: "data.augmentation" for k in spec.data.augmentation.model_fields_set}}


def key_problems(path: str, keys: list[str], presets: list[str], fixed: dict[str, str],
                 why_fixed: str | None = "a setting is either fixed or searched"
                 ) -> tuple[list[str], list[str]]:
    """The keys under `path` fit for value checks, and one problem line for each other one. A
    key fixed elsewhere is refused with `why_fixed`, or accepted when it is None."""
    groups = key_groups(presets)
    allowed = [k for names in groups.values() for k in names]
    ok, problems = [], []
    for key in keys:
        if key in NOT_SEARCHABLE:
            problems.append(problem(f"{path}.{key}", "<key>", NOT_SEARCHABLE[key]))
        elif key not in allowed:
            listing = "; ".join(f"{group}: {', '.join(names)}" for group, names in groups.items())
            why = unknown(key, allowed, "unknown key").split("; allowed:")[0]
            problems.append(problem(f"{path}.{key}", "<key>", f"{why}; {listing}"))
        elif key in fixed and why_fixed is not None:
            problems.append(problem(f"{path}.{key}", "<key>",
                                    f"also fixed in {fixed[key]}.{key}; {why_fixed}"))
        else:
            ok.append(key)
    return ok, problems


def value_problems(base: TrainConfig, path: str, dists: dict[str, Any]) -> list[str]:
    """Every value of each distribution alone (both ends of ranges), then the combinations."""
    ok: dict[str, list[Any]] = {}
    problems = []
    for key, dist in dists.items():
        ok[key] = []
        points = ([(f"values[{i}]", v) for i, v in enumerate(dist.values)]
                  if isinstance(dist, Values) else [("low", dist.low), ("high", dist.high)])
        for suffix, value in points:
            why = failure(base, {key: value})
            if why is None:
                ok[key].append(value)
            else:
                problems.append(problem(f"{path}.{key}.{suffix}", value, simplify(why, key, value)))
    return problems + corner_problems(base, ok, path)


def corner_problems(base: TrainConfig, ok: dict[str, list[Any]], path: str = "search"
                    ) -> list[str]:
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
        if any(f.items() <= combo.items() for f in failing) or failure(base, combo) is None:
            continue
        for k in list(combo):  # back to the base value while it still fails: the least cause
            smaller = {kk: v for kk, v in combo.items() if kk != k}
            if failure(base, smaller) is not None:
                combo = smaller
        failing.append(combo)
    return [problem(path, "<" + ", ".join(f"{k}={v!r}" for k, v in c.items()) + ">",
                    f"this combination cannot be built: {failure(base, c)}") for c in failing]
