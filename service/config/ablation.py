"""The `ablation:` block of a spec: a baseline, named arms that change it, paired seeds and
optional equal tuning per arm; and its checks against the rest of the spec.

Every (arm, seed) becomes one trial of the full budget. `design: factorial` crosses the arms'
changes: every non-empty combination of arms is a cell of its own (named `a+b`), compared with
the baseline, and the main effects and two-way interactions are estimated from all cells."""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, JsonValue, Tag, field_validator

from service.config.base import Strict, problem
from service.config.blocks import Distribution
from service.config.checks import failure, fixed_settings, key_problems, simplify, value_problems

BASELINE = "baseline"
MAX_FACTORS = 6  # a factorial design of k arms trains 2^k cells per seed
NAME = r"^[A-Za-z0-9_.-]+$"


class AblationTune(Strict):
    """Equal tuning: the baseline and every arm searched over `space` at seed 0 with `trials`
    trials each (the spec's searcher and scheduler); each then trains its best with all seeds."""

    space: dict[str, Distribution] = Field(min_length=1)
    """The tuned settings, as in `search`; none may also be set by the baseline or an arm."""
    trials: int = Field(ge=1, le=1000)
    """Trials per configuration tuned (the baseline and each arm), 1 to 1000."""


def arm_names(arms: dict[str, Any] | None) -> dict[str, Any] | None:
    """Arm names are letters, digits, _ . - (a factorial cell joins them with +), never
    `baseline`."""
    for name in arms or {}:
        if name == BASELINE or "+" in name or not re.match(NAME, name):
            raise ValueError(f"arm name {name!r}: letters, digits, _ . - only, and not "
                             f"{BASELINE!r}")
    return arms


class SeedSchedule(Strict):
    """Sequential seeds: every cell trains seeds 0..start-1, the study looks, and the cells of
    arms not yet decided (with the baseline) train `step` more, up to `max`
    (service.results.sequential keeps the family-wise error over arms and looks at alpha)."""

    start: int = Field(ge=2, le=1000)
    """Seeds every cell trains before the first look, 2 to 1000."""
    max: int = Field(ge=2, le=1000)
    """The most seeds any cell trains (the last look), at least `start`, at most 1000."""
    step: int = Field(ge=1)
    """Seeds added to the cells still needed at each later look, at least 1."""

    def looks(self) -> tuple[int, ...]:
        """The seed counts at which the study looks: start, start + step, ..., max."""
        from service.results.sequential import planned_looks  # numpy and scipy: on use

        return planned_looks(self.start, self.step, self.max)


def _seeds_kind(value: Any) -> str:
    return "schedule" if isinstance(value, dict | SeedSchedule) else "number"


def _paired(n: int) -> int:
    if not 2 <= n <= 1000:
        raise ValueError("paired statistics need at least 2 seeds (at most 1000)")
    return n


# A number of seeds (the fixed design) or a schedule; the tag keeps a problem's path a field's.
Seeds = Annotated[Annotated[int, AfterValidator(_paired), Tag("number")]
                  | Annotated[SeedSchedule, Tag("schedule")], Discriminator(_seeds_kind)]


