"""`python -m service.report RUN_DIR`: a finished sweep as report.html (standalone, images
embedded) and report.md (figures beside it in report_files/).

The findings paragraph (service.report.findings) and a table of contents open the page; then an
ablation study's section (service.report.ablation) or a multi-objective sweep's Pareto front
(service.report.pareto), the trials table, learning curves, each searched knob's per-value
means, parameter importance (PED-ANOVA, fANOVA beside), parallel coordinates, a model
comparison (params, FLOPs, conv1, best metric, time per epoch, dead conv1 filters, layer-2
aliasing) and the best trial's ZFNet analyses (service.analysis). Every number is written by
service.report.fmt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.analysis import AnalysisError, analyze_trial
from service.report import ablation, findings, fmt, pareto, plots
from service.report.data import (
    MANY_TRIALS,
    MIN_CI_N,
    PED_ANOVA_STABLE_TOP,
    ablation_example,
    conv_health,
    curve_bands,
    describe_group,
    importance,
    knob_effects,
    model_groups,
    searched_knobs,
)
from service.report.doc import Doc
from service.results.records import Summary
from service.results.store import load_run, write_bytes
from service.rundir import SEED_KEY

ANALYSIS_TITLES = {"filters": "First-layer filters", "aliasing": "Layer-2 aliasing",
                   "deconv": "Deconvnet projections", "evolution": "Feature evolution",
                   "occlusion": "Occlusion sensitivity", "invariance": "Invariance"}
# One sentence per analysis figure: what it shows (its alt text and caption).
ANALYSIS_ALT = {
    "filters": "The best trial's conv1 filters, each scaled on its own, beside each filter's "
               "share of low, mid and high spatial frequencies; dead filters are marked x.",
    "aliasing": "The best trial's layer-2 feature maps and the share of their energy at the "
                "Nyquist frequencies (checkerboard aliasing), against white noise's share.",
    "deconv": "Deconvnet projections of the top-9 activations of the strongest channels of "
              "each conv layer, beside the image patches that caused them.",
    "evolution": "The strongest activation of two channels per conv layer projected to pixels "
                 "at each checkpointed epoch: how the features formed during training.",
    "occlusion": "Occlusion sensitivity: the true class's probability, the most likely class "
                 "and the strongest top-layer map as a grey square slides over each image.",
    "invariance": "Invariance to vertical shift, scale and rotation: each layer's relative "
                  "feature distance (top) and the true class's probability per image (bottom).",
}


def _trials_section(doc: Doc, summary: Summary) -> dict[str, Any] | None:
    """The trials table and their learning curves; with more than MANY_TRIALS trials the
    curves in aggregate (returned, for report.json), else one line per trial (None)."""
    keys, metric = summary.searched, summary.metric
    doc.heading("Trials")
    errors = any(t.error for t in summary.trials)  # a column of blanks says nothing
    doc.table(["trial", *("seed" if k == SEED_KEY else k for k in keys), "status", "epochs",
               f"best {metric}", *(["error"] if errors else [])],
              [[t.trial_id, *(fmt.setting(t.config.get(k)) for k in keys), t.status,
                str(t.epochs), fmt.metric(metric, summary.score(t)),
                *([t.error or ""] if errors else [])] for t in summary.trials])
    bands = curve_bands(summary) if len(summary.trials) > MANY_TRIALS else None
    if bands is not None:
        st = bands["statuses"]
        failed = sum(n for k, n in st.items() if k not in ("completed", "stopped-early"))
        doc.para(f"{bands['trials']} trials (more than {MANY_TRIALS}): the learning curves in "
                 f"aggregate, per epoch the median and the 10-90% band of {metric} over the "
                 "trials that reached that epoch (n under each epoch), with the "
                 f"{len(bands['best'])} best trials drawn one by one; "
                 f"{st.get('stopped-early', 0)} stopped early, {failed} diverged or failed.")
        alt = (f"{metric} per epoch over the {bands['trials']} trials: the median and the "
               f"10-90% band, with the {len(bands['best'])} best trials drawn one by one.")
    else:
        alt = (f"{metric} per epoch of every trial; a trial stopped early is dashed and ends "
               "in an x, a diverged or failed one is red.")
    doc.image("curves.png", plots.learning_curves(summary.trials, metric,
                                                  summary.spec["budget"]["max_epochs"], bands),
              alt)
    return bands


def _effects_section(doc: Doc, summary: Summary) -> dict[str, Any]:
    metric = summary.metric
    doc.heading("Per-value means of each searched knob")
    if not searched_knobs(summary):
        doc.para("No knob was searched.")
        return {"effects": {}}
    effects = knob_effects(summary)
    knobs, epoch = effects["knobs"], effects["epoch"]
    if effects["rule"] == "completed":
        rule = (f"the {effects['trials']} trials that completed the budget, each at its "
                f"{metric} at the final epoch ({epoch})")
    else:
        rule = (f"fewer than 2 trials completed the budget, so every trial that did not fail, "
                f"each at its {metric} at epoch {epoch}, the last epoch all of them reached "
                f"({effects['trials']} trials)")
    doc.para(f"Per value (or per half of a range): {rule}; the mean and, from {MIN_CI_N} "
             f"trials on, its 95% confidence interval (Student t). "
             f"{findings.left_out_text(effects['left_out'])} A trial stopped early is never "
             "pooled with finished ones: its value measures the schedule, not the "
             "configuration.")
    doc.table(["knob", "value", "n", f"mean {metric} at epoch {epoch}", "95% CI"],
              [[k, r["value"], str(r["n"]), fmt.metric(metric, r["mean"]),
                fmt.spread(metric, r["ci95"])]
               for k, e in knobs.items() for r in e["rows"]])
    example = ablation_example(summary)
    doc.para(f"These per-value means are associations under the searcher's sampling, not "
             f"effects: {findings.confounded(summary)}. To measure a knob's effect, run an "
             "ablation study (every arm trained with the same seeds and compared paired by seed)"
             + (", e.g. a copy of this search space with `search:`, `scheduler:` and "
                "`budget.num_samples` replaced by this block (baseline: the best trial's "
                "values; one arm per knob, set to another value; 4 seeds):" if example else "."))
    if example:
        doc.code(example)
    if knobs:
        doc.image("effects.png", plots.knob_effects(knobs, metric, epoch),
                  f"Mean {metric} at epoch {epoch} per value of each searched knob, with its "
                  f"95% interval where a value has {MIN_CI_N} or more trials, over the "
                  "individual trials as dots.")
    imp = _importance_section(doc, summary)
    return {"effects": {k: e["rows"] for k, e in knobs.items()},
            "effects_basis": {k: effects[k] for k in ("rule", "epoch", "trials", "left_out")},
            "ablation_example": example, "importance": imp}


def _importance_section(doc: Doc, summary: Summary) -> dict[str, Any]:
    metric = summary.metric
    doc.heading("Parameter importance")
    imp = importance(summary)
    basis = findings.importance_basis(imp)
    if "importances" in imp:
        evals = {k: e["importances"] for k, e in imp["evaluators"].items() if "importances" in e}
        ped = imp["evaluators"][imp["evaluator"]]
        few = (f" That top set holds fewer than the {PED_ANOVA_STABLE_TOP} trials Optuna's "
               "documentation recommends for a stable estimate, so these shares are rough."
               if ped["top"] < PED_ANOVA_STABLE_TOP else "")
        one = (f" One value in these trials, so 0: {fmt.join(imp['constant'])}."
               if imp["constant"] else "")
        fanova = ("fANOVA (a random forest, seed 0) gives each knob's share of the variance of "
                  f"{metric} that the knobs explain" if "fANOVA" in evals else
                  f"fANOVA could not run: {imp['evaluators']['fANOVA']['error']}")
        doc.para(f"Parameter importance by {imp['evaluator']}, Optuna's default evaluator, "
                 f"over {basis}: how far each knob's values among the top "
                 f"{fmt.percent(ped['top_quantile'], 0)} of them by {metric} ({ped['top']} of "
                 f"{imp['trials']}) differ from its values over all {imp['trials']}, as a share "
                 f"of the sum over the knobs.{few} {fanova}.{one} These are associations, "
                 f"like the per-value means. {findings.left_out_text(imp['left_out'])}")
        doc.table(["knob", *evals],
                  [[k, *(fmt.percent(e.get(k)) for e in evals.values())]
                   for k in imp["importances"]])
        doc.image("importance.png", plots.importance(evals),
                  f"Importance of each searched knob for {metric} by "
                  f"{fmt.join(list(evals))} over {basis}, largest first.")
    else:
        doc.para(f"Parameter importance not computed over {basis}: {imp['error']}.")
    if summary.searched:
        values = [summary.score(t) for t in summary.trials]
        best = ([r["trial_id"] for r in curve_bands(summary)["best"]]
                if len(summary.trials) > MANY_TRIALS else None)
        doc.image("parallel.png", plots.parallel_coordinates(
            summary.trials, summary.searched, metric, values, best),
            f"Parallel coordinates: one line per trial across the searched knobs to its best "
            f"{metric}, coloured by {metric}; failed trials red and dotted.")
    return imp


def _models_section(doc: Doc, summary: Summary, run_dir: Path) -> list[dict[str, Any]]:
    spec, metric = summary.spec, summary.metric
    doc.heading("Model comparison")
    rows = []
    for g in model_groups(summary):
        info = describe_group(g, spec)
        health = conv_health(run_dir, g["best_trial"]) if g["best_trial"] else {}
        rows.append({**g, **info, **health})
    doc.para("One row per architecture in the sweep (training knobs such as lr or dropout "
             "pooled). FLOPs: one image's forward pass. Dead conv1: the share of conv1 filters "
             "with near-zero RMS; aliasing: the share of layer-2 map energy at the Nyquist "
             "frequencies, and that share over white noise's (comparable across map sizes; "
             "docs/analysis.md), both on the best trial's last checkpoint.")
    doc.table(["model", "knobs", "params", "FLOPs/image", "conv1", f"best {metric}",
               "s/epoch", "trials", "dead conv1", "layer-2 aliasing", "aliasing / noise"],
              [[r["model"], fmt.settings(r["knobs"]), fmt.count(r["params"]),
                fmt.si(r["flops"]), r["conv1"], fmt.metric(metric, r["best"]),
                fmt.seconds(r["epoch_s"]), str(r["trials"]),
                fmt.percent(r.get("dead_fraction")), fmt.percent(r.get("aliasing")),
                fmt.ratio(r.get("aliasing_vs_noise"))] for r in rows])
    return rows


def _analysis_section(doc: Doc, run_dir: Path, trial_id: str, images: int) -> dict[str, Any]:
    doc.heading(f"Analyses of the best trial ({trial_id})")
    try:
        result = analyze_trial(run_dir, trial_id, images=images)
    except AnalysisError as err:
        doc.para(f"Not available: {err}")
        return {"error": str(err)}
    out = run_dir / "analysis" / trial_id
    doc.para(f"ZFNet-style analyses of the checkpoint at epoch {result['epoch']} "
             f"(numbers in analysis/{trial_id}/analysis.json; see docs/analysis.md).")
    for name, png in result.get("figures", {}).items():
        doc.heading(ANALYSIS_TITLES.get(name, name.replace("_", " ")), level=3)
        block = result.get(name, {})
        if isinstance(block, dict) and block.get("skipped"):
            doc.para(f"skipped: {block['skipped']}")
        doc.image(f"analysis_{Path(png).name}", (out / png).read_bytes(),
                  ANALYSIS_ALT.get(name, f"The {name.replace('_', ' ')} analysis of the best "
                                         "trial."))
    return {"trial_id": trial_id, "epoch": result["epoch"]}


def _meta(summary: Summary) -> str:
    spec, plan = summary.spec, summary.plan
    goal = ", ".join(f"{mode} {metric}" for metric, mode in summary.objectives)
    return (f"{len(summary.trials)} trials of up to {spec['budget']['max_epochs']} epochs; "
            f"searcher {plan.get('searcher', spec['searcher']['type'])}; scheduler "
            f"{plan.get('scheduler', spec['scheduler']['type'])}; {goal}; wall time "
            f"{fmt.seconds(summary.wall_s or 0)} s; Ray {summary.ray_version}, torch "
            f"{summary.torch_version}.")


def build_report(run_dir: str | Path, analyses: bool = True, images: int = 64) -> Path:
    """Write RUN_DIR/report.html, report.md and report.json; returns report.html's path."""
    run_dir = Path(run_dir)
    summary = load_run(run_dir)
    doc = Doc(run_dir)
    title = f"Sweep report: {summary.name}"
    doc.heading(title, level=1)
    if summary.spec.get("description"):
        doc.para(summary.spec["description"])
    doc.para(_meta(summary), css="meta")
    doc.heading("Findings")
    slot = doc.slot()  # written last, from the numbers every section below computed
    doc.contents()
    numbers: dict[str, Any] = {}
    study = ablation.section(doc, run_dir)  # an ablation study's results open the report
    front = pareto.numbers(summary)
    if front is not None:
        pareto.section(doc, summary, front)
        numbers["pareto"] = front
    best = summary.best
    if study is not None:
        doc.heading("The study's runs")
        if best:  # an ablation compares configurations; its highest run is only the one analysed
            doc.para(f"Every (configuration, seed) is one run below. Highest run: trial "
                     f"{best.trial_id} with {summary.metric} "
                     f"{fmt.metric(summary.metric, summary.score(best))} "
                     f"({findings.searched_settings(summary, best.config)}).")
    bands = _trials_section(doc, summary)
    numbers.update(_effects_section(doc, summary))
    if bands is not None:
        numbers["curve_bands"] = bands
    numbers["models"] = _models_section(doc, summary, run_dir)
    if study is not None:
        numbers["ablation"] = study
    if analyses and best:
        numbers["analysis"] = _analysis_section(doc, run_dir, best.trial_id, images)
    numbers["findings"] = findings.paragraph(summary, numbers)
    doc.fill(slot, [numbers["findings"]], css="findings")
    for name, text in (("report.html", doc.page(f"{summary.name} report")),
                       ("report.md", doc.markdown()),
                       ("report.json", json.dumps(numbers, indent=2, default=str))):
        write_bytes(run_dir / name, text.encode())
    return run_dir / "report.html"
