"""`suite reproduce NAME... | all [-o reports/] [--json]`: the command line side of suite/reproduce."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from suite.arguments import exit_codes
from suite.reproduce import NAMES, select


def add_parser(sub) -> None:
    """Add `reproduce` to the `suite` command's subparsers."""
    r = sub.add_parser(
        "reproduce",
        help="regenerate the papers' figures beside the published numbers",
        **exit_codes(usage="bad input, or a figure's files could not be written"),
    )
    r.add_argument("names", nargs="+", metavar="NAME", help=f"figures: {', '.join(NAMES)}, or all")
    r.add_argument(
        "-o",
        "--output",
        default="reports",
        help="folder for the CSVs, images and REPORT.md (default: reports)",
    )
    r.add_argument(
        "--lab",
        action="store_true",
        help="add the emulated lab's measured points to PICO Fig. 8, 9, 12 and Table I, MoDNN, AOFL, "
        "DeepThings Fig. 13 and HALP (root; minutes)",
    )
    r.add_argument("--json", action="store_true", help="print one JSON object listing the files written")
    r.set_defaults(run=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    chosen = select(args.names)  # a typo fails before anything heavy is imported
    print(f"reproducing {len(chosen)} figure(s) into {args.output}/: loading the libraries (seconds on a "
          "busy host), then a line per figure", file=sys.stderr, flush=True)  # fmt: skip
    from suite.reproduce.figures import reproduce
    from suite.reproduce.lab import available

    lab = args.lab
    if lab and (reason := available()) is not None:
        print(f"note: {reason}; drawing the predicted and simulated points only", file=sys.stderr)
        lab = False
    result = reproduce(args.names, Path(args.output), lab=lab)
    if args.json:
        print(json.dumps(result))
    else:
        done = [n for n, f in result["figures"].items() if "skipped" not in f]
        skipped = [n for n, f in result["figures"].items() if "skipped" in f]
        print(
            f"wrote {len(done)} figure(s) to {args.output}/ and {result['report']}"
            + (f"; skipped {', '.join(skipped)} (see the report)" if skipped else "")
        )
    return 0
