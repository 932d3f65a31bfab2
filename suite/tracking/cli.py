"""`suite nightly run|baseline`: the command line side of suite/tracking/nightly.py (registered by
suite/cli.py). A lab's cron calls `nox -s lab`, which runs `suite nightly run`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_REGRESSION = 0, 1


def add_parser(sub) -> None:
    """Add `nightly` to the `suite` command's subparsers."""
    n = sub.add_parser("nightly", help="the nightly lab run: a matrix of schemes x models x devices on the "
                       "emulated lab (or a real fleet), checked against its stored baseline")  # fmt: skip
    runs = n.add_subparsers(dest="nightly_command", required=True, parser_class=type(n))
    r = runs.add_parser("run", help="bring the lab up, deploy, run the matrix, compare, report, take it "
                        "down; exit 1 on a regression, a mismatch or a failed cell")  # fmt: skip
    r.add_argument("--matrix", default="full",
                   help="matrix name (suite/data/nightly/NAME.yaml) or YAML path (default: full)")
    r.add_argument("--inventory", help="run on this inventory's devices instead of an emulated lab")
    r.add_argument("--dilate", default="auto", metavar="F|auto",
                   help="the emulated lab's time dilation (default: auto)")
    r.add_argument("--lab-name", default="nightly", help="the emulated lab's name (default: nightly)")
    r.add_argument("--baseline",
                   help="stored baseline YAML (default: suite/data/baselines/nightly/MATRIX.yaml)")
    r.add_argument("-o", "--output", default="reports",
                   help="reports folder; the night goes to OUTPUT/nightly/<date>T<time>/ (default: reports)")
    r.set_defaults(run=cmd_run)
    b = runs.add_parser("baseline", help="write the stored baseline from two or more clean runs of one "
                        "commit (tolerances from their run-to-run noise)")  # fmt: skip
    b.add_argument("runs", nargs="+", metavar="RUN", help="report folders `suite nightly run` wrote")
    b.add_argument("--matrix", help="matrix name or YAML path (default: the one the runs name)")
    b.add_argument("-o", "--output", help="baseline YAML (default: suite/data/baselines/nightly/MATRIX.yaml)")
    b.set_defaults(run=cmd_baseline)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from suite.package import require_checkout
    from suite.tracking.nightly import load_matrix, run_night

    require_checkout("suite nightly run (it deploys the suite to the devices)")  # before the lab comes up
    matrix = load_matrix(args.matrix)
    night = run_night(matrix, args.inventory, args.dilate, args.lab_name, Path(args.output),
                      Path(args.baseline) if args.baseline else None, _say)  # fmt: skip
    print(f"report: {night.folder / 'REPORT.md'}")
    for failure in night.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    if night.failures:
        return EXIT_REGRESSION
    verdicts = night.comparison["verdict"].value_counts().to_dict()
    print(f"PASS: {', '.join(f'{n} {v}' for v, n in verdicts.items())}")
    return EXIT_OK


def cmd_baseline(args: argparse.Namespace) -> int:
    from suite.tracking.nightly import BASELINES_DIR, load_matrix, read_measurements, write_baseline

    folders = [Path(r) for r in args.runs]
    matrix = load_matrix(args.matrix or read_measurements(folders[0])[1]["matrix_path"])
    output = Path(args.output) if args.output else BASELINES_DIR / f"{matrix.name}.yaml"
    document = write_baseline(matrix, folders, output)
    noise = ", ".join(f"{m} {v:.1%}" for m, v in document["noise"].items())
    tolerance = ", ".join(f"{m} {v:.0%}" for m, v in document["tolerance"].items())
    print(f"wrote {output}: {len(document['cells'])} cells; noise {noise}; tolerance {tolerance}")
    return EXIT_OK