class Ablation(Strict):
    """Which components matter: the baseline against each arm, paired by seed."""

    baseline: dict[str, JsonValue] = Field(default_factory=dict)
    """Settings every arm starts from (keys a `search` may name: value) over the fixed ones."""
    arms: dict[str, dict[str, JsonValue]] = Field(min_length=1)
    """Arm name (letters, digits, _ . -; not baseline) to its changes to the baseline."""
    design: Literal["one-at-a-time", "factorial"] = "one-at-a-time"
    """one-at-a-time: each arm against the baseline; factorial: every non-empty combination of
    arms (at most 6 arms) is a cell of its own, named a+b."""
    seeds: Seeds = 4
    """A number: seeds 0..seeds-1 (2 to 1000), each trained by the baseline and every arm.
    {start, max, step}: sequential seeds, looked at after start, start + step, ..., max."""
    min_effect: float | None = Field(None, gt=0)
    """Sequential seeds only: the smallest effect worth resolving, in the metric's own units
    (0.01 = one point of accuracy). An arm stops as futile once even `seeds.max` seeds could
    no longer detect it; null: arms run until decided or `seeds.max`."""
    tune: AblationTune | None = None
    """Equal tuning of the baseline and every arm before they are compared; null: none."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Family-wise significance level, Holm-corrected across the arms."""

    _names = field_validator("arms")(classmethod(lambda cls, arms: arm_names(arms)))

    @property
    def sequential(self) -> bool:
        """Whether seeds are added look by look (`seeds: {start, max, step}`)."""
        return isinstance(self.seeds, SeedSchedule)

    @property
    def max_seeds(self) -> int:
        """The most seeds a cell trains: the fixed number, or the schedule's max."""
        return self.seeds.max if isinstance(self.seeds, SeedSchedule) else self.seeds

    def cells(self) -> dict[str, dict[str, Any]]:
        """Every compared configuration, baseline first: name -> its settings (the baseline's
        with the arm's changes; in a factorial design every combination of arms)."""
        out = {BASELINE: dict(self.baseline)}
        names = list(self.arms)
        if self.design == "one-at-a-time":
            combos = [(n,) for n in names]
        else:
            combos = [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]
        for combo in combos:
            settings = dict(self.baseline)
            for name in combo:
                settings.update(self.arms[name])
            out["+".join(combo)] = settings
        return out


