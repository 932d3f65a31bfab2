"""The fault suite: a worker that crashes (SIGKILL) or freezes (SIGSTOP) at each phase of a run
(start-up, join, clock sync, frame N, its report), or an outsider on the run's gloo ports, ends the
run within --timeout + 5 s in one line naming the device and the phase, with the exit code the
README promises, the frames done saved and no process left. A full disk while results are written
is in test_reliability.py (it needs a tmpfs: root).

The faults come from failpoints (`suite.runtime.faults`, `SUITE_FAULT`); the fast suite runs a
sample drawn by hypothesis, `nox -s zoo` (nightly) every case."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suite.runtime.faults import DELAY_ENV, FAULT_ENV, KINDS, PHASES, spec

TIMEOUT_S = 12  # --timeout: a frozen worker is given up on after this long (gloo joins in it on a busy host)
FAULTS = [(kind, phase) for kind in sorted(KINDS) for phase in PHASES]


@dataclass(frozen=True)
class Ended:
    code: int
    stderr: str
    said_s: float  # from the fault to the run's last line on stderr (its error, or its summary)
    workers: list[int]
    out: Path


def _run(out: Path, env: dict[str, str], fault_seen, frames: int = 6) -> Ended:
    """`suite run` on 2 local workers with `env`; `fault_seen(workers)` says when the fault happened."""
    argv = [sys.executable, "-m", "suite", "run", "--model", "vgg16", "--input-size", "3x32x32", "--devices",
            "2", "--frames", str(frames), "--warmup", "1", "--no-baseline", "--timeout", str(TIMEOUT_S),
            "-o", str(out)]  # fmt: skip
    run = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=os.environ | env)  # fmt: skip
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), ln) for ln in run.stderr))
    reader.start()
    seen, workers = None, set()
    try:
        deadline = time.monotonic() + 240
        while run.poll() is None and time.monotonic() < deadline:
            workers |= set(_children(run.pid))
            if seen is None and fault_seen(sorted(workers)):
                seen = time.monotonic()
            time.sleep(0.02)
        run.wait(timeout=30)
    finally:
        run.kill()
        run.wait()
        reader.join(30)
    stderr = "".join(line for _, line in lines)
    assert seen is not None, f"the fault never happened:\n{stderr}"
    return Ended(run.returncode, stderr, lines[-1][0] - seen if lines else 0.0, sorted(workers), out)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _state(pid: int) -> str:
    """A process's state letter (T: stopped, Z: exited, unreaped), or '' once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _rank(pid: int) -> int | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return None
    return int(argv[argv.index("--rank") + 1]) if "--rank" in argv else None


def _hit(kind: str, rank: int):
    """When rank `rank`'s worker shows the fault: stopped, or gone."""
    pids: dict[int, int] = {}

    def seen(workers: list[int]) -> bool:
        for pid in workers:
            if pid not in pids and (r := _rank(pid)) is not None:
                pids[pid] = r
        victim = next((pid for pid, r in pids.items() if r == rank), None)
        return victim is not None and _state(victim) in (("T",) if kind == "stop" else ("Z", ""))

    return seen


