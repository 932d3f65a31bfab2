"""Failpoints: a worker that fails on purpose at a named phase, for the fault suite (tests/test_faults.py).

`SUITE_FAULT=KIND:PHASE:RANK[:FRAME]` in a worker's environment makes the worker of rank RANK kill
(`kill`: SIGKILL, a crash) or freeze (`stop`: SIGSTOP, a hang) itself on reaching PHASE (and frame
FRAME, for `frame`). `SUITE_DELAY=PHASE:RANK:SECONDS` makes it reach PHASE that much later, alive
meanwhile (a slow device: its build on a slow core). Unset, every failpoint is one dictionary lookup.
Faults a worker cannot inflict on itself (a dead link, a full disk, an intruder on its sockets) are
made from outside, by the tests.
"""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "SUITE_FAULT"
DELAY_ENV = "SUITE_DELAY"
PHASES = ("start-up", "join", "clock", "frame", "report")  # in the order a worker meets them
KINDS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def spec(kind: str, phase: str, rank: int, frame: int = 0) -> str:
    """The `SUITE_FAULT` value for one fault."""
    if kind not in KINDS or phase not in PHASES:
        raise ValueError(f"no fault {kind!r} at {phase!r}: kinds {sorted(KINDS)}, phases {PHASES}")
    return f"{kind}:{phase}:{rank}:{frame}"


def at(phase: str, rank: int, frame: int = 0) -> None:
    """Inflict this worker's fault if it is due here."""
    wanted = os.environ.get(FAULT_ENV)
    kind = wanted and wanted.split(":")[0]
    if wanted and wanted == spec(kind, phase, rank, frame):
        os.kill(os.getpid(), KINDS[kind])


def delay(phase: str, rank: int) -> None:
    """Wait here as long as this worker's `SUITE_DELAY` asks, if it names this phase and rank."""
    wanted = os.environ.get(DELAY_ENV, "").split(":")
    if len(wanted) == 3 and wanted[:2] == [phase, str(rank)]:
        time.sleep(float(wanted[2]))
