"""The nightly lab run: a matrix of schemes x models x device counts on a lab, every frame checked,
compared with the stored measured baseline.

A matrix (`suite/data/nightly/<name>.yaml`) names a fleet, the device counts to run on (its first N
devices, so one lab or one real fleet serves every count), the schemes and the models with their
input sizes and frame counts. Per model and device count the single device runs once and each
scheme's speedup is measured against it (`measure.py`). The emulated lab brings the fleet up on
this host (or `--inventory` names a real one); measured times are converted to the real fleet's
time (x the lab's dilation) before they are stored or compared, so a baseline does not depend on
the dilation this host allowed.

A baseline (`suite/data/baselines/nightly/<matrix>.yaml`) holds per cell the speedup, the real-time latency
and the bytes moved, and per metric the tolerance: `suite nightly baseline RUN RUN ...` writes it
from two or more runs of one commit, setting each tolerance to a margin over the run-to-run
change measured between them (the 90th percentile over the cells). A cell whose speedup fell, or
whose latency or bytes moved rose, by more than its tolerance is measured again (its model and
device count) while the lab is still up, and fails only if the second measurement is past the
tolerance too: a one-off stall on a shared host does not fail the night, a slower plan does. A
night also fails (exit 1) on any frame that is not bit-exact and any cell that did not complete.

Each cell also keeps its frame-to-frame spread for the report's error bars (the run summary's
`statistics`): the latency's 10th and 90th percentiles over the frames, and the speedup's 95%
bootstrap interval (`suite.runtime.stats`).
`suite nightly report RUN` draws a stored night's figures and REPORT.md again from its tables.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd
from pydantic import Field, field_validator

from suite.errors import RunFailed, UserError
from suite.package import data
from suite.schema import Strict, read_yaml, shown, write_atomically
from suite.tracking.matrix import Baseline, Matrix
from suite.tracking.measure import Workload

if TYPE_CHECKING:
    from suite.fleet import Fleet
    from suite.inventory import Inventory
    from suite.runtime.outcome import RunSummary

MATRICES_DIR = data("nightly")
BASELINES_DIR = data("baselines", "nightly")
KEYS = ["model", "devices", "scheme"]  # one cell of the matrix
# the frame-to-frame spread behind the figures' error bars (RunSummary.statistics), latency in real time
SPREAD_COLUMNS = ["latency_low_s", "latency_high_s", "speedup_low", "speedup_high"]
MEASURED_COLUMNS = [*KEYS, "input_size", "frames", "complete", "bit_exact", "error", "speedup", "latency_s",
                    "throughput_fps", "bytes_moved", "latency_error", "throughput_error", "dilation",
                    "plan_hash", "remeasured", *SPREAD_COLUMNS, "energy_per_frame_j"]  # fmt: skip
# what a baseline holds per cell, and which way is worse: a speedup falls, a latency or a byte count rises
METRICS = {"speedup": "falls", "latency_s": "rises", "bytes_moved": "rises"}
NOISE_QUANTILE = 0.9  # noise: this quantile of the cells' run-to-run changes between the baseline's runs
MARGIN = 1.5  # tolerance = MARGIN x that noise ...
TOLERANCE_STEP = 0.05  # ... rounded up to a multiple of this (0 stays 0: bytes moved are exact) ...
# ... and never below this: two runs that happen to agree closely do not make a timing's noise small
TOLERANCE_FLOOR = {"speedup": 0.10, "latency_s": 0.10, "bytes_moved": 0.0}


class NightlyError(UserError):
    """A matrix or baseline that cannot be used; one line naming the file, the field and the fix."""


# ---- documents --------------------------------------------------------------------------------


class _ModelSpec(Strict):
    name: str
    input_size: str = Field(pattern=r"^\d+x\d+x\d+$", description="CxHxW")


class _MatrixSpec(Strict):
    schema_version: Literal[1]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    description: str
    fleet: str
    devices: list[int] = Field(min_length=1)
    schemes: list[str] = Field(min_length=1)
    models: list[_ModelSpec] = Field(min_length=1)
    frames: int = Field(ge=1, le=10_000)
    warmup: int = Field(ge=0, le=1_000)
    timeout_s: float = Field(default=120.0, gt=0, le=3600, allow_inf_nan=False)

    @field_validator("devices")
    @classmethod
    def _counts(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value):
            raise ValueError("every device count must be at least 1")
        return value

    @field_validator("schemes")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        from suite.schemes import SCHEMES

        unknown = [s for s in value if s not in SCHEMES or s == "single"]
        if unknown:
            raise ValueError(f"scheme '{unknown[0]}' is not one to compare with the single device; choose "
                             f"from {', '.join(s for s in SCHEMES if s != 'single')}")  # fmt: skip
        return value


def load_matrix(spec: str | Path) -> Matrix:
    """A matrix by name (`suite/data/nightly/<name>.yaml`) or path."""
    path = _locate(spec, MATRICES_DIR, "matrix")
    doc = read_yaml(path, _MatrixSpec, NightlyError)
    workloads = tuple(Workload(m.name, tuple(int(v) for v in m.input_size.split("x")), doc.frames, doc.warmup,
                               timeout_s=doc.timeout_s) for m in doc.models)  # fmt: skip
    from suite.fleet import load_fleet

    fleet = doc.fleet  # a bundled name, or a fleet YAML beside the matrix
    if "/" in fleet or fleet.endswith((".yaml", ".yml")):
        fleet = str((path.parent / fleet).resolve())
    loaded = load_fleet(fleet)
    too_many = [n for n in doc.devices if n > len(loaded.devices)]
    if too_many:
        raise NightlyError(f"{shown(path)}: devices: {too_many[0]} is more than fleet '{loaded.name}' has "
                           f"({len(loaded.devices)}); use a larger fleet or fewer devices")  # fmt: skip
    return Matrix(doc.name, doc.description, fleet, loaded.name, tuple(doc.devices), tuple(doc.schemes),
                  workloads, path)  # fmt: skip


def _locate(spec: str | Path, folder: Path, what: str) -> Path:
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or "/" in str(spec):
        return path
    found = folder / f"{spec}.yaml"
    if not found.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise NightlyError(f"no {what} '{spec}' in {shown(folder)}; choose one of {', '.join(names)} or give "
                           "a YAML path")  # fmt: skip
    return found


class _Metrics(Strict):
    speedup: float = Field(ge=0, allow_inf_nan=False)
    latency_s: float = Field(ge=0, allow_inf_nan=False)
    bytes_moved: float = Field(ge=0, allow_inf_nan=False)


class _CellSpec(_Metrics):
    model: str
    devices: int = Field(ge=1)
    scheme: str


class _BaselineSpec(Strict):
    schema_version: Literal[1]
    matrix: str
    matrix_digest: str
    written_utc: str
    runs: list[str] = Field(min_length=2, description="the report folders the values and noise come from")
    commits: list[str]
    noise: _Metrics = Field(description="90th percentile of the cells' relative changes between the runs")
    largest_change: _Metrics = Field(description="the largest relative change of a cell between the runs")
    tolerance: _Metrics = Field(description="relative change allowed before a night fails")
    cells: list[_CellSpec] = Field(min_length=1)


def load_baseline(path: Path) -> Baseline:
    doc = read_yaml(path, _BaselineSpec, NightlyError)
    cells = pd.DataFrame([c.model_dump() for c in doc.cells], columns=[*KEYS, *METRICS])
    return Baseline(doc.matrix, doc.matrix_digest, doc.tolerance.model_dump(), doc.noise.model_dump(), cells,
                    path)  # fmt: skip


# ---- the math: tables, noise, comparison (pure) -----------------------------------------------


def cell_rows(workload: Workload, devices: int, summaries: dict[str, RunSummary]) -> list[dict]:
    """One tidy row per scheme run (`measure_schemes`' summaries), times in the real fleet's time."""
    rows = []
    for scheme, s in summaries.items():
        predicted, figures, dilation = s.predicted, s.statistics, s.network.dilation
        latency = figures and figures.latency_s
        speedup = figures and figures.speedup_vs_single
        rows.append({"model": workload.model, "devices": devices, "scheme": scheme,
                     "input_size": "x".join(map(str, workload.input_size)), "frames": s.frames,
                     "complete": s.complete, "bit_exact": s.bit_exact, "error": s.error,
                     "speedup": s.speedup_vs_single, "latency_s": s.real_time.latency_s,
                     "throughput_fps": s.real_time.throughput_fps, "bytes_moved": s.bytes_moved,
                     "latency_error": predicted and predicted.latency_error,
                     "throughput_error": predicted and predicted.throughput_error,
                     "dilation": dilation, "plan_hash": s.plan_hash, "remeasured": False,
                     "latency_low_s": _times(latency and latency.p10, dilation),
                     "latency_high_s": _times(latency and latency.p90, dilation),
                     "speedup_low": speedup and speedup.low,
                     "speedup_high": speedup and speedup.high,
                     "energy_per_frame_j": s.energy and s.energy["per_frame_j"]})  # fmt: skip
    return rows


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def relative_changes(runs: list[pd.DataFrame]) -> pd.DataFrame:
    """Per cell and pair of runs, each metric's relative change |a - b| / min(a, b): how far a metric
    moves when nothing but chance changed."""
    found = []
    tables = [r.set_index(KEYS) for r in runs]
    for a, b in itertools.combinations(tables, 2):
        both = a.join(b, how="inner", suffixes=("_a", "_b"))
        pair = {}
        for metric in METRICS:
            x, y = both[f"{metric}_a"], both[f"{metric}_b"]
            low = pd.concat([x, y], axis=1).min(axis=1)
            pair[metric] = ((x - y).abs() / low).where(low > 0, 0.0)
        found.append(pd.DataFrame(pair))
    return pd.concat(found).dropna() if found else pd.DataFrame(columns=list(METRICS))


def noise(runs: list[pd.DataFrame]) -> dict[str, float]:
    """Per metric, the NOISE_QUANTILE quantile of the cells' run-to-run changes. Not the largest:
    on a shared host a few cells move far (a group measured while other jobs came and went), and a
    tolerance that covers them would let any regression through; a cell past its tolerance is
    measured again before it fails instead (`run_night`)."""
    changes = relative_changes(runs)
    return {m: float(changes[m].quantile(NOISE_QUANTILE)) if len(changes) else 0.0 for m in METRICS}


def tolerances(measured_noise: dict[str, float]) -> dict[str, float]:
    """MARGIN over the measured noise, rounded up to a multiple of TOLERANCE_STEP, at least
    TOLERANCE_FLOOR."""
    steps = {metric: math.ceil(round(MARGIN * value / TOLERANCE_STEP, 9))
             for metric, value in measured_noise.items()}  # fmt: skip
    return {metric: max(TOLERANCE_FLOOR[metric], n * TOLERANCE_STEP) for metric, n in steps.items()}


def cell_verdicts(measured: pd.DataFrame, baseline: Baseline | None) -> pd.DataFrame:
    """One row per measured cell: its verdict (`ok`, `regression`, `mismatch`, `failed`, `new`)
    and, where it is not ok, one sentence saying what moved, by how much, against which tolerance."""
    rows = []
    cells = [] if baseline is None else baseline.cells.to_dict("records")
    stored = {tuple(r[k] for k in KEYS): r for r in cells}
    for cell in measured.to_dict("records"):
        key = tuple(cell[k] for k in KEYS)
        name = f"{cell['scheme']} {cell['model']} on {cell['devices']} devices"
        row = {k: cell[k] for k in KEYS} | {"remeasured": bool(cell.get("remeasured", False))}
        before = stored.get(key)
        for metric in METRICS:
            row[f"baseline_{metric}"] = None if before is None else before[metric]
            row[metric] = cell[metric]
        reasons = []
        if not cell["complete"]:
            verdict = "failed"
            reasons.append(f"{name}: did not complete: {cell['error']}")
        elif not cell["bit_exact"]:
            verdict = "mismatch"
            reasons.append(f"{name}: an output differs from the monolithic model: {cell['error']}")
        elif before is None:
            verdict = "new"
        else:
            for metric, worse in METRICS.items():
                reason = _moved(name, metric, worse, before[metric], cell[metric], baseline.tolerance[metric])
                if reason:
                    reasons.append(reason)
            verdict = "regression" if reasons else "ok"
        rows.append(row | {"verdict": verdict, "reason": "; ".join(reasons)})
    columns = [*KEYS, "remeasured", *(c for m in METRICS for c in (f"baseline_{m}", m)), "verdict", "reason"]
    return pd.DataFrame(rows, columns=columns)  # the columns even when no cell was measured


def _moved(name: str, metric: str, worse: str, before: float, now: float | None, tolerance: float) -> str:
    """A sentence when `metric` moved the worse way by more than `tolerance`, else ''."""
    if now is None or (isinstance(now, float) and math.isnan(now)):
        return f"{name}: no {metric} measured (baseline {before:.4g})"
    if before == 0:
        return "" if now == 0 or worse == "falls" else f"{name}: {metric} rose from 0 to {now:.4g}"
    change = now / before - 1
    if (worse == "falls" and change < -tolerance) or (worse == "rises" and change > tolerance):
        moved = {"falls": "fell", "rises": "rose"}[worse]
        return (
            f"{name}: {metric} {moved} from {before:.4g} to {now:.4g} ({change:+.1%}; "
            f"tolerance {tolerance:.0%})"
        )
    return ""


def baseline_document(matrix: Matrix, runs: list[tuple[Path, pd.DataFrame, str]]) -> dict:
    """The baseline of `matrix` from two or more runs (report folder, measurements, commit): each
    cell's metrics averaged over the runs, the measured noise and the tolerances it implies."""
    if len(runs) < 2:
        raise NightlyError("a baseline needs two or more runs of one commit: their differences are the noise "
                           "its tolerances come from")  # fmt: skip
    tables = [table for _, table, _ in runs]
    for folder, table, _ in runs:
        bad = table[~(table["complete"] & table["bit_exact"])]
        if len(bad):
            cell = bad.iloc[0]
            raise NightlyError(
                f"run {shown(folder)}: {cell['scheme']} {cell['model']} on {cell['devices']} "
                "devices did not complete bit-exact; a baseline takes clean runs only"
            )
    measured_noise = noise(tables)
    mean = pd.concat(tables).groupby(KEYS, sort=False)[list(METRICS)].mean().reset_index()
    cells = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
             for row in mean.to_dict("records")]  # fmt: skip
    return {"schema_version": 1, "matrix": matrix.name, "matrix_digest": matrix.digest,
            "written_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "runs": [str(folder) for folder, _, _ in runs], "commits": sorted({c for _, _, c in runs}),
            "noise": {k: round(v, 4) for k, v in measured_noise.items()},
            "largest_change": {k: round(float(v), 4) for k, v in relative_changes(tables).max().items()},
            "tolerance": tolerances(measured_noise), "cells": cells}  # fmt: skip


