"""The fleet a plan runs on: devices, their compute profiles, and the link between them.

Plain frozen dataclasses are the model of the world; pydantic checks the YAML under `suite/data/`
(or a user's file) once, at load time, and every mistake comes back as one `FleetError` line
that names the file, the field and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field

from suite.errors import UserError
from suite.graph.ir import COST_KINDS
from suite.package import data
from suite.schema import Strict, read_yaml, shown

PROFILES_DIR = data("profiles")
FLEETS_DIR = data("fleets")

GIB = 2**30


class FleetError(UserError):
    """A fleet or profile that cannot be used; the message is one line naming file, field and fix."""


@dataclass(frozen=True)
class OpCost:
    """Cost of one op kind relative to conv: `alpha` times the conv time per MAC, plus a fixed overhead."""

    alpha: float
    overhead_s: float


@dataclass(frozen=True)
class Power:
    """A device's electrical power while idle and while computing: what turns its busy and idle
    seconds into joules (`suite.runtime.energy`)."""

    idle_w: float
    busy_w: float
    source: str  # a citation or "estimate: <reasoning>": published typical figures, not measured here


@dataclass(frozen=True)
class Profile:
    """How fast one device runs each op kind (PICO's t = alpha_k * FLOPs / capability, plus overhead)."""

    name: str
    source: str  # a citation, "estimate: <reasoning>" or "measured: <host> <date>"
    macs_per_s: float
    ops: Mapping[str, OpCost]
    power: Power | None = None  # None: no figures, so no energy for this device

    def cost(self, op: str) -> OpCost:
        """The cost of `op`, falling back for kinds the profile does not list: a grouped or 1x1 conv to
        `conv` (a few large groups, or a short product, run much like a dense conv), a strided
        depthwise conv to `depthwise_conv`, a clamp (ReLU6) to `elementwise`, the copies
        around a conv's matrix products and their calls (`conv_copy`, `gemm_call`) to nothing (a
        profile without them has them in its convs' own prices), anything else to `default` (a
        depthwise conv, like a pointwise op, is bound by memory rather than arithmetic)."""
        if op in self.ops:
            return self.ops[op]
        if op in ("grouped_conv", "pointwise_conv") and "conv" in self.ops:
            return self.ops["conv"]
        if op == "strided_depthwise_conv" and "depthwise_conv" in self.ops:
            return self.ops["depthwise_conv"]
        if op == "clamp" and "elementwise" in self.ops:
            return self.ops["elementwise"]
        if op in ("conv_copy", "gemm_call"):
            return OpCost(0.0, 0.0)
        if "default" in self.ops:
            return self.ops["default"]
        raise FleetError(f"profile '{self.name}' has no cost for op '{op}' and no 'default' entry")

    @cached_property
    def prices(self) -> tuple[np.ndarray, np.ndarray]:
        """Seconds per unit (a MAC, a value copied, a matrix product: `suite.cost.node_work`) and
        seconds per call for each kind of `COST_KINDS`: the vectors that price a `suite.cost.OpWork`.
        Every kind needs a cost (its own or the `default`)."""
        costs = [self.cost(kind) for kind in COST_KINDS]
        return (np.array([c.alpha / self.macs_per_s for c in costs]),
                np.array([c.overhead_s for c in costs]))  # fmt: skip


@dataclass(frozen=True)
class Device:
    name: str
    kind: str
    profile: Profile
    cores: int
    freq_ghz: float
    memory_bytes: int

    @property
    def capability(self) -> float:
        """Effective MACs per second: what PICO and MoDNN balance work by."""
        return self.profile.macs_per_s


@dataclass(frozen=True)
class Link:
    bandwidth_bps: float
    latency_s: float
    shared: bool  # one medium (WiFi): transfers serialize instead of running side by side

    def transfer_time(self, nbytes: float) -> float:
        return self.latency_s + 8 * nbytes / self.bandwidth_bps


@dataclass(frozen=True)
class Fleet:
    name: str
    devices: tuple[Device, ...]
    link: Link
    source: str

    def device(self, name: str) -> Device:
        for dev in self.devices:
            if dev.name == name:
                return dev
        names = ", ".join(d.name for d in self.devices)
        raise FleetError(f"fleet '{self.name}' has no device '{name}'; its devices: {names}")

    def by_capability(self) -> list[Device]:
        """The devices, most capable first; the first listed wins a tie."""
        return sorted(self.devices, key=lambda d: -d.capability)

    def fastest(self) -> Device:
        return self.by_capability()[0]


# ---- YAML schema (the boundary) -------------------------------------------------------------------


# Sizes beyond any edge cluster the papers or this suite plan for; planning grows with their square.
MAX_DEVICES = 64
MAX_SPEED = 1e16  # MACs per second: a thousand of today's largest GPUs
MAX_MEMORY_GIB = 1e5
MAX_BANDWIDTH_MBPS = 1e7  # 10 Tbit/s

Finite = partial(Field, allow_inf_nan=False)


class _OpCostSpec(Strict):
    alpha: float = Finite(ge=0, le=1e9)  # gemm_call: a matrix product call costs ~1e6 MACs
    overhead_s: float = Finite(ge=0, le=3600)


class _Document(Strict):
    """What every hardware YAML file starts with."""

    schema_version: Literal[1]
    name: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1)


