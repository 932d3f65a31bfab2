"""The emulated lab's plan: from a fleet and a dilation, every name, address, CPU cap, `ip`/`tc`
command, sshd config and inventory the lab will have. Pure functions over frozen data; `lab.py`
carries the plan out on this host (namespaces, tc, cgroups, sshd) and takes it down.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from suite.errors import UserError
from suite.fleet import Fleet
from suite.inventory import CoordinatorHost, Host, LabNetwork, inventory_yaml
from suite.runtime.emulate import cores_for

STATE_ROOT = Path("/run/suite-lab")
PREFIX = "suite-lab"  # namespaces and cgroups: suite-lab-NAME-...
ROOT_LINK_PREFIX = "sl-"  # the root namespace's veth into the access point: sl-NAME (15 characters at most)
SUBNET = ipaddress.ip_network("10.203.0.0/16")  # one /24 per lab
COORDINATOR_HOST = 1  # 10.203.K.1
FIRST_DEVICE_HOST = 10  # 10.203.K.10, .11, ...
MAX_DEVICES = 200  # addresses .10 to .209 of the lab's /24
COORDINATOR_RESERVE_CORES = 0.25  # left to the coordinator (it feeds and checks every frame) by --dilate auto
QUEUE_S = 0.02  # each shaped queue holds about this much time at the link rate ...
QUEUE_MIN_PACKETS = 32  # ... and at least this many full-size packets
MTU_FRAME = 1514
LATENCY_NOTE = (
    "not emulated: this kernel has no netem, so links add only this host's sub-millisecond delay "
    "and the fleet's per-transfer latency is missing"
)


class LabError(UserError):
    """The lab cannot be made or used; one line saying why and what to do."""


@dataclass(frozen=True)
class LabDevice:
    name: str  # the fleet device
    namespace: str
    address: str
    port: str  # its interface in the access point's namespace
    cpu_cores: float  # cgroup quota
    cgroup: str  # directory under /sys/fs/cgroup/cpu


@dataclass(frozen=True)
class Lab:
    schema_version: Literal[1]  # of lab.json
    name: str
    fleet: str  # as given to `lab up`: a bundled name or an absolute path
    fleet_name: str
    subnet: str
    coordinator_address: str
    root_link: str  # the root namespace's interface into the lab (the coordinator's)
    ap_namespace: str
    rate_bps: float  # every link's shaped rate: fleet rate x dilation
    shared: bool
    dilation: float
    devices: tuple[LabDevice, ...]

    @property
    def state(self) -> Path:
        return STATE_ROOT / self.name

    @property
    def parties(self) -> list[tuple[str, str, str]]:
        """(name, address, access point port) of every party on the network, devices then coordinator."""
        return [(d.name, d.address, d.port) for d in self.devices] + [
            ("coordinator", self.coordinator_address, "pc")
        ]

    @property
    def shaping(self) -> str:
        rate = f"{self.rate_bps / 1e6:.4g} Mbit/s"
        if self.shared:
            return (
                f"tc htb in namespace {self.ap_namespace}: one shared medium of {rate} for all traffic "
                "(every port's ingress redirected to ifb 'medium', one class per sender)"
            )
        return (
            f"tc htb in namespace {self.ap_namespace}: every device and the coordinator on its own "
            f"{rate} link in each direction (port egress, and ingress through an ifb per port)"
        )

    def network(self) -> LabNetwork:
        return LabNetwork(
            self.name,
            self.dilation,
            round(self.rate_bps / 1e6, 6),
            self.shared,
            self.shaping,
            LATENCY_NOTE,
            {d.name: d.cpu_cores for d in self.devices},
        )

    def inventory_path(self) -> Path:
        return self.state / "inventory.yaml"


def speed_ratios(fleet: Fleet, host_macs_per_s: float) -> dict[str, float]:
    """Each device's speed relative to this host (one thread each)."""
    return {d.name: d.profile.macs_per_s / host_macs_per_s for d in fleet.devices}


def auto_dilation(ratios: dict[str, float], host_cores: float) -> float:
    """The largest F (two significant digits, rounded down) whose caps fit this host: every device
    within one core (its worker's one thread), all of them within the cores the coordinator leaves."""
    budget = host_cores - COORDINATOR_RESERVE_CORES
    best = min(budget / sum(ratios.values()), min(1 / r for r in ratios.values()))
    scale = 10 ** (math.floor(math.log10(best)) - 1)
    return math.floor(best / scale * (1 + 1e-9)) * scale