# ---- running it (side effects) ----------------------------------------------------------------


def measure_matrix(matrix: Matrix, fleet: Fleet, inventory: Inventory | None, runs: Path,
                   say: Callable[[str], None]) -> Iterator[dict]:  # fmt: skip
    """Every cell of the matrix on `fleet`'s first N devices (through `inventory`, or as local
    workers without one), one tidy row per run as it completes; each run's results are saved
    under `runs/<model>-<N>/<scheme>/`."""
    groups = [(w, n) for w in matrix.workloads for n in matrix.devices]
    for index, (workload, devices) in enumerate(groups, 1):
        say(f"[{index}/{len(groups)}] {workload.label} on {devices} devices of {fleet.name}")
        yield from _measure_group(workload, devices, matrix.schemes, fleet, inventory,
                                  runs / f"{workload.model}-{devices}", say)  # fmt: skip


def _measure_group(
    workload: Workload,
    devices: int,
    schemes: Sequence[str],
    fleet: Fleet,
    inventory: Inventory | None,
    runs: Path,
    say: Callable[[str], None],
) -> list[dict]:
    from suite.tracking.measure import first_devices, measure_schemes

    summaries = measure_schemes(workload, first_devices(fleet, devices), schemes, inventory, runs,
                                say=lambda line: say(f"  {line}"))  # fmt: skip
    return cell_rows(workload, devices, summaries)


