"""ZFNet-paper analyses of one trained trial: filters, aliasing, deconvnet, occlusion, invariance;
imports torch, captum, matplotlib, service.models, service.training, service.results and the
file names of service.rundir, never Ray.

`analyze_trial(run_dir)` runs them all and writes PNGs plus analysis.json into
RUN_DIR/analysis/<trial_id>/; the pieces are importable on their own (see docs/analysis.md).
"""

from service.analysis.load import (
    AnalysisError,
    LoadedTrial,
    load_trial,
    trial_checkpoints,
)
from service.analysis.run import analyze_model, analyze_trial

__all__ = ["AnalysisError", "LoadedTrial", "analyze_model", "analyze_trial", "load_trial",
           "trial_checkpoints"]