class Confirm(Strict):
    """A sweep's confirmation, run straight after it: an ablation study whose baseline is the
    sweep's best configuration (`baseline` overriding some of its values), against `arms`
    (default: each searched knob switched to its other values), on seeds the sweep did not
    train (`python -m service.submit --confirm RUN_DIR` runs it for a finished sweep)."""

    baseline: dict[str, JsonValue] = Field(default_factory=dict)
    """Settings put over the best trial's values in the baseline (the question's reference)."""
    arms: dict[str, dict[str, JsonValue]] | None = None
    """Arm name to its changes to the baseline; null: one arm per other value of each searched
    knob."""
    seeds: Seeds = Field(default_factory=lambda: SeedSchedule(start=4, max=16, step=4))
    """As ablation.seeds; default sequential {start: 4, max: 16, step: 4}."""
    min_effect: float | None = Field(None, gt=0)
    """As ablation.min_effect."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """As ablation.alpha."""

    _names = field_validator("arms")(classmethod(lambda cls, arms: arm_names(arms)))


def default_scheduler(data: Any) -> Any:
    """A spec document with `ablation:` but no `tune:` and no scheduler gets scheduler none:
    its runs are all compared, so none may be stopped early (a sweep's default is ASHA)."""
    if (isinstance(data, dict) and isinstance(data.get("ablation"), dict)
            and data["ablation"].get("tune") is None and "scheduler" not in data):
        return {**data, "scheduler": {"type": "none"}}
    return data


def ablation_problems(spec: Any, base: Any) -> list[str]:
    """The ablation block against the rest of the spec (`base`: the spec's base TrainConfig,
    None when it does not build). One line per problem."""
    abl = spec.ablation
    problems = _other_blocks(spec)
    presets = [spec.model.family]
    fixed = fixed_settings(spec)
    _, bad = key_problems("ablation.baseline", list(abl.baseline), presets, fixed,
                          "set it in one place (the baseline or the fixed blocks)")
    problems += bad
    arm_keys: dict[str, list[str]] = {}
    for name, changes in abl.arms.items():
        ok, bad = key_problems(f"ablation.arms.{name}", list(changes), presets, fixed, None)
        arm_keys[name] = ok
        problems += bad
        if not changes:
            problems.append(problem(f"ablation.arms.{name}", "{}", "an arm changes at least one "
                                    "setting of the baseline"))
    if abl.tune is not None:
        tuned, bad = key_problems("ablation.tune.space", list(abl.tune.space), presets, fixed,
                                  None)  # a fixed value is the one tuning replaces
        problems += bad
        for key in tuned:
            setters = [n for n, keys in arm_keys.items() if key in keys]
            if key in abl.baseline or setters:
                where = "ablation.baseline" if key in abl.baseline else f"arm {setters[0]}"
                problems.append(problem(f"ablation.tune.space.{key}", "<key>", f"{where} sets it "
                                        "too; a setting is either compared or tuned"))
            if spec.searcher.optuna and abl.tune.space[key].type == "grid":
                problems.append(problem(f"ablation.tune.space.{key}.type", "grid",
                                        "Optuna's searcher cannot grid search; use type: choice"))
    if abl.design == "factorial":
        for a, b in itertools.combinations(abl.arms, 2):
            shared = sorted(set(abl.arms[a]) & set(abl.arms[b]))
            if shared:
                problems.append(problem(f"ablation.arms.{b}", f"<{', '.join(shared)}>",
                                        f"arm {a} changes {', '.join(shared)} too; a factorial "
                                        "design crosses arms that change different settings"))
    if base is None or any(p.startswith(("ablation.baseline", "ablation.tune")) for p in problems):
        return problems  # the builds below would fail for the reasons above
    clean = [n for n in abl.arms if not any(p.startswith(f"ablation.arms.{n}") for p in problems)]
    return problems + _build_problems(abl, base, clean, check_cells=len(clean) == len(abl.arms))


def confirm_problems(spec: Any, presets: list[str], base: Any) -> list[str]:
    """The `confirm:` block: only after a sweep of one objective, with keys a search may name
    and values that build with the fixed settings (`base`: the spec's base TrainConfig, None
    when it does not build; the best trial's values come when the sweep has ended)."""
    conf = spec.confirm
    if not spec.search:
        return [problem("confirm", "<block>", "confirms a sweep's best configuration: needs "
                        "search: (an ablation study is its own confirmation)")]
    problems = []
    if spec.budget.multi_objective:
        problems.append(problem("confirm", "<block>", "a Pareto sweep has no single best "
                                "configuration to confirm"))
    problems += seed_problems("confirm", conf.seeds, conf.min_effect)
    fixed = fixed_settings(spec)
    problems += key_problems("confirm.baseline", list(conf.baseline), presets, fixed,
                             "set it in one place (the baseline or the fixed blocks)")[1]
    for name, changes in (conf.arms or {}).items():
        problems += key_problems(f"confirm.arms.{name}", list(changes), presets, fixed, None)[1]
        if not changes:
            problems.append(problem(f"confirm.arms.{name}", "{}", "an arm changes at least one "
                                    "setting of the baseline"))
    if base is None or problems:
        return problems
    if (why := failure(base, conf.baseline)) is not None:
        return [_build_problem("confirm.baseline", conf.baseline, why)]
    baseline = base.with_overrides(conf.baseline)
    return [_build_problem(f"confirm.arms.{name}", changes, why)
            for name, changes in (conf.arms or {}).items()
            if (why := failure(baseline, changes)) is not None]


def _build_problem(path: str, settings: dict[str, Any], why: str) -> str:
    """A configuration that does not build: named by the setting the reason is about
    (`path.key`), else by the whole block."""
    for key, value in settings.items():
        if why.startswith(f"{key}={value!r}: "):
            return problem(f"{path}.{key}", value, simplify(why, key, value))
    return problem(path, settings, f"not a valid configuration: {why}")


def _other_blocks(spec: Any) -> list[str]:
    """What the rest of an ablation's spec must not set: search, seeds and samples of a sweep,
    a scheduler for the compared runs, a grid for tuning, too many factorial arms."""
    abl = spec.ablation
    problems = []
    if spec.search:
        problems.append(problem("ablation", "<block>", "a study has either search: (which "
                                "configuration is best) or ablation: (do components matter), "
                                "not both"))
    # Compared with the defaults, not with what the file set: a dumped spec reloads the same.
    if spec.budget.seeds != 1:
        problems.append(problem("budget.seeds", spec.budget.seeds, "an ablation's seeds are "
                                "ablation.seeds"))
    if spec.budget.num_samples != type(spec.budget).model_fields["num_samples"].default:
        problems.append(problem("budget.num_samples", spec.budget.num_samples,
                                "an ablation's tuning budget is ablation.tune.trials"))
    if spec.scheduler.type != "none" and abl.tune is None:
        problems.append(problem("scheduler.type", spec.scheduler.type, "the compared runs all "
                                "train budget.max_epochs (a run cut short measures the schedule, "
                                "not the arm); a scheduler may only stop ablation.tune's trials"))
    if abl.tune is not None and spec.searcher.type == "grid":
        problems.append(problem("searcher.type", "grid", "ablation.tune draws tune.trials trials "
                                "per arm: use optuna-tpe or random"))
    problems += seed_problems("ablation", abl.seeds, abl.min_effect)
    if abl.design == "factorial" and abl.sequential:
        problems.append(problem("ablation.seeds", "<start, max, step>", "a factorial design "
                                "trains every cell with every seed: give a number of seeds"))
    if abl.design == "factorial" and len(abl.arms) > MAX_FACTORS:
        problems.append(problem("ablation.arms", f"<{len(abl.arms)} arms>", f"a factorial design "
                                f"trains 2^k cells per seed; at most {MAX_FACTORS} arms"))
    return problems


def seed_problems(block: str, seeds: int | SeedSchedule, min_effect: float | None) -> list[str]:
    """`block`.seeds (ablation, confirm): a schedule that can look; min_effect only with one."""
    if not isinstance(seeds, SeedSchedule):
        if min_effect is not None:
            return [problem(f"{block}.min_effect", min_effect, "futility needs sequential "
                            f"seeds: {block}.seeds: {{start: 4, max: 16, step: 4}}")]
        return []
    if seeds.start > seeds.max:
        return [problem(f"{block}.seeds.start", seeds.start,
                        f"at most {block}.seeds.max ({seeds.max})")]
    return []


def _build_problems(abl: Ablation, base: Any, arms: list[str], check_cells: bool) -> list[str]:
    """Each of `arms` must build at the data's size and differ from the baseline; then (when
    `check_cells`) every factorial cell must build and tuning's values with every cell."""
    why = failure(base, abl.baseline)
    if why is not None:
        key = next(iter(abl.baseline), "")
        return [problem("ablation.baseline", f"<{', '.join(abl.baseline)}>",
                        simplify(why, key, abl.baseline.get(key)))]
    problems = []
    baseline = base.with_overrides(abl.baseline)
    for name in arms:
        changes = abl.arms[name]
        why = failure(baseline, changes)
        if why is not None:
            problems.append(problem(f"ablation.arms.{name}", changes,
                                    f"not a valid configuration: {why}"))
        elif baseline.with_overrides(changes) == baseline:
            problems.append(problem(f"ablation.arms.{name}", changes, "changes nothing: the "
                                    "baseline already has these settings"))
    if problems or not check_cells:
        return problems
    cells = abl.cells()
    for name, settings in cells.items():
        if name != BASELINE and name not in abl.arms:
            why = failure(base, settings)
            if why is not None:
                problems.append(problem("ablation.arms", f"<{name}>", f"this combination of "
                                        f"arms is not a valid configuration: {why}"))
    if abl.tune is not None and not problems:
        for settings in cells.values():
            problems += value_problems(base.with_overrides(settings),
                                       "ablation.tune.space", abl.tune.space)
            if problems:  # the same value fails for most cells: say it once
                break
    return problems
