#!/usr/bin/env python3
"""One table row for check.sh from a `suite verify --json` or `suite doctor --json` output file.

usage: summarize.py header
       summarize.py verify FILE.json CPU CASE SECONDS     (exit 1 when not bit-exact)
       summarize.py doctor FILE.json CPU BACKEND SECONDS  (exit 1 when not exact: check.sh records it)
       summarize.py failed|refused CPU BACKEND CASE SECONDS FILE.err  (a refusal: the doctor's)
"""
from __future__ import annotations

import json
import sys

ROW = "{:4} {:11} {:20} {:9} {:7} {:8} {}"


def last_json(path: str) -> dict:
    return json.loads(open(path).read().strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "header":
        print(ROW.format("cpu", "backend", "case", "bit_exact", "max_ulp", "seconds", "first_mismatch"))
        return 0
    if kind == "verify":
        path, cpu, case, seconds = argv[1:5]
        r = last_json(path)
        print(ROW.format(cpu, r["backend"], case, str(r["bit_exact"]), r["max_ulp"], seconds,
                         r["first_mismatch"]))
        return 0 if r["bit_exact"] else 1
    if kind == "doctor":
        path, cpu, backend, seconds = argv[1:5]
        v = last_json(path)["backends"][backend]
        worst = max((f["max_ulp"] for f in v["failures"]), default=0)
        case = f"doctor {'+'.join(map(str, v['threads']))} thr"
        differ = f"{len(v['failures'])} of {v['cases']} probe cases differ"
        print(ROW.format(cpu, backend, case, str(v["exact"]), worst, seconds, differ))
        return 0 if v["exact"] else 1
    if kind in ("failed", "refused"):
        cpu, backend, case, seconds, err = argv[1:6]
        lines = [ln for ln in open(err).read().splitlines() if ln.strip() and not ln.startswith("[aarch64")]
        said = lines[-1] if lines else "(no output)"
        print(ROW.format(cpu, backend, case, kind.upper(), "", seconds, said))
        return 1 if kind == "failed" else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
