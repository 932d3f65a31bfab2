"""`suite deploy`: put this checkout of the suite on every device of an inventory, and check each one.

The project wheel is built once (`pip wheel --no-deps`). Each device, over its own Fabric
connection in a thread pool, gets the wheel, `constraints.txt` and its run configuration
(`run.json`: who it is, its fleet, link and coordinator; its profile YAML) in its work folder W:

    W/bin/python   the interpreter workers run with (`python -m suite.runtime.worker ...`)
    W/site/        the suite wheel alone, first on that interpreter's path, when the device's own
                   interpreter already has every pinned dependency (a Pi image with torch, or
                   the lab's devices sharing this host's environment: no 1.5 GB copy per device)
    W/venv/        otherwise: a venv with the full pinned install
    W/config/      run.json, profile.yaml, constraints.txt
    W/ready.json   written last, only when everything succeeded

Which of the two environments a device gets, pip decides on the device: an offline dry-run
install of the wheel under the constraints succeeds only when nothing but the suite is missing.
A device whose ready.json records the same hash (wheel contents, constraints, run configuration)
is skipped. A device that cannot be reached, refuses the key or ends up with other versions than
the coordinator's is one line naming it, and is left without ready.json.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from fabric import Connection

from suite.errors import UserError
from suite.fleet import profile_yaml
from suite.inventory import Host, Inventory
from suite.orchestrate import device_probe
from suite.orchestrate.ssh import DeviceError, connect, quote, run
from suite.package import require_checkout

MIN_PYTHON = (3, 11)  # pyproject's requires-python
MAX_PARALLEL = 8


@dataclass(frozen=True)
class Artifacts:
    """What every device gets: the wheel and the constraints, built and read once."""

    wheel: Path
    constraints: Path
    digest: str  # of the wheel's contents (its RECORD) and the constraints
    pins: dict[str, str]  # package name (lower case) -> pinned version


@dataclass(frozen=True)
class DeviceReport:
    device: str
    address: str
    status: str  # "installed", "up to date" or "failed"
    seconds: float
    environment: str | None = None  # "site" (the device's interpreter + the wheel) or "venv"
    build: str | None = None  # the wheel and constraints installed (Artifacts.digest)
    facts: dict = field(default_factory=dict)  # what the check found on the device
    error: str | None = None


def build(workdir: Path) -> Artifacts:
    """Build the project wheel into `workdir` and fingerprint it with the constraints."""
    project = require_checkout("suite deploy (it builds the suite's wheel and sends constraints.txt)")
    constraints = project / "constraints.txt"
    # with setuptools at hand the build takes a second; an isolated build installs one first
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check"]
    made = subprocess.run(
        [*pip, *isolation, "-w", str(workdir), str(project)], capture_output=True, text=True
    )
    wheels = sorted(workdir.glob("suite-*.whl"))
    if made.returncode != 0 or not wheels:
        said = [ln for ln in made.stderr.splitlines() if ln.startswith("ERROR")] or made.stderr.splitlines()
        raise UserError(
            f"building the suite wheel failed: {said[-1] if said else 'no output'} (run `pip wheel "
            f"--no-deps {project}` to see why)"
        )
    wheel = wheels[-1]
    with zipfile.ZipFile(wheel) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        contents = archive.read(record)  # every file's sha256: stable across rebuilds of the same sources
    text = constraints.read_bytes()
    digest = hashlib.sha256(contents + b"\0" + text).hexdigest()
    return Artifacts(wheel, constraints, digest, parse_pins(text.decode()))


def parse_pins(constraints: str) -> dict[str, str]:
    pins = {}
    for line in constraints.splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def run_config(inventory: Inventory, host: Host) -> dict:
    """What a device is told about the run it belongs to (W/config/run.json)."""
    device = inventory.fleet.device(host.name)
    link = inventory.fleet.link
    return {
        "schema_version": 1,
        "device": host.name,
        "inventory": inventory.name,
        "fleet": inventory.fleet.name,
        "profile": device.profile.name,
        "interface": host.interface,
        "link": {
            "bandwidth_mbps": link.bandwidth_bps / 1e6,
            "latency_ms": link.latency_s * 1e3,
            "shared": link.shared,
        },
        "coordinator": {"host": inventory.coordinator.host, "interface": inventory.coordinator.interface},
        "lab": None
        if inventory.lab is None
        else {"name": inventory.lab.name, "dilation": inventory.lab.dilation},
    }


def too_old(python: str) -> str | None:
    """Why a device's Python cannot run the suite, if it cannot."""
    if tuple(int(p) for p in python.split(".")[:2]) >= MIN_PYTHON:
        return None
    return (f"python {python} is older than the {'.'.join(map(str, MIN_PYTHON))} the suite needs; point "
            "`python` at a newer interpreter")  # fmt: skip


