"""Measured points for the reproduction: the figure's own plans run through the emulated lab.

For PICO's Fig. 8 at 1 GHz, each device count's paper fleet (`pico-libtorch-1000mhz-N`) becomes a
dilated lab (`suite lab up --dilate auto --deploy`: each emulated Pi runs at F x its LibTorch speed
and the WiFi at F x 50 Mbit/s, F as large as this host's cores allow), and the very plans the figure
predicts run through it with `suite run --inventory --plan`, every frame checked bit for bit. The
measured period is the real-time one (measured x F). Each device's compute, send, receive and idle
seconds come from the run's own timelines (its devices.csv), so a point that falls short of its
prediction shows where the time went.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from suite.errors import UserError
from suite.plan import save_plan
from suite.reproduce.common import SCHEME_OF, plan
from suite.runtime.outcome import RunSummary

LAB_DEVICES = (1, 2, 4, 8)
LAB_SCHEMES = ("pico", "lw")
FRAMES = {"pico": 8, "lw": 3}  # LW's frames take about as long as one device's


def available() -> str | None:
    """Why the lab cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "the emulated lab needs root (network namespaces, tc, cgroups, sshd)"
    if not Path("/usr/sbin/sshd").is_file():
        return "the emulated lab needs openssh-server (apt-get install -y openssh-server)"
    return None


def _suite(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True, text=True,
                          timeout=3600)  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"`suite {' '.join(args[:2])}` for the lab failed: {last}")
    return done.stdout


def measure_periods(model: str, clock_mhz: int, progress: Callable[[str], None]) -> pd.DataFrame:
    """Rows (scheme, clock_mhz, devices, measured_period_s, measured_throughput_fpm, dilation, and each
    device's seconds per frame computing, sending, receiving and idle) for `LAB_SCHEMES` on
    `LAB_DEVICES` one-core Pis at `clock_mhz`."""
    reason = available()
    if reason is not None:
        raise UserError(reason)
    rows = []
    with tempfile.TemporaryDirectory(prefix="suite-reproduce-lab-") as scratch:
        for n in LAB_DEVICES:
            fleet_name = f"pico-libtorch-{clock_mhz}mhz-{n}"
            name = f"repro{n}p{os.getpid() % 1000}"
            progress(f"lab: {fleet_name} up and deployed ...")
            up = json.loads(_suite("lab", "up", "--fleet", fleet_name, "--dilate", "auto", "--name", name,
                                   "--deploy", "--json"))  # fmt: skip
            try:
                for label in LAB_SCHEMES:
                    folder = Path(scratch) / f"{label}-{n}"
                    rows.append(_one(model, label, clock_mhz, n, fleet_name, up, folder, progress))
            finally:
                _suite("lab", "down", "--name", name)
    return pd.DataFrame(rows)


def _one(model: str, label: str, clock_mhz: int, devices: int, fleet_name: str, up: dict, folder: Path,
         progress: Callable[[str], None]) -> dict:  # fmt: skip
    folder.mkdir(parents=True)
    planned = plan(model, SCHEME_OF[label], fleet_name)
    save_plan(planned, folder / "plan.json")
    run = RunSummary.from_json(json.loads(_suite(
        "run", "--inventory", up["inventory"], "--model", model, "--plan", str(folder / "plan.json"),
        "--frames", str(FRAMES[label]), "--warmup", "1", "--no-baseline", "--json", "-o",
        str(folder / "results"))))  # fmt: skip
    if not run.bit_exact:
        raise UserError(f"lab run of {label} on {fleet_name} was not bit-exact: {run.error}")
    period = 1 / run.real_time.throughput_fps
    frames = run.frames
    table = pd.read_csv(folder / "results" / "devices.csv")
    table = table[(table.run == "plan") & (table.device != "coordinator")]
    dilation = run.network.dilation  # the lab's, as the run found it in the inventory
    per_frame = {f"lab_{kind}_s": (table[f"{kind}_s"] * dilation / (frames + 1)).round(4).tolist()
                 for kind in ("compute", "send", "recv", "idle")}  # fmt: skip
    progress(f"lab: {label} on {fleet_name}: period {period:.2f} s real time (x{dilation:g}), bit-exact")
    return {"scheme": label, "clock_mhz": clock_mhz, "devices": devices, "measured_period_s": period,
            "measured_throughput_fpm": 60 / period, "lab_dilation": dilation,
            "lab_devices": table.device.tolist(), **per_frame}