def confirm(matrix: Matrix, fleet: Fleet, inventory: Inventory | None, runs: Path, rows: list[dict],
            stored: Baseline, say: Callable[[str], None]) -> list[dict]:  # fmt: skip
    """`rows` with every cell past its tolerance measured again (with its model and device count's
    single device, the new reference for its speedup); the new rows are marked `remeasured`."""
    first = cell_verdicts(pd.DataFrame(rows, columns=MEASURED_COLUMNS), stored)
    moved = first[first["verdict"] == "regression"]
    again: dict[tuple, dict] = {}
    for (model, devices), cells in moved.groupby(["model", "devices"], sort=False):
        schemes = [s for s in cells["scheme"] if s != "single"]
        say(f"re-measuring {model} on {devices} devices to confirm: {'; '.join(cells['reason'])}")
        workload = next(w for w in matrix.workloads if w.model == model)
        for row in _measure_group(workload, int(devices), schemes, fleet, inventory,
                                  runs / f"{model}-{devices}-again", say):  # fmt: skip
            again[tuple(row[k] for k in KEYS)] = row | {"remeasured": True}
    return [again.get(tuple(row[k] for k in KEYS), row) for row in rows]


@contextlib.contextmanager
def emulated_lab(fleet: str, dilate: str, name: str, say: Callable[[str], None]) -> Iterator[Inventory]:
    """The fleet as an emulated lab on this host, deployed; taken down on the way out, whatever
    happened (a lab of this name left by a killed run is taken down first)."""
    from suite.inventory import load_inventory
    from suite.orchestrate import lab
    from suite.orchestrate.deploy import deploy

    if lab.leftovers(name):
        say(f"lab '{name}' was left up by an earlier run; taking it down first")
        lab.down(name)
    made = lab.up(fleet, dilate, name, say=say)
    try:
        say(f"lab '{name}' is up: {len(made.devices)} devices of {made.fleet_name}, dilation "
            f"{made.dilation:g}; deploying")  # fmt: skip
        inventory = load_inventory(made.inventory_path())
        failed = [r for r in deploy(inventory) if r.status == "failed"]
        if failed:
            raise NightlyError(f"deploying to lab '{name}' failed: {failed[0].error}")
        yield inventory
    finally:
        lab.down(name)
        say(f"lab '{name}' is down")


