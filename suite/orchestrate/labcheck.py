"""`suite lab check`: measure what a lab gives, against the fleet it emulates.

Links: a sender in one party's namespace streams TCP to a receiver in another's; the receiver
timestamps what arrives, and rates are taken over the window in which every transfer of the test
was running, after the first WARMUP_S (TCP and the queues filling). Each device alone (up: to the
coordinator; down: from it), then every device at once in a ring (device i to device i+1): on a
switched fleet each transfer keeps its link's rate, on a shared one they split the medium. Rates
are TCP payload; headers take about 4.5% of the wire rate tc shapes.

Compute: all devices at once (as in a run) time a 3x3 convolution on one thread in an SSH session
(so inside the device's cgroup, where a worker runs), and this host times the same convolution
uncapped in thread CPU time; the ratio is the share of a core each device really gets, against its cap.

The sender and receiver are `suite/orchestrate/netprobe.py`, run in the parties' namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from statistics import linear_regression

from suite.fleet import load_profile
from suite.inventory import load_inventory
from suite.orchestrate.lab import load_lab
from suite.orchestrate.labplan import Lab, LabError
from suite.orchestrate.ssh import connect, quote, run

WARMUP_S = 0.3
CONV = (64, 56)  # channels, side: 116 M multiply-accumulates, a few ms on this host

# Runs on a device (or uncapped here, "cpu"): MACs per second of one thread, by wall clock or thread CPU time.
CONV_PROBE = f"""
import sys, time, torch
torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False
c, s = {CONV}
x, w = torch.randn(1, c, s, s), torch.randn(c, c, 3, 3)
for _ in range(3):
    torch.nn.functional.conv2d(x, w, padding=1)
start, seconds, clock = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
late = time.time() - start
while time.time() < start:
    time.sleep(0.005)
now = time.thread_time if clock == "cpu" else time.perf_counter
t0, wall0, n = now(), time.perf_counter(), 0
while time.perf_counter() - wall0 < seconds:
    torch.nn.functional.conv2d(x, w, padding=1)
    n += 1
print(n * c * c * 9 * s * s / (now() - t0), max(0.0, late))
"""


def check(name: str, seconds: float = 1.5, say=lambda _: None) -> dict:
    """Every link's throughput alone and concurrent, and every device's compute, with the spec beside them."""
    if not 0.5 <= seconds <= 60:
        raise LabError(f"--seconds {seconds:g}: measure each transfer for 0.5 to 60 seconds")
    lab = load_lab(name)
    say(f"measuring lab '{name}': every link alone, then all at once, then compute")
    spec = round(lab.rate_bps / 1e6, 6)
    links = []
    for d in lab.devices:
        for direction, src, dst in (("up", d.name, "coordinator"), ("down", "coordinator", d.name)):
            mbps = measure_flows(lab, [(src, dst)], seconds)[0]
            links.append(
                {
                    "device": d.name,
                    "direction": direction,
                    "mbps": mbps,
                    "spec_mbps": spec,
                    "ratio": mbps / spec,
                }
            )
            say(f"  {d.name} {direction:4} alone: {mbps:.3g} Mbit/s (spec {spec:.3g}, {mbps / spec:.0%})")
    concurrent = None
    if len(lab.devices) > 1:
        names = [d.name for d in lab.devices]
        ring = [(a, names[(i + 1) % len(names)]) for i, a in enumerate(names)]
        if len(ring) == 2:  # two devices: not one pair both ways, but two different pairs
            ring = [(names[0], names[1]), ("coordinator", names[0])]
        rates = measure_flows(lab, ring, seconds)
        each = spec / len(ring) if lab.shared else spec
        total_spec = spec if lab.shared else spec * len(ring)
        concurrent = {
            "flows": [{"from": a, "to": b, "mbps": r} for (a, b), r in zip(ring, rates)],
            "spec_each_mbps": each,
            "total_mbps": sum(rates),
            "spec_total_mbps": total_spec,
            "ratio": sum(rates) / total_spec,
        }
        say(
            f"  {len(ring)} transfers at once: {', '.join(f'{r:.3g}' for r in rates)} Mbit/s "
            f"(spec {each:.3g} each), total {sum(rates):.3g} "
            f"(spec {total_spec:.3g}, {sum(rates) / total_spec:.0%})"
        )
    compute = measure_compute(lab, seconds)
    from suite import doctor

    # every device of a lab computes on this host's CPU with its libraries: its verdicts are theirs
    exactness = doctor.summary(doctor.cached(doctor.EXACT_BACKENDS, say))
    return {
        "lab": lab.name,
        "fleet": lab.fleet_name,
        "dilation": lab.dilation,
        "shared": lab.shared,
        "rate_mbps": spec,
        "links": links,
        "concurrent": concurrent,
        **compute,
        "exactness": exactness,
    }


# ---- links -------------------------------------------------------------------------------------------


def _netns(lab: Lab, party: str) -> list[str]:
    """The command prefix that runs in a party's network namespace (the coordinator is this namespace)."""
    if party == "coordinator":
        return []
    device = next(d for d in lab.devices if d.name == party)
    return ["nsenter", f"--net=/run/netns/{device.namespace}"]


