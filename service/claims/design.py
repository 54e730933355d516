"""What docs/claims.md says about how the claims are measured, derived from the code that
measures them: each claim's design read from its search space(s), the reproducing command, and
the method's sentences built from `service.results.paired`'s own settings (alpha, power, the
sign-flip test's exact limit), so that the text cannot drift from the engine."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml

from service.config.spaces import SHIPPED_SPACES
from service.results import paired

SPACES = SHIPPED_SPACES / "claims"
VARIANTS = ("gpu",)  # searchspaces/claims/VARIANT/
CPU = "cpu"  # the variant name of the spaces in searchspaces/claims/ itself
ALPHA: float = inspect.signature(paired.compare).parameters["alpha"].default


def space_path(space: str, variant: str) -> Path:
    """The space file that a claim file's `spaces` entry names (`searchspaces/claims/X.yaml`),
    in the variant's folder where the claim file was measured on one."""
    name = Path(space).name
    return SPACES / variant / name if variant in VARIANTS else SPACES / name


def shown(path: Path) -> str:
    """A shipped file's path as the docs cite it: `searchspaces/...` (any other path as is)."""
    try:
        return path.relative_to(SHIPPED_SPACES.parent).as_posix()
    except ValueError:
        return path.as_posix()


def value(v: Any) -> str:
    """A YAML value as written in a space: true/false, floats in their shortest form."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _conditions(search: dict[str, Any]) -> tuple[list[str], int | None]:
    """One phrase per searched key and the number of conditions (None unless all are grids)."""
    phrases, count = [], 1
    for key, dist in search.items():
        if isinstance(dist, dict) and dist.get("type") == "grid":
            values = [value(v) for v in dist.get("values", [])]
            phrases.append(f"{key} ∈ {{{', '.join(values)}}}")
            count *= len(values)
        else:
            kind = dist.get("type", "?") if isinstance(dist, dict) else value(dist)
            phrases.append(f"{key}: {kind}")
            count = 0
    return phrases, count or None


def _cell(name: str, changes: dict[str, Any]) -> str:
    """A cell and the settings it sets: `name (key value, ...)`, the name alone for none."""
    settings = ", ".join(f"{k} {value(v)}" for k, v in changes.items())
    return f"{name} ({settings})" if settings else name


def _distribution(key: str, dist: dict[str, Any]) -> str:
    """One tuned key's distribution: `key ∈ {a, b}` or `key: float 0.001–0.1 (log)`."""
    if dist.get("type") in ("grid", "choice"):
        return f"{key} ∈ {{{', '.join(value(v) for v in dist.get('values', []))}}}"
    extra = [f"step {value(dist['step'])}"] if dist.get("step", 1) != 1 else []
    extra += ["log"] if dist.get("log") else []
    rng = f"{value(dist.get('low'))}–{value(dist.get('high'))}"
    return f"{key}: {dist.get('type', '?')} {rng}" + (f" ({', '.join(extra)})" if extra else "")


def _ablation(block: dict[str, Any]) -> str:
    """An ablation study's cells (baseline, then each arm or combination with the settings it
    changes, named as `Ablation.cells` names them), paired seeds, tuning and trial count."""
    from pydantic import ValidationError

    from service.config.ablation import BASELINE, Ablation

    try:
        study = Ablation.model_validate(block)
    except ValidationError as err:
        return f"ablation block does not read: {err.errors()[0]['msg']}"
    cells = study.cells()
    named = []
    for name in cells:
        changes: dict[str, Any] = {}
        if name == BASELINE:
            changes = dict(study.baseline)
        else:
            for arm in name.split("+"):
                changes.update(study.arms[arm])
        named.append(_cell(name, changes))
    kind = "factorial ablation" if study.design == "factorial" else "ablation"
    n, seeds = len(cells), study.seeds
    text = (f"{kind}, cells {'; '.join(named)}: {n} cell{'s' if n != 1 else ''} × {seeds} "
            f"paired seeds = {n * seeds} trials")
    if study.tune is not None:
        space = "; ".join(_distribution(k, d.model_dump()) for k, d in study.tune.space.items())
        tuning = study.tune.trials
        text += (f" + {tuning} tuning trial{'s' if tuning != 1 else ''} per cell at seed 0 "
                 f"over {space} = {n * (seeds + tuning)} trials")
    return text


def data_text(path: Path) -> str:
    """The space's dataset in a few words: `mnist_test`, `mnist_test (500 train)`."""
    if not path.is_file():
        return "?"
    data = (yaml.safe_load(path.read_text()) or {}).get("data", {})
    subset = data.get("train_subset")
    return f"{data.get('dataset', '?')}" + (f" ({subset:,} train)" if subset else "")


