"""What a run measured, in forms people and tools read: a Chrome trace, tidy tables, provenance.

The runtime records `Event`s on one clock; this module only turns them into outputs, so the
arithmetic (interval unions, windows) is testable without a fleet.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from suite import package
from suite.errors import RunFailed, UserError
from suite.processes import process_alive

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
    """A trace Perfetto and chrome://tracing load: a process per device, tracks per kind of work.

    Compute, sends and receives get separate tracks so that overlapping communication and
    computation show side by side; sends and receives posted ahead overlap one another (and frames
    in flight compute at once), so each takes the first of its kind's tracks ("send", "send 2", ...)
    free at its start, as slices on one track must nest. An arrow (a flow) leads from each send to
    the receive it matches: the same pair, frame and bytes, in order. Times are microseconds from
    the first event.
    """
    events = sorted(events, key=lambda e: e.start_s)
    pids = _pids(devices, events)
    origin = min((e.start_s for e in events), default=0.0)
    tracks = _tracks(events)
    flows = _flows(events)
    meta: list[dict] = []
    for device, pid in pids.items():
        meta.append(_meta("process_name", pid, 0, {"name": device}))
        meta.append(_meta("process_sort_index", pid, 0, {"sort_index": pid}))
        named = {(KINDS.index(kind) + 1, kind) for kind in KINDS}
        named |= {(tid, name) for (d, _), (tid, name) in tracks.items() if d == device}
        meta += [_meta("thread_name", pid, tid, {"name": name}) for tid, name in sorted(named)]
    spans = []
    for k, e in enumerate(events):
        args = {"frame": e.frame, "stage": e.stage, "rank": e.rank, "bytes": e.bytes, "peer": e.peer}
        span = {"ph": "X", "name": f"{e.kind} s{e.stage} f{e.frame}", "cat": e.kind, "pid": pids[e.device],
                "tid": tracks[(e.device, k)][0], "ts": (e.start_s - origin) * 1e6,
                "dur": (e.end_s - e.start_s) * 1e6, "args": args}  # fmt: skip
        if k in flows:
            span |= {"bind_id": flows[k], "flow_out" if e.kind == "send" else "flow_in": True}
        spans.append(span)
    return {"traceEvents": meta + spans, "displayTimeUnit": "ms"}


def _tracks(events: list[Event]) -> dict[tuple[str, int], tuple[int, str]]:
    """Each event's (tid, track name) by (device, index in `events`, sorted by start): the first of
    its kind's tracks free at its start (frames in flight compute at once on the coordinator)."""
    ends: dict[tuple[str, str], list[float]] = {}
    placed = {}
    for k, e in enumerate(events):
        lanes = ends.setdefault((e.device, e.kind), [])
        lane = next((i for i, end in enumerate(lanes) if end <= e.start_s), len(lanes))
        if lane == len(lanes):
            lanes.append(e.end_s)
        else:
            lanes[lane] = e.end_s
        tid = KINDS.index(e.kind) + 1 + 10 * lane  # lane 0 keeps the kind's own tid (1, 2, 3)
        placed[(e.device, k)] = (tid, e.kind if lane == 0 else f"{e.kind} {lane + 1}")
    return placed


def _flows(events: list[Event]) -> dict[int, int]:
    """A flow id for each send and the receive it matches (by index in `events`)."""
    flows = {}
    for flow, (send, recv) in enumerate(_matches(events), start=1):
        flows[send] = flows[recv] = flow
    return flows


def _matches(events: list[Event]) -> list[tuple[int, int]]:
    """Each send and the receive it matches, as indices in `events` (sorted by start): the k-th send
    from A to B of a frame's n bytes is the k-th such receive on B."""
    sends: dict[tuple, list[int]] = {}
    recvs: dict[tuple, list[int]] = {}
    for k, e in enumerate(events):
        if e.kind == "send":
            sends.setdefault((e.device, e.peer, e.frame, e.bytes), []).append(k)
        elif e.kind == "recv":
            recvs.setdefault((e.peer, e.device, e.frame, e.bytes), []).append(k)
    return [pair for key, out in sends.items() for pair in zip(out, recvs.get(key, []))]


def _transfer_starts(events: list[Event]) -> dict[int, float]:
    """When each send's and receive's transfer began (by index in `events`, sorted by start): when the
    other end was posted, clamped into it (the coordinator aligns the devices' clocks only to a small
    offset). Before that it waits for its peer: a receive for a sender still busy with an earlier stage,
    a send (gloo's large messages block until the receive is posted) for a receiver. A send or receive
    without its match in `events` is transfer throughout."""
    posted = {}
    for send, recv in _matches(events):
        posted[send], posted[recv] = events[recv].start_s, events[send].start_s
    return {k: min(max(posted.get(k, e.start_s), e.start_s), e.end_s)
            for k, e in enumerate(events) if e.kind in ("send", "recv")}  # fmt: skip


