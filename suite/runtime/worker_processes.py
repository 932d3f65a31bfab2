"""Worker processes: started, watched and stopped for sure, on this host or (`RemoteWorkers` in
`suite/orchestrate/remote.py`) on a fleet's devices over SSH. Both meet `Workers`.

`LocalWorkers` starts one process per device, writes each one's output to `<log_dir>/<device>.log`
(the results folder keeps it), applies cpu quotas (device emulation), and kills whatever still
runs on the way out; workers also die with the coordinator (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from suite.errors import UserError
from suite.runtime.emulate import DEVICE_CPU_SHARES, CpuLimit


class Workers(Protocol):
    """What the coordinator needs of a run's worker processes, wherever they run."""

    names: dict[int, str]  # rank -> device

    def place(self, device_name: str, folded: Path) -> str: ...  # the folded model's path there

    def start(self, rank: int, device_name: str, argv: list[str], env: dict[str, str]) -> None: ...

    def dead(self) -> dict[int, int]: ...  # rank -> exit status, for workers that have exited

    def rank_of(self, name: str) -> int: ...

    def exit_text(self, rank: int) -> str: ...

    def last_line(self, rank: int) -> str | None: ...

    def finish(self, timeout_s: float) -> None: ...

    def stop(self) -> None: ...


def _die_with_parent() -> None:
    """Ask Linux to kill the worker if the coordinator dies, so no worker is ever orphaned."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class LocalWorkers:
    """The run's worker processes on this host, their logs and cpu limits."""

    log_dir: Path  # one <device>.log per worker
    names: dict[int, str] = field(default_factory=dict)
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)
    logs: dict[int, Path] = field(default_factory=dict)
    limits: list[CpuLimit] = field(default_factory=list)

    def place(self, device_name: str, folded: Path) -> str:
        """The folded model in folder `folded`, as this host's workers open it: where it is."""
        from suite.backends.folded import MODEL

        return str(folded / MODEL)

    def start(self, rank: int, device_name: str, argv: list[str], env: dict[str, str]) -> None:
        """Start `argv` as the device's worker, with `env` added to this process's environment
        (the run's secret travels there: other users cannot read a process's environment)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{device_name}.log"
        try:
            with log.open("w") as sink:
                self.procs[rank] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink,
                                                    stderr=subprocess.STDOUT, env={**os.environ, **env},
                                                    preexec_fn=_die_with_parent)  # fmt: skip
        except OSError as exc:
            raise UserError(
                f"device {device_name}: cannot start a worker with '{argv[0]}': "
                f"{exc.strerror}; pass an interpreter that has the suite installed"
            ) from None
        self.names[rank], self.logs[rank] = device_name, log

    def limit(self, rank: int, cores: float) -> None:
        limit = CpuLimit(cores)
        self.limits.append(limit)
        (limit.create() / "cpu.shares").write_text(str(DEVICE_CPU_SHARES))
        limit.add(self.procs[rank].pid)

    def dead(self) -> dict[int, int]:
        """Workers that exited before the run finished: rank -> exit code."""
        return {r: p.returncode for r, p in self.procs.items() if p.poll() is not None}

    def rank_of(self, name: str) -> int:
        return next((r for r, n in self.names.items() if n == name), -1)

    def exit_text(self, rank: int) -> str:
        code = self.procs[rank].returncode if rank in self.procs else None
        if code is None:
            return "stopped answering"
        if code < 0:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"exited with code {code}"

    def last_line(self, rank: int) -> str | None:
        """The last line the worker printed, if any (a traceback's last line says what failed)."""
        lines = [ln for ln in self.logs[rank].read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else None

    def finish(self, timeout_s: float) -> None:
        for proc in self.procs.values():
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()

    def stop(self) -> None:
        """Kill what still runs, reap it and remove the cpu limits; safe to call twice."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()
        for limit in self.limits:
            limit.close()
