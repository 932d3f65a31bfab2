"""Emulate a slower device on this host: cap a worker's CPU with a cgroup v1 cpu quota.

A quota of q microseconds per period p lets the cgroup's processes run q/p cores' worth of time,
so a quarter-core worker on an x86 host runs at about the speed of one Raspberry Pi 4 core.

The quota holds only over whole periods: within one, the group runs at full speed until its quota
is spent. A burst of computation shorter than the quota (a small tile, a message) so runs
`1 / cores` times too fast: at 0.1 cores over the kernel's usual 100 ms period, a 5 ms burst took
5 ms of wall time, not 50 (40 ms over a 10 ms period). `period_for` takes the shortest period
that still gives the kernel's smallest quota, so only bursts under about a millisecond of CPU escape
the cap.
"""

from __future__ import annotations

import math
import os
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from suite.errors import UserError
from suite.processes import process_alive

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
MIN_QUOTA_US = 1_000  # the kernel refuses smaller quotas
SHORTEST_PERIOD_US = 10_000  # shorter periods cost the kernel more timer work for little gain
LONGEST_PERIOD_US = 1_000_000  # the kernel's longest period
MIN_CORES = MIN_QUOTA_US / LONGEST_PERIOD_US  # the smallest cap the kernel can hold
# an emulated device's cgroup weighs as much as 8 busy processes: it gets its quota on a busy host
# (which still caps it), so its speed is its profile's, not what other jobs leave over
DEVICE_CPU_SHARES = 8 * 1024


def cpu_quota_available() -> bool:
    """True when this process may create cpu-quota cgroups (root and a writable cgroup v1 cpu controller)."""
    return (os.geteuid() == 0 and (CPU_ROOT / "cpu.cfs_quota_us").is_file()
            and os.access(CPU_ROOT, os.W_OK))  # fmt: skip


def sweep_stale() -> list[Path]:
    """Remove the cgroups of runs whose coordinator is gone (killed before it could clean up): a
    `suite-<pid>-<id>` directory whose pid no longer runs. Returns what was removed."""
    removed = []
    if not cpu_quota_available():
        return removed
    for path in CPU_ROOT.glob("suite-*-*"):
        owner = path.name.split("-")[1]
        if not owner.isdigit() or process_alive(int(owner)):
            continue
        try:
            _remove(path, os.getpid())
            removed.append(path)
        except OSError:  # a process is still inside and will not leave: leave it for next time
            pass
    return removed


def period_for(cores: float) -> int:
    """The CFS period (us) of a cap of `cores`: the shortest over which its quota is at least the
    kernel's smallest, and no shorter than `SHORTEST_PERIOD_US`, so the cap holds over any burst of
    more than about a millisecond of CPU (see the module's docstring)."""
    return min(LONGEST_PERIOD_US, max(SHORTEST_PERIOD_US, math.ceil(MIN_QUOTA_US / cores)))


def write_cap(path: Path, cores: float) -> None:
    """Cap cgroup `path` at `cores`: its period (`period_for`), then the quota over it."""
    period = period_for(cores)
    (path / "cpu.cfs_period_us").write_text(str(period))
    (path / "cpu.cfs_quota_us").write_text(str(round(cores * period)))


def cores_for(device_macs_per_s: float, host_macs_per_s: float, threads: int) -> float | None:
    """The cores that make `threads` host threads as fast as the device; None when it is not slower."""
    if device_macs_per_s <= 0 or host_macs_per_s <= 0 or threads < 1:
        raise ValueError(
            f"cores_for needs positive speeds and threads, got {device_macs_per_s}, "
            f"{host_macs_per_s}, {threads}"
        )
    ratio = device_macs_per_s / host_macs_per_s
    return None if ratio >= 1 else threads * ratio


@dataclass
class CpuLimit:
    """A cgroup `/sys/fs/cgroup/cpu/suite-<pid>-<id>/` holding processes to `cores` cores.

    Use it as a context manager, or call create(), add(pid) and close(). close() moves any processes
    still inside back to the root cgroup and removes the directory; it is idempotent, and it also
    runs when the object is collected or the interpreter exits, so no directory is left behind.
    """

    cores: float
    name: str | None = None  # the directory under CPU_ROOT; default suite-<pid>-<id>
    path: Path | None = field(default=None, init=False)
    _cleanup: weakref.finalize | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.cores >= MIN_CORES:  # `not >=` also refuses NaN
            raise UserError(
                f"cpu limit of {self.cores} cores is below the kernel's minimum quota "
                f"({MIN_QUOTA_US} us per {LONGEST_PERIOD_US} us period); use at least "
                f"{MIN_CORES} cores"
            )

    def create(self) -> Path:
        """Make the cgroup with its quota; a second call returns the same directory."""
        if self.path is not None:
            return self.path
        path = CPU_ROOT / (self.name or f"suite-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        path.mkdir()
        self._cleanup = weakref.finalize(self, _remove, path, os.getpid())
        self.path = path
        try:
            write_cap(path, self.cores)
        except BaseException:
            self.close()
            raise
        return path

    def add(self, pid: int) -> None:
        """Move process `pid` (all its threads) into the cgroup."""
        if self.path is None:
            raise RuntimeError("CpuLimit.add before create()")
        (self.path / "cgroup.procs").write_text(str(pid))

    def keep(self) -> None:
        """Leave the cgroup in place when this object goes away (an emulated lab's device outlives the
        command that made it); `remove_cgroup` removes it later."""
        if self._cleanup is not None:
            self._cleanup.detach()

    def close(self) -> None:
        """Move remaining processes back to the root cgroup and remove the directory; safe to repeat."""
        if self._cleanup is not None:
            self._cleanup()  # a finalizer runs at most once
        self.path = None

    def __enter__(self) -> CpuLimit:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_cgroup(path: Path) -> None:
    """Empty a cgroup into the root and remove it (one a `keep()` left behind)."""
    _remove(path, os.getpid())


def _remove(path: Path, owner: int, attempts: int = 50) -> None:
    """Empty the cgroup into the root and rmdir it, retrying while a process is caught mid-fork.

    Only the creating process removes it: a forked child that exits must not dissolve its parent's limit.
    """
    if os.getpid() != owner:
        return
    for _ in range(attempts):
        if not path.exists():
            return
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (CPU_ROOT / "cgroup.procs").write_text(pid)
            except ProcessLookupError:
                pass  # it exited meanwhile
        try:
            path.rmdir()
            return
        except OSError:  # EBUSY: a process arrived or is still on its way out
            time.sleep(0.01)
    path.rmdir()