def device_caps(ratios: dict[str, float], dilation: float, host_cores: float) -> dict[str, float]:
    """CPU cores per device at dilation F; a LabError when they do not fit this host."""
    if not dilation > 0 or math.isinf(dilation):
        raise LabError(f"--dilate {dilation} must be a positive number or 'auto'")
    caps = {}
    for name, ratio in ratios.items():
        cores = cores_for(ratio * dilation, 1.0, threads=1)
        if cores is None:
            raise LabError(
                f"--dilate {dilation:g}: device {name} would need {ratio * dilation:.2f} cores (more than "
                f"its worker's one thread); use --dilate {auto_dilation(ratios, host_cores):g} (auto) "
                "or less"
            )
        caps[name] = round(cores, 4)
    total = sum(caps.values())
    if total > host_cores - COORDINATOR_RESERVE_CORES + 1e-9:
        raise LabError(
            f"--dilate {dilation:g}: the devices' caps add up to {total:.2f} cores, but this host has "
            f"{host_cores} ({COORDINATOR_RESERVE_CORES} kept for the coordinator); use --dilate "
            f"{auto_dilation(ratios, host_cores):g} (auto) or less"
        )
    return caps


def plan_lab(
    name: str,
    fleet_spec: str,
    fleet: Fleet,
    dilation: float,
    caps: dict[str, float],
    subnet: ipaddress.IPv4Network,
) -> Lab:
    """Names and addresses of everything the lab makes."""
    hosts = list(subnet.hosts())
    devices = tuple(
        LabDevice(
            d.name,
            f"{PREFIX}-{name}-dev-{d.name}",
            str(hosts[FIRST_DEVICE_HOST - 1 + i]),
            f"p{i}",
            caps[d.name],
            f"{PREFIX}-{name}-{d.name}",
        )
        for i, d in enumerate(fleet.devices)
    )
    return Lab(
        1,
        name,
        fleet_spec,
        fleet.name,
        str(subnet),
        str(hosts[COORDINATOR_HOST - 1]),
        f"{ROOT_LINK_PREFIX}{name}",
        f"{PREFIX}-{name}-ap",
        fleet.link.bandwidth_bps * dilation,
        fleet.link.shared,
        dilation,
        devices,
    )


def topology_commands(lab: Lab) -> list[list[str]]:
    """`ip` commands that build the namespaces, the bridge and the veth pairs, with addresses."""
    ap, prefix = lab.ap_namespace, ipaddress.ip_network(lab.subnet).prefixlen
    lines = [f"ip netns add {ap}", f"ip -n {ap} link set lo up", f"ip -n {ap} link add br0 type bridge",
             f"ip -n {ap} link set br0 up"]  # fmt: skip
    for d in lab.devices:
        lines += [
            f"ip netns add {d.namespace}",
            f"ip -n {d.namespace} link set lo up",
            f"ip link add eth0 netns {d.namespace} type veth peer name {d.port} netns {ap}",
            f"ip -n {ap} link set {d.port} master br0 up",
            f"ip -n {d.namespace} addr add {d.address}/{prefix} dev eth0",
            f"ip -n {d.namespace} link set eth0 up",
        ]
    lines += [
        f"ip link add {lab.root_link} type veth peer name pc netns {ap}",
        f"ip -n {ap} link set pc master br0 up",
        f"ip addr add {lab.coordinator_address}/{prefix} dev {lab.root_link}",
        f"ip link set {lab.root_link} up",
    ]
    return [line.split() for line in lines]  # every name and address is one word


def shaping_commands(lab: Lab) -> list[list[str]]:
    """`ip`/`tc` commands (all in the access point's namespace) that shape the links."""
    ip, tc = f"ip -n {lab.ap_namespace}", f"tc -n {lab.ap_namespace}"
    rate = f"{round(lab.rate_bps)}bit"
    queue = max(QUEUE_MIN_PACKETS * MTU_FRAME, round(lab.rate_bps / 8 * QUEUE_S))

    def link(dev: str) -> list[str]:
        """All traffic leaving `dev` held to the link's rate."""
        return [f"{tc} qdisc add dev {dev} root handle 1: htb default 1",
                f"{tc} class add dev {dev} parent 1: classid 1:1 htb rate {rate} ceil {rate}",
                f"{tc} qdisc add dev {dev} parent 1:1 bfifo limit {queue}"]  # fmt: skip

    def redirect(port: str, ifb: str) -> list[str]:
        """Everything arriving on `port` goes through `ifb` first (where it is shaped)."""
        return [f"{tc} qdisc add dev {port} handle ffff: ingress",
                f"{tc} filter add dev {port} parent ffff: protocol all u32 match u32 0 0 "
                f"action mirred egress redirect dev {ifb}"]  # fmt: skip

    lines: list[str] = []
    if not lab.shared:
        for _, _, port in lab.parties:  # towards the party on its port, from it through its ifb
            lines += [f"{ip} link add ifb-{port} type ifb", f"{ip} link set ifb-{port} up"]
            lines += link(port) + link(f"ifb-{port}") + redirect(port, f"ifb-{port}")
        return [line.split() for line in lines]
    share = f"{max(8000, round(lab.rate_bps / len(lab.parties)))}bit"
    lines += [f"{ip} link add medium type ifb", f"{ip} link set medium up",
              f"{tc} qdisc add dev medium root handle 1: htb default ff",
              f"{tc} class add dev medium parent 1: classid 1:1 htb rate {rate} ceil {rate}",
              # traffic from no known address (ARP): a trickle guaranteed, the whole medium when it is free
              f"{tc} class add dev medium parent 1:1 classid 1:ff htb rate 8000bit ceil {rate}"]  # fmt: skip
    for i, (_, address, _) in enumerate(lab.parties):  # one class per sender: busy senders share fairly
        cls = f"1:{i + 16:x}"
        lines += [f"{tc} class add dev medium parent 1:1 classid {cls} htb rate {share} ceil {rate}",
                  f"{tc} qdisc add dev medium parent {cls} bfifo limit {queue}",
                  f"{tc} filter add dev medium parent 1: protocol ip prio 1 u32 match ip src {address}/32 "
                  f"flowid {cls}"]  # fmt: skip
    for _, _, port in lab.parties:
        lines += redirect(port, "medium")
    return [line.split() for line in lines]


