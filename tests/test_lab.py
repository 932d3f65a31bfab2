"""The emulated lab on this host: what it builds, shapes and removes (root, sshd, tc); its plan is
tested without root in test_labplan.py."""

import json
import signal
import subprocess
import sys
import time

import pytest
from labkit import footprint, lab_name, namespace_ids, needs_lab, processes_in, write_fleet

from suite.cli import main
from suite.inventory import load_inventory
from suite.orchestrate import lab
from suite.orchestrate.labcheck import measure_flows
from suite.runtime.emulate import CPU_ROOT, period_for


@pytest.fixture
def make_lab(tmp_path):
    """Bring labs up; every one is taken down at the end, whatever the test did."""
    names = []

    def make(devices=2, mbps=8.0, shared=False, speed=0.1, dilate="1"):
        name = lab_name(str(len(names)))
        names.append(name)
        fleet = write_fleet(tmp_path / name, devices, mbps, shared, speed)
        return lab.up(str(fleet), dilate, name)

    yield make
    for name in names:
        lab.down(name)


@needs_lab
def test_up_then_down_leaves_nothing_behind(make_lab, capsys):
    name = lab_name("0")
    before = footprint(name)
    assert not any(before.values())
    made = make_lab(devices=2, shared=True, speed=0.2)
    during = footprint(name)
    assert len(during["namespaces"]) == 3 and during["links"] and during["routes"]
    assert len(during["cgroups"]) == 2 and len(during["processes"]) == 2  # the two sshd
    ids = namespace_ids(during["namespaces"])
    deadline = time.monotonic() + 10  # an SSH probe's pre-auth child ("sshd: [accepted]") may be exiting
    while len(processes_in(ids)) > 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(processes_in(ids)) == 2

    assert main(["lab", "status", "--name", name, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["healthy"] and [d["cpu_cores"] for d in status["devices"]] == [0.2, 0.2]
    inventory = load_inventory(made.inventory_path())
    assert inventory.lab.shared and inventory.lab.rate_mbps == 8.0 and "netem" in inventory.lab.latency
    assert [h.host for h in inventory.hosts] == [d.address for d in made.devices]

    assert main(["lab", "down", "--name", name]) == 0
    assert footprint(name) == before
    assert processes_in(ids) == []
    assert main(["lab", "down", "--name", name]) == 0  # idempotent
    assert "nothing to remove" in capsys.readouterr().out


@needs_lab
def test_down_cleans_what_a_killed_up_left(tmp_path, capsys):
    name = lab_name("k")
    fleet = write_fleet(tmp_path, devices=4, mbps=8, shared=False, speed=0.1)
    up = subprocess.Popen(
        [sys.executable, "-m", "suite", "lab", "up", "--fleet", str(fleet), "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not footprint(name)["namespaces"] and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        up.send_signal(signal.SIGKILL)
        up.wait()
        assert footprint(name)["namespaces"], "lab up made nothing before it was killed"
        assert main(["lab", "up", "--fleet", str(fleet), "--name", name]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"suite lab down --name {name}" in err
    finally:
        lab.down(name)
    assert not any(footprint(name).values())


@needs_lab
def test_a_switched_link_measures_its_rate_in_both_directions_even_when_all_are_busy(make_lab):
    made = make_lab(devices=2, mbps=8, shared=False)
    up = measure_flows(made, [("d0", "coordinator")], 1.5)[0]
    down = measure_flows(made, [("coordinator", "d1")], 1.5)[0]
    for rate in (up, down):
        assert 0.8 * 8 <= rate <= 1.02 * 8, (up, down)  # TCP payload: ~95% of the shaped wire rate
    both = measure_flows(made, [("d0", "d1"), ("coordinator", "d0")], 1.5)
    # own links: no sharing, which would hold each flow to half the rate; two flows on a loaded
    # 2-core host measured 7.5 and 5.5 Mbit/s once, so the bound sits between that and a half
    assert all(0.65 * 8 <= rate <= 1.02 * 8 for rate in both), both


@needs_lab
def test_a_shared_medium_is_shared_by_concurrent_transfers(make_lab):
    made = make_lab(devices=3, mbps=8, shared=True)
    alone = measure_flows(made, [("d0", "d1")], 1.5)[0]
    assert 0.9 * 8 <= alone <= 1.02 * 8
    both = measure_flows(made, [("d0", "d1"), ("d2", "coordinator")], 2.0)
    assert 0.9 * 8 <= sum(both) <= 1.05 * 8, both  # the aggregate is the medium's rate
    assert all(0.3 * 8 <= rate <= 0.7 * 8 for rate in both), both  # each gets about half


@needs_lab
def test_dilation_scales_caps_and_links_and_is_recorded(make_lab, capsys):
    made = make_lab(devices=2, mbps=4, shared=False, speed=0.2, dilate="2")
    assert made.dilation == 2 and made.rate_bps == 8e6
    assert [d.cpu_cores for d in made.devices] == [0.4, 0.4]
    cgroup = CPU_ROOT / made.devices[0].cgroup
    period, quota = (int((cgroup / f"cpu.cfs_{f}_us").read_text()) for f in ("period", "quota"))
    assert period == period_for(0.4) and quota == 0.4 * period  # 4 ms over 10 ms
    classes = subprocess.run(
        ["tc", "-n", made.ap_namespace, "class", "show", "dev", "p0"], capture_output=True, text=True
    ).stdout
    assert "rate 8Mbit" in classes
    assert load_inventory(made.inventory_path()).lab.dilation == 2
    assert main(["lab", "up", "--fleet", "pico-homo-8", "--dilate", "50", "--name", lab_name("z")]) == 2
    assert "--dilate" in capsys.readouterr().err


@needs_lab
def test_lab_check_reports_links_and_compute_against_the_spec(make_lab, capsys):
    made = make_lab(devices=1, mbps=8, shared=False, speed=0.5)
    assert main(["lab", "check", "--name", made.name, "--seconds", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [(link["device"], link["direction"]) for link in result["links"]] == [("d0", "up"), ("d0", "down")]
    # shaped: never over the rate; under it by at most 20% (1 s of TCP on a host shared with other jobs)
    assert all(0.8 <= link["ratio"] <= 1.02 for link in result["links"]), result["links"]
    assert result["concurrent"] is None  # one device: nothing to share
    (compute,) = result["compute"]
    assert compute["cap_cores"] == 0.5
    assert 0 < compute["measured_cores"] <= 0.5 * 1.1  # the cap holds in an SSH session (sshd's cgroup)