def _meta(event: str, pid: int, tid: int, args: dict) -> dict:
    """A metadata event: names and orders the trace's processes (devices) and threads (kinds)."""
    return {"ph": "M", "name": event, "pid": pid, "tid": tid, "args": args}


def device_table(events: Iterable[Event], devices: list[str], start_s: float, end_s: float) -> pd.DataFrame:
    """One row per device over the window [start_s, end_s]: busy seconds by kind, idle, bytes, utilisation.

    Events are clipped to the window. Each kind's seconds are the union of its intervals (sends to
    several peers may overlap); idle is the window minus the union of all busy intervals, because
    communication overlaps computation. `recv_wait_s` is the part of `recv_s` spent waiting for a
    sender to post its message, while no other receive's message was moving (the rest of `recv_s`
    is transfer); `send_wait_s` is the same for `send_s`, waiting for a receiver to post its receive.
    Bytes count the transfers that end inside the window.
    """
    if end_s <= start_s:
        raise ValueError(f"empty window: end_s {end_s} <= start_s {start_s}")
    events = sorted(events, key=lambda e: e.start_s)
    _pids(devices, events)
    transfer_starts = _transfer_starts(events)
    window = end_s - start_s
    rows = []
    for device in devices:
        mine = [e for e in events if e.device == device]
        spans = {kind: [(max(e.start_s, start_s), min(e.end_s, end_s)) for e in mine if e.kind == kind]
                 for kind in KINDS}  # fmt: skip
        busy = {kind: _union_s(spans[kind]) for kind in KINDS}
        transfers = {kind: _union_s([(max(transfer_starts[k], start_s), min(e.end_s, end_s))
                                     for k, e in enumerate(events) if e.device == device and e.kind == kind])
                     for kind in ("send", "recv")}  # fmt: skip
        waits = {kind: max(busy[kind] - transfers[kind], 0.0) for kind in transfers}  # 0.0: float rounding
        inside = [e for e in mine if start_s <= e.end_s <= end_s]
        rows.append(
            {
                "device": device,
                "compute_s": busy["compute"],
                "send_s": busy["send"],
                "send_wait_s": waits["send"],
                "recv_s": busy["recv"],
                "recv_wait_s": waits["recv"],
                "idle_s": window - _union_s([span for kind in KINDS for span in spans[kind]]),
                "bytes_sent": sum(e.bytes for e in inside if e.kind == "send"),
                "bytes_received": sum(e.bytes for e in inside if e.kind == "recv"),
                "utilisation": busy["compute"] / window,
            }
        )
    return pd.DataFrame(rows, columns=["device", "compute_s", "send_s", "send_wait_s", "recv_s",
                                       "recv_wait_s", "idle_s", "bytes_sent", "bytes_received",
                                       "utilisation"])  # fmt: skip


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


def host_state(sample_s: float = 0.25) -> dict:
    """What else this host is doing (Linux): load averages, cores, the CPU governor, and the other
    processes busiest over `sample_s` (CPU share of one core, at least 10%): a run's times are only
    as good as the cores it had, so its provenance says what it shared them with."""

    def cpu_times() -> dict[int, tuple[str, int]]:
        times = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                name, fields = (
                    text[text.index("(") + 1 : text.rindex(")")],
                    text[text.rindex(")") + 2 :].split(),
                )
                times[int(stat.parent.name)] = (name, int(fields[11]) + int(fields[12]))  # utime + stime
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
        return times

    before = cpu_times()
    time.sleep(sample_s)
    after = cpu_times()
    ticks = os.sysconf("SC_CLK_TCK") * sample_s
    busy = sorted(((after[pid][1] - before[pid][1]) / ticks, pid, after[pid][0])
                  for pid in after.keys() & before.keys() if pid != os.getpid())  # fmt: skip
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "cores": os.cpu_count() or 1,
        "governor": governor.read_text().strip() if governor.is_file() else None,
        "busy": [
            {"pid": pid, "name": name, "cpu": round(share, 2)}
            for share, pid, name in reversed(busy[-5:])
            if share >= 0.1
        ],  # fmt: skip
    }


