"""Plans run through the emulated lab exactly as on a real fleet: over SSH, on shaped links, with the
authenticated rendezvous; every frame bit-exact, and every fault ends the run naming the device,
leaving no process on any host and keeping the frames done (root, sshd, tc; skipped otherwise)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from labkit import lab_name, namespace_ids, needs_lab, write_fleet
from toys import ctrl_c_as_a_terminal_sends_it

from suite.graph import from_model
from suite.inventory import load_inventory
from suite.models.load import load_model
from suite.orchestrate import lab
from suite.plan import save_plan
from suite.runtime.engine import parties
from suite.schemes import make_plan

pytestmark = needs_lab


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A 3-device lab on a shared 200 Mbit/s medium, each device at half a core, deployed."""
    name = lab_name("r")
    fleet = write_fleet(tmp_path_factory.mktemp("fleet"), devices=3, mbps=200, shared=True, speed=0.5)
    made = lab.up(str(fleet), "1", name)
    try:
        deploy = [sys.executable, "-m", "suite", "deploy", "--inventory", str(made.inventory_path())]
        done = subprocess.run(deploy, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        yield made
    finally:
        lab.down(name)


def _run(made, *args: str, model: str = "vgg16", timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "suite",
            "run",
            "--inventory",
            str(made.inventory_path()),
            "--model",
            model,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("scheme", ["pico", "halp", "modnn"])
def test_schemes_run_bit_exact_through_the_lab(deployed, tmp_path, scheme):
    done = _run(deployed, "--input-size", "3x112x112", "--scheme", scheme, "--frames", "2", "--warmup", "1",
                "--no-baseline", "--json", "-o", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["bit_exact"] and result["complete"] and result["frames"] == 2
    network = result["network"]
    assert network["kind"] == "lab" and network["shaped"] and network["shared"]
    assert network["rate_mbps"] == 200
    assert result["bytes_moved"] > 0 and result["refused_peers"] == []
    workers = json.loads((tmp_path / "out" / "summary.json").read_text())["metadata"]["workers"]
    logs = sorted(p.name for p in (tmp_path / "out" / "logs" / "plan").iterdir())
    assert logs == sorted(f"{device}.log" for device in workers)  # every worker's output kept


def test_onnxruntime_workers_load_the_folded_model_copied_once_to_each_device(deployed, tmp_path):
    """Each device gets the coordinator's folded model once, in its work folder under the content's
    digest, and its worker loads it from there; a second run copies nothing more, and no copy cut
    short is left behind. (ResNet-18: with VGG-16's 0.5 GB this test took twice as long.)"""
    args = ("--input-size", "3x64x64", "--scheme", "pico", "--backend", "onnxruntime", "--frames", "2",
            "--warmup", "1", "--no-baseline", "--json")  # fmt: skip
    inventory, copies = load_inventory(deployed.inventory_path()), []
    for run in ("first", "again"):
        done = _run(deployed, *args, "-o", str(tmp_path / run), model="resnet18")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["bit_exact"]
        folders = {h.name: Path(h.workdir) / "models" for h in inventory.hosts}
        copies.append({d: sorted(p.name for p in f.iterdir()) for d, f in folders.items() if f.is_dir()})
    assert copies[0] and copies[1] == copies[0], copies
    assert not any(name.endswith(".partial") for names in copies[1].values() for name in names)


# -- faults ----------------------------------------------------------------------------------------


def _plan(made, tmp_path: Path) -> tuple[str, list[str]]:
    """A PICO plan for the lab's fleet (so the test knows which devices it uses), as a file."""
    graph = from_model(load_model("vgg16", (3, 64, 64), weights=False))
    plan = make_plan("pico", graph, load_inventory(made.inventory_path()).fleet)
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    return str(path), [p for p in parties(plan) if p != "coordinator"]


def _start(made, tmp_path: Path, plan: str) -> tuple[subprocess.Popen, list[str]]:
    """A long run of `plan` through the lab, returned once frames flow."""
    run = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "suite", "run", "--inventory",
                            str(made.inventory_path()),
                            "--model", "vgg16", "--input-size", "3x64x64", "--plan", plan, "--frames", "5000",
                            "--no-baseline", "--timeout", "10", "-o", str(tmp_path / "out")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=ctrl_c_as_a_terminal_sends_it)  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(run.stderr.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 300
    while not any("/5002 frames" in line for line in lines):
        assert run.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.2)
    time.sleep(2)  # a few frames done
    return run, lines


def _workers_on_devices(made) -> dict[str, int]:
    """Device -> pid of the worker process running in that device's namespace."""
    found = {}
    for device in made.devices:
        (ns,) = namespace_ids([device.namespace])
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_text()
                if proc.name.isdigit() and os.readlink(proc / "ns" / "net") == ns and \
                        "suite.runtime.worker" in cmdline and "lifeline" not in cmdline:  # fmt: skip
                    found[device.name] = int(proc.name)
            except OSError:
                continue
    return found


def _only_sshd_left(made) -> None:
    """No process of the run is left in any of the lab's namespaces: only each device's sshd."""
    deadline = time.monotonic() + 20
    while _workers_on_devices(made):
        assert time.monotonic() < deadline, f"workers left behind: {_workers_on_devices(made)}"
        time.sleep(0.5)


def _ended(run: subprocess.Popen, lines: list[str], code: int, within_s: float) -> str:
    start = time.monotonic()
    try:
        run.wait(timeout=within_s + 60)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        run.wait(timeout=30)
        time.sleep(0.5)
        raise AssertionError("the run did not end:\n" + "".join(lines)[-8000:]) from None
    took = time.monotonic() - start
    assert took < within_s, f"the run ended {took:.1f} s after the fault, past {within_s} s"
    time.sleep(0.3)
    assert run.returncode == code, "".join(lines)
    return "".join(lines)


def _kept(tmp_path: Path) -> dict:
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["complete"] is False
    assert len((tmp_path / "out" / "frames.csv").read_text().splitlines()) > 2  # header + frames done
    return summary


def test_a_worker_killed_on_its_host_ends_the_run_naming_it(deployed, tmp_path):
    plan, used = _plan(deployed, tmp_path)
    run, lines = _start(deployed, tmp_path, plan)
    victim = used[-1]
    os.kill(_workers_on_devices(deployed)[victim], signal.SIGKILL)
    said = _ended(run, lines, 1, within_s=20)
    assert f"device {victim}" in said.splitlines()[-1]
    assert victim in _kept(tmp_path)["error"]
    _only_sshd_left(deployed)


def test_a_link_set_down_ends_the_run_within_the_timeout(deployed, tmp_path):
    plan, used = _plan(deployed, tmp_path)
    run, lines = _start(deployed, tmp_path, plan)
    victim = next(d for d in deployed.devices if d.name == used[0])
    down = ["ip", "-n", deployed.ap_namespace, "link", "set", "dev", victim.port]
    subprocess.run([*down, "down"], check=True)
    try:
        said = _ended(run, lines, 1, within_s=10 + 5)  # --timeout 10, and 5 s to say so and stop
    finally:
        subprocess.run([*down, "up"], check=True)
    assert f"device {victim.name}" in said.splitlines()[-1], said
    _kept(tmp_path)
    _only_sshd_left(deployed)


def test_ctrl_c_of_the_coordinator_stops_every_remote_worker(deployed, tmp_path):
    plan, _ = _plan(deployed, tmp_path)
    run, lines = _start(deployed, tmp_path, plan)
    assert _workers_on_devices(deployed)
    run.send_signal(signal.SIGINT)
    _ended(run, lines, 130, within_s=10)
    assert "interrupted" in _kept(tmp_path)["error"]
    _only_sshd_left(deployed)