@dataclass(frozen=True)
class Night:
    folder: Path  # the report
    comparison: pd.DataFrame
    error: str | None  # what stopped the night before every cell ran

    @property
    def failures(self) -> list[str]:
        bad = self.comparison[self.comparison["verdict"].isin(["regression", "mismatch", "failed"])]
        return [*bad["reason"], *([self.error] if self.error else [])]


def run_night(matrix: Matrix, inventory: str | None = None, dilate: str = "auto", lab_name: str = "nightly",
              root: Path = Path("reports"), baseline: Path | None = None,
              say: Callable[[str], None] = lambda _: None) -> Night:  # fmt: skip
    """Run the matrix on the emulated lab (or the devices of `inventory`), compare it with the
    stored baseline and write the dated report; the lab is down again whatever happened. A
    Ctrl-C still writes the report of the cells done, then propagates."""
    from suite.inventory import load_inventory
    from suite.runtime.metrics import run_metadata
    from suite.tracking.report import write_report

    stored = _baseline_for(matrix, baseline)
    started = datetime.now()
    folder = report_folder(root, started)
    if folder.exists():
        raise NightlyError(f"{shown(folder)} exists; wait a second or write elsewhere with -o")
    partial = folder.with_name(f".{folder.name}.partial")
    partial.mkdir(parents=True)
    rows: list[dict] = []
    error, stopped = None, None
    about = {"matrix": matrix.name, "matrix_path": str(matrix.path.resolve()), "matrix_digest": matrix.digest,
             "baseline": stored and str(stored.path), **run_metadata()}  # fmt: skip
    try:
        if inventory is not None:
            fleet_inventory = load_inventory(inventory)
            about["network"] = f"the devices of inventory {fleet_inventory.name}"
            _measure(matrix, fleet_inventory, partial / "runs", stored, rows, say)
        else:
            with emulated_lab(matrix.fleet, dilate, lab_name, say) as lab_inventory:
                about["network"] = asdict(lab_inventory.lab)
                _measure(matrix, lab_inventory, partial / "runs", stored, rows, say)
    except (UserError, RunFailed) as exc:
        error = str(exc)
    except BaseException as exc:  # Ctrl-C, SIGTERM or a bug: the report of the cells done, then propagate
        stopped = exc
        error = ("interrupted (Ctrl-C or SIGTERM) before every cell ran" if isinstance(exc, KeyboardInterrupt)
                 else f"{type(exc).__name__}: {exc}")  # fmt: skip
    measured = pd.DataFrame(rows, columns=MEASURED_COLUMNS)
    comparison = cell_verdicts(measured, stored)
    missing = _not_run(matrix, measured)
    if missing and error is None:
        error = f"{len(missing)} cells of the matrix did not run, e.g. {missing[0]}"
    night = Night(folder, comparison, error)
    about |= {"seconds": (datetime.now() - started).total_seconds(), "error": error}
    try:
        write_report(partial, matrix, measured, comparison, stored, about, night.failures)
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written stays behind
        raise
    if stopped is not None:
        raise stopped
    return night


