"""Inventories: the committed Pi example loads, the lab's round-trips, and every mistake is one line."""

import os
from pathlib import Path

import pytest
import yaml

from suite.cli import main
from suite.errors import UserError
from suite.fleet import FLEETS_DIR
from suite.inventory import (
    INVENTORIES_DIR,
    CoordinatorHost,
    Host,
    LabNetwork,
    inventory_yaml,
    load_inventory,
)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "id_test"
    path.parent.mkdir()
    path.write_text("not parsed before connecting\n")
    path.chmod(0o600)
    return path


def _doc(key: Path) -> dict:
    """A valid inventory for the bundled 2-device fleet `pico-homo-2` (devices pi0, pi1)."""
    return {
        "schema_version": 1,
        "name": "t",
        "fleet": "pico-homo-2",
        "coordinator": {"host": "10.0.0.1"},
        "defaults": {
            "user": "pi",
            "key": str(key),
            "python": "/usr/bin/python3",
            "workdir": "/home/pi/suite",
        },
        "devices": [{"name": "pi0", "host": "10.0.0.10"}, {"name": "pi1", "host": "10.0.0.11", "port": 2222}],
    }


def _write(tmp_path: Path, doc: dict | str) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def test_the_committed_pi_lab_example_is_valid(tmp_path, key):
    example = INVENTORIES_DIR / "pi-lab.yaml"
    doc = yaml.safe_load(example.read_text())
    doc["defaults"]["key"] = str(key)  # the example's key lives on the user's machine
    inventory = load_inventory(_write(tmp_path, doc))
    assert [h.name for h in inventory.hosts] == ["pi0", "pi1", "pi2", "pi3"]
    assert {h.user for h in inventory.hosts} == {"pi"} and inventory.hosts[
        0
    ].launcher == "/home/pi/suite/bin/python"
    assert inventory.fleet.name == "pico-homo-4" and inventory.lab is None
    assert inventory.known_hosts == Path("~/.ssh/known_hosts").expanduser()


def test_defaults_merge_and_device_fields_win(tmp_path, key):
    inventory = load_inventory(_write(tmp_path, _doc(key)))
    assert [(h.host, h.port, h.user) for h in inventory.hosts] == [
        ("10.0.0.10", 22, "pi"),
        ("10.0.0.11", 2222, "pi"),
    ]
    assert inventory.coordinator == CoordinatorHost("10.0.0.1", None)
    assert inventory.host("pi1").address == "pi@10.0.0.11:2222"


def test_relative_key_and_fleet_paths_start_at_the_inventory(tmp_path, key):
    fleet = tmp_path / "fleets" / "two.yaml"
    fleet.parent.mkdir()
    fleet.write_text((FLEETS_DIR / "pico-homo-2.yaml").read_text())
    doc = _doc(key) | {"fleet": "fleets/two.yaml"}
    doc["defaults"]["key"] = "keys/id_test"
    inventory = load_inventory(_write(tmp_path, doc))
    assert inventory.hosts[0].key == key.resolve()
    assert inventory.fleet.name == "pico-homo-2"


def test_what_the_lab_writes_loads_back(tmp_path, key):
    lab = LabNetwork("x", 1.5, 75.0, True, "tc htb", "not emulated", {"pi0": 0.5, "pi1": 0.5})
    hosts = [Host(n, f"10.1.0.{i}", 22, "root", key, "/usr/bin/python3", f"/w/{n}", "eth0") for i, n in
             enumerate(["pi0", "pi1"])]  # fmt: skip
    coordinator = CoordinatorHost("10.1.0.1", "sl-x")
    text = inventory_yaml("lab-x", "pico-homo-2", coordinator, key, hosts, lab, "a\n\nb")
    assert text.startswith("# a\n#\n# b\n")
    inventory = load_inventory(_write(tmp_path, text))
    assert inventory.lab == lab and list(inventory.hosts) == hosts
    assert inventory.coordinator == CoordinatorHost("10.1.0.1", "sl-x")


