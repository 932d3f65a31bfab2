"""HALP's prototype measured in the emulated lab (`suite reproduce halp --lab`): three Pi 4, VGG-16,
the speedup beside the prototype paper's (`baselines/halp.yaml`), and service reliability under a
deadline with a Rayleigh-fading channel played on the lab's links.

Our choices, written down: the Pis are PICO's LibTorch Pi 4 profile at one core and 1 GHz
(`pico-libtorch-1000mhz-3`, 50 Mbps shared WiFi), not the prototype's own single-device time, which
is not public (its `halp-pi` fleet is four ncnn threads a Pi, more than a lab worker's one thread).
The lab caps a device by its profile's speed against the bundled `local` profile, measured on
another CPU, so the Pi is calibrated first as every lab figure's device class is (`lab.calibrate`:
one Pi's frame against its profile's, its cgroup quota scaled until within 10%). The measuring lab
(`--dilate 20 --deploy`, as the calibration's) gives its Pis the calibrated quota and runs the single
device's plan (all of VGG-16 on one Pi) and HALP's, every frame bit-exact; the speedup is the ratio
of their median frame latencies. Then HALP runs again while `suite.orchestrate.channel` plays a seeded
Rayleigh block-fading trace (`suite.simulate.rayleigh_trace`, mean SNR as the simulation's, a new
draw every `COHERENCE_S` real seconds, about one HALP frame, as near to the simulator's one draw
per frame as a channel not synchronised with the frames gets); a frame meets a deadline of k x the
measured single device's median latency when its own latency, frames one at a time, is within it.
After the points the Pi's kept calibration run is made once more at its quota (`lab.recheck`, as
every lab figure's): a shared host's speed moves under its caps, and its drift (`calibration_drift`
in the CSV's measured rows, the measured sentence and the calibration paragraph) says by how much.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from suite.errors import UserError
from suite.orchestrate.channel import playing
from suite.orchestrate.lab import load_lab
from suite.reproduce.common import Outcome, fleet, plan
from suite.reproduce.halp import DEADLINES, MODEL, SNR_DB
from suite.reproduce.lab import (
    TIME_SPLIT,
    _Lab,
    _set_cores,
    available,
    calibrate,
    calibration_clause,
    calibration_columns,
    describe_calibration,
    describe_exchanges,
    recheck,
    recheck_columns,
    run_plan,
    scratch_folder,
)
from suite.simulate import rayleigh_trace

FLEET = "pico-libtorch-1000mhz-3"
FRAMES = {"single": 3, "halp": 6}  # timed frames for the speedup (one warm-up frame each)
FADED_FRAMES = 40  # HALP's frames under the played channel
COHERENCE_S = 12.0  # real seconds per fading block
TRACE_SEED = 0
DILATION = 20  # the same before and after calibrating: the links at 1 Gbit/s, and 3 caps well within 2 cores


def measure(progress: Callable[[str], None]) -> dict:
    """The lab's figures: real-time frame latencies of the single device and of HALP on a fixed link,
    HALP's under the fading trace, the Pi's calibration and its recheck after them, the lab's dilation
    and the channel scales played."""
    reason = available()
    if reason is not None:
        raise UserError(reason)
    (profile,) = {d.profile.name for d in fleet(FLEET).devices}
    rate = fleet(FLEET).link.bandwidth_bps
    with scratch_folder("suite-reproduce-halp-") as folder:
        tries = calibrate(MODEL, FLEET, profile, DILATION, folder, progress)
        with _Lab(FLEET, DILATION, "h", progress) as up:
            _set_cores(up["lab"], {profile: tries[-1].cores})
            lab, inventory = load_lab(up["lab"]), up["inventory"]
            single = _latencies("single", FRAMES["single"], inventory, folder / "single", progress)
            fixed = _latencies("halp", FRAMES["halp"], inventory, folder / "halp", progress)
            split = _time_split(folder / "halp", FRAMES["halp"] + 1, lab.dilation)
            duration = 3 * FADED_FRAMES * plan(MODEL, "halp", FLEET).predicted.latency_s
            trace = rayleigh_trace(rate, COHERENCE_S, duration, SNR_DB, TRACE_SEED)
            progress(f"lab: HALP under a Rayleigh channel (seed {TRACE_SEED}, {COHERENCE_S:g} s blocks) ...")
            with playing(lab, trace, rate) as scales:
                faded = _latencies("halp", FADED_FRAMES, inventory, folder / "faded", progress)
        again = recheck(MODEL, FLEET, tries[-1], DILATION, folder, progress)
    return {"calibrations": {(MODEL, profile): tries}, "rechecks": {(MODEL, profile): again},
            "single_s": single, "halp_s": fixed, "faded_s": faded, "halp_split": split,
            "dilation": lab.dilation, "scales": list(scales)}  # fmt: skip


def _latencies(scheme: str, frames: int, inventory: str, folder: Path,
               progress: Callable[[str], None]) -> np.ndarray:  # fmt: skip
    """Each timed frame's latency in real time (lab seconds x the lab's dilation); every frame checked."""
    summary = run_plan(MODEL, plan(MODEL, scheme, FLEET), inventory, frames, folder, progress)
    table = pd.read_csv(folder / "results" / "frames.csv")
    timed = table[(table.run == "plan") & ~table.warmup].latency_s.to_numpy() * summary.network.dilation
    progress(f"lab: {scheme} on {FLEET}: median {np.median(timed):.2f} s real time over {len(timed)} "
             f"frames (x{summary.network.dilation:g}), bit-exact")  # fmt: skip
    return timed


def _time_split(folder: Path, frames: int, dilation: float) -> dict[str, dict[str, float]]:
    """Each device's real-time seconds per frame computing, sending (and of that, waiting for the
    receiver), receiving (and of that, waiting for the sender) and idle, from the run's own timelines
    (devices.csv; `frames` counts the warm-up too)."""
    table = pd.read_csv(folder / "results" / "devices.csv")
    table = table[(table.run == "plan") & (table.device != "coordinator")]
    return {row.device: {kind: getattr(row, f"{kind}_s") * dilation / frames
                         for kind in TIME_SPLIT}
            for row in table.itertuples()}  # fmt: skip


def with_lab(outcome: Outcome, measured: dict) -> Outcome:
    """The halp figure with the lab's measured speedup and reliability on `FLEET`, the calibration and
    its recheck on the measured rows, and what they show."""
    t = outcome.table.copy()
    calibrations, rechecks = measured["calibrations"], measured["rechecks"]
    single, halp = float(np.median(measured["single_s"])), float(np.median(measured["halp_s"]))
    speedup = single / halp
    speed_row = t.deadline_s.isna() & (t.fleet == FLEET) & (t.scheme == "halp") & (t.tasks_per_batch == 1)
    t.loc[speed_row, "measured_speedup"] = speedup
    deadline_rows = t.deadline_s.notna() & (t.fleet == FLEET) & (t.scheme == "halp")
    faded = np.asarray(measured["faded_s"])
    t.loc[deadline_rows, "measured_deadline_s"] = t.loc[deadline_rows, "deadline_x_single"] * single
    factors = t.loc[deadline_rows, "deadline_x_single"]
    t.loc[deadline_rows, "measured_deadline_met"] = [float(np.mean(faded <= k * single)) for k in factors]
    (key,) = calibrations  # the Pi on VGG-16
    calibration = {
        **calibration_columns(calibrations, *key),
        **recheck_columns(calibrations[key][-1], rechecks[key]),
    }
    for column, value in calibration.items():
        t.loc[speed_row | deadline_rows, column] = value
    paper = t[t.deadline_s.isna() & (t.fleet == "halp-pi") & (t.scheme == "halp")
              & (t.tasks_per_batch == 1)].published_speedup_low.iloc[0]  # fmt: skip
    predicted = t.loc[speed_row, "predicted_speedup"].iloc[0]
    profile = plan(MODEL, "single", FLEET).predicted.latency_s
    rows = t[deadline_rows].set_index("deadline_x_single")
    met = ", ".join(f"{k:g}x {100 * rows.loc[k, 'measured_deadline_met']:.0f}% (simulated "
                    f"{100 * rows.loc[k, 'simulated_deadline_met']:.0f}%)" for k in DEADLINES)  # fmt: skip
    scales = np.asarray(measured["scales"])
    findings = (
        describe_calibration(calibrations, measured["dilation"], rechecks),
        f"Measured in the emulated lab on {FLEET} (three Pi 4 at PICO's LibTorch speed; time dilated "
        f"x{measured['dilation']:g}, real-time figures; every frame bit-exact; "
        f"{calibration_clause(calibrations, rechecks)}): HALP's VGG-16 frame takes "
        f"{halp:.2f} s against one Pi's {single:.2f} s, a {speedup:.2f}x speedup ({speedup / paper:.2f} x "
        f"the prototype paper's {paper:g}x; predicted {predicted:.2f}x). One Pi on its calibrated quota "
        f"took {single:.2f} s against its profile's {profile:.2f} s ({single / profile - 1:+.0%}).",
        f"Service reliability measured with a Rayleigh-fading channel played on the lab's links (seed "
        f"{TRACE_SEED}, mean SNR {SNR_DB:g} dB, {COHERENCE_S:g} s blocks; {len(scales)} rate changes, the "
        f"rate {scales.min():.2f}-{scales.max():.2f} x the link's, median {np.median(scales):.2f} x), "
        f"{len(faded)} HALP frames, {faded.min():.2f}-{faded.max():.2f} s, median {np.median(faded):.2f} s "
        f"(on the fixed link {np.min(measured['halp_s']):.2f}-{np.max(measured['halp_s']):.2f} s): frames "
        "meeting a deadline of k x "
        f"the measured single device's latency: {met}.",
    )
    computes = {}
    for cost in plan(MODEL, "halp", FLEET).predicted.stages:
        for device, seconds in cost.device_compute_s.items():
            computes[device] = computes.get(device, 0.0) + seconds
    split = "; ".join(f"{d} computes {s['compute']:.2f} s (predicted {computes.get(d, 0.0):.2f} s), "
                      f"{describe_exchanges(s)}, idles {s['idle']:.2f} s"
                      for d, s in measured["halp_split"].items())  # fmt: skip
    findings = (*findings, f"Where HALP's frame goes on the fixed link, per frame, real time: {split}.")
    return replace(outcome, table=t, findings=(*outcome.findings, *findings))