def mismatches(facts: dict, host: Host, pins: dict[str, str], coordinator_torch: str) -> list[str]:
    """What makes a checked device unfit to run the coordinator's plans, one sentence each."""
    if "error" in facts:
        return [f"the deployed suite does not import: {facts['error']}"]
    problems = []
    pinned = pins.get("torch")
    if pinned is not None and _public(facts["torch"]) != _public(pinned):
        problems.append(f"torch {facts['torch']} but constraints.txt pins {pinned}")
    if facts["torch"] != coordinator_torch:
        problems.append(
            f"torch {facts['torch']} but the coordinator runs {coordinator_torch}: outputs could not "
            "be checked bit for bit; install the same version here"
        )
    if not facts["suite_path"].startswith(host.workdir + "/"):
        problems.append(
            f"python imports suite from {facts['suite_path']}, not the deployed copy in {host.workdir}"
        )
    if "profile_error" in facts:
        problems.append(f"its profile does not load: {facts['profile_error']}")
    return problems


def _public(version: str) -> str:
    """The version without its local label: `==2.13.0` admits `2.13.0+cpu` (PEP 440)."""
    return version.split("+")[0]


def deploy(
    inventory: Inventory,
    force: bool = False,
    jobs: int = MAX_PARALLEL,
    progress: Callable[[DeviceReport], None] | None = None,
) -> list[DeviceReport]:
    """Deploy to every device of the inventory at once; one report per device, in the fleet's order."""
    coordinator_torch = importlib.metadata.version("torch")
    with tempfile.TemporaryDirectory(prefix="suite-deploy-") as tmp:
        staging = Path(tmp)
        artifacts = build(staging)
        probe = Path(device_probe.__file__)
        reports: dict[str, DeviceReport] = {}
        opened: list[Connection] = []  # closed on Ctrl-C, so every device's step fails at once
        with ThreadPoolExecutor(max(1, min(jobs, len(inventory.hosts))), thread_name_prefix="deploy") as pool:
            futures = [pool.submit(_deploy_one, inventory, host, artifacts, probe, staging / host.name,
                                   coordinator_torch, force, opened) for host in inventory.hosts]  # fmt: skip
            try:
                for future in as_completed(futures):
                    report = future.result()
                    reports[report.device] = report
                    if progress is not None:
                        progress(report)
            except KeyboardInterrupt:  # devices being installed keep no ready.json
                pool.shutdown(wait=False, cancel_futures=True)
                for conn in list(opened):
                    conn.close()
                raise
    return [reports[h.name] for h in inventory.hosts]