def _address(lab: Lab, party: str) -> str:
    return next(address for name, address, _ in lab.parties if name == party)


def measure_flows(lab: Lab, flows: list[tuple[str, str]], seconds: float) -> list[float]:
    """Mbit/s of TCP payload of each (sender, receiver) transfer, all running at once."""
    me = [sys.executable, "-m", "suite.orchestrate.netprobe"]
    procs: list[subprocess.Popen] = []
    try:
        receivers = []
        for _, dst in flows:
            proc = subprocess.Popen(
                _netns(lab, dst) + me + ["recv", _address(lab, dst)], stdout=subprocess.PIPE, text=True
            )
            procs.append(proc)
            receivers.append(proc)
        ports = [int(r.stdout.readline().split()[1]) for r in receivers]
        senders = []
        for (src, dst), port in zip(flows, ports):
            proc = subprocess.Popen(
                _netns(lab, src) + me + ["send", _address(lab, dst), str(port), str(seconds)],
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            senders.append(proc)
        sent = [json.loads(s.communicate(timeout=seconds + 30)[0]) for s in senders]
        samples = [json.loads(r.communicate(timeout=30)[0]) for r in receivers]
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        raise LabError(
            f"measuring {', '.join(f'{a}->{b}' for a, b in flows)} failed ({type(exc).__name__}); "
            f"is the lab healthy? (`suite lab status --name {lab.name}`)"
        ) from None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    start = max(s["start"] for s in sent) + WARMUP_S
    end = min(s["end"] for s in sent)
    if end <= start:
        raise LabError(f"the transfers did not overlap for long enough; measure longer than {seconds:g} s")
    return [8 * _rate(got, start, end) / 1e6 for got in samples]


def _rate(samples: list[list[float]], start: float, end: float) -> float:
    """Bytes per second over [start, end]: the least-squares slope of bytes received against time, which a
    receiver that was briefly not scheduled (and then caught up) moves far less than a difference would."""
    inside = [(t, b) for t, b in samples if start <= t <= end]
    if len(inside) < 2:
        return 0.0
    return linear_regression([t for t, _ in inside], [b for _, b in inside]).slope


# ---- compute ---------------------------------------------------------------------------------------


def measure_compute(lab: Lab, seconds: float) -> dict:
    """Each device's conv speed in its cgroup (all at once), this host's uncapped, and the ratios."""
    inventory = load_inventory(lab.inventory_path())
    # every device has imported torch (about 1.5 CPU-seconds) by then, at its cap
    begin = time.time() + 2.0 + 2.5 / min(d.cpu_cores for d in lab.devices)
    clock = max(2.0, seconds)

    def on_device(device: str) -> tuple[float, float]:
        host = inventory.host(device)
        conn = connect(host, inventory.known_hosts)
        try:
            out = run(
                conn,
                host,
                quote(host.python, "-c", CONV_PROBE, str(begin), str(clock), "wall"),
                "timing a convolution",
                timeout_s=60,
            )
        finally:
            conn.close()
        speed, late = out.split()[-2:]
        return float(speed), float(late)

    with ThreadPoolExecutor(len(lab.devices)) as pool:
        found = dict(zip([d.name for d in lab.devices], pool.map(on_device, [d.name for d in lab.devices])))
    speeds = {name: speed for name, (speed, _) in found.items()}
    late = [name for name, (_, behind) in found.items() if behind > 0]
    host = float(
        subprocess.run(
            [sys.executable, "-c", CONV_PROBE, "0", str(clock), "cpu"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
    )
    local = load_profile("local").macs_per_s
    rows = []
    for d in lab.devices:
        cores = speeds[d.name] / host
        profile = inventory.fleet.device(d.name).profile.macs_per_s
        rows.append(
            {
                "device": d.name,
                "cap_cores": d.cpu_cores,
                "measured_cores": cores,
                "ratio": cores / d.cpu_cores,
                "gmacs": cores * local / 1e9,
                "spec_gmacs": profile * lab.dilation / 1e9,
            }
        )
    return {
        "host_conv_gmacs": host / 1e9,
        "compute": rows,
        "compute_started_late": late,
        "host_load_average": os.getloadavg()[0],
    }


def describe(result: dict) -> str:
    """The human report of `check`."""
    mode = "one shared medium" if result["shared"] else "switched, one link per device"
    lines = [
        f"lab {result['lab']}: fleet {result['fleet']}, {mode}, dilation {result['dilation']:g}; "
        f"links shaped at {result['rate_mbps']:.4g} Mbit/s; rates are TCP payload "
        "(headers take ~4.5% of the wire rate)",
        f"{'link':<14}{'alone Mbit/s':>13}{'spec':>9}{'ratio':>8}",
    ]
    for link in result["links"]:
        lines.append(
            f"{link['device'] + ' ' + link['direction']:<14}{link['mbps']:>13.3g}{link['spec_mbps']:>9.3g}"
            f"{link['ratio']:>8.0%}"
        )
    c = result["concurrent"]
    if c is not None:
        flows = ", ".join(f"{f['from']}->{f['to']} {f['mbps']:.3g}" for f in c["flows"])
        lines.append(
            f"all at once: {flows} Mbit/s (spec {c['spec_each_mbps']:.3g} each); total {c['total_mbps']:.3g}"
            f" of {c['spec_total_mbps']:.3g} ({c['ratio']:.0%})"
        )
    lines.append(
        f"{'compute':<14}{'cap cores':>10}{'measured':>10}{'ratio':>8}{'GMAC/s':>9}{'spec':>8}"
        f"   (this host's conv uncapped: {result['host_conv_gmacs']:.3g} GMAC/s a thread)"
    )
    for row in result["compute"]:
        lines.append(
            f"{row['device']:<14}{row['cap_cores']:>10.3f}{row['measured_cores']:>10.3f}{row['ratio']:>8.0%}"
            f"{row['gmacs']:>9.3g}{row['spec_gmacs']:>8.3g}"
        )
    lines.append(
        f"host load average {result['host_load_average']:.1f} on {os.cpu_count()} cores: other processes "
        "compete with the devices, whose caps are upper bounds"
    )
    exact = result["exactness"]["exact"]
    lines.append(
        "exact on every device (this host's CPU and libraries, `suite doctor`): "
        + (", ".join(b for b, ok in exact.items() if ok) or "no backend")
        + "".join(f"; {b} is NOT: {why}" for b, why in result["exactness"]["first_failure"].items())
    )
    if result["compute_started_late"]:
        lines.append(
            f"note: {', '.join(result['compute_started_late'])} started timing late, so the devices did not "
            "all compute at once"
        )
    return "\n".join(lines)
