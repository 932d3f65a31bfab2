"""Tracking across commits and nights: measured speedups against stored results.

`measure.py` runs one model's single-device plan and each scheme's plan on the same workers (local
processes, or a fleet's devices through an inventory) and returns `suite run --json` summaries;
the asv benchmarks in `benchmarks/` and the nightly lab run (`nightly.py`, `suite nightly`) both
measure through it. `asvtrack.py` drives asv for `nox -s asv` (run, backfill, compare, publish);
`nightly.py` runs the lab matrix, compares it with `suite/data/baselines/nightly/` and writes the report.
"""