def run_metadata(**extra) -> dict:
    """Where and with what a run happened, so a result can be reproduced; `extra` keys are added last.

    Extra keys win over the defaults, so the runtime can pin, say, the timestamp of the run's start.
    """
    return {
        "git": None if (checkout := package.checkout()) is None else _git(checkout),
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
    back an unused claim. Two runs cannot claim the same folder (the marker is created exclusively).

    The marker names its run (pid, host, the process's start time): a claim whose run is gone (a
    SIGKILLed coordinator) is reclaimed with a note, with the worker logs and staging it left."""
    directory = Path(directory)
    marker = directory / RESERVED
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = _claim(marker)
    except FileExistsError:
        raise UserError(f"results directory '{directory}' is being written by another run "
                        f"({_describe_owner(marker)}); pass another output directory") from None  # fmt: skip
    except OSError as exc:
        raise UserError(f"results directory '{directory}' cannot be created ({exc.strerror}); pass a "
                        "writable output directory") from None  # fmt: skip
    try:
        with os.fdopen(fd, "w") as claim:
            json.dump(_owner(os.getpid()), claim)
    except OSError as exc:
        release_results(directory)
        raise UserError(f"results directory '{directory}' cannot be claimed ({exc.strerror}); free space "
                        "on its disk or pass another output directory") from None  # fmt: skip
    if any(p.name != RESERVED for p in directory.iterdir()):
        release_results(directory)
        raise UserError(f"results directory '{directory}' already exists and is not empty; pass a new "
                        "output directory or remove the old one")  # fmt: skip
    return directory


def logs_folder(directory: Path) -> Path:
    """Where a run writes its worker logs until they move into its results (`save_results`)."""
    return Path(directory).parent / f".{Path(directory).name}.logs"


def keep_failed_logs(directory: Path) -> Path | None:
    """The workers' logs (`logs_folder`) of a run that failed before it saved anything, moved to
    `<directory>.failed-logs` (`-2`, `-3`, ... beside an earlier failure's) for its error to name: a
    worker's last line is seldom the whole story. None, and nothing kept, when no worker wrote a line."""
    directory = Path(directory)
    logs = logs_folder(directory)
    if not logs.is_dir() or not any(f.is_file() and f.stat().st_size for f in logs.rglob("*")):
        return None
    name = f"{directory.name}.failed-logs"
    kept, n = directory.with_name(name), 1
    while kept.exists():
        n += 1
        kept = directory.with_name(f"{name}-{n}")
    logs.rename(kept)
    return kept


def _claim(marker: Path) -> int:
    """The new marker's file descriptor; raises FileExistsError while a live run holds it. A dead
    run's marker is removed under a lock, and only if it is still that run's, so two runs that
    reclaim at once never both win."""
    try:
        return os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        pass
    owner = None
    try:
        with marker.open() as stale:
            try:
                fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FileExistsError(marker) from None  # another run is reclaiming it
            text = stale.read()
            owner = _claim_owner(text)
            gone = (_abandoned(text, os.fstat(stale.fileno()).st_mtime) if owner is None
                    else not _running(owner))  # fmt: skip
            if not gone or os.stat(marker).st_ino != os.fstat(stale.fileno()).st_ino:
                raise FileExistsError(marker)
            marker.unlink()
    except FileNotFoundError:
        gone = False  # given back meanwhile
    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    if gone:
        directory = marker.parent
        for left in [logs_folder(directory), *directory.parent.glob(f".{directory.name}.*.partial")]:
            shutil.rmtree(left, ignore_errors=True)
        who = f"pid {owner['pid']}" if owner else "it died before naming itself"
        print(f"note: reclaimed results directory '{directory}': the run that claimed it ({who}) is gone",
              file=sys.stderr)  # fmt: skip
    return fd


CLAIM_WRITE_S = 10.0  # a run names itself in its claim microseconds after creating it


def _abandoned(text: str, written: float) -> bool:
    """Whether an empty claim was left by a run killed between creating it and naming itself in it
    (empty for longer than that takes); any other unreadable claim is left to the user."""
    return not text and time.time() - written > CLAIM_WRITE_S


def _owner(pid: int) -> dict:
    return {"pid": pid, "host": socket.gethostname(), "started": _started(pid)}


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat's 22nd field): with the
    pid it names one process, even after the pid is reused. None if there is no such process (or
    no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _claim_owner(text: str) -> dict | None:
    """The run a marker names, or None if it names none (being written, or from an older suite)."""
    try:
        owner = json.loads(text)
        return {"pid": int(owner["pid"]), "host": str(owner["host"]), "started": owner["started"]}
    except (ValueError, KeyError, TypeError):
        return None


def _running(owner: dict) -> bool:
    """Whether a claim's run may still be writing: on another host it cannot be told, so yes; on
    this one, its pid runs and started when the claim says."""
    if owner["host"] != socket.gethostname():
        return True
    started = _started(owner["pid"])
    if started is not None or owner["started"] is not None:
        return started is not None and started == owner["started"]
    return process_alive(owner["pid"])  # no start time to compare: whether the pid runs at all


def _describe_owner(marker: Path) -> str:
    try:
        owner = _claim_owner(marker.read_text())
    except OSError:
        owner = None
    if owner is None:
        return f"it holds {RESERVED}; remove that file if no run is writing there"
    return f"pid {owner['pid']} on {owner['host']}, per its {RESERVED}"


def release_results(directory: Path) -> None:
    """Give back a claimed folder that got no results (removed if nothing else is in it)."""
    (Path(directory) / RESERVED).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        Path(directory).rmdir()


def save_results(directory: Path, tables: dict[str, pd.DataFrame], documents: dict[str, dict],
                 folders: dict[str, Path] | None = None) -> Path:  # fmt: skip
    """Write `<name>.csv` per table and `<name>.json` per document, and move in each of `folders`
    (worker logs) as `<name>/`.

    Files go to a hidden sibling directory that is renamed into place at the end, so an interrupted
    run leaves no half-written results folder behind. An existing non-empty directory is never
    touched; one this run claimed with `reserve_results` is filled. A full disk (or any write error)
    keeps the whole files written so far, smallest first so that as many as fit are kept, and
    raises RunFailed naming what is missing; no file is ever left half-written.
    """
    directory = Path(directory)
    texts = {f"{name}.csv": table.to_csv(index=False) for name, table in tables.items()}
    texts |= {f"{name}.json": json.dumps(document, indent=2, default=_jsonable) + "\n"
              for name, document in documents.items()}  # fmt: skip
    names = list(texts) + list(folders or {})
    bad = [name for name in names if Path(name).name != name or name.startswith(".")]
    if bad:
        raise ValueError(f"result names must be plain file names: {bad}")
    _refuse_existing(directory)
    written: list[str] = []
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial",
                                        dir=directory.parent))  # fmt: skip
    except OSError as exc:
        raise RunFailed(_unsaved(directory, written, names, exc)) from None
    try:
        try:
            for name in sorted(texts, key=lambda n: len(texts[n])):
                _write(staging / name, texts[name])
                written.append(name)
            for name, folder in (folders or {}).items():
                _copy(folder, staging / name)
                written.append(name)
        except OSError as exc:
            if written:
                _publish(staging, directory)
            raise RunFailed(_unsaved(directory, written, names, exc)) from None
        _publish(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once published
        raise
    return directory


def _publish(staging: Path, directory: Path) -> None:
    staging.chmod(0o755)  # mkdtemp makes it private; results are for everyone to read
    (directory / RESERVED).unlink(missing_ok=True)
    try:
        staging.rename(directory)  # atomic; replaces only a missing or empty directory
    except OSError:
        _refuse_existing(directory)  # it appeared meanwhile: say so as a user error
        raise


def _unsaved(directory: Path, written: list[str], names: list[str], exc: OSError) -> str:
    """One line: what of a run's results could not be written, why, and the fix."""
    missing = ", ".join(n for n in names if n not in written)
    kept = f"holds only {', '.join(written)}" if written else "was not written"
    return (
        f"results directory '{directory}' {kept} ({exc.strerror or exc}; not written: {missing}): free "
        "space on its disk (or pass -o on another one) and run again"
    )


def _refuse_existing(directory: Path) -> None:
    taken = directory.is_dir() and any(p.name != RESERVED for p in directory.iterdir())
    if (directory.exists() and not directory.is_dir()) or taken:
        raise UserError(
            f"results directory '{directory}' already exists and is not empty; "
            "pass a new output directory or remove the old one"
        )


def _write(path: Path, text: str) -> None:
    """Write and fsync, so the rename that publishes the directory never exposes unwritten data; a
    file that could not be written whole is removed."""
    try:
        with path.open("w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _copy(folder: Path, to: Path) -> None:
    """Copy a folder whole, or not at all."""
    try:
        shutil.copytree(folder, to)
    except BaseException:
        shutil.rmtree(to, ignore_errors=True)
        raise


def _jsonable(value: object) -> object:
    """numpy scalars and arrays (pandas hands them out) and paths as plain JSON values."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
