"""RemoteWorkers over the lab's real sshd: output, environment, exit status, and no orphan on any end."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit import lab_name, namespace_ids, needs_lab, processes_in, write_fleet

from suite.inventory import load_inventory
from suite.orchestrate import lab, labplan, lifeline
from suite.orchestrate.remote import RemoteWorkers

SECRET = "s3cret-token-for-the-test"


def test_the_lifeline_kills_the_whole_group_when_its_stdin_ends():
    """Without SSH: the lifeline alone, its stdin a pipe we close."""
    started = subprocess.Popen(
        [sys.executable, "-u", lifeline.__file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    script = (
        "import subprocess, time; print(subprocess.Popen(['sleep', '300']).pid, flush=True); time.sleep(300)"
    )
    started.stdin.write(json.dumps({"argv": [sys.executable, "-c", script], "env": {}, "cwd": "/"}) + "\n")
    started.stdin.flush()
    grandchild = int(started.stdout.readline())
    started.stdin.close()
    assert started.wait(10) == 128 + signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """Running, not a zombie its new parent has yet to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    name = lab_name("r")
    fleet = write_fleet(tmp_path_factory.mktemp("fleet"), devices=2, mbps=50, shared=False, speed=0.3)
    made = lab.up(str(fleet), "1", name)
    try:
        yield load_inventory(made.inventory_path())
    finally:
        lab.down(name)


def _device_processes(inventory, device: str) -> list[str]:
    ns = lab.load_lab(inventory.lab.name).devices[[h.name for h in inventory.hosts].index(device)].namespace
    return [p for p in processes_in(namespace_ids([ns])) if "[listener]" not in p]  # all but sshd itself


def _gone(inventory, device: str, within_s: float = 10) -> bool:
    """True once nothing but sshd runs on the device (a closed session's sshd takes a moment to exit)."""
    deadline = time.monotonic() + within_s
    while _device_processes(inventory, device) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _device_processes(inventory, device) == []


@needs_lab
def test_a_worker_runs_in_its_folder_with_its_environment_and_stop_kills_its_tree(inventory, tmp_path):
    workers = RemoteWorkers(inventory, tmp_path / "logs")
    host = inventory.host("d0")
    script = (
        "import os, subprocess, time; subprocess.Popen(['sleep', '300']); "
        "print(os.getcwd(), os.environ['SUITE_SECRET'], open('/proc/self/cgroup').read(), flush=True); "
        "time.sleep(300)"
    )
    try:
        workers.start(1, "d0", [host.python, "-c", script], {"SUITE_SECRET": SECRET})
        deadline = time.monotonic() + 30
        while SECRET not in (tmp_path / "logs" / "d0.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        said = (tmp_path / "logs" / "d0.log").read_text()
        assert said.startswith(f"{host.workdir} {SECRET}")
        assert f"cpu:/{labplan.PREFIX}-{inventory.lab.name}-d0" in said  # sshd's cgroup: the device's cap
        running = _device_processes(inventory, "d0")
        assert any("sleep 300" in p for p in running) and not any(SECRET in p for p in running)
        assert workers.dead() == {}
    finally:
        workers.stop()
    assert _gone(inventory, "d0")
    assert workers.dead() == {1: -signal.SIGKILL}  # as a local worker reports it: a fault of the run
    assert workers.exit_text(1) == "was killed by signal 9 (SIGKILL)"
    workers.stop()  # twice is fine


@needs_lab
def test_a_worker_that_exits_reports_its_code_and_last_line(inventory, tmp_path):
    workers = RemoteWorkers(inventory, tmp_path)
    try:
        workers.start(2, "d1", ["sh", "-c", "echo starting; echo 'ValueError: bad plan' >&2; exit 3"], {})
        deadline = time.monotonic() + 30
        while not workers.dead() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers.dead() == {2: 3}
        assert workers.exit_text(2) == "exited with code 3"
        workers.finish(5)
        assert workers.last_line(2) == "ValueError: bad plan"
    finally:
        workers.stop()


@needs_lab
def test_a_killed_coordinator_leaves_no_orphan(inventory, tmp_path):
    coordinator = f"""
import sys, time
from pathlib import Path
from suite.inventory import load_inventory
from suite.orchestrate.remote import RemoteWorkers
workers = RemoteWorkers(load_inventory({str(inventory.path)!r}), Path({str(tmp_path)!r}))
workers.start(1, "d1", ["sleep", "300"], {{}})
print("started", flush=True)
time.sleep(300)
"""
    proc = subprocess.Popen([sys.executable, "-c", coordinator], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 10
        while not any("sleep 300" in p for p in _device_processes(inventory, "d1")):
            assert time.monotonic() < deadline, "the remote worker never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _gone(inventory, "d1")


@needs_lab
def test_an_unknown_device_or_a_dead_sshd_is_one_line(inventory, tmp_path):
    from suite.errors import UserError

    workers = RemoteWorkers(inventory, tmp_path, connect_timeout_s=3)
    with pytest.raises(UserError, match="no device 'd7'"):
        workers.start(1, "d7", ["true"], {})
    copy = tmp_path / "inventory.yaml"
    copy.write_text(Path(inventory.path).read_text().replace("port: 22", "port: 2222", 1))
    with pytest.raises(UserError) as caught:
        RemoteWorkers(load_inventory(copy), tmp_path, connect_timeout_s=3).start(1, "d0", ["true"], {})
    assert str(caught.value).startswith("device d0 (") and "connection refused on port 2222" in str(
        caught.value
    )
