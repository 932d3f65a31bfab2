"""Helpers for the tests that build emulated labs (root, sshd, tc): fleets to emulate, and what a lab
leaves on this host, so a test can prove that `lab down` removes all of it."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from suite.fleet import load_profile
from suite.orchestrate.lab import SSHD
from suite.orchestrate.labplan import PREFIX, ROOT_LINK_PREFIX, STATE_ROOT
from suite.runtime.emulate import CPU_ROOT, cpu_quota_available


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc, cgroups, sshd)"
    if not Path(SSHD).is_file():
        return "needs sshd: apt-get install -y openssh-server"
    if not all(shutil.which(tool) for tool in ("ip", "tc", "nsenter", "ssh-keygen")):
        return "needs iproute2, util-linux (nsenter) and openssh-client"
    if not cpu_quota_available():
        return "needs a writable cgroup v1 cpu controller"
    return None


needs_lab = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def lab_name(tag: str) -> str:
    """A lab name no other test run on this host uses at the same time (12 characters at most)."""
    return f"t{os.getpid() % 10**6}{tag}"[:12]


def write_fleet(folder: Path, devices: int, mbps: float, shared: bool, speed: float) -> Path:
    """A fleet of `devices` devices, each `speed` times as fast as this host's one thread (so its cap
    is `speed` cores at dilation 1), on a `mbps` link."""
    folder.mkdir(parents=True, exist_ok=True)
    local = load_profile("local")
    (folder / "slow.yaml").write_text(
        yaml.safe_dump(
            {
                "schema_version": 1,
                "name": "slow",
                "source": "estimate: a test device",
                "macs_per_s": local.macs_per_s * speed,
                "ops": {"default": {"alpha": 1.0, "overhead_s": 0.0}},
            }
        )
    )
    fleet = folder / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump(
            {
                "schema_version": 1,
                "name": f"test-{devices}",
                "source": "estimate: a test fleet",
                "link": {"bandwidth_mbps": mbps, "latency_ms": 1, "shared": shared},
                "devices": [
                    {
                        "name": "d",
                        "count": devices,
                        "kind": "test",
                        "profile": "slow.yaml",
                        "cores": 1,
                        "freq_ghz": 1.0,
                        "memory_gib": 1,
                    }
                ],
            }
        )
    )
    return fleet


def footprint(name: str) -> dict:
    """Everything of lab `name` on this host: namespaces, the root link and its routes and qdiscs,
    cgroups, state, and processes (by the lab's state path on their command line)."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    link = f"{ROOT_LINK_PREFIX}{name}"
    processes = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(STATE_ROOT / name) in (proc / "cmdline").read_text():
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    processes.append(proc.name)
        except OSError:
            continue
    return {
        "namespaces": sorted(n for n in netns if n.startswith(f"{PREFIX}-{name}-")),
        "links": sorted(n for n in os.listdir("/sys/class/net") if n == link),
        "routes": [
            r
            for r in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout.splitlines()
            if f"dev {link} " in r + " "
        ],
        "qdiscs": [
            q
            for q in subprocess.run(
                ["tc", "qdisc", "show"], capture_output=True, text=True
            ).stdout.splitlines()
            if f"dev {link} " in q
        ],
        "cgroups": sorted(p.name for p in CPU_ROOT.glob(f"{PREFIX}-{name}-*")),
        "state": (STATE_ROOT / name).exists(),
        "processes": processes,
    }


def namespace_ids(namespaces: list[str]) -> set[str]:
    """The namespaces' identities as /proc/PID/ns/net shows them, e.g. `net:[4026532512]`."""
    return {f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]" for ns in namespaces}


def processes_in(ids: set[str]) -> list[str]:
    """Command lines of the processes that live in these network namespaces."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "ns" / "net") in ids:
                found.append((proc / "cmdline").read_text().replace("\0", " ").strip())
        except OSError:
            continue
    return found
