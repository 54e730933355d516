"""The papers' claims, measured on finished claim sweeps (`searchspaces/claims/`).

Claims 1-7 are ablation studies (ablation.seeds: seed i gives every cell the same data
split, training subset and initial weights; 8-10 use budget.seeds alike), so effects are paired
by seed with `service.results.paired.compare`: the effect is the mean over seeds of (condition B -
condition A), a ratio the geometric mean of the per-seed B / A (compared on the logs), with a
95% Student t interval, the paired t-test's p and the minimum detectable effect (MDE). The p
of a claim's effects with a paper direction are Holm-adjusted across the claim; a verdict says
whether that p is below 0.05 with the effect in the paper's direction ("agrees"), in the other
("opposite"), or not ("not resolved"). A single condition's level is its mean with a 95%
interval (`service.results.stats.mean_ci95`).

    python -m service.claims run N [--results DIR]         # run claim N's space(s), measure
    python -m service.claims run N --variant gpu            # its GPU-sized space(s)
    python -m service.claims measure N RUN_DIR [RUN_DIR..]  # measure finished sweeps
    python -m service.claims table [DIR] [--out FILE]       # docs/claims.md from DIR's claims

Exit codes: 0 measured, 2 bad input (unknown claim, missing run; or a sweep that refused its
input and started nothing), 3 a sweep failed, 4 and 130 a sweep's own (summary.json not
written, interrupted).
"""

from __future__ import annotations

import sys
from pathlib import Path

from service import cli
from service.claims.design import CPU, VARIANTS
from service.claims.measures import ClaimError
from service.claims.table import document, markdown, read_all
from service.cli import Exit
from service.results.store import write_bytes, write_json


def _table(directory: Path, out: Path | None) -> int:
    text = document(read_all(directory))
    if out is None:
        sys.stdout.write(text)
        return Exit.OK
    try:
        write_bytes(out, text.encode())
    except OSError as err:
        raise ClaimError(f"{out}: cannot write ({err.strerror or err})",
                         Exit.WRITE_FAILED) from None
    print(out)
    return Exit.OK


def main(argv: list[str] | None = None) -> int:
    """CLI: run, measure or tabulate claims; bad input exits 2 with one line."""
    p = cli.parser("claims", __doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a claim's space(s), then measure")
    r.add_argument("claim", type=int)
    r.add_argument("--results", type=Path, default=Path("results"))
    r.add_argument("--max-epochs", type=int, help="passed to service.submit (quick checks)")
    r.add_argument("--variant", choices=VARIANTS,
                   help="searchspaces/claims/VARIANT/: the GPU-sized spaces")
    m = sub.add_parser("measure", help="measure finished claim sweeps")
    m.add_argument("claim", type=int)
    m.add_argument("run_dirs", type=Path, nargs="+")
    m.add_argument("--variant", choices=VARIANTS,
                   help="which spaces the runs came from (names claim_NN_VARIANT.json)")
    m.add_argument("--out", type=Path, help="where claim_NN.json goes (default: first run dir)")
    t = sub.add_parser("table", help="docs/claims.md from every claim_*.json under DIR")
    t.add_argument("dir", type=Path, nargs="?", default=Path("results"))
    t.add_argument("--out", type=Path, help="write it there (default: print it)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "table":
            return _table(args.dir, args.out)
        # Running and measuring load trials' checkpoints (torch); the table reads JSON only.
        from service.claims.registry import measure, run

        if args.cmd == "run":
            extra = ["--max-epochs", str(args.max_epochs)] if args.max_epochs else []
            dirs = run(args.claim, args.results, extra, args.variant)
            out_dir = args.results
        else:
            dirs, out_dir = args.run_dirs, args.out or args.run_dirs[0]
        result = measure(args.claim, dirs)
        result["variant"] = args.variant or CPU
    except ClaimError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    out_dir.mkdir(parents=True, exist_ok=True)
    variant = getattr(args, "variant", None)
    out = out_dir / f"claim_{args.claim:02d}{'_' + variant if variant else ''}.json"
    write_json(out, result)
    print(markdown(result))
    print(out)
    return Exit.OK


if __name__ == "__main__":
    raise SystemExit(main())