def _check(ended: Ended, kind: str, phase: str, rank: int) -> None:
    device = f"dev{rank - 1}"  # rank 0 is the coordinator
    assert "Traceback" not in ended.stderr, ended.stderr
    assert ended.said_s < TIMEOUT_S + 5, (ended.said_s, ended.stderr)
    assert not any(_state(pid) not in ("", "Z") for pid in ended.workers), "a worker was left running"
    if phase == "report" and ended.code == 0:  # every frame was computed and checked: the run stands
        # (or, killed before the coordinator had read its last bytes, it fails at a frame, as below)
        assert "warning: the workers' timelines and memory could not be collected" in ended.stderr
        assert json.loads((ended.out / "summary.json").read_text())["complete"] is True
        return
    assert ended.code == 1, ended.stderr
    errors = [line for line in ended.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and f"device {device} (rank {rank})" in errors[0], ended.stderr
    said = {"start-up": "while starting", "join": "gloo group", "clock": "clock sync", "frame": "frame ",
            "report": ""}  # fmt: skip
    assert said[phase] in errors[0], errors[0]
    if phase in ("frame", "report"):  # the frames before it are saved, the run marked incomplete
        summary = json.loads((ended.out / "summary.json").read_text())
        assert summary["complete"] is False and device in summary["error"]
        assert len(pd.read_csv(ended.out / "frames.csv")) >= 1


def _fault_run(out: Path, kind: str, phase: str, rank: int) -> None:
    frame = 3 if phase == "frame" else 0
    env = {FAULT_ENV: spec(kind, phase, rank, frame)}
    _check(_run(out, env, _hit(kind, rank)), kind, phase, rank)


@pytest.mark.zoo
@pytest.mark.parametrize("kind,phase", FAULTS)
def test_every_fault_at_every_phase_ends_the_run_in_one_line_within_the_timeout(tmp_path, kind, phase):
    _fault_run(tmp_path / "out", kind, phase, rank=2)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fault=st.sampled_from(FAULTS), rank=st.sampled_from([1, 2]))
def test_a_sampled_fault_ends_the_run_in_one_line_within_the_timeout(tmp_path_factory, fault, rank):
    _fault_run(tmp_path_factory.mktemp("fault") / "out", *fault, rank=rank)


def test_a_device_that_builds_long_after_the_others_does_not_run_out_their_join(tmp_path):
    """A heterogeneous fleet's slowest device (or one building a per-layer plan's many sessions) is
    ready long after the fastest; the fastest must not give up on connecting to it meanwhile. Rank 2
    builds 8 s after rank 1, past a 3 s --timeout: the run completes, every frame bit-exact."""
    argv = [sys.executable, "-m", "suite", "run", "--model", "vgg16", "--input-size", "3x32x32", "--devices",
            "2", "--frames", "2", "--warmup", "1", "--no-baseline", "--timeout", "3", "--json",
            "-o", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240,
                          env=os.environ | {DELAY_ENV: "start-up:2:8"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["bit_exact"]


def _listening(pids: list[int]) -> set[int]:
    """The TCP ports these processes listen on (IPv4 and IPv6)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_an_outsider_on_the_gloo_ports_cannot_change_a_result(tmp_path):
    """Connect to every port the run's processes open and write gloo's pair sequence numbers 0-3:
    the run either never uses those bytes (every frame bit-exact) or ends in one line within the
    timeout naming the phase or device, exit 1; never a traceback, a hang or a wrong result."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "suite", "run", "--model", "vgg16", "--input-size", "3x32x32", "--devices",
            "2", "--frames", "4", "--no-baseline", "--timeout", str(TIMEOUT_S), "-o", str(out)]  # fmt: skip
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    intruded, sockets, first = set(), [], None
    try:
        deadline = time.monotonic() + 240
        while run.poll() is None and time.monotonic() < deadline:
            for port in _listening([run.pid, *_children(run.pid)]) - intruded:
                intruded.add(port)
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=1)
                    s.sendall(b"".join(struct.pack("<Q", n) for n in range(4)))
                    sockets.append(s)
                    first = first or time.monotonic()
                except OSError:
                    pass  # it closed meanwhile, or listens on another address
            time.sleep(0.005)
        ended = time.monotonic()
        stdout, stderr = run.communicate(timeout=30)
    finally:
        run.kill()
        run.wait()
        threading.Thread(target=lambda: [s.close() for s in sockets]).start()
    assert first is not None and len(intruded) >= 3, intruded  # the rendezvous and at least two gloo ports
    assert "Traceback" not in stderr, stderr
    if run.returncode == 0:
        assert "BIT-EXACT" in stdout, stdout
    else:
        assert run.returncode == 1, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and ("gloo group" in errors[0] or "device dev" in errors[0]), stderr
        assert ended - first < TIMEOUT_S * 3 + 5, stderr  # join, clock sync and a frame each get --timeout
