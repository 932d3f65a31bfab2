"""What a run measured, in forms people and tools read: a Chrome trace, tidy tables, provenance.

The runtime records `Event`s on one clock; this module only turns them into outputs, so the
arithmetic (interval unions, windows) is testable without a fleet.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from suite.errors import UserError

KINDS = ("compute", "send", "recv")  # also the Chrome trace thread ids 1, 2, 3, one track each
VERSIONED = ("torch", "numpy", "onnxruntime", "pandas", "suite")


@dataclass(frozen=True)
class Event:
    """One interval of work on one device; times are seconds on one clock, already aligned by the caller."""

    device: str
    rank: int
    kind: str  # "compute" | "send" | "recv"
    frame: int
    stage: int
    start_s: float
    end_s: float
    bytes: int = 0
    peer: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"event kind {self.kind!r} is not one of {KINDS}")
        if self.end_s < self.start_s:
            raise ValueError(f"event ends before it starts: {self}")

    def shifted(self, seconds: float) -> Event:
        """The same event `seconds` earlier: onto another clock, or relative to a run's start."""
        return replace(self, start_s=self.start_s - seconds, end_s=self.end_s - seconds)


def chrome_trace(events: Iterable[Event], devices: list[str]) -> dict:
    """A trace Perfetto and chrome://tracing load: a process per device, a track per kind of work.

    Compute, send and receive get separate threads so that overlapping communication and
    computation show side by side; times are microseconds from the first event.
    """
    events = list(events)
    pids = _pids(devices, events)
    origin = min((e.start_s for e in events), default=0.0)
    meta: list[dict] = []
    for device, pid in pids.items():
        meta.append(_meta("process_name", pid, 0, {"name": device}))
        meta.append(_meta("process_sort_index", pid, 0, {"sort_index": pid}))
        meta += [_meta("thread_name", pid, tid, {"name": kind}) for tid, kind in enumerate(KINDS, start=1)]
    spans = [{"ph": "X", "name": f"{e.kind} s{e.stage} f{e.frame}", "cat": e.kind,
              "pid": pids[e.device], "tid": KINDS.index(e.kind) + 1,
              "ts": (e.start_s - origin) * 1e6, "dur": (e.end_s - e.start_s) * 1e6,
              "args": {"frame": e.frame, "stage": e.stage, "rank": e.rank, "bytes": e.bytes, "peer": e.peer}}
             for e in sorted(events, key=lambda e: e.start_s)]  # fmt: skip
    return {"traceEvents": meta + spans, "displayTimeUnit": "ms"}


def _meta(event: str, pid: int, tid: int, args: dict) -> dict:
    """A metadata event: names and orders the trace's processes (devices) and threads (kinds)."""
    return {"ph": "M", "name": event, "pid": pid, "tid": tid, "args": args}


def device_table(events: Iterable[Event], devices: list[str], start_s: float, end_s: float) -> pd.DataFrame:
    """One row per device over the window [start_s, end_s]: busy seconds by kind, idle, bytes, utilisation.

    Events are clipped to the window. Each kind's seconds are the union of its intervals (sends to
    several peers may overlap); idle is the window minus the union of all busy intervals, because
    communication overlaps computation. Bytes count the transfers that end inside the window.
    """
    if end_s <= start_s:
        raise ValueError(f"empty window: end_s {end_s} <= start_s {start_s}")
    events = list(events)
    _pids(devices, events)
    window = end_s - start_s
    rows = []
    for device in devices:
        mine = [e for e in events if e.device == device]
        spans = {kind: [(max(e.start_s, start_s), min(e.end_s, end_s)) for e in mine if e.kind == kind]
                 for kind in KINDS}  # fmt: skip
        busy = {kind: _union_s(spans[kind]) for kind in KINDS}
        inside = [e for e in mine if start_s <= e.end_s <= end_s]
        rows.append({
            "device": device,
            "compute_s": busy["compute"],
            "send_s": busy["send"],
            "recv_s": busy["recv"],
            "idle_s": window - _union_s([span for kind in KINDS for span in spans[kind]]),
            "bytes_sent": sum(e.bytes for e in inside if e.kind == "send"),
            "bytes_received": sum(e.bytes for e in inside if e.kind == "recv"),
            "utilisation": busy["compute"] / window,
        })
    return pd.DataFrame(rows, columns=["device", "compute_s", "send_s", "recv_s", "idle_s", "bytes_sent",
                                       "bytes_received", "utilisation"])  # fmt: skip


