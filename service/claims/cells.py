"""An ablation run's trials in a grid run's terms: the settings a trial trained with, by key.

A grid run's trial config holds the values the grid searched; an ablation run's holds only
`{ARM_KEY: cell, SEED_KEY: i}` (service.tune.ablation.compare_phase). A cell's settings are the
ablation's baseline overlaid by its arm's changes (a factorial cell `a+b`: by each of its arms,
as `service.config.ablation.Ablation.cells` builds them), then by the values tuning found for
the cell when the study tuned per cell (`tuned` in ablation.json beside summary.json). A key
the cell does not set has the spec's own value for it: a training, data or augmentation field
or a model knob, routed as `TrainConfig.with_overrides` routes it, with the config's and the
preset's defaults where the spec sets none; None when it is no setting of the spec's model.
No torch: `claims table` imports this through `service.claims.measures`; the spec's config
classes load only when an ablation run is read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.rundir import ABLATION, ARM_KEY

if TYPE_CHECKING:
    from service.config.train import TrainConfig
    from service.results.records import Summary

Resolve = Callable[[Mapping[str, Any], str], Any]  # (trial config, key) -> its value


def resolver(run: Summary, run_dir: str | Path | None = None) -> Resolve:
    """How to read a setting off one of the run's trial configs: for a grid run the config's
    own value (None if it has none), for an ablation run the trial's cell's effective value."""
    block = run.spec.get("ablation")
    if not block:
        return lambda config, key: config.get(key)
    from pydantic import ValidationError

    from service.claims.measures import ClaimError  # measures imports this module
    from service.config.ablation import Ablation

    try:
        ablation = Ablation.model_validate(block)
    except ValidationError as err:
        raise ClaimError(f"the run's ablation block does not read: {err.errors()[0]['msg']}"
                         ) from None
    cells = ablation.cells()
    tune_keys = set(ablation.tune.space) if ablation.tune is not None else set()
    tuned = read_tuned(run_dir) if tune_keys else {}
    spec_value = _spec_values(run.spec)

    def value(config: Mapping[str, Any], key: str) -> Any:
        cell = config.get(ARM_KEY)
        if cell is None:  # not one of the compared runs: read as a grid trial
            return config.get(key)
        if cell not in cells:
            raise ClaimError(f"trial config names cell {cell!r}; the run's ablation has "
                             f"{', '.join(cells)}")
        if key in tune_keys:
            if tuned is None:
                raise ClaimError(f"{run_dir or 'the run'}: the study tuned {key} per cell but "
                                 f"there is no readable {ABLATION} with the tuned values")
            if key in (tuned.get(cell) or {}):
                return tuned[cell][key]
        settings = cells[cell]
        return settings[key] if key in settings else spec_value(key)

    return value


def read_tuned(run_dir: str | Path | None) -> dict[str, dict[str, Any]] | None:
    """Each cell's tuned values from RUN/ablation.json (baseline and arms, `tuned`; {} for a cell
    whose tuning found nothing, so it trained its fixed settings); None without the file."""
    if run_dir is None:
        return None
    try:
        study = json.loads((Path(run_dir) / ABLATION).read_text())
    except (OSError, ValueError):
        return None
    out = {"baseline": dict((study.get("baseline") or {}).get("tuned") or {})}
    for row in study.get("arms") or []:
        out[row["name"]] = dict(row.get("tuned") or {})
    return out


def _spec_values(spec: Mapping[str, Any]) -> Callable[[str], Any]:
    """key -> the spec's value for it (the config's or the preset's default where the spec sets
    none), routed as TrainConfig.with_overrides routes a flat key; built once, when first
    asked."""
    from service.config.base import SpecError
    from service.config.data import AugmentConfig, DataConfig
    from service.config.spec import parse_spec
    from service.config.train import TrainConfig
    from service.models import make_config

    built: list[TrainConfig] = []

    def value(key: str) -> Any:
        if not built:
            try:
                built.append(parse_spec(dict(spec), "summary.json spec").base_config())
            except SpecError as err:  # a spec this code no longer reads
                from service.claims.measures import ClaimError
                raise ClaimError(f"cannot resolve {key!r} from the run's spec: "
                                 f"{'; '.join(err.problems)}") from None
        cfg = built[0]
        if key in ("knobs", "data"):
            return None
        if key in TrainConfig.model_fields:
            return getattr(cfg, key)
        if key in DataConfig.model_fields:
            return getattr(cfg.data, key)
        if key in AugmentConfig.model_fields:
            return getattr(cfg.data.augmentation, key)
        knobs = make_config(cfg.model, **cfg.model_knobs())
        names = {f.name for f in dataclasses.fields(knobs)}
        return getattr(knobs, key) if key in names else None

    return value