def test_without_a_key_the_agent_is_used_and_jumps_and_an_ssh_config_load_back(tmp_path, key):
    config = tmp_path / "ssh_config"
    config.write_text("Host pi*\n    ProxyJump gw.example.org\n")
    doc = _doc(key)
    del doc["defaults"]["key"]
    doc["defaults"]["ssh_config"] = "ssh_config"  # from the inventory's folder, as `key` is
    doc["devices"][1]["proxy_jump"] = "admin@gw.example.org:2200,10.0.0.1"
    inventory = load_inventory(_write(tmp_path, doc))
    assert [(h.key, h.proxy_jump, h.ssh_config) for h in inventory.hosts] == [
        (None, None, config), (None, "admin@gw.example.org:2200,10.0.0.1", config)]  # fmt: skip
    hosts = list(inventory.hosts)
    again = inventory_yaml("t", "pico-homo-2", inventory.coordinator, inventory.known_hosts, hosts)
    assert list(load_inventory(_write(tmp_path, again)).hosts) == list(inventory.hosts)


def test_a_missing_ssh_config_is_one_line_naming_the_device(tmp_path, key):
    doc = _doc(key)
    doc["devices"][0]["ssh_config"] = "nowhere/config"
    said = _error(tmp_path, doc)
    assert "devices.0.ssh_config: no such file" in said and "device 'pi0'" in said


def _error(tmp_path: Path, doc: dict | str) -> str:
    with pytest.raises(UserError) as caught:
        load_inventory(_write(tmp_path, doc))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_key_material_anywhere_in_the_file_is_refused(tmp_path, key):
    doc = _doc(key)
    doc["devices"][0]["key"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END"
    assert "looks like key material" in _error(tmp_path, doc)
    text = yaml.safe_dump(_doc(key)) + "# -----BEGIN OPENSSH PRIVATE KEY-----\n"
    assert "line" in _error(tmp_path, text) and "key material" in _error(tmp_path, text)
    doc = _doc(key)
    doc["devices"][1]["key"] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZ user@host"
    message = _error(tmp_path, doc)
    assert "key material" in message and "AAAA" not in message  # never echoed


def test_passwords_are_refused_with_the_reason(tmp_path, key):
    doc = _doc(key)
    doc["devices"][0]["password"] = "raspberry"
    message = _error(tmp_path, doc)
    assert "password" in message and "no secrets" in message


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d["devices"].pop(), "device 'pi1' has no entry"),
        (lambda d: d["devices"].append({"name": "pi9", "host": "h"}), "'pi9' is not a device of fleet"),
        (lambda d: d["devices"].append({"name": "pi0", "host": "h"}), "listed twice"),
        (lambda d: d["defaults"].pop("user"), "devices.0.user: missing"),
        (lambda d: d["defaults"].update(workdir="suite"), "absolute path"),
        (lambda d: d["devices"][0].update(hostname="x"), "hostname: Extra inputs are not permitted"),
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d.update(fleet="nope"), "unknown fleet 'nope'"),
        (lambda d: d["devices"][0].update(port=70000), "devices.0.port"),
        (lambda d: d["devices"][1].update(port=22, host="10.0.0.10"), "share 10.0.0.10:22"),
        (lambda d: d["coordinator"].update(host="a b"), "coordinator.host"),
    ],
)
def test_mistakes_are_one_line_naming_the_field(tmp_path, key, change, expected):
    doc = _doc(key)
    change(doc)
    assert expected in _error(tmp_path, doc)


def test_a_missing_or_loose_key_file_says_how_to_fix_it(tmp_path, key):
    doc = _doc(key)
    doc["devices"][0]["key"] = str(tmp_path / "absent")
    assert "ssh-keygen" in _error(tmp_path, doc)
    key.chmod(0o644)
    assert f"chmod 600 {key}" in _error(tmp_path, _doc(key))


def test_deploy_with_a_bad_inventory_is_one_line_and_exit_2(tmp_path, key, capsys):
    doc = _doc(key)
    doc["devices"].pop()
    assert main(["deploy", "--inventory", str(_write(tmp_path, doc))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pi1" in err


def test_lab_commands_refuse_without_root(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for command in (["up", "--fleet", "pico-homo-2"], ["status"], ["check"], ["down"]):
        assert main(["lab", *command]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.strip().endswith("run it with sudo")