def _pids(devices: list[str], events: list[Event]) -> dict[str, int]:
    """Chrome trace pids (1-based, in fleet order); an event from outside the fleet is a runtime bug."""
    pids = {device: pid for pid, device in enumerate(devices, start=1)}
    unknown = {e.device for e in events} - pids.keys()
    if unknown:
        raise ValueError(f"events from devices {sorted(unknown)} that are not in {devices}")
    return pids


def _union_s(spans: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping intervals (empty and inverted ones count zero)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total


def run_metadata(**extra) -> dict:
    """Where and with what a run happened, so a result can be reproduced; `extra` keys are added last.

    Extra keys win over the defaults, so the runtime can pin, say, the timestamp of the run's start.
    """
    return {
        "git": _git(Path(__file__).resolve().parent),
        "versions": {"python": platform.python_version()} | {name: _version(name) for name in VERSIONED},
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    } | extra


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(directory: Path) -> dict | None:
    """The checkout's commit and whether tracked files differ from it; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                                capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


RESERVED = ".suite-run"  # the marker a run leaves in the results folder it has claimed


def reserve_results(directory: Path) -> Path:
    """Claim a results folder before a run starts, so a folder that is taken or not empty is refused
    at once rather than after every frame has run; `save_results` fills it, `release_results` gives
    back an unused claim. Two runs cannot claim the same folder (the marker is created exclusively)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / RESERVED, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise UserError(f"results directory '{directory}' is being written by another run (it holds "
                        f"{RESERVED}); pass another output directory") from None  # fmt: skip
    except OSError as exc:
        raise UserError(f"results directory '{directory}' cannot be created ({exc.strerror}); pass a "
                        "writable output directory") from None  # fmt: skip
    with os.fdopen(fd, "w") as marker:
        marker.write(str(os.getpid()))
    if any(p.name != RESERVED for p in directory.iterdir()):
        release_results(directory)
        raise UserError(f"results directory '{directory}' already exists and is not empty; pass a new "
                        "output directory or remove the old one")  # fmt: skip
    return directory


def release_results(directory: Path) -> None:
    """Give back a claimed folder that got no results (removed if nothing else is in it)."""
    (Path(directory) / RESERVED).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        Path(directory).rmdir()


def save_results(directory: Path, tables: dict[str, pd.DataFrame], documents: dict[str, dict],
                 folders: dict[str, Path] | None = None) -> Path:  # fmt: skip
    """Write `<name>.csv` per table and `<name>.json` per document, and move in each of `folders`
    (worker logs) as `<name>/`, all at once or not at all.

    Files go to a hidden sibling directory that is renamed into place at the end, so an interrupted
    run leaves no half-written results folder behind. An existing non-empty directory is never
    touched; one this run claimed with `reserve_results` is filled.
    """
    directory = Path(directory)
    names = [f"{name}.csv" for name in tables] + [f"{name}.json" for name in documents] + list(folders or {})
    bad = [name for name in names if Path(name).name != name or name.startswith(".")]
    if bad:
        raise ValueError(f"result names must be plain file names: {bad}")
    _refuse_existing(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent))
    try:
        for name, table in tables.items():
            _write(staging / f"{name}.csv", table.to_csv(index=False))
        for name, document in documents.items():
            _write(staging / f"{name}.json", json.dumps(document, indent=2, default=_jsonable) + "\n")
        for name, folder in (folders or {}).items():
            shutil.copytree(folder, staging / name)
        staging.chmod(0o755)  # mkdtemp makes it private; results are for everyone to read
        (directory / RESERVED).unlink(missing_ok=True)
        try:
            staging.rename(directory)  # atomic; replaces only a missing or empty directory
        except OSError:
            _refuse_existing(directory)  # it appeared meanwhile: say so as a user error
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _refuse_existing(directory: Path) -> None:
    taken = directory.is_dir() and any(p.name != RESERVED for p in directory.iterdir())
    if (directory.exists() and not directory.is_dir()) or taken:
        raise UserError(f"results directory '{directory}' already exists and is not empty; "
                        "pass a new output directory or remove the old one")


def _write(path: Path, text: str) -> None:
    """Write and fsync, so the rename that publishes the directory never exposes unwritten data."""
    with path.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def _jsonable(value: object) -> object:
    """numpy scalars and arrays (pandas hands them out) and paths as plain JSON values."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
