"""The ten claims of the three papers and how each is measured from its finished sweeps
(paired by seed; the statistics in service.results.stats); `python -m service.claims` is the
CLI (service/claims/__main__.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.claims.measures import (
    ClaimError,
    Trials,
    conditions,
    crossing,
    final,
    invariance_probs,
    need,
    points,
    row,
    settle_epochs,
    train_accuracy,
)
from service.config.spaces import SHIPPED_SPACES
from service.config.spec import parse_spec
from service.models import describe
from service.report.data import conv_health
from service.results.records import Summary, TrialRecord
from service.results.stats import paired
from service.results.store import ResultsError, load_run
from service.tune.paths import SEED_KEY

SPACES = SHIPPED_SPACES / "claims"

# --- the claims -----------------------------------------------------------------------------


def _relu(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    _, run = runs[0]
    relu, tanh = need(conditions(run, ["activation"]), ("relu",), ("tanh",))
    chance = 1.0 / 10

    def to25(t: TrialRecord) -> float | None:
        return crossing(t.history, "train_acc", 0.75, chance)

    never = sum(to25(t) is None for t in tanh.values())
    return [
        row("epochs to 25% training error, ReLU", [to25(t) for t in relu.values()], "",
            unit="epochs"),
        row("epochs to 25% training error, tanh", [to25(t) for t in tanh.values()], "",
            unit="epochs", note=f"{never} tanh seeds never got there" if never else ""),
        row("tanh / ReLU epochs to 25% training error", paired(relu, tanh, to25, "ratio"),
            "6x (4-layer CNN, CIFAR-10)", "+", zero=1.0, unit="x"),
        row("final val accuracy, ReLU - tanh", paired(tanh, relu, points), "", "+", unit="pts"),
    ]


def _dropout(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    off, on = need(conditions(run, ["dropout"]), (0.0,), (0.5,))

    def gap(t: TrialRecord) -> float:  # eval-mode train accuracy - val accuracy, points
        return 100.0 * (train_accuracy(run_dir, t) - final(t))

    def to5(t: TrialRecord) -> float | None:
        return crossing(t.history, "train_acc", 0.95, 0.1)

    return [
        row("train - val accuracy gap, no dropout", [gap(t) for t in off.values()], "",
            unit="pts"),
        row("train - val accuracy gap, dropout 0.5", [gap(t) for t in on.values()], "",
            unit="pts"),
        row("gap reduction by dropout", paired(on, off, gap), "less overfitting", "+",
            unit="pts"),
        row("dropout / no-dropout epochs to 5% training error", paired(off, on, to5, "ratio"),
            "~2x iterations", "+", zero=1.0, unit="x"),
        row("final val accuracy, dropout - none", paired(off, on, points), "", unit="pts"),
    ]


def _augmentation(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    _, run = runs[0]
    none, crop, light, both = need(conditions(run, ["crop", "lighting"]), ("none", 0.0),
                                    ("random", 0.0), ("none", 0.1), ("random", 0.1))
    return [
        row("val accuracy, random crops - none", paired(none, crop, points),
            "large (overfitting without)", "+", unit="pts"),
        row("val accuracy, PCA lighting - none", paired(none, light, points),
            "+1 pt top-1 (lighting)", "+", unit="pts"),
        row("val accuracy, crops + lighting - none", paired(none, both, points),
            "lower error", "+", unit="pts"),
    ]


def _binary(key: str, better: Any, worse: Any, paper: str, label: str):
    def measure(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
        _, run = runs[0]
        b, a = need(conditions(run, [key]), (better,), (worse,))
        return [row(f"final val accuracy, {label}", paired(a, b, points), paper, "+",
                    unit="pts"),
                row(f"final val loss, {label}", paired(a, b, lambda t: final(t, "val_loss")),
                    "", "-")]
    return measure


def _conv1(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    conds = conditions(run, ["conv1_kernel", "conv1_stride"])
    alex, zf, k11s2, k7s4 = need(conds, (11, 4), (7, 2), (11, 2), (7, 4))
    health: dict[str, dict[str, Any]] = {}

    def h(t: TrialRecord, key: str) -> float | None:
        if t.trial_id not in health:
            health[t.trial_id] = conv_health(run_dir, t.trial_id)
        value = health[t.trial_id].get(key)
        return None if value is None else float(value)

    return [
        row("val accuracy, 7x7/2 - 11x11/4", paired(alex, zf, points),
            "+2.1 pts top-1 (38.4 vs 40.5 err)", "+", unit="pts"),
        row("val accuracy, stride 2 - 4 (kernel 11)", paired(alex, k11s2, points), "", "+",
            unit="pts"),
        row("val accuracy, kernel 7 - 11 (stride 4)", paired(alex, k7s4, points), "", "+",
            unit="pts"),
        row("dead conv1 filters, 11x11/4 - 7x7/2",
            paired(zf, alex, lambda t: h(t, "dead_fraction") * 100), "fewer dead with 7x7/2",
            "+", unit="pts of filters"),
        row("layer-2 aliasing (over noise), 11x11/4 - 7x7/2",
            paired(zf, alex, lambda t: h(t, "aliasing_vs_noise")), "less aliasing with 7x7/2",
            "+"),
    ]


def _depth_width(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    _, run = runs[0]
    conds = conditions(run, ["fc_width", "remove_layers"])
    widths = sorted({w for w, _ in conds})
    if len(widths) != 2:
        raise ClaimError(f"claim 7 needs two FC widths, the run has {widths}")
    lo, hi = widths
    narrow, wide, no34, no67, no67w = need(conds, (lo, "none"), (hi, "none"),
                                            (lo, "3,4"), (lo, "6,7"), (hi, "6,7"))
    width = paired(narrow, wide, points)
    depth34, depth67 = paired(no34, narrow, points), paired(no67, narrow, points)
    same = paired(no67, no67w, lambda t: final(t, "val_loss"))
    return [
        row(f"val accuracy, FC {hi} - FC {lo}", width,
            "+1.7 pts for 4x width (FC 2048 -> 8192)", "+", unit="pts"),
        row("val accuracy, all layers - without conv3,4", depth34, "+4.9 pts", "+",
            unit="pts"),
        row("val accuracy, all layers - without FC6,7", depth67, "+4.3 pts", "+", unit="pts"),
        row("size of the conv3,4 effect minus that of FC width",
            [abs(d) - abs(w) for d, w in zip(depth34, width, strict=False)],
            "depth matters more", "+", unit="pts"),
        row("val loss difference of the two FC6,7-removed rows (must be 0)", same, "", None,
            note="the FC width is unused there: identical runs"),
    ]


def _evolution(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    trials = [t for t in run.trials if not t.failed]
    settle = [settle_epochs(run_dir, t) for t in trials]
    layers = list(settle[0]) if settle else []
    rows = [row(f"epoch {layer} settles (CKA to last >= 0.9)", [s[layer] for s in settle], "",
                unit="epoch") for layer in layers]
    if layers:
        rows.append(row(f"{layers[-1]} - {layers[0]} settling epoch",
                        [s[layers[-1]] - s[layers[0]] for s in settle],
                        "low layers in a few epochs, high after 40-50", "+", unit="epochs"))
    return rows


def _invariance(runs: list[tuple[Path, Summary]]) -> list[dict[str, Any]]:
    run_dir, run = runs[0]
    trials = [t for t in run.trials if not t.failed]
    probs = [invariance_probs(run_dir, t) for t in trials]
    if not probs:
        raise ClaimError(f"{run_dir}: no finished trial")
    p0 = probs[0]
    return [
        row("P(true class), untransformed", [p["identity"] for p in probs], ""),
        row(f"P(true class), shifted {p0['shift_px']:g} px", [p["shift"] for p in probs], ""),
        row(f"P(true class), scaled x{'/'.join(f'{s:g}' for s in p0['scales'])}",
            [p["scale"] for p in probs], ""),
        row("P(true class), rotated 90/270 deg", [p["rot90"] for p in probs], ""),
        row("P(true class), rotated 180 deg", [p["rot180"] for p in probs], ""),
        row("small shift - 90 deg rotation", [p["shift"] - p["rot90"] for p in probs],
            "robust to translation, not rotation", "+"),
        row("small scaling - 90 deg rotation", [p["scale"] - p["rot90"] for p in probs],
            "robust to scaling, not rotation", "+"),
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
        rows.append(row(f"final val accuracy, {family}", [points(t) for t in trials.values()],
                        "", unit="%", note=size.get(family, "")))
        rows.append(row(f"seconds per epoch, {family}",
                        [final(t, "epoch_s") for t in trials.values()], "", unit="s"))
    if {"alexnet", "lenet5"} <= by_model.keys():
        rows.append(row("val accuracy, AlexNet - LeNet-5",
                        paired(by_model["lenet5"], by_model["alexnet"], points), "", "+",
                        unit="pts"))
    if {"alexnet", "zfnet"} <= by_model.keys():
        rows.append(row("val accuracy, ZFNet - AlexNet",
                        paired(by_model["alexnet"], by_model["zfnet"], points),
                        "+2.1 pts (Table 2)", "+", unit="pts"))
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
          _binary("lrn", True, False, "+1.4 pts top-1", "LRN - none")),
    Claim(5, "Overlapping pooling gives a small gain", ("05_overlap_pool.yaml",),
          _binary("pool", "overlap", "plain", "+0.4 pts top-1", "3x3/2 - 2x2/2")),
    Claim(6, "ZFNet's conv1 beats AlexNet's", ("06_conv1.yaml",), _conv1),
    Claim(7, "FC width matters little, depth more", ("07_depth_width.yaml",), _depth_width),
    Claim(8, "Low layers converge early, high layers late", ("08_evolution.yaml",), _evolution),
    Claim(9, "Robust to small shifts and scalings, not rotation", ("09_invariance.yaml",),
          _invariance),
    Claim(10, "LeNet-5 vs AlexNet vs ZFNet", ("10_compare_lenet5.yaml", "10_compare_alexnet.yaml",
                                               "10_compare_zfnet.yaml"), _compare),
]}


# --- measuring, running, printing -----------------------------------------------------------


def measure(number: int, run_dirs: list[Path]) -> dict[str, Any]:
    """Claim `number` measured on finished runs: {"claim", "title", "runs", "rows"}."""
    claim = CLAIMS.get(number)
    if claim is None:
        raise ClaimError(f"claim {number}: no such claim; claims are 1-{len(CLAIMS)}")
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
            "rows": claim.measure(runs)}


def claim_spaces(number: int, variant: str | None = None) -> list[Path]:
    """The space files of claim `number`: searchspaces/claims/ or its `variant` folder."""
    claim = CLAIMS.get(number)
    if claim is None:
        raise ClaimError(f"claim {number}: no such claim; claims are 1-{len(CLAIMS)}")
    folder = SPACES / variant if variant else SPACES
    paths = [folder / space for space in claim.spaces]
    if not all(path.is_file() for path in paths):
        have = sorted(d.name for d in SPACES.iterdir() if d.is_dir() and all(
            (d / space).is_file() for space in claim.spaces))
        raise ClaimError(f"claim {number} has no {variant} variant; it has "
                         f"{', '.join(['digits (default)', *have])}")
    return paths


def run_claim(number: int, results: Path, extra: list[str],
              variant: str | None = None) -> list[Path]:
    """Run the claim's space(s) with `python -m service.submit`; their run directories."""
    dirs = []
    for path in claim_spaces(number, variant):
        space = path.name
        cmd = [sys.executable, "-m", "service.submit", str(path), "--results",
               str(results), "--no-report", "-q", *extra]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines or not lines[-1].endswith("summary.json"):
            raise ClaimError(f"{space}: the sweep exited with {done.returncode}")
        dirs.append(Path(lines[-1]).parent)
    return dirs


def fmt(r: dict[str, Any]) -> str:
    """`mean ± half-width unit` (or the mean alone)."""
    if r["n"] == 0:
        return "no data"
    unit = f" {r['unit']}" if r["unit"] and r["unit"] != "x" else ""
    mean = f"{r['mean']:.2f}" + ("x" if r["unit"] == "x" else "")
    ci = f" ± {r['ci95']:.2f}" if r["ci95"] is not None else ""
    return f"{mean}{ci}{unit} (n={r['n']})"


def markdown(result: dict[str, Any]) -> str:
    """The claim's rows as a markdown table."""
    variant = result.get("variant", "digits")
    lines = [f"#### Claim {result['claim']}: {result['title']} ({variant})", "",
             "| quantity | measured (mean ± 95% CI) | paper | verdict |", "|---|---|---|---|"]
    for r in result["rows"]:
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['quantity']}{note} | {fmt(r)} | {r['paper'] or '—'} | "
                     f"{r['verdict'] or '—'} |")
    return "\n".join(lines)
