"""Run every analysis on one model or one trial; write PNGs and analysis.json atomically."""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from service.analysis import aliasing, deconv, evolution, filters, invariance, occlusion  # noqa: E402
from service.analysis.layers import conv_stages, uses_relu  # noqa: E402
from service.analysis.load import (  # noqa: E402
    AnalysisError,
    load_trial,
    to_display,
    val_images,
)
from service.results.store import write_bytes, write_json  # noqa: E402
from service.training.data import Datasets  # noqa: E402

DEFAULT_IMAGES = 64  # validation images searched for top activations (CPU-cheap, enough for 9)
ANALYSIS_JSON = "analysis.json"


def _json_safe(value: Any) -> Any:
    """Drop private (figure-only) keys and turn non-finite floats into None."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_figure(fig, path: Path) -> None:
    """Render a matplotlib figure to PNG and write it atomically; closes the figure."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_bytes(path, buf.getvalue())


def _figure(out_dir: Path, name: str, size: tuple[float, float], draw: Callable) -> str:
    fig = plt.figure(figsize=size)
    draw(fig)
    save_figure(fig, out_dir / f"{name}.png")
    return f"{name}.png"


def analyze_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, out_dir: Path,
                  *, datasets: Datasets | None = None,
                  checkpoints: list[tuple[int, Path]] | None = None) -> dict[str, Any]:
    """Every analysis of `model` on `images`; PNGs into `out_dir`. Returns the numbers
    (one block per analysis, `{"skipped": reason}` where one does not apply) and `figures`."""
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def display(x: torch.Tensor):
        return to_display(x, datasets)

    result: dict[str, Any] = {"images": len(images), "figures": {}, "timing_s": {}}
    def run(name: str, skip: str | None, compute: Callable[[], dict],
            draw: Callable[[Any, dict], None], size: tuple[float, float]) -> None:
        if skip:
            result[name] = {"skipped": skip}
            return
        t0 = time.perf_counter()
        numbers = compute()
        result["figures"][name] = _figure(out_dir, name, size, lambda fig: draw(fig, numbers))
        result[name] = _json_safe(numbers)
        result["timing_s"][name] = round(time.perf_counter() - t0, 3)

    no_relu = ("the deconvnet rectifies ReLU signals; this model's activations are not ReLUs"
               if not uses_relu(model) else None)
    n_stages = len(conv_stages(model))
    run("filters", None, lambda: filters.filter_stats(model, images),
        lambda fig, r: filters.plot_filters(fig, model, r), (10, 4))
    run("aliasing", None if n_stages >= 2 else "the model has a single conv layer",
        lambda: aliasing.aliasing_stats(model, images),
        lambda fig, r: aliasing.plot_aliasing(fig, model, images, r), (10, 4))
    run("deconv", no_relu, lambda: deconv.deconv_layers(model, images),
        lambda fig, r: deconv.plot_deconv(fig, r, display), (16, 2.1 * n_stages))
    run("evolution", no_relu or (None if checkpoints else "no checkpoints"),
        lambda: evolution.feature_evolution(model, checkpoints or [], images),
        evolution.plot_evolution, (1.3 * max(2, len(checkpoints or [])), 2.2 * n_stages))
    run("occlusion", None, lambda: occlusion.occlusion_study(model, images, labels),
        lambda fig, r: occlusion.plot_occlusion(fig, r, images, display), (12, 7))
    run("invariance", None, lambda: invariance.invariance(model, images, labels, datasets),
        invariance.plot_invariance, (12, 6))
    return result


def analyze_trial(run_dir: str | os.PathLike, trial: str = "best", images: int = DEFAULT_IMAGES,
                  out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Load a trial's last checkpoint, run every analysis, write PNGs and analysis.json into
    RUN_DIR/analysis/<trial_id>/ (or `out_dir`) and return what analysis.json holds."""
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise AnalysisError(f"images={images!r}: must be a positive integer")
    loaded = load_trial(run_dir, trial)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "analysis" / loaded.trial_id
    x, y = val_images(loaded.datasets, images)
    result = {
        "trial_id": loaded.trial_id,
        "model": loaded.config.model,
        "knobs": loaded.config.model_knobs(),
        "epoch": loaded.epoch,
        "checkpoint": str(loaded.checkpoint_dir),
        **analyze_model(loaded.model, x, y, out, datasets=loaded.datasets,
                        checkpoints=loaded.checkpoints),
    }
    write_json(out / ANALYSIS_JSON, result)
    return result