def _measure(matrix: Matrix, inventory: Inventory, runs: Path, stored: Baseline | None, rows: list[dict],
             say: Callable[[str], None]) -> None:  # fmt: skip
    """The matrix's rows into `rows` as they come (kept if something stops the night), then the
    cells past their tolerance measured again."""
    for row in measure_matrix(matrix, inventory.fleet, inventory, runs, say):
        rows.append(row)
    if stored is not None:
        rows[:] = confirm(matrix, inventory.fleet, inventory, runs, rows, stored, say)


def _baseline_for(matrix: Matrix, path: Path | None) -> Baseline | None:
    """The stored baseline to compare with (default: suite/data/baselines/nightly/<matrix>.yaml), if any."""
    path = path or BASELINES_DIR / f"{matrix.name}.yaml"
    if not path.is_file():
        return None
    stored = load_baseline(path)
    if stored.matrix_digest != matrix.digest:
        raise NightlyError(f"{shown(path)} was written for another version of matrix '{matrix.name}' (it "
                           "changed since); write a new baseline with `suite nightly baseline`")  # fmt: skip
    return stored


def _not_run(matrix: Matrix, measured: pd.DataFrame) -> list[str]:
    done = set(zip(measured["model"], measured["devices"], measured["scheme"]))
    return [f"{s} {m} on {n} devices" for m, n, s in matrix.cells if (m, n, s) not in done]


