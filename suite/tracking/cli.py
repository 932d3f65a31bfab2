"""`suite nightly run|baseline|report`: the command line side of suite/tracking/nightly.py
(registered by suite/cli.py). A lab's cron calls `nox -s lab`, which runs `suite nightly run`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from suite.arguments import exit_codes

EXIT_OK, EXIT_REGRESSION = 0, 1


class _Renamed(argparse.Action):
    """An option's old spelling, hidden from --help: still works, with a note naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_parser(sub) -> None:
    """Add `nightly` to the `suite` command's subparsers."""
    n = sub.add_parser("nightly", help="the nightly lab run: a matrix of schemes x models x devices on the "
                       "emulated lab (or a real fleet), checked against its stored baseline")  # fmt: skip
    runs = n.add_subparsers(dest="nightly_command", required=True, parser_class=type(n))
    r = runs.add_parser("run", help="bring the lab up, deploy, run the matrix, compare, report, take it "
                        "down; exit 1 on a regression, a mismatch or a failed cell",
                        **exit_codes("a cell regressed past its tolerance (measured twice), an output was "
                                     "not bit-exact, or a cell did not complete (the report is written)",
                                     usage="bad input: the matrix, baseline or inventory (one line naming "
                                     "the file and field)"))  # fmt: skip
    r.add_argument(
        "--matrix",
        default="full",
        help="matrix name (suite/data/nightly/NAME.yaml) or YAML path (default: full)",
    )
    r.add_argument("--inventory", help="run on this inventory's devices instead of an emulated lab")
    r.add_argument(
        "--dilate", default="auto", metavar="F|auto", help="the emulated lab's time dilation (default: auto)"
    )
    r.add_argument("--name", default="nightly", help="the emulated lab's name, as `suite lab --name` takes "
                   "it (default: nightly)")  # fmt: skip
    r.add_argument("--lab-name", dest="name", action=_Renamed, new="--name")
    r.add_argument(
        "--baseline", help="stored baseline YAML (default: suite/data/baselines/nightly/MATRIX.yaml)"
    )
    r.add_argument(
        "-o",
        "--output",
        default="reports",
        help="reports folder; the night goes to OUTPUT/nightly/<date>T<time>/ (default: reports)",
    )
    r.add_argument("--json", action="store_true", help="print one JSON object (progress stays on stderr)")
    r.set_defaults(run=cmd_run)
    b = runs.add_parser("baseline", help="write the stored baseline from two or more clean runs of one "
                        "commit (tolerances from their run-to-run noise)",
                        **exit_codes(usage="bad input: a folder that is not a night's report, a run with "
                                     "a failed cell, a matrix that changed"))  # fmt: skip
    b.add_argument("runs", nargs="+", metavar="RUN", help="report folders `suite nightly run` wrote")
    b.add_argument("--matrix", help="matrix name or YAML path (default: the one the runs name)")
    b.add_argument("-o", "--output", help="baseline YAML (default: suite/data/baselines/nightly/MATRIX.yaml)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(run=cmd_baseline)
    p = runs.add_parser("report", help="draw a stored night's figures and REPORT.md again from its tables "
                        "(no lab)",
                        **exit_codes(usage="bad input: not a night's report folder, or its matrix changed "
                                     "(give the one it ran with --matrix)"))  # fmt: skip
    p.add_argument("folder", metavar="RUN", help="a report folder `suite nightly run` wrote")
    p.add_argument("--matrix", help="matrix name or YAML path (default: the one the night ran)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_report)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from suite.package import require_checkout
    from suite.tracking.nightly import load_matrix, run_night

    require_checkout("suite nightly run (it deploys the suite to the devices)")  # before the lab comes up
    matrix = load_matrix(args.matrix)
    night = run_night(matrix, args.inventory, args.dilate, args.name, Path(args.output),
                      Path(args.baseline) if args.baseline else None, _say)  # fmt: skip
    verdicts = night.comparison["verdict"].value_counts().to_dict()
    if args.json:
        print(json.dumps({"verdict": "FAIL" if night.failures else "PASS", "folder": str(night.folder),
                          "report": str(night.folder / "REPORT.md"), "matrix": matrix.name,
                          "cells": {str(v): int(n) for v, n in verdicts.items()}, "failures": night.failures,
                          "error": night.error}))  # fmt: skip
    else:
        print(f"report: {night.folder / 'REPORT.md'}")
    for failure in night.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    if night.failures:
        return EXIT_REGRESSION
    if not args.json:
        print(f"PASS: {', '.join(f'{n} {v}' for v, n in verdicts.items())}")
    return EXIT_OK


def cmd_baseline(args: argparse.Namespace) -> int:
    from suite.tracking.nightly import BASELINES_DIR, load_matrix, read_measurements, write_baseline

    folders = [Path(r) for r in args.runs]
    matrix = load_matrix(args.matrix or read_measurements(folders[0])[1]["matrix_path"])
    output = Path(args.output) if args.output else BASELINES_DIR / f"{matrix.name}.yaml"
    document = write_baseline(matrix, folders, output)
    if args.json:
        print(json.dumps({"baseline": str(output), "matrix": matrix.name, "cells": len(document["cells"]),
                          "runs": document["runs"], "noise": document["noise"],
                          "tolerance": document["tolerance"]}))  # fmt: skip
        return EXIT_OK
    noise = ", ".join(f"{m} {v:.1%}" for m, v in document["noise"].items())
    tolerance = ", ".join(f"{m} {v:.0%}" for m, v in document["tolerance"].items())
    print(f"wrote {output}: {len(document['cells'])} cells; noise {noise}; tolerance {tolerance}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from suite.tracking.nightly import render_stored

    folder = Path(args.folder)
    figures = render_stored(folder, args.matrix)
    if args.json:
        print(json.dumps({"folder": str(folder), "report": str(folder / "REPORT.md"), "figures": figures}))
    else:
        print(f"wrote {folder / 'REPORT.md'} and {', '.join(figures) or 'no figures (no cell measured)'}")
    return EXIT_OK
