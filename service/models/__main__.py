"""`python -m service.models [--json]`: every preset's parameters, map sizes and FLOPs."""

from __future__ import annotations

import json

from service import cli
from service.cli import Exit
from service.models import describe, list_models


def main(argv: list[str] | None = None) -> int:
    """Print one row (or one JSON object) per preset at its paper input size."""
    parser = cli.parser("models", __doc__)
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    args = parser.parse_args(argv)
    rows = [describe(name, flops=True) for name in list_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return Exit.OK
    print(f"{'model':<20} {'params':>12} {'input':>12} {'GFLOPs':>8}  conv maps")
    for r in rows:
        c, h, w = r["input_size"]
        print(f"{r['name']:<20} {r['params']:>12,} {f'{c}x{h}x{w}':>12} "
              f"{r['flops'] / 1e9:>8.3f}  {r['conv_maps']}")
    print("FLOPs: forward pass of one image, counted by torch.utils.flop_counter "
          "(a multiply-add is 2 FLOPs).")
    return Exit.OK


if __name__ == "__main__":
    raise SystemExit(main())
