"""Inventories: how to reach each device of a fleet over SSH, and where the coordinator is.

An inventory (`suite/data/inventories/*.yaml`, or the one `suite lab up` writes) names a fleet (the
devices' profiles and the link model stay in the fleet file) and, per fleet device, its SSH
address, user, the PATH of a private key (or none: the SSH agent's), the jump hosts and the
ssh_config to reach it through, the interpreter and the work folder on the device. It
never holds a secret: key material or passwords in the file are refused. Loading checks it
against the fleet (every fleet device exactly once) and returns frozen dataclasses; every
mistake is one line naming the file, the field and the fix.

Plain data below both its readers: the runtime runs a plan on an inventory's devices, and
`suite.orchestrate` deploys to them and writes the lab's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml
from pydantic import Field, field_validator

from suite.errors import UserError
from suite.fleet import Fleet, load_fleet
from suite.package import data
from suite.schema import Strict, read_yaml, shown

INVENTORIES_DIR = data("inventories")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
SSH_PORT = 22

# What a private key, a public key or a password looks like when pasted into the file.
_KEY_MATERIAL = re.compile(r"-----BEGIN|PRIVATE KEY|(ssh-(ed25519|rsa|dss)|ecdsa-sha2-\S+) AAAA")
_SECRET_FIELDS = re.compile(r"pass(word|phrase)|secret|token|private", re.I)


class InventoryError(UserError):
    """An inventory that cannot be used; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class CoordinatorHost:
    """Where the devices reach the coordinator (its rendezvous store and gloo)."""

    host: str
    interface: str | None  # the coordinator's network interface for gloo (GLOO_SOCKET_IFNAME)


@dataclass(frozen=True)
class Host:
    """How to reach one fleet device over SSH and run the suite there."""

    name: str  # the fleet device it is
    host: str
    port: int
    user: str
    key: Path | None  # private key on this machine; None: the SSH agent's keys and ssh_config's IdentityFile
    python: str  # interpreter on the device
    workdir: str  # absolute folder on the device that deploy owns
    interface: str | None  # the device's network interface for gloo
    proxy_jump: str | None = None  # [user@]host[:port][,...]: reach the device through these SSH hosts
    ssh_config: Path | None = None  # an OpenSSH client config to read (HostName, IdentityFile, ProxyJump)

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def launcher(self) -> str:
        """The interpreter `suite deploy` prepares on the device (the deployed suite first on its path)."""
        return f"{self.workdir}/bin/python"


@dataclass(frozen=True)
class LabNetwork:
    """How an emulated lab shapes its network and caps its devices (`suite lab up` records it)."""

    name: str  # the lab (`suite lab down --name NAME`)
    dilation: float  # the lab runs this many times faster than the fleet it emulates
    rate_mbps: float  # every link's shaped rate: the fleet's rate x dilation
    shared: bool  # one medium for every transfer (WiFi) or one link per device (switched)
    shaping: str  # how, in words
    latency: str  # what is not emulated
    cpu_cores: Mapping[str, float]  # each device's cgroup quota


@dataclass(frozen=True)
class Inventory:
    name: str
    path: Path
    fleet: Fleet
    coordinator: CoordinatorHost
    known_hosts: Path  # host keys are always checked against this file
    hosts: tuple[Host, ...]  # in the fleet's device order
    lab: LabNetwork | None  # set when `suite lab up` wrote the inventory

    def host(self, device: str) -> Host:
        for h in self.hosts:
            if h.name == device:
                return h
        raise InventoryError(
            f"inventory '{self.name}' has no device '{device}'; its devices: "
            f"{', '.join(h.name for h in self.hosts)}"
        )


# ---- YAML schema (the boundary) -------------------------------------------------------------------


