"""The ten claims of the three papers and how each is measured from its finished sweeps: every
effect paired by seed with `service.results.paired` and Holm-adjusted across its claim
(service/claims/measures.py: `effect`, `finish`); `python -m service.claims` is the CLI
(service/claims/__main__.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.claims.checkpoints import cka_to_last, invariance_probs, train_accuracy
from service.claims.measures import (
    ClaimError,
    Trials,
    by_seed,
    conditions,
    crossing,
    effect,
    error_share,
    final,
    finish,
    level,
    need,
    per_seed_diffs,
    points,
    settled,
)
from service.claims.runs import cost, run_claim
from service.claims.table import fmt as fmt  # re-exported: the claims' markdown
from service.claims.table import markdown as markdown
from service.config.spaces import SHIPPED_SPACES
from service.config.spec import parse_spec
from service.models import describe
from service.report.data import conv_health
from service.results.records import Summary, TrialRecord
from service.results.store import ResultsError, load_run
from service.rundir import SEED_KEY

SPACES = SHIPPED_SPACES / "claims"

# --- the claims -----------------------------------------------------------------------------


# The papers' error changes as shares of the error they changed (the papers' tables),
# carried over to this data's error by `measures.error_share`: the effect each row's `target`
# is, and the seeds it needs.
LRN_SHARE = 1.4 / 42.1  # AlexNet 3.3: top-1 error 42.1% -> 40.7% with LRN
OVERLAP_SHARE = 0.4 / 41.1  # AlexNet 3.4: 41.1% -> 40.7% with 3x3/2 pools
LIGHTING_SHARE = 1.0 / 41.7  # AlexNet 4.1: "over 1%" of top-1 error with PCA lighting
CONV1_SHARE = 2.1 / 40.5  # ZFNet Table 2: 40.5% -> 38.4%
FC_WIDTH_SHARE = 1.7 / 41.7  # ZFNet Table 3: FC 2048 -> 8192, 41.7% -> 40.0%
NO_CONV34_SHARE = 4.9 / 40.5  # ZFNet Table 3: 40.5% -> 45.4% without conv3,4
NO_FC67_SHARE = 4.3 / 40.5  # ZFNet Table 3: 40.5% -> 44.8% without FC6,7


def _tuned(run: Summary, run_dir: Path, key: str, setting: str) -> dict[Any, Any]:
    """Each condition of `key` -> the value of `setting` it trained with (tuned or fixed)."""
    return {cond[0]: cond[1] for cond in conditions(run, [key, setting], run_dir)}


def _relu(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    relu, tanh = need(conditions(run, ["activation"], run_dir), ("relu",), ("tanh",))
    lr = _tuned(run, run_dir, "activation", "lr")
    chance = 1.0 / 10

    def to25(t: TrialRecord) -> float | None:
        return crossing(t.history, "train_acc", 0.75, chance)

    def to5(t: TrialRecord) -> float | None:
        return crossing(t.history, "train_acc", 0.95, chance)

    relu25, tanh25 = by_seed(relu, to25), by_seed(tanh, to25)

    def note(name: str, epochs: dict[int, float | None]) -> str:
        never = sum(v is None for v in epochs.values())
        parts = [f"lr {lr[name]:.3g}"] if isinstance(lr.get(name), float) else []
        return "; ".join(parts + ([f"{never} seeds never got there"] if never else []))

    return [
        level("epochs to 25% training error, ReLU", list(relu25.values()), unit="epochs",
              note=note("relu", relu25)),
        level("epochs to 25% training error, tanh", list(tanh25.values()), unit="epochs",
              note=note("tanh", tanh25)),
        effect("tanh / ReLU epochs to 25% training error", relu25, tanh25,
               "6x (4-layer CNN, CIFAR-10)", "+", unit="x", ratio=True, target=6.0),
        effect("tanh / ReLU epochs to 5% training error", by_seed(relu, to5),
               by_seed(tanh, to5), unit="x", ratio=True,
               note="a later level, where 25% error comes early; no paper number"),
        effect("final val accuracy, ReLU - tanh", by_seed(tanh, points), by_seed(relu, points),
               "", "+", unit="pts"),
    ]


def _gap(run_dir: Path, t: TrialRecord) -> float:
    """Eval-mode, unaugmented accuracy on the trial's training images - val accuracy, points."""
    return 100.0 * (train_accuracy(run_dir, t) - final(t))


