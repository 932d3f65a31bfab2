"""The time-variant channel: the seeded Rayleigh trace (pure), and its player on a real lab's links
(root), which must put the lab's own rates back however its block ends."""

import ipaddress
import math
import subprocess
import time

import numpy as np
import pytest
from labkit import lab_name, needs_lab, write_fleet

from suite.errors import UserError
from suite.fleet import load_fleet
from suite.orchestrate import lab, labplan
from suite.orchestrate.channel import class_changes, playing
from suite.orchestrate.labcheck import measure_flows
from suite.simulate import rayleigh_trace


def expected_scale(snr_db: float) -> float:
    """E[log2(1 + snr g)] / log2(1 + snr) for g ~ Exp(1), integrated numerically."""
    snr = 10 ** (snr_db / 10)
    g = np.linspace(0, 40, 400_001)
    return float(np.trapezoid(np.log2(1 + snr * g) * np.exp(-g), g) / math.log2(1 + snr))


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
def test_the_trace_averages_the_rayleigh_capacity_at_the_mean_snr(snr_db):
    trace = rayleigh_trace(50e6, 0.5, 10_000, snr_db, seed=3)
    rates = np.array([r for _, r in trace])
    assert len(trace) == 20_000 and [t for t, _ in trace[:3]] == [0.0, 0.5, 1.0]
    expected = 50e6 * expected_scale(snr_db)
    assert abs(rates.mean() / expected - 1) < 0.01, (rates.mean(), expected)
    assert 0.8 < expected / 50e6 < 1  # fading costs capacity (Jensen), less at a higher mean SNR
    assert rates.min() < 0.5 * expected < expected < rates.max()  # it fades, and rises above the mean


def test_the_trace_is_reproducible_from_its_seed():
    one = rayleigh_trace(50e6, 1.0, 30, 20.0, seed=7)
    assert one == rayleigh_trace(50e6, 1.0, 30, 20.0, seed=7)
    assert one != rayleigh_trace(50e6, 1.0, 30, 20.0, seed=8)
    assert len(rayleigh_trace(50e6, 1.0, 30.5, 20.0, seed=7)) == 31  # a last partial block counts


@pytest.mark.parametrize("coherence, duration", [(0, 10), (-1, 10), (1, 0), (math.inf, 10)])
def test_a_trace_without_a_positive_coherence_time_or_duration_is_refused(coherence, duration):
    with pytest.raises(UserError, match="positive coherence time and duration"):
        rayleigh_trace(50e6, coherence, duration, 20.0, seed=0)


@pytest.mark.parametrize("shared", [True, False])
def test_a_fade_changes_every_class_the_lab_made_and_scale_one_is_the_lab_as_made(shared):
    fleet = load_fleet("pico-libtorch-1000mhz-3" if shared else "halp-gpu")
    made = labplan.plan_lab("x", "f", fleet, 2.0, {d.name: 0.1 for d in fleet.devices},
                        ipaddress.ip_network("10.203.9.0/24"))  # fmt: skip
    added = [" ".join(a[3:]) for a in labplan.shaping_commands(made) if a[3:5] == ["class", "add"]]
    assert [line.replace("change", "add", 1) for line in class_changes(made, 1.0)] == added
    half = class_changes(made, 0.5)
    rate = round(fleet.link.bandwidth_bps * 2)
    assert f"classid 1:1 htb rate {rate // 2}bit ceil {rate // 2}bit" in half[0]
    assert all("rate 8000bit" in line for line in class_changes(made, 1e-9))  # held at htb's floor


# ---- on a real lab (root) -------------------------------------------------------------------------


def classes(made: labplan.Lab) -> str:
    """`tc class show` of every interface in the lab's access point."""
    names = subprocess.run(["ip", "-n", made.ap_namespace, "-o", "link", "show"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    out = []
    for name in sorted(line.split(":")[1].strip().split("@")[0] for line in names.splitlines()):
        out.append(subprocess.run(["tc", "-n", made.ap_namespace, "class", "show", "dev", name],
                                  capture_output=True, text=True, check=True).stdout)  # fmt: skip
    return "".join(out)


@pytest.fixture
def shared_lab(tmp_path):
    name = lab_name("c")
    made = lab.up(str(write_fleet(tmp_path, devices=2, mbps=8, shared=True, speed=0.1)), "1", name)
    yield made
    lab.down(name)


@pytest.mark.slow
@needs_lab
def test_the_player_fades_a_real_link_and_restores_it_even_when_its_block_fails(shared_lab):
    before = classes(shared_lab)
    assert "rate 8Mbit ceil 8Mbit" in before
    trace = ((0.0, 4e6), (30.0, 4e6))  # half the rate, held for the whole test
    with pytest.raises(RuntimeError, match="the run failed"), playing(shared_lab, trace, 8e6) as applied:
        deadline = time.monotonic() + 5
        while not applied and time.monotonic() < deadline:
            time.sleep(0.01)
        assert applied == [0.5] and "rate 4Mbit ceil 4Mbit" in classes(shared_lab)
        measured = measure_flows(shared_lab, [("d0", "coordinator")], 1.5)[0]
        assert 0.8 * 4 <= measured <= 1.05 * 4, measured  # the flow sees the faded rate
        raise RuntimeError("the run failed")
    assert classes(shared_lab) == before


@pytest.mark.slow
@needs_lab
def test_the_player_follows_the_trace_in_dilated_time(shared_lab):
    before = classes(shared_lab)
    trace = rayleigh_trace(8e6, 0.5, 2.0, 20.0, seed=1)  # 4 blocks of 0.5 s, lab at dilation 1
    with playing(shared_lab, trace, 8e6) as applied:
        time.sleep(2.2)  # the whole trace, and its first block again
    assert applied[:5] == [rate / 8e6 for _, rate in trace] + [trace[0][1] / 8e6]
    assert classes(shared_lab) == before
