"""`python -m service.report RUN_DIR`: a finished sweep as report.html (standalone, images
embedded) and report.md (figures beside it in report_files/).

The trials table, learning curves, each searched knob's effect (mean and 95% CI, Optuna's
fANOVA importance), parallel coordinates, a model comparison (params, FLOPs, conv1, best
metric, time per epoch, dead conv1 filters, layer-2 aliasing) and the best trial's ZFNet
analyses (service.analysis). When the run is an ablation study (it holds ablation.json), its
Ablation section (service.report.ablation) opens the report.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from service.analysis import AnalysisError, analyze_trial
from service.report import ablation, plots
from service.report.data import (
    MANY_TRIALS,
    ablation_example,
    conv_health,
    curve_bands,
    describe_group,
    importance,
    knob_effects,
    model_groups,
    searched_knobs,
)
from service.results.records import Summary
from service.results.store import load_run, write_bytes
from service.tune.paths import SEED_KEY

FILES = "report_files"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


class Doc:
    """Builds the HTML and Markdown versions side by side, so they always say the same."""

    def __init__(self, out_dir: Path):
        self.html: list[str] = []
        self.md: list[str] = []
        self.files = out_dir / FILES
        self.files.mkdir(parents=True, exist_ok=True)

    def heading(self, text: str, level: int = 2) -> None:
        """A heading of `level` (1 is the page title)."""
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md.append(f"{'#' * level} {text}\n")

    def para(self, text: str) -> None:
        """A paragraph of plain text."""
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md.append(f"{text}\n")

    def table(self, head: list[str], rows: list[list[Any]]) -> None:
        """A table; numbers shown to 4 significant digits, None as a dash."""
        cells = [[_fmt(c) for c in r] for r in rows]
        self.html.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                         + "</tr>" + "".join(
                             "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                             for r in cells) + "</table>")
        self.md.append("| " + " | ".join(head) + " |\n|" + " --- |" * len(head) + "\n" + "".join(
            "| " + " | ".join(c.replace("|", "/") for c in r) + " |\n" for r in cells))

    def code(self, text: str) -> None:
        """A block of code (YAML, commands), verbatim."""
        self.html.append(f"<pre><code>{html.escape(text)}</code></pre>")
        self.md.append(f"```\n{text}\n```\n")

    def image(self, name: str, png: bytes, alt: str) -> None:
        """A PNG: embedded in the HTML, written to report_files/ for the Markdown."""
        write_bytes(self.files / name, png)
        data = base64.b64encode(png).decode()
        self.html.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">')
        self.md.append(f"![{alt}]({FILES}/{name})\n")


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
img{max-width:100%;display:block;margin:1em 0}"""
# Lets a headless browser (and a person's console) confirm that every image decoded.
CHECK = """<script>window.addEventListener('load',function(){var i=document.images,ok=0;
for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)ok++;}
document.body.setAttribute('data-images',i.length);
document.body.setAttribute('data-images-loaded',ok);});</script>"""


def _trials_section(doc: Doc, summary: Summary) -> dict[str, Any] | None:
    """The trials table and their learning curves; with more than MANY_TRIALS trials the
    curves in aggregate (returned, for report.json), else one line per trial (None)."""
    keys, metric = summary.searched, summary.metric
    doc.heading("Trials")
    doc.table(["trial", *("seed" if k == SEED_KEY else k for k in keys), "status", "epochs",
               f"best {metric}", "error"],
              [[t.trial_id, *(t.config.get(k) for k in keys), t.status, t.epochs,
                summary.score(t), t.error or ""] for t in summary.trials])
    bands = curve_bands(summary) if len(summary.trials) > MANY_TRIALS else None
    if bands is not None:
        st = bands["statuses"]
        failed = sum(n for k, n in st.items() if k not in ("completed", "stopped-early"))
        doc.para(f"{bands['trials']} trials (more than {MANY_TRIALS}): the learning curves in "
                 f"aggregate, per epoch the median and the 10-90% band of {metric} over the "
                 "trials that reached that epoch (n under each epoch), with the "
                 f"{len(bands['best'])} best trials drawn one by one; "
                 f"{st.get('stopped-early', 0)} stopped early, {failed} diverged or failed.")
    doc.image("curves.png", plots.learning_curves(summary.trials, metric,
                                                  summary.spec["budget"]["max_epochs"], bands),
              "learning curves")
    return bands


