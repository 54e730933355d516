"""`python -m service.report RUN_DIR`: a finished sweep as report.html (standalone, images
embedded) and report.md (figures beside it in report_files/).

A findings paragraph written from the numbers and a table of contents open it; then an
ablation study's verdicts or a multi-objective sweep's Pareto front, the trials table, learning
curves, each searched knob's per-value means (n, and a 95% CI from 3 trials on), parameter
importance (PED-ANOVA, fANOVA beside), parallel coordinates, a model comparison (params,
FLOPs, conv1, best metric, time per epoch, dead conv1 filters, layer-2 aliasing) and the best
trial's ZFNet analyses (service.analysis). report.json holds the numbers.
"""

from __future__ import annotations

import sys

from service import cli
from service.cli import Exit
from service.report.build import build_report
from service.results.store import ResultsError


def main(argv: list[str] | None = None) -> int:
    """CLI: exit 0 with report.html's path as the last line, or 2 with one line."""
    p = cli.parser("report", __doc__)
    p.add_argument("run_dir", help="a finished sweep's run directory (holds summary.json)")
    p.add_argument("--no-analysis", action="store_true",
                   help="skip the best trial's ZFNet analyses")
    p.add_argument("--images", type=int, default=64,
                   help="validation images for the analyses (default 64)")
    args = p.parse_args(argv)
    if args.images < 1:
        print(f"--images {args.images}: must be a positive integer", file=sys.stderr)
        return Exit.BAD_INPUT
    try:
        path = build_report(args.run_dir, analyses=not args.no_analysis, images=args.images)
    except ResultsError as err:  # a missing or malformed run (AnalysisError is one too)
        print(f"error: {err}", file=sys.stderr)
        return Exit.BAD_INPUT
    except OSError as err:
        print(f"error: {err.filename or args.run_dir}: {err.strerror or err}", file=sys.stderr)
        return Exit.WRITE_FAILED
    print(path)
    return Exit.OK


if __name__ == "__main__":
    raise SystemExit(main())
