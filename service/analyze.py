"""`python -m service.analyze RUN_DIR [--trial best|ID] [--images N] [--out DIR]`.

Runs the ZFNet-paper analyses on one trial of a finished sweep and prints where analysis.json
went (last line). Problems with the arguments or the run directory exit 2 with one line.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from service import cli
from service.cli import Exit


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run `analyze_trial`, print the analysis.json path."""
    parser = cli.parser("analyze", __doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a sweep's directory (summary.json)")
    parser.add_argument("--trial", default="best", help="'best' (default) or a trial id")
    parser.add_argument("--images", type=_positive_int, default=None,
                        help="validation images searched for top activations (default 64)")
    parser.add_argument("--out", help="write here instead of RUN_DIR/analysis/<trial_id>/")
    args = parser.parse_args(argv)
    # The analyses import torch (seconds): after the arguments, so --help and a bad flag answer
    # at once.
    from service.analysis import AnalysisError, analyze_trial
    from service.analysis.run import ANALYSIS_JSON, DEFAULT_IMAGES
    from service.config.data import DataError

    warnings.filterwarnings("ignore", module="captum")  # "setting backward hooks" chatter
    try:
        result = analyze_trial(args.run_dir, args.trial, args.images or DEFAULT_IMAGES, args.out)
    except (AnalysisError, DataError) as err:
        return cli.say_problems([f"error: {err}"])
    out = Path(args.out) if args.out else Path(args.run_dir) / "analysis" / result["trial_id"]
    skipped = [k for k, v in result.items() if isinstance(v, dict) and "skipped" in v]
    print(f"trial {result['trial_id']} ({result['model']}, epoch {result['epoch']}): "
          f"{len(result['figures'])} figures" + (f", skipped {', '.join(skipped)}"
                                                 if skipped else ""))
    print(out / ANALYSIS_JSON)
    return Exit.OK


if __name__ == "__main__":
    raise SystemExit(main())