MAX_POWER_W = 1e5  # a rack of GPUs


class _PowerSpec(Strict):
    idle_w: float = Finite(ge=0, le=MAX_POWER_W)
    busy_w: float = Finite(gt=0, le=MAX_POWER_W)
    source: str = Field(min_length=1)


class _ProfileSpec(_Document):
    macs_per_s: float = Finite(gt=0, le=MAX_SPEED)
    ops: dict[str, _OpCostSpec]
    power: _PowerSpec | None = None


class _LinkSpec(Strict):
    bandwidth_mbps: float = Finite(gt=0, le=MAX_BANDWIDTH_MBPS)
    latency_ms: float = Finite(ge=0, le=1e5)
    shared: bool


class _DeviceSpec(Strict):
    name: str = Field(min_length=1, max_length=100)
    count: int | None = Field(default=None, ge=1, le=MAX_DEVICES)  # expands into name0 .. name{count-1}
    kind: str = Field(min_length=1)
    profile: str = Field(min_length=1)  # a bundled profile name, or a YAML path relative to the fleet file
    cores: int = Field(ge=1, le=1_000_000)  # CPU cores, or a GPU's CUDA cores
    freq_ghz: float = Finite(gt=0, le=100)
    memory_gib: float = Finite(gt=0, le=MAX_MEMORY_GIB)


class _FleetSpec(_Document):
    link: _LinkSpec
    devices: list[_DeviceSpec] = Field(min_length=1, max_length=MAX_DEVICES)


def _locate(spec: str, folder: Path, what: str) -> Path:
    """A bundled name or a path to a YAML file."""
    bundled = folder / f"{spec}.yaml"
    if "/" not in spec and not spec.endswith((".yaml", ".yml")):
        if bundled.is_file():
            return bundled
        names = ", ".join(_names(folder))
        raise FleetError(f"unknown {what} '{spec}'; bundled {what}s: {names} (or give a path to a YAML file)")
    path = Path(spec)
    if not path.is_file():
        raise FleetError(f"{what} file '{spec}' does not exist")
    return path


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def bundled_profiles() -> list[str]:
    return _names(PROFILES_DIR)


def bundled_fleets() -> list[str]:
    return _names(FLEETS_DIR)


def _profile_from(path: Path) -> Profile:
    spec = read_yaml(path, _ProfileSpec, FleetError)
    if "default" not in spec.ops:
        raise FleetError(f"{shown(path)}: ops.default: missing (add a 'default' cost for op kinds "
                         "the profile does not list)")  # fmt: skip
    ops = {op: OpCost(c.alpha, c.overhead_s) for op, c in spec.ops.items()}
    power = None
    if spec.power is not None:
        if spec.power.busy_w < spec.power.idle_w:
            raise FleetError(f"{shown(path)}: power.busy_w: {spec.power.busy_w:g} W is less than idle_w "
                             f"{spec.power.idle_w:g} W (give the power while computing, at least the idle "
                             "power)")  # fmt: skip
        power = Power(spec.power.idle_w, spec.power.busy_w, spec.power.source)
    return Profile(spec.name, spec.source, spec.macs_per_s, ops, power)


def load_profile(spec: str) -> Profile:
    """A bundled profile (`suite/data/profiles/<name>.yaml`) or a path to a profile YAML."""
    return _profile_from(_locate(spec, PROFILES_DIR, "profile"))


def profile_yaml(profile: Profile) -> str:
    """`profile` as the YAML `load_profile` reads, one line per op kind, every figure to 4 significant
    digits (a measurement's noise is larger)."""
    head = {"schema_version": 1, "name": profile.name, "source": profile.source}
    lines = [yaml.safe_dump(head, sort_keys=False, width=100).rstrip(),
             f"macs_per_s: {profile.macs_per_s:.4g}", "ops:"]  # fmt: skip
    for op, cost in profile.ops.items():
        lines.append(f"  {op}: {{alpha: {cost.alpha:.4g}, overhead_s: {cost.overhead_s:.4g}}}")
    if profile.power is not None:
        lines.append(yaml.safe_dump({"power": asdict(profile.power)}, sort_keys=False, width=100).rstrip())
    return "\n".join(lines) + "\n"