def _dropout(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    off, on = need(conditions(run, ["dropout"], run_dir), (0.0,), (0.5,))

    def gap(t: TrialRecord) -> float:
        return _gap(run_dir, t)

    def to5(t: TrialRecord) -> float | None:
        return crossing(t.history, "train_acc", 0.95, 0.1)

    gap_off, gap_on = by_seed(off, gap), by_seed(on, gap)
    return [
        level("train - val accuracy gap, no dropout", list(gap_off.values()), unit="pts"),
        level("train - val accuracy gap, dropout 0.5", list(gap_on.values()), unit="pts"),
        effect("gap reduction by dropout", gap_on, gap_off, "less overfitting", "+",
               unit="pts"),
        effect("final val accuracy, dropout - none", by_seed(off, points), by_seed(on, points),
               "higher (\"substantial overfitting\" without)", "+", unit="pts"),
        effect("dropout / no-dropout epochs to 5% training error", by_seed(off, to5),
               by_seed(on, to5), "~2x iterations", "+", unit="x", ratio=True, target=2.0),
    ]


def _augmentation(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    none, crop, light, both = need(conditions(run, ["crop", "lighting"], run_dir), ("none", 0.0),
                                    ("random", 0.0), ("none", 0.1), ("random", 0.1))
    base = by_seed(none, points)

    def gap(t: TrialRecord) -> float:
        return _gap(run_dir, t)

    gap0 = by_seed(none, gap)
    return [
        level("train - val accuracy gap, no augmentation", list(gap0.values()), unit="pts"),
        effect("val accuracy, random crops - none", base, by_seed(crop, points),
               "large (overfitting without)", "+", unit="pts"),
        effect("val accuracy, PCA lighting - none", base, by_seed(light, points),
               "+1 pt top-1 (lighting)", "+", unit="pts",
               target=error_share(none, LIGHTING_SHARE)),
        effect("val accuracy, crops + lighting - none", base, by_seed(both, points),
               "lower error", "+", unit="pts"),
        effect("gap reduction by crops + lighting", by_seed(both, gap), gap0,
               "less overfitting", "+", unit="pts"),
    ]


def _binary(key: str, better: Any, worse: Any, paper: str, label: str, share: float):
    def measure(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
        run_dir, run = runs[0]
        b, a = need(conditions(run, [key], run_dir), (better,), (worse,))

        def loss(t: TrialRecord) -> float:
            return final(t, "val_loss")

        return [effect(f"final val accuracy, {label}", by_seed(a, points), by_seed(b, points),
                       paper, "+", unit="pts", target=error_share(a, share)),
                effect(f"final val loss, {label}", by_seed(a, loss), by_seed(b, loss), "", "-")]
    return measure


def _conv1(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    conds = conditions(run, ["conv1_kernel", "conv1_stride"], run_dir)
    alex, zf, k11s2, k7s4 = need(conds, (11, 4), (7, 2), (11, 2), (7, 4))
    health: dict[str, dict[str, Any]] = {}

    def h(t: TrialRecord, key: str) -> float | None:
        if t.trial_id not in health:
            health[t.trial_id] = conv_health(run_dir, t.trial_id)
        value = health[t.trial_id].get(key)
        return None if value is None else float(value)

    def dead(t: TrialRecord) -> float | None:  # points of conv1's filters
        value = h(t, "dead_fraction")
        return None if value is None else 100.0 * value

    def aliasing(t: TrialRecord) -> float | None:
        return h(t, "aliasing_vs_noise")

    base = by_seed(alex, points)
    return [
        effect("val accuracy, 7x7/2 - 11x11/4", base, by_seed(zf, points),
               "+2.1 pts top-1 (38.4 vs 40.5 err)", "+", unit="pts",
               target=error_share(alex, CONV1_SHARE)),
        effect("val accuracy, stride 2 - 4 (kernel 11)", base, by_seed(k11s2, points), "", "+",
               unit="pts"),
        effect("val accuracy, kernel 7 - 11 (stride 4)", base, by_seed(k7s4, points), "", "+",
               unit="pts"),
        effect("dead conv1 filters, 11x11/4 - 7x7/2", by_seed(zf, dead), by_seed(alex, dead),
               "fewer dead with 7x7/2", "+", unit="pts of filters"),
        effect("layer-2 aliasing (over noise), 11x11/4 - 7x7/2", by_seed(zf, aliasing),
               by_seed(alex, aliasing), "less aliasing with 7x7/2", "+"),
    ]


def _depth_width(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    conds = conditions(run, ["fc_width", "remove_layers"], run_dir)
    widths = sorted({w for w, _ in conds})
    if len(widths) != 2:
        raise ClaimError(f"claim 7 needs two FC widths, the run has {widths}")
    lo, hi = widths
    full, wide, no34, no67 = need(conds, (lo, "none"), (hi, "none"), (lo, "3,4"), (lo, "6,7"))
    acc = by_seed(full, points)
    width = effect(f"val accuracy, FC {hi} - FC {lo}", acc, by_seed(wide, points),
                   "+1.7 pts for 4x width (FC 2048 -> 8192)", "+", unit="pts",
                   target=error_share(full, FC_WIDTH_SHARE))
    depth34 = effect("val accuracy, all layers - without conv3,4", by_seed(no34, points), acc,
                     "+4.9 pts", "+", unit="pts", target=error_share(full, NO_CONV34_SHARE))
    depth67 = effect("val accuracy, all layers - without FC6,7", by_seed(no67, points), acc,
                     "+4.3 pts", "+", unit="pts", target=error_share(full, NO_FC67_SHARE))
    # Per seed |depth effect| against |width effect|, paired by seed like every other row.
    size = effect("size of the conv3,4 effect minus that of FC width",
                  {s: abs(d) for s, d in per_seed_diffs(width).items()},
                  {s: abs(d) for s, d in per_seed_diffs(depth34).items()},
                  "depth matters more", "+", unit="pts")
    return [width, depth34, depth67, size]


def _evolution(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    curves = {t.trial_id: cka_to_last(run_dir, t) for t in run.trials if not t.failed}
    layers = list(next(iter(curves.values()))) if curves else []
    settle = {k: {layer: settled(c[layer]) for layer in layers} for k, c in curves.items()}
    rows = [level(f"epoch {layer} settles (CKA to last >= 0.9)",
                  [s[layer] for s in settle.values()], unit="epoch") for layer in layers]
    if layers:  # two layers of the same trial: paired within each trial
        first, last = layers[0], layers[-1]

        def mean_cka(layer: str) -> dict[str, float | None]:  # before the last epoch (CKA 1)
            return {k: sum(v for _, v in c[layer][:-1]) / (len(c[layer]) - 1)
                    if len(c[layer]) > 1 else None for k, c in curves.items()}

        rows += [effect(f"{last} - {first} settling epoch",
                        {k: s[first] for k, s in settle.items()},
                        {k: s[last] for k, s in settle.items()},
                        "low layers in a few epochs, high after 40-50", "+", unit="epochs",
                        note="paired within each trial"),
                 effect(f"mean CKA to the last epoch over training, {first} - {last}",
                        mean_cka(last), mean_cka(first), "low layers converge first", "+",
                        note="paired within each trial")]
    return rows


def _invariance(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    probs = {t.trial_id: invariance_probs(run_dir, t) for t in run.trials if not t.failed}
    if not probs:
        raise ClaimError(f"{run_dir}: no finished trial")
    p0 = next(iter(probs.values()))

    def each(key: str) -> dict[str, float]:
        return {k: p[key] for k, p in probs.items()}

    return [
        level("P(true class), untransformed", list(each("identity").values())),
        level(f"P(true class), shifted {p0['shift_px']:g} px", list(each("shift").values())),
        level(f"P(true class), scaled x{'/'.join(f'{s:g}' for s in p0['scales'])}",
              list(each("scale").values())),
        level("P(true class), rotated 90/270 deg", list(each("rot90").values())),
        level("P(true class), rotated 180 deg", list(each("rot180").values())),
        effect("small shift - 90 deg rotation", each("rot90"), each("shift"),
               "robust to translation, not rotation", "+", note="paired within each trial"),
        effect("small scaling - 90 deg rotation", each("rot90"), each("scale"),
               "robust to scaling, not rotation", "+", note="paired within each trial"),
    ]


def _compare(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    by_model: dict[str, Trials] = {}
    for _, run in runs:
        family = run.spec["model"]["family"]
        by_model[family] = {int(t.config.get(SEED_KEY, 0)): t for t in run.trials
                            if not t.failed and t.history}
    size = {}
    for _, run in runs:
        cfg = parse_spec(run.spec).base_config()
        info = describe(cfg.model, flops=True, **cfg.model_knobs())
        size[cfg.model] = (f"{info['params']:,} params, {info['flops'] / 1e6:.1f} MFLOPs per "
                           f"image at {info['input_size'][-1]} px")
    rows = []
    for family, trials in by_model.items():
        rows.append(level(f"final val accuracy, {family}", [points(t) for t in trials.values()],
                          unit="%", note=size.get(family, "")))
        rows.append(level(f"seconds per epoch, {family}",
                          [final(t, "epoch_s") for t in trials.values()], unit="s"))
    acc = {family: by_seed(trials, points) for family, trials in by_model.items()}
    if {"alexnet", "lenet5"} <= by_model.keys():
        rows.append(effect("val accuracy, AlexNet - LeNet-5", acc["lenet5"], acc["alexnet"], "",
                           "+", unit="pts"))
    if {"alexnet", "zfnet"} <= by_model.keys():
        rows.append(effect("val accuracy, ZFNet - AlexNet", acc["alexnet"], acc["zfnet"],
                           "+2.1 pts (Table 2)", "+", unit="pts",
                           target=error_share(by_model["alexnet"], CONV1_SHARE)))
    return rows


@dataclass(frozen=True)
class Claim:
    """A claim: its number, title, the space(s) it runs and how its rows are measured."""

    number: int
    title: str
    spaces: tuple[str, ...]  # file names in searchspaces/claims/
    measure: Callable[[list[tuple[Path, Summary]]], list[dict[str, Any]]]


CLAIMS = {c.number: c for c in [
    Claim(1, "ReLU trains faster than tanh", ("01_relu.yaml",), _relu),
    Claim(2, "Dropout reduces overfitting, slows convergence", ("02_dropout.yaml",), _dropout),
    Claim(3, "Data augmentation lowers validation error", ("03_augmentation.yaml",),
          _augmentation),
    Claim(4, "LRN gives a small gain", ("04_lrn.yaml",),
          _binary("lrn", True, False, "+1.4 pts top-1", "LRN - none", LRN_SHARE)),
    Claim(5, "Overlapping pooling gives a small gain", ("05_overlap_pool.yaml",),
          _binary("pool", "overlap", "plain", "+0.4 pts top-1", "3x3/2 - 2x2/2",
                  OVERLAP_SHARE)),
    Claim(6, "ZFNet's conv1 beats AlexNet's", ("06_conv1.yaml",), _conv1),
    Claim(7, "FC width matters little, depth more", ("07_depth_width.yaml",), _depth_width),
    Claim(8, "Low layers converge early, high layers late", ("08_evolution.yaml",), _evolution),
    Claim(9, "Robust to small shifts and scalings, not rotation", ("09_invariance.yaml",),
          _invariance),
    Claim(10, "LeNet-5 vs AlexNet vs ZFNet", ("10_compare_lenet5.yaml", "10_compare_alexnet.yaml",
                                               "10_compare_zfnet.yaml"), _compare),
]}


# --- measuring, running, printing -----------------------------------------------------------


def _claim(number: int) -> Claim:
    claim = CLAIMS.get(number)
    if claim is None:
        raise ClaimError(f"claim {number}: no such claim; claims are 1-{len(CLAIMS)}")
    return claim


def claim_rows(number: int, runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    """Claim `number`'s rows from its loaded runs, [(run_dir, Summary)]: the effects' p
    Holm-adjusted across the claim and their verdicts (`measures.finish`)."""
    return finish(_claim(number).measure(runs))


def measure(number: int, run_dirs: list[Path]) -> dict[str, Any]:
    """Claim `number` measured on finished runs: {"claim", "title", "runs", "rows"}."""
    claim = _claim(number)
    if len(run_dirs) != len(claim.spaces):
        raise ClaimError(f"claim {number} needs {len(claim.spaces)} run director"
                         f"{'y' if len(claim.spaces) == 1 else 'ies'} "
                         f"({', '.join(claim.spaces)}), got {len(run_dirs)}")
    runs = []
    for d in run_dirs:
        try:
            runs.append((Path(d), load_run(d)))
        except ResultsError as err:  # no summary.json, or not one
            raise ClaimError(str(err)) from None
    return {"claim": number, "title": claim.title, "runs": [str(d) for d in run_dirs],
            "spaces": [f"searchspaces/claims/{s}" for s in claim.spaces],
            "rows": claim_rows(number, runs), "cost": cost(runs)}


def run(number: int, results: Path, extra: list[str], variant: str | None = None) -> list[Path]:
    """Run claim `number`'s space(s) (`service.claims.runs.run_claim`); their run directories."""
    return run_claim(number, _claim(number).spaces, results, extra, variant)
