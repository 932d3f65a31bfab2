"""The emulated lab's plan, computed without root: CPU caps from the dilation, addresses, the `ip`/`tc`
commands of either kind of link, the sshd config and the inventory a lab writes."""

import ipaddress
from dataclasses import replace

import pytest
import yaml
from labkit import write_fleet

from suite.fleet import load_fleet
from suite.orchestrate import labplan


def test_auto_dilation_fills_the_cores_the_coordinator_leaves():
    ratios = {"a": 0.4, "b": 0.4, "c": 0.4, "d": 0.4}
    f = labplan.auto_dilation(ratios, host_cores=2)
    assert f == 1.0  # (2 - 0.25) / 1.6 = 1.09, two significant digits down
    caps = labplan.device_caps(ratios, f, host_cores=2)
    assert sum(caps.values()) <= 2 - labplan.COORDINATOR_RESERVE_CORES
    assert (
        labplan.auto_dilation({"a": 0.05}, host_cores=2) == 20
    )  # one device: at most one core (its worker's thread)
    assert (
        labplan.auto_dilation({"gpu": 100.0}, host_cores=2) == 0.01
    )  # faster than this host: the lab runs slower


def test_a_dilation_that_does_not_fit_names_the_device_or_the_total():
    with pytest.raises(labplan.LabError, match="device b would need 1.20 cores"):
        labplan.device_caps({"a": 0.1, "b": 0.6}, 2.0, host_cores=4)
    with pytest.raises(labplan.LabError, match=r"add up to 2.40 cores.*--dilate 1.4"):
        labplan.device_caps({"a": 0.4, "b": 0.4, "c": 0.4}, 2.0, host_cores=2)
    with pytest.raises(labplan.LabError, match="positive"):
        labplan.device_caps({"a": 0.4}, float("nan"), host_cores=2)


@pytest.mark.parametrize("shared", [False, True])
def test_the_plan_shapes_every_party_once(tmp_path, shared):
    fleet = load_fleet(str(write_fleet(tmp_path, devices=3, mbps=50, shared=shared, speed=0.2)))
    plan = labplan.plan_lab(
        "x", "f", fleet, 2.0, {d.name: 0.4 for d in fleet.devices}, ipaddress.ip_network("10.203.7.0/24")
    )
    assert [d.address for d in plan.devices] == ["10.203.7.10", "10.203.7.11", "10.203.7.12"]
    assert plan.coordinator_address == "10.203.7.1" and plan.rate_bps == 100e6
    commands = [" ".join(c) for c in labplan.shaping_commands(plan)]
    rates = [c for c in commands if "100000000bit" in c]  # the link's rate, as a rate or a ceiling
    redirects = [c for c in commands if "mirred egress redirect" in c]
    assert len(redirects) == 4  # every port's ingress: three devices and the coordinator
    if shared:
        assert {c.split()[-1] for c in redirects} == {"medium"}
        assert sum("match ip src" in c for c in commands) == 4  # one class per sender
        assert len(rates) == 1 + 1 + 4  # the medium, the catch-all class, each sender's class
    else:
        assert {c.split()[-1] for c in redirects} == {"ifb-p0", "ifb-p1", "ifb-p2", "ifb-pc"}
        assert len(rates) == 8  # each party's link in each direction
    config = labplan.sshd_config(plan, plan.devices[0])
    assert "ListenAddress 10.203.7.10:22" in config and "PasswordAuthentication no" in config


def test_lab_names_are_short_words():
    with pytest.raises(labplan.LabError, match="--name"):
        labplan.check_name("Lab-1")
    with pytest.raises(labplan.LabError, match="--name"):
        labplan.check_name("a" * 13)


def test_the_topology_gives_every_device_a_namespace_and_a_port_on_the_bridge(tmp_path):
    fleet = load_fleet(str(write_fleet(tmp_path, devices=2, mbps=10, shared=False, speed=0.1)))
    caps = {d.name: 0.1 for d in fleet.devices}
    plan = labplan.plan_lab("x", "f", fleet, 1.0, caps, ipaddress.ip_network("10.203.9.0/24"))
    commands = [" ".join(c) for c in labplan.topology_commands(plan)]
    assert commands.count("ip netns add suite-lab-x-ap") == 1
    for device in plan.devices:
        assert f"ip netns add {device.namespace}" in commands
        assert f"ip -n {device.namespace} addr add {device.address}/24 dev eth0" in commands
        assert f"ip -n suite-lab-x-ap link set {device.port} master br0 up" in commands
    assert "ip addr add 10.203.9.1/24 dev sl-x" in commands  # the coordinator, in the root namespace


def test_dilate_is_auto_or_a_number():
    ratios = {"a": 0.4, "b": 0.4, "c": 0.4, "d": 0.4}
    assert labplan.dilation_for("auto", ratios, host_cores=2) == labplan.auto_dilation(ratios, host_cores=2)
    assert labplan.dilation_for("2.5", ratios, host_cores=2) == 2.5
    with pytest.raises(labplan.LabError, match="--dilate 'fast' is not a number or 'auto'"):
        labplan.dilation_for("fast", ratios, host_cores=2)


def test_a_lab_takes_the_first_24_no_route_or_lab_uses():
    used = [ipaddress.ip_network("10.203.0.0/24"), ipaddress.ip_network("10.203.1.128/25")]
    assert labplan.first_free_subnet(used) == ipaddress.ip_network("10.203.2.0/24")
    assert labplan.first_free_subnet([]) == ipaddress.ip_network("10.203.0.0/24")
    with pytest.raises(labplan.LabError, match="every /24 of 10.203.0.0/16 is in use"):
        labplan.first_free_subnet([ipaddress.ip_network("10.0.0.0/8")])


def test_a_fleet_too_big_or_badly_named_for_a_lab_is_refused(tmp_path):
    fleet = load_fleet(str(write_fleet(tmp_path, devices=2, mbps=10, shared=False, speed=0.1)))
    labplan.check_fleet(fleet)
    renamed = replace(fleet, devices=(replace(fleet.devices[0], name="a b"),))
    with pytest.raises(labplan.LabError, match="device 'a b'"):
        labplan.check_fleet(renamed)


def test_the_inventory_reaches_every_device_as_root_through_the_labs_key(tmp_path):
    fleet_spec = str(write_fleet(tmp_path, devices=2, mbps=10, shared=True, speed=0.1))
    fleet = load_fleet(fleet_spec)
    caps = {d.name: 0.2 for d in fleet.devices}
    plan = labplan.plan_lab("x", fleet_spec, fleet, 2.0, caps, ipaddress.ip_network("10.203.4.0/24"))
    text = labplan.inventory_text(plan, "/usr/bin/python3")
    assert "suite lab down --name x" in text and labplan.LATENCY_NOTE in text
    doc = yaml.safe_load(text)  # the key and known_hosts it names exist only once the lab is up
    assert [(d["name"], d["host"], d["user"], d["python"], d["key"]) for d in doc["devices"]] == [
        ("d0", "10.203.4.10", "root", "/usr/bin/python3", "/run/suite-lab/x/id_ed25519"),
        ("d1", "10.203.4.11", "root", "/usr/bin/python3", "/run/suite-lab/x/id_ed25519"),
    ]
    assert doc["coordinator"] == {"host": "10.203.4.1", "interface": "sl-x"}
    assert doc["lab"]["dilation"] == 2.0 and doc["lab"]["shared"] and doc["lab"]["rate_mbps"] == 20.0


def test_root_gets_sh_as_its_login_shell_and_no_other_line_changes():
    passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
    assert labplan.passwd_with_sh(passwd) == (
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/bash\n"
    )