def load_fleet(spec: str) -> Fleet:
    """A bundled fleet (`suite/data/fleets/<name>.yaml`), a path to a fleet YAML, or `NxPROFILE`
    (the name `uniform_fleet` gives, so plans made with `--devices N` find their fleet again)."""
    uniform = re.fullmatch(r"(\d+)x([\w.-]+)", spec)
    if uniform and not (FLEETS_DIR / f"{spec}.yaml").is_file():
        return uniform_fleet(int(uniform[1]), uniform[2])
    path = _locate(spec, FLEETS_DIR, "fleet")
    fleet = read_yaml(path, _FleetSpec, FleetError)
    profiles: dict[str, Profile] = {}
    devices: list[Device] = []
    for i, d in enumerate(fleet.devices):
        if d.profile not in profiles:
            profiles[d.profile] = _device_profile(path, i, d)
        names = [f"{d.name}{k}" for k in range(d.count)] if d.count is not None else [d.name]
        devices += [Device(n, d.kind, profiles[d.profile], d.cores, d.freq_ghz, int(d.memory_gib * GIB))
                    for n in names]  # fmt: skip
    if len(devices) > MAX_DEVICES:
        raise FleetError(f"{shown(path)}: devices: {len(devices)} devices, more than the {MAX_DEVICES} this "
                         "suite plans for; split the fleet")  # fmt: skip
    seen: set[str] = set()
    for dev in devices:
        if dev.name in seen:
            raise FleetError(f"{shown(path)}: devices: duplicate device name '{dev.name}' "
                             "(give each device, or each counted group's prefix, a unique name)")  # fmt: skip
        seen.add(dev.name)
    link = Link(fleet.link.bandwidth_mbps * 1e6, fleet.link.latency_ms * 1e-3, fleet.link.shared)
    return Fleet(fleet.name, tuple(devices), link, fleet.source)


def plan_fleet(spec: str, plan_path: str | Path) -> Fleet:
    """The fleet a plan file names: a bundled fleet, `NxPROFILE`, or a fleet YAML inside the fleets
    folder or the plan's own folder (relative to it). Never another path: a plan file is data, and
    must not make the suite read any file of its reader's host (say /proc/self/environ)."""
    plan_path = Path(plan_path)
    try:
        if "/" not in spec and not spec.endswith((".yaml", ".yml")):
            return load_fleet(spec)
        path = (plan_path.parent / spec).resolve()
        if not any(path.is_relative_to(folder.resolve()) for folder in (FLEETS_DIR, plan_path.parent)):
            raise FleetError(f"fleet '{spec}' is outside the fleets folder and the plan's folder; a plan "
                             "names a bundled fleet or a fleet YAML beside it (or pass --fleet)")  # fmt: skip
        return load_fleet(str(path))
    except FleetError as exc:
        raise FleetError(f"plan {shown(plan_path)}: {exc}") from None


def _device_profile(fleet_path: Path, index: int, d: _DeviceSpec) -> Profile:
    """The profile a fleet's device names: bundled, or a YAML path relative to the fleet file."""
    is_path = "/" in d.profile or d.profile.endswith((".yaml", ".yml"))
    path = fleet_path.parent / d.profile if is_path else PROFILES_DIR / f"{d.profile}.yaml"
    if not path.is_file():
        known = f"no such file: {path}" if is_path else f"bundled profiles: {', '.join(bundled_profiles())}"
        raise FleetError(f"{shown(fleet_path)}: devices.{index}.profile: unknown profile '{d.profile}' "
                         f"for device '{d.name}' ({known})")  # fmt: skip
    return _profile_from(path)


def local_profile_name(backend: str) -> str:
    """The name of a host's profile measured on `backend` (`suite profile`): `local` on torch,
    `local-<backend>` on another."""
    return "local" if backend == "torch" else f"local-{backend}"


def local_profile(backend: str) -> str:
    """The bundled profile of the developers' host for runs on `backend`: its own where one was
    measured, else `local` (torch). This host's own is `suite.profile.host_profile`."""
    name = local_profile_name(backend)
    return name if (PROFILES_DIR / f"{name}.yaml").is_file() else "local"


def on_host(fleet: Fleet, host: Profile) -> Fleet:
    """`fleet` with every device on this host's profile (`local`) priced by `host`, this host's own on
    the run's backend: a worker here runs as fast as that backend runs here. Other devices keep
    theirs: a Pi's profile is the Pi's speed, which the run emulates whatever this host is."""
    devices = tuple(replace(d, profile=host) if d.profile.name == "local" else d for d in fleet.devices)
    return replace(fleet, devices=devices)


def runs_here(fleet: Fleet) -> bool:
    """Whether any device of `fleet` is this host (profile `local`)."""
    return any(d.profile.name == "local" for d in fleet.devices)


# What `--devices N` stands for: one machine's processes talking over loopback, as if switched Gigabit.
UNIFORM_LINK = Link(bandwidth_bps=1e9, latency_s=50e-6, shared=False)


def uniform_fleet(n: int, profile: str = "local") -> Fleet:
    """N identical one-core devices dev0..dev{n-1} on a switched 1 Gbps link: the `--devices N` shorthand.

    They stand for processes on this host, so each gets an equal share of its memory; the clock is
    not known (freq_ghz 0) because the profile, not the clock, says how fast they are.
    """
    if not 1 <= n <= MAX_DEVICES:
        raise FleetError(f"--devices {n} must be between 1 and {MAX_DEVICES}")
    prof = load_profile(profile)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // n
    devices = tuple(Device(f"dev{i}", profile, prof, 1, 0.0, memory) for i in range(n))
    return Fleet(f"{n}x{profile}", devices, UNIFORM_LINK,
                 f"estimate: {n} identical '{profile}' devices on a switched 1 Gbps, 50 us link")  # fmt: skip