def sshd_config(lab: Lab, device: LabDevice) -> str:
    """Key-only root login on the device's address, host key and pid file in the lab's state."""
    folder = lab.state / "devices" / device.name
    return "\n".join(
        [
            f"ListenAddress {device.address}:22",
            f"HostKey {folder / 'ssh_host_ed25519_key'}",
            f"PidFile {folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {lab.state / 'authorized_keys'}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "AllowUsers root",
            "UsePAM no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "PermitTunnel no",
            "PrintMotd no",
            # a coordinator gone without closing its connection is noticed within 15 s, ending its workers
            "ClientAliveInterval 5",
            "ClientAliveCountMax 3",
            "MaxStartups 64",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def check_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9]{1,12}", name):
        raise LabError(f"--name '{name}': use 1 to 12 lower-case letters or digits (it names interfaces)")
    return name


def check_fleet(fleet: Fleet) -> None:
    """A LabError unless every device fits the lab's /24 and its name can name files and cgroups."""
    if len(fleet.devices) > MAX_DEVICES:
        raise LabError(
            f"fleet '{fleet.name}' has {len(fleet.devices)} devices; a lab holds at most {MAX_DEVICES}"
        )
    for d in fleet.devices:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", d.name):
            raise LabError(
                f"fleet '{fleet.name}' device '{d.name}': a lab needs device names of letters, "
                "digits, '_', '.' and '-'"
            )


def dilation_for(dilate: str, ratios: dict[str, float], host_cores: float) -> float:
    """`--dilate` as given ('auto' or a number) to the dilation the lab runs at."""
    if dilate == "auto":
        return auto_dilation(ratios, host_cores)
    try:
        return float(dilate)
    except ValueError:
        raise LabError(f"--dilate '{dilate}' is not a number or 'auto'") from None


def first_free_subnet(used: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> ipaddress.IPv4Network:
    """The first /24 of SUBNET that overlaps none of `used` (this host's routes, other labs)."""
    used = list(used)
    for subnet in SUBNET.subnets(new_prefix=24):
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise LabError(f"every /24 of {SUBNET} is in use by routes or labs on this host; take a lab down first")


def inventory_text(lab: Lab, python: str) -> str:
    """The inventory `lab up` writes: every device reached as root over the lab's key, running `python`."""
    state = lab.state
    hosts = [
        Host(d.name, d.address, 22, "root", state / "id_ed25519", python,
             str(state / "devices" / d.name / "work"), "eth0")
        for d in lab.devices
    ]  # fmt: skip
    header = (
        f"Written by `suite lab up` for lab '{lab.name}': fleet {lab.fleet_name} emulated on this host at "
        f"dilation {lab.dilation:g}.\nEvery device is a network namespace with its own sshd and a cgroup CPU "
        f"cap; remove it all with `suite lab down --name {lab.name}`.\nLinks: {lab.shaping}.\n"
        f"Latency: {LATENCY_NOTE}."
    )
    return inventory_yaml(
        f"lab-{lab.name}",
        lab.fleet,
        CoordinatorHost(lab.coordinator_address, lab.root_link),
        state / "known_hosts",
        hosts,
        lab.network(),
        header=header,
    )


def passwd_with_sh(passwd: str) -> str:
    """An /etc/passwd with root's login shell set to /bin/sh (what each device's sshd sees; see
    `lab._start_sshd`)."""
    lines = []
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == "root":
            fields[6] = "/bin/sh"
        lines.append(":".join(fields))
    return "\n".join(lines) + "\n"