def design(path: Path) -> str:
    """One space's design in a line: data, model, training, conditions, seeds and trials."""
    if not path.is_file():
        return f"`{shown(path)}`: not in this checkout"
    spec = yaml.safe_load(path.read_text()) or {}
    data, model = spec.get("data", {}), spec.get("model", {})
    train, budget = spec.get("train", {}), spec.get("budget", {})
    block = spec.get("ablation")
    tune = block.get("tune") if isinstance(block, dict) else None
    tuned = set(tune.get("space") or {}) if isinstance(tune, dict) else set()  # not fixed
    knobs = ", ".join(f"{k} {value(v)}" for k, v in (model.get("knobs") or {}).items()
                      if k not in tuned)
    where = f"{data.get('dataset', '?')}"
    if data.get("train_subset"):
        where += f" ({data['train_subset']:,} training images)"
    if data.get("image_size"):
        where += f" at {data['image_size']} px"
    augment = data.get("augmentation") or {}
    if augment:
        where += f" (augmentation: {', '.join(f'{k} {value(v)}' for k, v in augment.items())})"
    net = model.get("family", "?") + (f" ({knobs})" if knobs else "")
    fit = [value(train[k]) if k == "optimizer" else f"{k.replace('_', ' ')} {value(train[k])}"
           for k in ("optimizer", "momentum", "lr", "batch_size", "weight_decay", "schedule")
           if k in train and k not in tuned]
    fit.append(f"{budget.get('max_epochs', '?')} epochs")
    if isinstance(block, dict):
        return f"`{shown(path)}`: {net} on {where}; {', '.join(fit)}; {_ablation(block)}"
    phrases, count = _conditions(spec.get("search") or {})
    seeds = int(budget.get("seeds", 1))
    samples = int(budget.get("num_samples", 1))
    if count is None:
        arms = "; ".join(phrases) + f"; {seeds} seeds"
    else:
        trials = count * seeds * samples
        arms = (f"{'; '.join(phrases) or 'one condition'}: {count} condition"
                f"{'s' if count != 1 else ''} × {seeds} seeds = {trials} trials")
    return f"`{shown(path)}`: {net} on {where}; {', '.join(fit)}; {arms}"


def command(claim: int, variant: str) -> str:
    """The command that runs claim `claim`'s space(s) of `variant` again and measures them."""
    extra = f" --variant {variant}" if variant in VARIANTS else ""
    return f"python -m service.claims run {claim}{extra}"


def method() -> list[str]:
    """The "how a claim is measured" bullets, from `service.results.paired`'s settings."""
    alpha, power, exact = ALPHA, paired.POWER, paired.EXACT_MAX_N
    smallest = 2 / 2**5
    return [
        "- **Design.** A claim's space is an ablation study (`ablation:`): a baseline, the "
        "arms that change it (one at a time, or crossed in a factorial design), every cell "
        "trained for the whole budget with the same seeds (`ablation.seeds`) and none stopped "
        "early; with `ablation.tune` each cell first gets its own tuning at seed 0. Seed *i* "
        "gives every cell the same train/validation split, training subset and initial "
        "weights where the architectures agree. Claims that compare measures within each "
        "trial (8, 9) or whole model families (10) train seeded runs of one condition per "
        "family (`budget.seeds`). Each claim's design below is read from its space file(s).",
        "- **Pairing.** An effect is condition B − condition A on each seed (a row noted "
        "*paired within each trial* compares two measures of one trial); the effect is the "
        "mean of these differences. A ratio (B / A, marked x) is compared on the logs and "
        "shown as the geometric mean of the per-seed ratios, its interval and MDE as factors.",
        f"- **Interval.** {1 - alpha:.0%} Student t interval of the mean difference, n − 1 "
        "degrees of freedom. A level (one condition's value, no test) is its mean ± the "
        f"half-width of the same {1 - alpha:.0%} interval (`service.results.stats.mean_ci95`).",
        "- **Tests.** The two-sided paired t-test (column *p*) and the sign-flip permutation "
        f"test (exact over all 2^n flips up to n = {exact}, else {paired.N_RESAMPLES} random "
        f"flips). With n seeds the sign-flip p cannot go below 2/2^n: {smallest:.4g} at 5 "
        f"seeds, so it cannot reach {alpha:g} there and the verdict reads the t-test.",
        "- **Holm.** Within a claim file, the t-test p of the effects with a paper direction "
        "are adjusted together with Holm's step-down method (*Holm p*); an effect without "
        "spread (every seed's difference equal) has no p and counts as 1 in the family. An "
        "effect without a paper direction keeps its unadjusted p and has no verdict.",
        f"- **MDE.** The smallest effect the paired t-test at α = {alpha:g} detects with "
        f"{power:.0%} power at that n and spread of the differences (noncentral t).",
        "- **Seeds for the paper's effect.** The paper's effect carried over to the row's "
        "units (*here* in the paper column): an accuracy effect as the same share of the "
        "error it changed (e.g. LRN's 1.4 of 42.1 points of top-1 error, 3.3%, of the "
        "baseline's validation error here), a ratio as it is. The column gives the paired "
        f"seeds that detect it with {power:.0%} power at α = {alpha:g} (unadjusted) at the "
        "spread of the per-seed differences measured here (`service.results.paired."
        "seeds_needed`), and the CPU-hours those seeds would take for all of the claim's "
        "cells at the measured cost per trial.",
        f"- **Verdict.** *agrees*: Holm p < {alpha:g} with the effect on the paper's side; "
        f"*opposite*: Holm p < {alpha:g} on the other side; *not resolved*: otherwise, and "
        "always when there is no spread to test (`service.results.paired.verdict`).",
    ]