def report_folder(root: Path, when: datetime) -> Path:
    """`<root>/nightly/<date>T<time>`: dated, one per run, sorted by name."""
    return root / "nightly" / when.strftime("%Y-%m-%dT%H%M%S")


def read_measurements(folder: Path) -> tuple[pd.DataFrame, dict]:
    """A past night's measurements and what it recorded about itself (matrix, commit)."""
    table, about = folder / "measurements.csv", folder / "run.json"
    if not table.is_file() or not about.is_file():
        raise NightlyError(f"{shown(folder)} is not a nightly report folder (no measurements.csv and "
                           "run.json); give folders `suite nightly run` wrote")  # fmt: skip
    measured = pd.read_csv(table).reindex(columns=MEASURED_COLUMNS)  # a night before a column was added
    return measured.fillna({"remeasured": False}), json.loads(about.read_text())


def render_stored(folder: Path, matrix: str | None = None) -> list[str]:
    """A stored night's figures and REPORT.md drawn again from its tables, without a lab; the
    figures' file names. `matrix` when the one the night ran has moved (its digest must match)."""
    from suite.tracking.report import render

    measured, about = read_measurements(folder)
    spec = matrix or (about["matrix_path"] if Path(about["matrix_path"]).is_file() else about["matrix"])
    ran = load_matrix(spec)
    if ran.digest != about["matrix_digest"]:
        raise NightlyError(f"{shown(folder)} ran another matrix than {shown(ran.path)} (it changed since); "
                           "give the one it ran with --matrix")  # fmt: skip
    comparison = pd.read_csv(folder / "comparison.csv", dtype={"reason": str}).fillna({"reason": ""})
    if "remeasured" not in comparison:  # a night before re-measuring existed
        comparison["remeasured"] = False
    stored = about.get("baseline")
    baseline = load_baseline(Path(stored)) if stored and Path(stored).is_file() else None
    failures = Night(folder, comparison, about.get("error")).failures
    return render(folder, ran, measured, comparison, baseline, about, failures)


def write_baseline(matrix: Matrix, folders: list[Path], output: Path) -> dict:
    import yaml

    runs = []
    for folder in folders:
        table, about = read_measurements(folder)
        if about["matrix_digest"] != matrix.digest:
            raise NightlyError(f"{shown(folder)} ran another matrix than {shown(matrix.path)} (it changed "
                               "since); run it again")  # fmt: skip
        runs.append((folder, table, (about.get("git") or {}).get("commit", "unknown")))
    document = baseline_document(matrix, runs)
    output.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Stored baseline of the nightly matrix '{matrix.name}', written by `suite nightly\n"
        f"# baseline` from {len(runs)} runs of one commit. tolerance = {MARGIN} x noise (the 90th\n"
        f"# percentile of the cells' relative changes between the runs), rounded up to "
        f"{TOLERANCE_STEP:.0%} and at least {TOLERANCE_FLOOR['speedup']:.0%} for timings.\n"
    )
    write_atomically(output, header + yaml.safe_dump(document, sort_keys=False, width=110))
    return document
