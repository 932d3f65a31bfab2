"""The emulated lab: a fleet's devices as network namespaces on this host, each with a real sshd,
links shaped with tc, CPU capped per device profile, and the inventory a real fleet would have.

Topology (lab NAME, subnet 10.203.K.0/24, K free in `ip route` and among other labs):

    root namespace ── sl-NAME 10.203.K.1 (the coordinator) ─┐
                                                            pc
    suite-lab-NAME-ap:  bridge br0 ── p0 ... p{n-1} ── the shaping (tc htb, ifb)
                                      │
    suite-lab-NAME-dev-<device>:  eth0 10.203.K.(10+i), sshd on port 22, cgroup suite-lab-NAME-<device>

All shaping lives in the access point's namespace. A switched fleet gives every party (device or
coordinator) its own link of the fleet's rate in each direction: an htb on its port for traffic
towards it, and its port's ingress redirected to an `ifb` with an htb for traffic from it. A shared
fleet (WiFi) redirects every port's ingress to one `ifb`, `medium`, whose htb holds all traffic to
the fleet's rate, with one class per sender so concurrent senders share it fairly. This kernel has
no netem: link latency is not emulated, and the lab says so wherever it reports the network.

Time dilation F: every device's CPU cap is F x its profile's speed relative to this host's `local`
profile, every link F x the fleet's rate, so the real fleet's compute-to-network ratio is kept while
frames run F times faster; measured times x F are the real fleet's.

State lives in /run/suite-lab/NAME (lab.json, keys, known_hosts, the inventory, per-device sshd
files and work folders). `down` removes everything, and finds what a killed `up` left by name.

This module is the host side: it carries out the plan `labplan.py` computes (names, addresses, caps,
commands, configs) and reads back what is on the host.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from suite.fleet import load_fleet, load_profile
from suite.inventory import write_private
from suite.orchestrate.labplan import (
    LATENCY_NOTE,
    PREFIX,
    ROOT_LINK_PREFIX,
    STATE_ROOT,
    Lab,
    LabDevice,
    LabError,
    check_fleet,
    check_name,
    device_caps,
    dilation_for,
    first_free_subnet,
    inventory_text,
    passwd_with_sh,
    plan_lab,
    shaping_commands,
    speed_ratios,
    sshd_config,
    topology_commands,
)
from suite.processes import process_alive
from suite.runtime.emulate import CPU_ROOT, DEVICE_CPU_SHARES, CpuLimit, cpu_quota_available, remove_cgroup

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and needs its absolute path
TOOLS = {"ip": "iproute2", "tc": "iproute2", "nsenter": "util-linux", "unshare": "util-linux",
         "ssh-keygen": "openssh-client"}  # fmt: skip

_LAB_JSON = TypeAdapter(Lab)


def _sh(argv: list[str], what: str | None = None, **kwargs) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise LabError(f"{what or ' '.join(argv)}: {said[-1] if said else f'exit {result.returncode}'}")
    return result.stdout


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("suite lab needs root (network namespaces, tc, cgroups, sshd): run it with sudo")


def _require_root_and_tools() -> None:
    require_root()
    missing = [(tool, package) for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not Path(SSHD).is_file():
        missing.append((SSHD, "openssh-server"))
    if missing:
        tool, package = missing[0]
        raise LabError(f"{tool} is missing: apt-get install -y {package}")
    if not cpu_quota_available():
        raise LabError(
            f"suite lab caps each device's CPU with cgroup v1 quotas, and {CPU_ROOT} is not a writable "
            "cgroup v1 cpu controller on this host"
        )


class _Lock:
    """One `lab up` or `lab down` at a time on this host (they pick subnets and names)."""

    def __enter__(self) -> _Lock:
        STATE_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.file = (STATE_ROOT / ".lock").open("w")
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def load_lab(name: str) -> Lab:
    require_root()
    path = STATE_ROOT / check_name(name) / "lab.json"
    if not path.is_file():
        hint = " (leftovers of a killed `lab up` exist: run `suite lab down`)" if leftovers(name) else ""
        raise LabError(
            f"no lab '{name}' is up: start one with `suite lab up --fleet FLEET --name {name}`{hint}"
        )
    try:
        return _LAB_JSON.validate_json(path.read_text())
    except ValidationError as exc:
        raise LabError(
            f"{path} is not a lab state this suite wrote ({exc.errors()[0]['msg']}); "
            f"run `suite lab down --name {name}`"
        ) from None


def _labs() -> list[Lab]:
    found = []
    for path in STATE_ROOT.glob("*/lab.json"):
        try:
            found.append(_LAB_JSON.validate_json(path.read_text()))
        except (ValidationError, OSError):
            continue
    return found


def _free_subnet() -> ipaddress.IPv4Network:
    """The first /24 of the labs' subnet that no route of this host and no other lab uses."""
    used = [ipaddress.ip_network(lab.subnet) for lab in _labs()]
    for route in json.loads(_sh(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        try:
            used.append(ipaddress.ip_network(route.get("dst", ""), strict=False))
        except ValueError:
            continue  # "default" and other words
    return first_free_subnet(used)


def up(
    fleet_spec: str, dilate: str = "1", name: str = "lab", say: Callable[[str], None] = lambda _: None
) -> Lab:
    """Make the lab; on any failure, remove what was made and raise."""
    check_name(name)
    _require_root_and_tools()
    fleet = load_fleet(fleet_spec)
    if "/" in fleet_spec or fleet_spec.endswith((".yaml", ".yml")):
        fleet_spec = str(Path(fleet_spec).resolve())
    check_fleet(fleet)
    ratios = speed_ratios(fleet, load_profile("local").macs_per_s)
    cores = os.cpu_count() or 1
    dilation = dilation_for(dilate, ratios, cores)
    caps = device_caps(ratios, dilation, cores)
    with _Lock():
        if (STATE_ROOT / name / "lab.json").is_file():
            raise LabError(
                f"lab '{name}' is already up; `suite lab down --name {name}` first, or pick another --name"
            )
        if leftovers(name):
            raise LabError(
                f"a lab '{name}' was left half made (a killed `lab up`?); run "
                f"`suite lab down --name {name}` first"
            )
        lab = plan_lab(name, fleet_spec, fleet, dilation, caps, _free_subnet())
        try:
            _make(lab, say)
        except BaseException:
            _remove(name)
            raise
    return lab


def _make(lab: Lab, say: Callable[[str], None]) -> None:
    state = lab.state
    state.mkdir(mode=0o700)
    for d in lab.devices:
        (state / "devices" / d.name / "work").mkdir(mode=0o700, parents=True)
    say(f"network: {len(lab.devices)} device namespaces and an access point in {lab.subnet}")
    for argv in topology_commands(lab):
        _sh(argv)
    for argv in shaping_commands(lab):
        _sh(argv)
    say(f"links: {lab.shaping}")
    _keygen(state / "id_ed25519", f"suite-lab-{lab.name}")
    shutil.copyfile(state / "id_ed25519.pub", state / "authorized_keys")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    write_private(state / "passwd", passwd_with_sh(Path("/etc/passwd").read_text()), mode=0o644)
    known = []
    for d in lab.devices:
        folder = state / "devices" / d.name
        key = folder / "ssh_host_ed25519_key"
        _keygen(key, f"{d.name}@suite-lab-{lab.name}")
        known.append(f"{d.address} {' '.join(key.with_suffix('.pub').read_text().split()[:2])}")
        write_private(folder / "sshd_config", sshd_config(lab, d))
        limit = CpuLimit(d.cpu_cores, name=d.cgroup)
        (limit.create() / "cpu.shares").write_text(str(DEVICE_CPU_SHARES))
        limit.keep()
        _start_sshd(lab, d, folder)
    write_private(state / "known_hosts", "\n".join(known) + "\n")
    say(
        f"sshd: {len(lab.devices)} servers, key-only, each device capped at its cores "
        f"({', '.join(f'{d.name} {d.cpu_cores:.3g}' for d in lab.devices)})"
    )
    _wait_for_sshd(lab)
    write_private(lab.inventory_path(), inventory_text(lab, sys.executable), mode=0o644)
    write_private(state / "lab.json", json.dumps(asdict(lab), indent=2) + "\n")


def _keygen(path: Path, comment: str) -> None:
    """A new ed25519 key pair without a passphrase: `path` and `path`.pub."""
    _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _start_sshd(lab: Lab, device: LabDevice, folder: Path) -> None:
    """sshd inside the device's namespace and cgroup, so every session it starts inherits both.

    It runs in a mount namespace of its own where /etc/passwd gives root the shell /bin/sh: sshd runs
    every command through the user's login shell, and this host's (bash) would source root's rc files
    in every session, which may be slow, print, or take locks a killed session never releases.
    """
    procs = CPU_ROOT / device.cgroup / "cgroup.procs"

    def enter_cgroup() -> None:
        procs.write_text(str(os.getpid()))

    mount_passwd = 'mount --bind "$0" /etc/passwd && exec "$@"'
    sshd = [SSHD, "-f", str(folder / "sshd_config"), "-E", str(folder / "sshd.log")]
    _sh(
        ["nsenter", f"--net=/run/netns/{device.namespace}", "unshare", "--mount", "--propagation", "private",
         "/bin/sh", "-c", mount_passwd, str(lab.state / "passwd"), *sshd],
        f"starting sshd for device {device.name}",
        preexec_fn=enter_cgroup,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_for_sshd(lab: Lab, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    for d in lab.devices:
        while not sshd_answers(d.address):
            if time.monotonic() > deadline:
                log = lab.state / "devices" / d.name / "sshd.log"
                said = log.read_text().strip().splitlines()[-1:] if log.is_file() else []
                raise LabError(
                    f"device {d.name}: sshd did not answer on {d.address}:22 within {timeout_s:g} s"
                    + (f": {said[0]}" if said else "")
                )
            time.sleep(0.05)


def sshd_answers(address: str, timeout_s: float = 1.0) -> bool:
    """True when an SSH server greets on address:22."""
    try:
        with socket.create_connection((address, 22), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def sshd_pid(lab: Lab, device: LabDevice) -> int | None:
    """The device's sshd, when its pid file names a live process."""
    try:
        pid = int((lab.state / "devices" / device.name / "sshd.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def leftovers(name: str) -> dict[str, list[str]]:
    """Everything on this host that belongs to lab `name`, by its naming prefix."""
    prefix = f"{PREFIX}-{check_name(name)}-"
    netns = [line.split()[0] for line in _sh(["ip", "netns", "list"]).splitlines() if line.startswith(prefix)]
    link = f"{ROOT_LINK_PREFIX}{name}"
    links = [link] if (Path("/sys/class/net") / link).exists() else []
    cgroups = sorted(p.name for p in CPU_ROOT.glob(f"{prefix}*")) if CPU_ROOT.is_dir() else []
    state = [str(STATE_ROOT / name)] if (STATE_ROOT / name).exists() else []
    return {
        k: v
        for k, v in {"namespaces": netns, "links": links, "cgroups": cgroups, "state": state}.items()
        if v
    }


def down(name: str) -> dict[str, int]:
    """Remove lab `name` and whatever a killed `up` left of it; idempotent. What was removed, counted."""
    check_name(name)
    require_root()
    with _Lock():
        return _remove(name)


def _remove(name: str) -> dict[str, int]:
    found = leftovers(name)
    killed = _kill_processes(found)
    for cgroup in found.get("cgroups", []):
        remove_cgroup(CPU_ROOT / cgroup)
    for link in found.get("links", []):
        subprocess.run(["ip", "link", "del", link], capture_output=True)  # its peer in the AP goes with it
    for ns in found.get("namespaces", []):
        _sh(["ip", "netns", "del", ns], f"removing namespace {ns}")
    shutil.rmtree(STATE_ROOT / name, ignore_errors=True)
    return {
        "namespaces": len(found.get("namespaces", [])),
        "processes": killed,
        "cgroups": len(found.get("cgroups", [])),
        "links": len(found.get("links", [])),
    }


def _kill_processes(found: dict[str, list[str]]) -> int:
    """SIGKILL every process in the lab's namespaces and cgroups (sshd, sessions, workers); wait for them."""
    pids: set[int] = set()
    for ns in found.get("namespaces", []):
        pids |= {int(p) for p in _sh(["ip", "netns", "pids", ns]).split()}
    for cgroup in found.get("cgroups", []):
        procs = CPU_ROOT / cgroup / "cgroup.procs"
        if procs.is_file():
            pids |= {int(p) for p in procs.read_text().split()}
    pids.discard(os.getpid())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(pids)


def status(name: str) -> dict:
    """What the lab is and whether its parts are healthy: one JSON-ready object."""
    lab = load_lab(name)
    namespaces = set(_sh(["ip", "netns", "list"]).split())
    devices = []
    for d in lab.devices:
        quota = CPU_ROOT / d.cgroup / "cpu.cfs_quota_us"
        period = CPU_ROOT / d.cgroup / "cpu.cfs_period_us"
        cores = int(quota.read_text()) / int(period.read_text()) if quota.is_file() else None
        devices.append(
            {
                "device": d.name,
                "address": d.address,
                "namespace": d.namespace,
                "namespace_up": d.namespace in namespaces,
                "cpu_cores": cores,
                "cpu_cores_planned": d.cpu_cores,
                "sshd_pid": sshd_pid(lab, d),
                "sshd_answers": sshd_answers(d.address),
            }
        )
    qdiscs = _sh(["tc", "-n", lab.ap_namespace, "qdisc", "show"]) if lab.ap_namespace in namespaces else ""
    shaped = "htb" in qdiscs and "ingress" in qdiscs
    healthy = shaped and all(
        x["namespace_up"] and x["sshd_pid"] and x["sshd_answers"] and x["cpu_cores"] for x in devices
    )
    return {
        "lab": lab.name,
        "fleet": lab.fleet_name,
        "inventory": str(lab.inventory_path()),
        "dilation": lab.dilation,
        "subnet": lab.subnet,
        "coordinator": {"address": lab.coordinator_address, "interface": lab.root_link},
        "shaping": lab.shaping,
        "shaping_in_place": shaped,
        "rate_mbps": round(lab.rate_bps / 1e6, 6),
        "shared": lab.shared,
        "latency": LATENCY_NOTE,
        "devices": devices,
        "healthy": healthy,
    }