def _deploy_one(
    inventory: Inventory,
    host: Host,
    artifacts: Artifacts,
    probe: Path,
    local: Path,
    coordinator_torch: str,
    force: bool,
    opened: list[Connection],
) -> DeviceReport:
    start = time.monotonic()
    try:
        local.mkdir()
        config = json.dumps(run_config(inventory, host), indent=2) + "\n"
        (local / "run.json").write_text(config)
        (local / "profile.yaml").write_text(profile_yaml(inventory.fleet.device(host.name).profile))
        digest = hashlib.sha256(  # everything the device gets, and the interpreter it is built on
            f"{artifacts.digest}\0{host.python}\0{config}\0".encode() + (local / "profile.yaml").read_bytes()
        ).hexdigest()
        conn = connect(host, inventory.known_hosts)
        opened.append(conn)
        try:
            marker = _marker(conn, host)
            if not force and marker is not None and marker.get("hash") == digest:
                return DeviceReport(
                    host.name,
                    host.address,
                    "up to date",
                    time.monotonic() - start,
                    marker.get("environment"),
                    artifacts.digest,
                    marker.get("facts", {}),
                )
            environment, facts = _install(conn, host, artifacts, probe, local, coordinator_torch)
            marker = {
                "hash": digest,
                "environment": environment,
                "facts": facts,
                "wheel": artifacts.wheel.name,
                "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            _put_text(conn, f"{host.workdir}/.ready.json.tmp", json.dumps(marker, indent=2) + "\n")
            run(
                conn,
                host,
                f"mv {quote(host.workdir + '/.ready.json.tmp', host.workdir + '/ready.json')}",
                "marking the device ready",
            )
        finally:
            conn.close()
    except DeviceError as exc:
        return DeviceReport(host.name, host.address, "failed", time.monotonic() - start, error=str(exc))
    except Exception as exc:  # SFTP and channel errors mid-way: still one line naming the device
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return DeviceReport(
            host.name,
            host.address,
            "failed",
            time.monotonic() - start,
            error=f"device {host.name} ({host.address}): {type(exc).__name__}: {text}",
        )
    return DeviceReport(
        host.name, host.address, "installed", time.monotonic() - start, environment, artifacts.digest, facts
    )


def _marker(conn: Connection, host: Host) -> dict | None:
    """The device's ready.json, when it has one and its interpreter is still there."""
    result = conn.run(
        f"test -x {quote(host.launcher)} && cat {quote(host.workdir + '/ready.json')}",
        hide=True,
        warn=True,
        in_stream=False,
    )
    try:
        return json.loads(result.stdout) if result.exited == 0 else None
    except json.JSONDecodeError:
        return None


def _install(
    conn: Connection, host: Host, artifacts: Artifacts, probe: Path, local: Path, coordinator_torch: str
) -> tuple[str, dict]:
    """Push, make the environment, check it; (environment kind, the check's findings)."""
    w = host.workdir
    stage = f"{w}/deploy"
    run(
        conn,
        host,
        f"rm -f {quote(w + '/ready.json')} && rm -rf {quote(stage)} && mkdir -p {quote(stage, w + '/bin')}",
        f"preparing {w}",
    )
    for path in (artifacts.wheel, artifacts.constraints, probe, local / "run.json", local / "profile.yaml"):
        conn.put(str(path), remote=f"{stage}/{path.name}")
    wheel, constraints = f"{stage}/{artifacts.wheel.name}", f"{stage}/constraints.txt"
    probing = quote(host.python, f"{stage}/{probe.name}", "env", wheel, constraints)
    found = _last_json(run(conn, host, probing, f"probing {host.python}"))
    old = too_old(found["python"])
    if old is not None:
        raise DeviceError(f"device {host.name} ({host.address}): {host.python}: {old}")
    if found["satisfied"]:
        environment = "site"
        script = (
            f"rm -rf site.new && {quote(host.python)} -m pip install -q --disable-pip-version-check "
            f"--no-deps --no-index --target site.new {quote(wheel)} && rm -rf site venv && mv site.new site"
        )
        launcher = f'PYTHONPATH={quote(w + "/site")}\nexport PYTHONPATH\nexec {quote(host.python)} "$@"\n'
    elif found["venv"]:
        environment = "venv"
        pip = "venv/bin/python -m pip install -q --disable-pip-version-check"
        script = (
            f"{{ test -x venv/bin/python || {quote(host.python)} -m venv venv; }} && "
            f"{pip} -c {quote(constraints)} {quote(wheel)} && "
            f"{pip} --no-deps --force-reinstall {quote(wheel)} && rm -rf site"
        )
        launcher = f'exec {quote(w + "/venv/bin/python")} "$@"\n'
    else:
        raise DeviceError(
            f"device {host.name} ({host.address}): {host.python} lacks the pinned packages "
            f"({', '.join(found['missing'][:3])}) and cannot make a venv; install python3-venv "
            "and python3-pip there"
        )
    run(conn, host, f"cd {quote(w)} && {script}", f"installing the suite ({environment})")
    _put_text(
        conn,
        f"{w}/bin/.python.tmp",
        "#!/bin/sh\n# written by suite deploy: the interpreter that runs "
        f"the suite here ({environment})\n{launcher}",
    )
    run(
        conn,
        host,
        f"cd {quote(w)} && chmod 755 bin/.python.tmp && mv bin/.python.tmp bin/python && "
        "rm -rf config.new && mkdir config.new && "
        "cp deploy/run.json deploy/profile.yaml deploy/constraints.txt config.new/ && "
        "rm -rf config && mv config.new config",
        "writing the run configuration",
    )
    checking = quote(host.launcher, f"{stage}/{probe.name}", "check", f"{w}/config/profile.yaml")
    facts = _last_json(run(conn, host, checking, "checking the environment"))
    problems = mismatches(facts, host, artifacts.pins, coordinator_torch)
    if problems:
        raise DeviceError(f"device {host.name} ({host.address}): {problems[0]}")
    facts["doctor"] = _exactness(conn, host, facts)
    run(conn, host, f"rm -rf {quote(stage)}", "cleaning up")
    return environment, facts


def _exactness(conn: Connection, host: Host, facts: dict) -> dict:
    """Which backends compute tiles exactly on the device (`suite doctor`), left in the device's own
    cache for its workers: this host's verdicts when the device computes with the same CPU, libraries
    and kernels (a lab's devices, a twin of this host), otherwise examined on the device itself."""
    from suite import doctor

    if facts.get("arithmetic") == doctor.host_facts():
        report = doctor.cached(doctor.EXACT_BACKENDS)
        cache, staged = facts["doctor_cache"], f"{facts['doctor_cache']}.{host.name}.tmp"
        run(conn, host, f"mkdir -p {quote(str(Path(cache).parent))}", "making its doctor cache")
        _put_text(conn, staged, json.dumps(report.to_dict(), indent=1))
        run(conn, host, f"mv {quote(staged, cache)}", "storing its doctor verdicts")
        return doctor.summary(report) | {"examined": "on the coordinator, whose arithmetic it shares"}
    backends = [f"--backend={b}" for b in doctor.EXACT_BACKENDS]
    out = conn.run(
        quote(host.launcher, "-m", "suite", "doctor", "--json", *backends),
        hide=True,
        warn=True,  # exit 1: no backend is exact there, which the report says
        in_stream=False,
    )
    try:
        report = doctor.report_from_dict(json.loads(out.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError, KeyError, TypeError):
        said = out.stderr.strip().splitlines() or ["no output"]
        raise DeviceError(
            f"device {host.name} ({host.address}): suite doctor failed (exit {out.exited}): {said[-1]}"
        ) from None
    return doctor.summary(report) | {"examined": "on the device"}


def _last_json(out: str) -> dict:
    """The probe's JSON object: its last line (whatever a login script printed before it)."""
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _put_text(conn: Connection, remote: str, text: str) -> None:
    conn.put(io.BytesIO(text.encode()), remote=remote)


def describe(reports: list[DeviceReport]) -> list[list[str]]:
    """The table at the end: one row per device (header first)."""
    rows = [
        [
            "device",
            "address",
            "result",
            "env",
            "python",
            "torch",
            "suite",
            "mkldnn",
            "nnpack",
            "free mem",
            "profile",
            "exact",
            "time",
        ]
    ]
    for r in reports:
        f = r.facts
        memory = f.get("mem_available_bytes")
        rows.append(
            [
                r.device,
                r.address,
                r.status,
                r.environment or "-",
                f.get("python", "-"),
                f.get("torch", "-"),
                f"{f['suite']}+{r.build[:8]}" if "suite" in f else "-",
                _flag(f.get("mkldnn")),
                _flag(f.get("nnpack")),
                f"{memory / 2**30:.1f} GiB" if memory else "-",
                f.get("profile", "-"),
                _exact_backends(f.get("doctor")),
                f"{r.seconds:.1f} s",
            ]
        )
    return rows


def _exact_backends(doctor: dict | None) -> str:
    """The backends `suite doctor` found exact on the device, or 'none'."""
    if not doctor:
        return "-"
    return " ".join(b for b, exact in doctor["exact"].items() if exact) or "none"


def _flag(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")
