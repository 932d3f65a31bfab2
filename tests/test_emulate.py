"""CPU quotas really slow a process down, and their cgroups never outlive the run."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite.errors import UserError
from suite.processes import process_alive
from suite.runtime.emulate import (
    CPU_ROOT,
    LONGEST_PERIOD_US,
    MIN_QUOTA_US,
    SHORTEST_PERIOD_US,
    CpuLimit,
    cores_for,
    cpu_quota_available,
    period_for,
)

needs_cgroup = pytest.mark.skipif(not cpu_quota_available(),
                                  reason="needs root and a writable cgroup v1 cpu controller")  # fmt: skip

# Waits for a line on stdin; 10 times sleeps 0.2 s, spins 5 ms of CPU; prints the median burst's wall time.
BURSTS = ("import sys, time\nsys.stdin.readline(); walls = []\nfor _ in range(10):\n    time.sleep(0.2); "
          "w = time.perf_counter(); t = time.thread_time()\n    while time.thread_time() - t < 0.005: pass\n"
          "    walls.append(time.perf_counter() - w)\nprint(sorted(walls)[5])")  # fmt: skip
# Waits for a line on stdin (so the parent can cage it first), spins 1 s of wall time, prints its CPU time.
BUSY = "import sys, time; sys.stdin.readline(); end = time.time() + 1.0\nwhile time.time() < end: pass\n" \
       "print(time.process_time())"  # fmt: skip


def test_cores_for_scales_threads_by_relative_speed():
    assert cores_for(1e9, 4e9, threads=1) == pytest.approx(0.25)
    assert cores_for(1e9, 4e9, threads=2) == pytest.approx(0.5)
    assert cores_for(4e9, 4e9, threads=2) is None
    assert cores_for(8e9, 4e9, threads=1) is None
    with pytest.raises(ValueError):
        cores_for(0, 4e9, threads=1)


@pytest.mark.parametrize("cores", [0.0005, 0.0, -1.0, float("nan")])
def test_quota_below_kernel_minimum_is_a_user_error(cores):
    with pytest.raises(UserError, match="cpu limit"):
        CpuLimit(cores)


def test_the_period_is_the_shortest_that_gives_the_kernel_its_smallest_quota():
    assert period_for(0.25) == SHORTEST_PERIOD_US  # 2.5 ms of quota over 10 ms
    assert period_for(0.05) == 20_000 and round(0.05 * period_for(0.05)) == MIN_QUOTA_US
    assert period_for(2.0) == SHORTEST_PERIOD_US
    assert period_for(0.001) == LONGEST_PERIOD_US


def test_quotas_are_available_to_root_only():
    """Root with a cgroup v1 cpu controller may cap workers; the same check as an ordinary user
    (a child that drops to `nobody`) says no, so the run warns instead of failing."""
    if os.geteuid() != 0 or not (CPU_ROOT / "cpu.cfs_quota_us").is_file():
        assert not cpu_quota_available()
        return
    assert cpu_quota_available()
    as_nobody = ("from suite.runtime.emulate import cpu_quota_available as a; import os; "
                 "os.setgid(65534); os.setuid(65534); print(a())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", as_nobody], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _cgroups() -> set[Path]:
    return set(CPU_ROOT.glob("suite-*"))


def _cpu_cgroup(pid: int) -> str:
    """The cgroup v1 cpu controller path of `pid`, from lines like `1:cpu,cpuacct:/suite-1-ab`."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    raise AssertionError(f"no cpu cgroup for {pid}")


@needs_cgroup
def test_quarter_core_caps_a_busy_process_and_leaves_nothing_behind():
    before = _cgroups()
    child = subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    with CpuLimit(0.25) as limit:
        path = limit.path
        assert (path / "cpu.cfs_period_us").read_text().strip() == "10000"
        assert (path / "cpu.cfs_quota_us").read_text().strip() == "2500"
        limit.add(child.pid)
        assert str(child.pid) in (path / "cgroup.procs").read_text().split()
        out, _ = child.communicate("go\n", timeout=10)
    cpu_s = float(out)
    assert 0.05 < cpu_s < 0.5, f"{cpu_s:.2f} s of CPU in 1 s of wall time under a 0.25-core quota"
    assert not path.exists()
    assert _cgroups() == before


@needs_cgroup
def test_a_short_burst_is_capped_too():
    """Over the kernel's usual 100 ms period a 0.1-core cap let a 5 ms burst run in 5 ms; over the
    period `period_for` takes it runs at about a tenth of the speed, as a whole frame does."""
    child = subprocess.Popen([sys.executable, "-c", BURSTS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    with CpuLimit(0.1) as limit:
        limit.add(child.pid)
        out, _ = child.communicate("go\n", timeout=30)
    assert float(out) > 0.025, f"a 5 ms burst took {float(out) * 1000:.1f} ms under a 0.1-core cap"


@needs_cgroup
def test_close_moves_live_processes_back_and_is_idempotent():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        limit = CpuLimit(0.5)
        path = limit.create()
        assert limit.create() == path
        limit.add(child.pid)
        limit.close()
        limit.close()
        assert not path.exists() and limit.path is None
        assert _cpu_cgroup(child.pid) == "/"
    finally:
        child.kill()
        child.wait()


@needs_cgroup
def test_error_inside_the_block_still_removes_the_cgroup():
    with pytest.raises(RuntimeError, match="boom"), CpuLimit(0.5) as limit:
        path = limit.path
        raise RuntimeError("boom")
    assert not path.exists()


@needs_cgroup
def test_forgotten_limit_is_removed_when_collected():
    limit = CpuLimit(0.5)
    path = limit.create()
    del limit
    assert not path.exists()


def test_add_before_create_is_refused():
    with pytest.raises(RuntimeError, match="before create"):
        CpuLimit(0.5).add(1)


def test_a_process_counts_as_alive_until_it_exits_and_a_zombie_does_not():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert process_alive(os.getpid()) and process_alive(child.pid)
        child.stdin.close()  # it exits; until reaped below it is a zombie
        deadline = time.monotonic() + 10
        while process_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not process_alive(child.pid)
        assert Path(f"/proc/{child.pid}").exists(), "still a zombie: its parent has not reaped it"
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)
