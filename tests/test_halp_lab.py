"""`suite reproduce halp --lab`: the lab's measured latencies become the figure's measured columns and
findings (the measuring itself needs root and minutes; `suite reproduce halp --lab` runs it)."""

from contextlib import nullcontext
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from suite.baselines import load_baselines
from suite.reproduce import halp_lab
from suite.reproduce.figures import FIGURES
from suite.reproduce.halp_lab import FLEET, with_lab
from suite.reproduce.lab import Calibration


@pytest.fixture(scope="module")
def outcome():
    return FIGURES["halp"].compute(load_baselines()["halp"])


def test_measured_latencies_give_the_speedup_and_the_deadlines_met_beside_the_simulated(outcome):
    tries = (Calibration("rpi4b-libtorch-1000mhz", 22.6, 10.25, 0.21, 1.5, 2),
             Calibration("rpi4b-libtorch-1000mhz", 22.6, 22.0, 0.0952, 1.7, 2))  # fmt: skip
    again = replace(tries[-1], measured_s=20.46, load=0.9)  # the kept run after the points: -7%
    measured = {"calibrations": {("vgg16", "rpi4b-libtorch-1000mhz"): tries},
                "rechecks": {("vgg16", "rpi4b-libtorch-1000mhz"): again},
                "single_s": np.array([20.0, 22.0, 24.0]),
                "halp_s": np.array([11.0, 11.0, 12.0]),
                "faded_s": np.array([10.0, 12.0, 14.0, 16.0, 30.0]), "dilation": 27.0,
                "scales": [0.4, 1.1, 0.9],
                "halp_split": {"pi0": {"compute": 9.0, "send": 0.5, "send_wait": 0.2, "recv": 0.25,
                                        "recv_wait": 0.1, "idle": 1.0}}}  # fmt: skip
    shown = with_lab(outcome, measured)
    t = shown.table
    speed = t[t.deadline_s.isna() & t.measured_speedup.notna()]
    assert list(zip(speed.fleet, speed.scheme, speed.tasks_per_batch)) == [(FLEET, "halp", 1)]
    assert speed.measured_speedup.iloc[0] == pytest.approx(2.0)  # 22 s over 11 s, medians
    met = t[t.measured_deadline_met.notna()].set_index("deadline_x_single")
    assert set(met.fleet) == {FLEET} and set(met.scheme) == {"halp"}
    assert met.measured_deadline_s.loc[0.6] == pytest.approx(13.2)
    assert met.measured_deadline_met.loc[0.6] == pytest.approx(0.4)  # 10 and 12 s within 13.2 s
    assert met.measured_deadline_met.loc[1.0] == pytest.approx(0.8)  # all but the 30 s frame
    assert met.measured_deadline_met.loc[1.5] == 1.0  # 33 s: the 30 s frame too
    assert "2.00x speedup (1.18 x the prototype paper's 1.7x" in shown.findings[-3]
    # the recheck after the points, as every lab figure's: its drift in the sentence, the paragraph, the CSV
    assert (
        "every frame bit-exact; devices calibrated to their profile's frame: rpi4b-libtorch-1000mhz -3% "
        "(then -7% after the points))"
    ) in shown.findings[-3]
    assert "1x 80% (simulated" in shown.findings[-2] and "x27" in shown.findings[-3]
    assert (
        "One Pi on its calibrated quota took 22.00 s against its profile's 22.60 s (-3%)"
        in shown.findings[-3]
    )
    calibration = shown.findings[-4]  # the lab path's own calibration, as every lab figure's
    assert (
        calibration.startswith("Lab calibration at dilation x27") and "10.25 s at 0.21 cores" in calibration
    )
    assert "22.00 s at 0.0952 cores (load 1.7 on 2 cores, -3%); within 10%" in calibration
    assert "the same run at the same quota took 20.46 s (load 0.9), -7% from the kept one" in calibration
    rows = t[t.calibration_drift.notna()]  # the measured rows, and only they
    assert (
        rows.index.tolist() == t[t.measured_speedup.notna() | t.measured_deadline_met.notna()].index.tolist()
    )
    assert len(rows) == 1 + len(met)
    assert set(rows.calibration_profile) == {"rpi4b-libtorch-1000mhz"} and set(rows.calibration_tries) == {2}
    assert set(rows.calibration_cores) == {0.0952} and set(rows.calibration_recheck_s) == {20.46}
    assert set(rows.calibration_drift) == {-0.07}
    assert "pi0 computes 9.00 s (predicted " in shown.findings[-1] and "idles 1.00 s" in shown.findings[-1]
    assert (
        "sends 0.50 s (0.20 s of it waiting for the receiver), receives 0.25 s (0.10 s of it waiting for "
        "the sender)"
    ) in shown.findings[-1]
    assert outcome.table.columns.tolist() == [
        c for c in t.columns if not c.startswith(("measured_", "calibration_"))
    ]
    FIGURES["halp"].draw(shown)


def test_measure_rechecks_the_pis_calibration_after_its_points_on_a_fresh_lab(monkeypatch):
    """`measure` with the lab itself replaced: the Pi calibrated, the points measured on its quota, then
    the kept calibration run once more at that quota on `FLEET` (`lab.recheck`), as every lab figure's."""
    pi = "rpi4b-libtorch-1000mhz"
    kept = Calibration(pi, 22.6, 22.0, 0.0952, 1.7, 2)
    events = []

    def recheck(model, calibration, run, dilation, scratch, progress):
        events.append(("recheck", model, calibration, run, dilation))
        return replace(run, measured_s=20.46)

    def latencies(scheme, frames, inventory, folder, progress):
        events.append((scheme, frames))
        return np.array([20.0, 22.0]) if scheme == "single" else np.array([11.0, 12.0])

    monkeypatch.setattr(halp_lab, "available", lambda: None)
    monkeypatch.setattr(halp_lab, "calibrate", lambda *a: (replace(kept, measured_s=10.25, cores=0.21), kept))
    monkeypatch.setattr(halp_lab, "recheck", recheck)
    monkeypatch.setattr(halp_lab, "_Lab", lambda *a: nullcontext({"lab": "l", "inventory": "i"}))
    monkeypatch.setattr(halp_lab, "_set_cores", lambda name, profiles: events.append(("cores", profiles)))
    monkeypatch.setattr(halp_lab, "load_lab", lambda name: SimpleNamespace(dilation=20.0))
    monkeypatch.setattr(halp_lab, "_latencies", latencies)
    monkeypatch.setattr(halp_lab, "_time_split", lambda *a: {})
    monkeypatch.setattr(halp_lab, "playing", lambda *a: nullcontext([0.5, 1.0]))
    measured = halp_lab.measure(progress=lambda _: None)
    assert events == [("cores", {pi: 0.0952}), ("single", 3), ("halp", 6), ("halp", halp_lab.FADED_FRAMES),
                      ("recheck", "vgg16", FLEET, kept, halp_lab.DILATION)]  # fmt: skip
    assert measured["rechecks"] == {("vgg16", pi): replace(kept, measured_s=20.46)}