def _no_spaces(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError("must be one word without spaces")
    return value


class _CoordinatorSpec(Strict):
    host: str
    interface: str | None = None

    @field_validator("host", "interface")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        return value if value is None else _no_spaces(value)


class _AccessSpec(Strict):
    """Fields a device entry and `defaults` share; a device's own value wins."""

    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key: str | None = None
    python: str | None = None
    workdir: str | None = None
    interface: str | None = None
    proxy_jump: str | None = Field(default=None, description="[user@]host[:port], comma-separated hops")
    ssh_config: str | None = Field(default=None, description="OpenSSH client config, e.g. ~/.ssh/config")

    @field_validator("user", "python", "interface", "proxy_jump")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        return value if value is None else _no_spaces(value)

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and (not PurePosixPath(value).is_absolute() or any(c.isspace() for c in value)):
            raise ValueError("must be an absolute path on the device without spaces, e.g. /home/pi/suite")
        return value if value is None else value.rstrip("/") or "/"


class _DeviceSpec(_AccessSpec):
    name: str = Field(min_length=1)
    host: str

    @field_validator("host")
    @classmethod
    def _host_one_word(cls, value: str) -> str:
        return _no_spaces(value)


class _LabSpec(Strict):
    name: str
    dilation: float = Field(gt=0)
    rate_mbps: float = Field(gt=0)
    shared: bool
    shaping: str
    latency: str
    cpu_cores: dict[str, float]


class _InventorySpec(Strict):
    schema_version: Literal[1]
    name: str = Field(min_length=1)
    fleet: str = Field(min_length=1)
    coordinator: _CoordinatorSpec
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    defaults: _AccessSpec = _AccessSpec()
    devices: list[_DeviceSpec] = Field(min_length=1)
    lab: _LabSpec | None = None


_REQUIRED = ("user", "python", "workdir")


def load_inventory(spec: str | Path) -> Inventory:
    """A bundled inventory name (`suite/data/inventories/<name>.yaml`) or a path to an inventory YAML."""
    path = _locate(str(spec))
    _refuse_secrets(path)
    doc = read_yaml(path, _InventorySpec, InventoryError)
    where = shown(path)
    fleet = _fleet(doc.fleet, path)
    hosts = tuple(_host(path, i, d, doc.defaults) for i, d in enumerate(doc.devices))
    _check_against_fleet(where, hosts, fleet)
    order = {d.name: i for i, d in enumerate(fleet.devices)}
    hosts = tuple(sorted(hosts, key=lambda h: order[h.name]))
    known_hosts = _local_path(doc.known_hosts, path)
    lab = None
    if doc.lab is not None:
        lab = LabNetwork(**doc.lab.model_dump())
    return Inventory(
        doc.name,
        path,
        fleet,
        CoordinatorHost(doc.coordinator.host, doc.coordinator.interface),
        known_hosts,
        hosts,
        lab,
    )


def _locate(spec: str) -> Path:
    if "/" not in spec and not spec.endswith((".yaml", ".yml")):
        bundled = INVENTORIES_DIR / f"{spec}.yaml"
        if bundled.is_file():
            return bundled
        names = ", ".join(sorted(p.stem for p in INVENTORIES_DIR.glob("*.yaml"))) or "none"
        raise InventoryError(
            f"unknown inventory '{spec}'; bundled inventories: {names} (or give a path to a YAML file)"
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InventoryError(f"inventory file '{spec}' does not exist")
    return path


def _refuse_secrets(path: Path) -> None:
    """Refuse key material or password fields anywhere in the file, comments included."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{shown(path)}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if _KEY_MATERIAL.search(line):
            raise InventoryError(
                f"{shown(path)}: line {number}: looks like key material; an inventory holds "
                "no secrets: keep the key in a file (chmod 600) and give its path in `key`"
            )
        field = re.match(r"\s*-?\s*([A-Za-z_]+)\s*:", line)
        if field and _SECRET_FIELDS.search(field[1]):
            raise InventoryError(
                f"{shown(path)}: line {number}: field '{field[1]}': an inventory holds no "
                "secrets; use key-only SSH and give the private key's path in `key`"
            )


def _local_path(value: str, inventory: Path) -> Path:
    """A path on this machine: `~` expanded, relative paths taken from the inventory's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (inventory.parent / path).resolve()


def _fleet(spec: str, inventory: Path) -> Fleet:
    if "/" in spec or spec.endswith((".yaml", ".yml")):
        spec = str(_local_path(spec, inventory))
    return load_fleet(spec)


def _host(path: Path, index: int, device: _DeviceSpec, defaults: _AccessSpec) -> Host:
    where = f"{shown(path)}: devices.{index}"
    merged = {**defaults.model_dump(exclude_none=True), **device.model_dump(exclude_none=True)}
    for name in _REQUIRED:
        if name not in merged:
            raise InventoryError(
                f"{where}.{name}: missing for device '{device.name}' (add it to the device or to `defaults`)"
            )
    key = None if "key" not in merged else _local_path(merged["key"], path)
    if key is not None and not key.is_file():
        raise InventoryError(
            f"{where}.key: no such file {key} for device '{device.name}' (make one with "
            f"`ssh-keygen -t ed25519 -f {key}` and authorise its .pub on the device)"
        )
    if key is not None and key.stat().st_mode & 0o077:
        raise InventoryError(
            f"{where}.key: {key} is readable by others; `chmod 600 {key}` (ssh refuses such keys too)"
        )
    ssh_config = merged.get("ssh_config") and _local_path(merged["ssh_config"], path)
    if ssh_config and not ssh_config.is_file():
        raise InventoryError(f"{where}.ssh_config: no such file {ssh_config} for device '{device.name}' "
                             "(give an OpenSSH client config, e.g. ~/.ssh/config, or leave the field "
                             "out)")  # fmt: skip
    return Host(
        device.name,
        device.host,
        merged.get("port", SSH_PORT),
        merged["user"],
        key,
        merged["python"],
        merged["workdir"],
        merged.get("interface"),
        merged.get("proxy_jump"),
        ssh_config or None,
    )


def _check_against_fleet(shown: str, hosts: tuple[Host, ...], fleet: Fleet) -> None:
    names = [d.name for d in fleet.devices]
    seen: dict[str, int] = {}
    places: dict[tuple[str, int, str], str] = {}
    for i, h in enumerate(hosts):
        if h.name not in names:
            raise InventoryError(
                f"{shown}: devices.{i}.name: '{h.name}' is not a device of fleet "
                f"'{fleet.name}' (its devices: {', '.join(names)})"
            )
        if h.name in seen:
            raise InventoryError(
                f"{shown}: devices.{i}.name: device '{h.name}' is listed twice "
                f"(also devices.{seen[h.name]}); give each fleet device one entry"
            )
        seen[h.name] = i
        place = (h.host, h.port, h.workdir)
        if place in places:
            raise InventoryError(
                f"{shown}: devices.{i}.workdir: devices '{places[place]}' and '{h.name}' share "
                f"{h.host}:{h.port} and {h.workdir}; give each its own workdir"
            )
        places[place] = h.name
    missing = [n for n in names if n not in seen]
    if missing:
        raise InventoryError(
            f"{shown}: devices: fleet '{fleet.name}' device '{missing[0]}' has no entry "
            f"(add one; the inventory needs every device of the fleet)"
        )


def inventory_yaml(
    name: str,
    fleet: str,
    coordinator: CoordinatorHost,
    known_hosts: Path,
    hosts: list[Host],
    lab: LabNetwork | None = None,
    header: str = "",
) -> str:
    """The YAML text `load_inventory` reads back (what `suite lab up` writes)."""
    doc: dict = {
        "schema_version": 1,
        "name": name,
        "fleet": fleet,
        "coordinator": {"host": coordinator.host}
        | ({"interface": coordinator.interface} if coordinator.interface else {}),
        "known_hosts": str(known_hosts),
        "devices": [
            {
                "name": h.name,
                "host": h.host,
                "port": h.port,
                "user": h.user,
                "python": h.python,
                "workdir": h.workdir,
            }
            | ({"key": str(h.key)} if h.key else {})
            | ({"interface": h.interface} if h.interface else {})
            | ({"proxy_jump": h.proxy_jump} if h.proxy_jump else {})
            | ({"ssh_config": str(h.ssh_config)} if h.ssh_config else {})
            for h in hosts
        ],
    }
    if lab is not None:
        doc["lab"] = {
            "name": lab.name,
            "dilation": lab.dilation,
            "rate_mbps": lab.rate_mbps,
            "shared": lab.shared,
            "shaping": lab.shaping,
            "latency": lab.latency,
            "cpu_cores": dict(lab.cpu_cores),
        }
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comment + yaml.safe_dump(doc, sort_keys=False, width=110)


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write atomically (a temporary file renamed into place), readable by the owner only by default."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(tmp, mode)
    tmp.replace(path)
