"""Worker processes on this host: started, watched, capped and stopped for sure.

`LocalWorkers` starts `python -m suite.runtime.worker` once per device, keeps each one's log, reads
the one-line error a worker leaves in the store, applies cpu quotas (device emulation), and kills
whatever still runs on the way out; workers also die with the coordinator (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from suite.errors import UserError
from suite.runtime.emulate import CpuLimit


def _die_with_parent() -> None:
    """Ask Linux to kill the worker if the coordinator dies, so no worker is ever orphaned."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class LocalWorkers:
    """The run's worker processes on this host, their logs and cpu limits."""

    store: object  # the coordinator's client of the rendezvous (workers report there)
    names: dict[int, str] = field(default_factory=dict)
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)
    logs: dict[int, Path] = field(default_factory=dict)
    limits: list[CpuLimit] = field(default_factory=list)

    def start(self, rank: int, name: str, argv: list[str], env: dict[str, str]) -> None:
        """Start `argv` as device `name`'s worker, with `env` added to this process's environment
        (the run's secret travels there: other users cannot read a process's environment)."""
        log = Path(tempfile.mkstemp(prefix=f"suite-worker-{rank}-", suffix=".log")[1])
        try:
            with log.open("w") as sink:
                self.procs[rank] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink,
                                                    stderr=subprocess.STDOUT, env={**os.environ, **env},
                                                    preexec_fn=_die_with_parent)  # fmt: skip
        except OSError as exc:
            log.unlink(missing_ok=True)
            raise UserError(f"device {name}: cannot start a worker with '{argv[0]}': "
                            f"{exc.strerror}; pass an interpreter that has the suite installed") from None
        self.names[rank], self.logs[rank] = name, log

    def await_ready(self, timeout_s: float) -> dict[str, dict]:
        """Every worker's report once it has built its model; a worker that exits first is an error."""
        store = self.store
        deadline = time.monotonic() + timeout_s
        waiting = set(self.procs)
        info: dict[str, dict] = {}
        while waiting:
            for rank in sorted(waiting):
                if store.check([f"ready/{rank}"]):
                    info[self.names[rank]] = {"rank": rank, **json.loads(store.get(f"ready/{rank}"))}
                    waiting.discard(rank)
                elif self.procs[rank].poll() is not None:
                    said = self.said(rank) or self._log_tail(rank)
                    raise UserError(f"device {self.names[rank]}: the worker could not start: {said}")
            if time.monotonic() > deadline:
                rank = min(waiting)
                raise UserError(f"device {self.names[rank]}: the worker did not start within {timeout_s:g} s")
            time.sleep(0.05)
        return info

    def limit(self, rank: int, cores: float) -> None:
        limit = CpuLimit(cores)
        self.limits.append(limit)
        limit.create()
        limit.add(self.procs[rank].pid)

    def dead(self) -> dict[int, int]:
        """Workers that exited before the run finished: rank -> exit code."""
        return {r: p.returncode for r, p in self.procs.items() if p.poll() is not None}

    def rank_of(self, name: str) -> int:
        return next((r for r, n in self.names.items() if n == name), -1)

    def said(self, rank: int) -> str | None:
        """The one line a worker left in the store before failing, if any."""
        try:
            key = f"error/{rank}"
            return self.store.get(key).decode() if self.store.check([key]) else None
        except Exception:  # the store itself may be gone during shutdown
            return None

    def exit_text(self, rank: int) -> str:
        code = self.procs[rank].returncode if rank in self.procs else None
        if code is None:
            return "stopped answering"
        if code < 0:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"exited with code {code}"

    def _log_tail(self, rank: int) -> str:
        lines = [ln for ln in self.logs[rank].read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else self.exit_text(rank)

    def finish(self, timeout_s: float) -> None:
        for proc in self.procs.values():
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()

    def stop(self) -> None:
        """Kill what still runs, reap it, remove logs and cpu limits; safe to call twice."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()
        for limit in self.limits:
            limit.close()
        for log in self.logs.values():
            log.unlink(missing_ok=True)
        self.logs.clear()
