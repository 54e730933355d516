"""ZFNet-paper analyses of one trained trial: filters, aliasing, deconvnet, occlusion, invariance.

`analyze_trial(run_dir)` runs them all and writes PNGs plus analysis.json into
RUN_DIR/analysis/<trial_id>/; the pieces are importable on their own (see docs/analysis.md).
"""