def _left_out(left: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for t in left:
        counts[t["why"]] = counts.get(t["why"], 0) + 1
    if not left:
        return "No trial was left out."
    return (f"{len(left)} trial(s) left out: "
            + "; ".join(f"{n} {why}" for why, n in counts.items()) + ".")


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
    doc.para(f"Per value (or per half of a range): {rule}; the mean and, from 3 trials on, its "
             f"95% confidence interval (Student t). {_left_out(effects['left_out'])} A trial "
             "stopped early is never pooled with finished ones: its value measures the "
             "schedule, not the configuration.")
    doc.table(["knob", "value", "n", f"mean {metric} at epoch {epoch}", "± 95% CI"],
              [[k, r["value"], r["n"], r["mean"], "—" if r["ci95"] is None else r["ci95"]]
               for k, e in knobs.items() for r in e["rows"]])
    searcher = summary.spec.get("searcher", {}).get("type", "")
    why = ("TPE picks each configuration from the earlier results, so the knobs are "
           "confounded" if searcher.startswith("optuna-") else
           "the other knobs vary at the same time, so the knobs are confounded")
    example = ablation_example(summary)
    doc.para(f"These per-value means are associations under the searcher's sampling, not "
             f"effects: {why}. To measure a knob's effect, run an ablation study (every arm "
             "trained with the same seeds and compared paired by seed)"
             + (", e.g. a copy of this search space with `search:`, `scheduler:` and "
                "`budget.num_samples` replaced by this block (baseline: the best trial's "
                "values; one arm per knob, set to another value; 4 seeds):" if example else "."))
    if example:
        doc.code(example)
    if knobs:
        doc.image("effects.png", plots.knob_effects(knobs, metric, epoch), "knob effects")
    imp = importance(summary)
    if "importances" in imp:
        doc.para(f"Optuna's fANOVA parameter importance over {imp['trials']} trials:")
        doc.table(["knob", "importance"], [[k, v] for k, v in imp["importances"].items()])
        doc.image("importance.png", plots.importance(imp["importances"]), "importance")
    else:
        doc.para(f"Parameter importance not computed: {imp['error']}.")
    if summary.searched:
        values = [summary.score(t) for t in summary.trials]
        best = ([r["trial_id"] for r in curve_bands(summary)["best"]]
                if len(summary.trials) > MANY_TRIALS else None)
        doc.image("parallel.png", plots.parallel_coordinates(
            summary.trials, summary.searched, metric, values, best), "parallel coordinates")
    return {"effects": {k: e["rows"] for k, e in knobs.items()},
            "effects_basis": {k: effects[k] for k in ("rule", "epoch", "trials", "left_out")},
            "ablation_example": example, "importance": imp}


def _models_section(doc: Doc, summary: Summary, run_dir: Path) -> list[dict[str, Any]]:
    spec, metric = summary.spec, summary.metric
    doc.heading("Model comparison")
    rows = []
    for g in model_groups(summary):
        info = describe_group(g, spec)
        health = conv_health(run_dir, g["best_trial"]) if g["best_trial"] else {}
        rows.append({**g, **info, **health})
    doc.para("One row per architecture in the sweep (training knobs such as lr or dropout "
             "pooled). Dead filters: conv1 filters with near-zero RMS; aliasing: share of "
             "layer-2 map energy at the Nyquist frequencies, and that share over white noise's "
             "(comparable across map sizes; docs/analysis.md), both on the best trial's last "
             "checkpoint.")
    doc.table(["model", "knobs", "params", "FLOPs/image", "conv1", f"best {metric}",
               "s/epoch", "trials", "dead conv1", "layer-2 aliasing", "aliasing / noise"],
              [[r["model"], ", ".join(f"{k}={_fmt(v)}" for k, v in r["knobs"].items()),
                r["params"], r["flops"], r["conv1"], r["best"], r["epoch_s"], r["trials"],
                r.get("dead_fraction"), r.get("aliasing"), r.get("aliasing_vs_noise")]
               for r in rows])
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
        doc.heading(name.replace("_", " "), level=3)
        block = result.get(name, {})
        if isinstance(block, dict) and block.get("skipped"):
            doc.para(f"skipped: {block['skipped']}")
        doc.image(f"analysis_{Path(png).name}", (out / png).read_bytes(), name)
    return {"trial_id": trial_id, "epoch": result["epoch"]}


def build_report(run_dir: str | Path, analyses: bool = True, images: int = 64) -> Path:
    """Write RUN_DIR/report.html, report.md and report.json; returns report.html's path."""
    run_dir = Path(run_dir)
    summary = load_run(run_dir)
    spec, plan = summary.spec, summary.plan
    doc = Doc(run_dir)
    doc.heading(f"Sweep report: {summary.name}", level=1)
    study = ablation.section(doc, run_dir)  # an ablation study's results open the report
    if study is not None:
        doc.heading("The study's runs")
    if spec.get("description"):
        doc.para(spec["description"])
    doc.para(f"{len(summary.trials)} trials of up to {spec['budget']['max_epochs']} epochs; "
             f"searcher {plan.get('searcher', spec['searcher']['type'])}; scheduler "
             f"{plan.get('scheduler', spec['scheduler']['type'])}; {summary.mode} "
             f"{summary.metric}; wall time {summary.wall_s or 0:.0f} s; "
             f"Ray {summary.ray_version}, torch {summary.torch_version}.")
    best = summary.best
    if best:
        knobs = ", ".join(f"{'seed' if k == SEED_KEY else k}={_fmt(best.config.get(k))}"
                          for k in summary.searched)
        # An ablation compares configurations; its highest run is only the one analysed.
        doc.para(f"{'Highest run' if study is not None else 'Best'}: trial {best.trial_id} "
                 f"with {summary.metric} "
                 f"{_fmt(summary.score(best))} ({knobs}).")
    bands = _trials_section(doc, summary)
    numbers = _effects_section(doc, summary)
    if bands is not None:
        numbers["curve_bands"] = bands
    numbers["models"] = _models_section(doc, summary, run_dir)
    if study is not None:
        numbers["ablation"] = study
    if analyses and best:
        numbers["analysis"] = _analysis_section(doc, run_dir, best.trial_id, images)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(summary.name)} report</title><style>{STYLE}</style>{CHECK}"
            f"</head><body>{''.join(doc.html)}</body></html>")
    for name, text in (("report.html", page), ("report.md", "\n".join(doc.md)),
                       ("report.json", json.dumps(numbers, indent=2, default=str))):
        write_bytes(run_dir / name, text.encode())
    return run_dir / "report.html"
