"""`suite deploy`: what it decides (any user), and deploying to a 3-device lab over real sshd (root)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from labkit import lab_name, needs_lab, write_fleet

from suite.fleet import load_profile, profile_yaml
from suite.inventory import Host, load_inventory
from suite.orchestrate import lab
from suite.orchestrate.deploy import DeviceReport, describe, mismatches, parse_pins, too_old
from suite.orchestrate.ssh import connect, run

HOST = Host("pi0", "10.0.0.10", 22, "pi", Path("/k"), "/usr/bin/python3", "/home/pi/suite", None)
FACTS = {
    "python": "3.11.7",
    "torch": "2.13.0+cpu",
    "suite": "0.1.0",
    "suite_path": "/home/pi/suite/site/suite/__init__.py",
}


def test_pins_come_from_the_constraints_file():
    pins = parse_pins("# comment\ntorch==2.13.0\nPyYAML==6.0.3  # why\ntyping_extensions==4.16.0\nnumpy\n")
    assert pins == {"torch": "2.13.0", "pyyaml": "6.0.3", "typing-extensions": "4.16.0"}


def test_a_fit_device_has_no_mismatch_and_local_labels_do_not_count():
    assert mismatches(FACTS, HOST, {"torch": "2.13.0"}, "2.13.0+cpu") == []


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"torch": "2.12.0"}, "constraints.txt pins 2.13.0"),
        ({"suite_path": "/usr/lib/python3/dist-packages/suite/__init__.py"}, "not the deployed copy"),
        ({"profile_error": "unknown op"}, "its profile does not load"),
        ({"error": "ModuleNotFoundError: No module named 'torch'"}, "does not import"),
    ],
)
def test_mismatches_say_what_is_wrong(change, expected):
    problems = mismatches(FACTS | change, HOST, {"torch": "2.13.0"}, "2.13.0+cpu")
    assert problems and expected in problems[0]


def test_an_old_python_is_refused_before_installing():
    assert too_old("3.11.7") is None and too_old("3.12.1") is None
    assert "python 3.9.2 is older than the 3.11" in too_old("3.9.2")


def test_the_coordinators_torch_must_match_for_bit_exact_checks():
    (problem,) = mismatches(FACTS, HOST, {}, "2.14.0")
    assert "the coordinator runs 2.14.0" in problem


def test_the_pushed_profile_loads_back(tmp_path):
    profile = load_profile("rpi4b-1500mhz")
    (tmp_path / "p.yaml").write_text(profile_yaml(profile))
    assert load_profile(str(tmp_path / "p.yaml")) == profile


def test_the_table_has_a_row_per_device():
    rows = describe(
        [
            DeviceReport("pi0", "pi@h:22", "up to date", 0.4, "site", "ab" * 32, FACTS | {"mkldnn": True}),
            DeviceReport("pi1", "pi@g:22", "failed", 3.0, error="device pi1: refused"),
        ]
    )
    assert rows[0][:3] == ["device", "address", "result"]
    assert rows[1][2:7] == ["up to date", "site", "3.11.7", "2.13.0+cpu", "0.1.0+abababab"]
    assert rows[2][2] == "failed" and rows[2][4] == "-"


# ---- a real lab (root) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """A 3-device lab whose devices each get half a core (so the installs do not crawl)."""
    name = lab_name("d")
    fleet = write_fleet(tmp_path_factory.mktemp("fleet"), devices=3, mbps=50, shared=True, speed=0.5)
    made = lab.up(str(fleet), "1", name)
    try:
        yield load_inventory(made.inventory_path())
    finally:
        lab.down(name)


def _deploy(inventory_path: Path) -> tuple[int, dict, str]:
    """`suite deploy --json` as a user runs it: exit code, the JSON report, stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "suite", "deploy", "--inventory", str(inventory_path), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout else {}, done.stderr


@needs_lab
def test_deploy_to_a_three_device_lab_then_skip_them(inventory):
    code, report, err = _deploy(inventory.path)
    assert code == 0, err
    assert [d["status"] for d in report["devices"]] == ["installed"] * 3
    assert {d["environment"] for d in report["devices"]} == {
        "site"
    }  # the lab's python has the pinned packages
    assert all(d["facts"]["profile"] == "slow" for d in report["devices"])
    for host in inventory.hosts:
        conn = connect(host, inventory.known_hosts)
        try:
            where = run(
                conn, host, f"cd / && {host.launcher} -c 'import suite; print(suite.__file__)'", "import"
            )
            ready = json.loads(run(conn, host, f"cat {host.workdir}/ready.json", "read ready.json"))
            config = json.loads(run(conn, host, f"cat {host.workdir}/config/run.json", "read run.json"))
        finally:
            conn.close()
        assert where.strip() == f"{host.workdir}/site/suite/__init__.py"
        assert ready["environment"] == "site" and config["device"] == host.name
        assert config["coordinator"]["host"] == inventory.coordinator.host and config["lab"]["dilation"] == 1
    first = report["seconds"]
    code, report, err = _deploy(inventory.path)
    assert code == 0, err
    assert [d["status"] for d in report["devices"]] == ["up to date"] * 3
    assert report["seconds"] < first
    assert err.count("up to date, skipped") == 3


def _variant(inventory, tmp_path: Path, device: str, **fields) -> Path:
    """A copy of the lab's inventory with one device's fields changed."""
    doc = yaml.safe_load(inventory.path.read_text())
    next(d for d in doc["devices"] if d["name"] == device).update(fields)
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _one_error_line(err: str, device: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert f"device {device} (" in errors[0]
    return errors[0]


@needs_lab
def test_a_wrong_key_is_one_line_naming_the_device(inventory, tmp_path):
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    code, report, err = _deploy(_variant(inventory, tmp_path, "d1", key=str(key)))
    assert code == 2
    assert "refused key" in _one_error_line(err, "d1")
    assert [d["status"] for d in report["devices"]] == ["up to date", "failed", "up to date"]


@needs_lab
def test_an_unknown_host_key_is_refused(inventory, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(
        "".join(
            line + "\n"
            for line in inventory.known_hosts.read_text().splitlines()
            if not line.startswith(inventory.host("d2").host + " ")
        )
    )
    doc = yaml.safe_load(inventory.path.read_text()) | {"known_hosts": str(known)}
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, _, err = _deploy(path)
    assert code == 2 and "host key is not in" in _one_error_line(err, "d2")


@needs_lab
def test_a_stopped_sshd_and_a_failed_install_are_one_line_and_never_ready(tmp_path):
    name = lab_name("s")
    made = lab.up(
        str(write_fleet(tmp_path / "fleet", devices=2, mbps=50, shared=False, speed=0.3)), "1", name
    )
    try:
        inventory = load_inventory(made.inventory_path())
        os.kill(lab.sshd_pid(made, made.devices[0]), 9)
        code, _, err = _deploy(_variant(inventory, tmp_path, "d1", python="/nonexistent/python3"))
        assert code == 2
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 2, err
        refused = next(line for line in errors if "device d0 (" in line)
        assert "connection refused on port 22 (is sshd running there?)" in refused
        failed = next(line for line in errors if "device d1 (" in line)
        assert "probing /nonexistent/python3 failed" in failed
        assert not (Path(inventory.host("d1").workdir) / "ready.json").exists()
    finally:
        lab.down(name)
