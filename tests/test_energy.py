"""Energy per frame from devices' power figures, and this host's RAPL counters (a fake sysfs here)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from suite.fleet import (
    Device,
    Fleet,
    FleetError,
    Link,
    OpCost,
    Power,
    Profile,
    bundled_profiles,
    load_profile,
)
from suite.plan import Predicted, StageCost
from suite.profile import write_profile
from suite.runtime.energy import (
    RaplSampler,
    RaplTrace,
    energy_summary,
    joules,
    predicted_energy,
    rapl_domains,
    run_energy,
    timed_window,
)
from suite.runtime.measurement import FrameRecord, Measurement
from suite.runtime.metrics import Event

PI = Power(idle_w=2.0, busy_w=5.0, source="test")


def _fleet(*powers: Power | None) -> Fleet:
    devices = tuple(Device(f"d{i}", "test", Profile(f"p{i}", "test", 1e9, {"default": OpCost(1, 0)}, power),
                           1, 1.0, 2**30) for i, power in enumerate(powers))  # fmt: skip
    return Fleet("test", devices, Link(1e9, 0.0, False), "test")


def _run(compute: dict[str, list[tuple]], frames: list[tuple[float, float, bool]]) -> Measurement:
    """A measurement with these compute intervals per worker and (start, end, warm-up) frames."""
    events = [Event(device, 0, "compute", 0, 0, a, b) for device, spans in compute.items() for a, b in spans]
    records = [FrameRecord(k, "x", warm, a, b, True) for k, (a, b, warm) in enumerate(frames)]
    workers = {device: {} for device in compute}
    return Measurement(None, records, events, workers, 1, 0.0, max(b for _, b, _ in frames))


def test_a_device_pays_busy_power_while_computing_and_idle_power_otherwise():
    assert joules(PI, busy_s=1.0, window_s=4.0) == pytest.approx(1 * 5 + 3 * 2)
    assert joules(PI, busy_s=9.0, window_s=4.0) == pytest.approx(4 * 5)  # busy never exceeds the window


def test_run_energy_is_mean_power_over_the_timed_frames_times_seconds_per_frame():
    # warm-up frame ends at 1; timed frames end at 2, 3, 4, 5: window [1, 5], 4 frames, 1 s a frame
    frames = [(0, 1, True), (1, 2, False), (2, 3, False), (3, 4, False), (4, 5, False)]
    run = _run({"d0": [(0, 1), (1, 3)], "d1": [(1.5, 2.0), (4.0, 4.5)]}, frames)
    assert timed_window(run) == (1, 5) and run.throughput_fps == pytest.approx(1.0)
    energy = run_energy(run, _fleet(PI, Power(1.0, 3.0, "test")))
    assert energy.busy_s == pytest.approx({"d0": 2.0, "d1": 1.0})  # the warm-up's compute is outside
    d0 = (2 * 5 + 2 * 2) / 4  # mean power over the window, times 1 s a frame
    d1 = (1 * 3 + 3 * 1) / 4
    assert energy.devices == pytest.approx({"d0": d0, "d1": d1})
    assert energy.per_frame_j == pytest.approx(d0 + d1)
    # a lab dilated 10x runs 10x faster than the fleet it stands for: each frame takes 10x the joules
    assert run_energy(run, _fleet(PI, PI), dilation=10).devices["d0"] == pytest.approx(10 * d0)


def test_a_device_without_power_figures_leaves_the_total_unknown():
    run = _run({"d0": [(0, 1)], "d1": [(0, 1)]}, [(0, 1, False), (1, 2, False)])
    energy = run_energy(run, _fleet(PI, None))
    assert energy.devices["d1"] is None and energy.per_frame_j is None


def test_predicted_energy_prices_each_device_over_the_period():
    stages = [StageCost(0.2, 0.0, 0.2, 0, {"d0": 0.2, "d1": 0.1}), StageCost(0.3, 0.0, 0.3, 0, {"d0": 0.3})]
    predicted = Predicted(latency_s=0.5, period_s=1.0, throughput_fps=1.0, redundancy=0.0, stages=stages)
    energy = predicted_energy(predicted, _fleet(PI, PI))
    assert energy == pytest.approx({"d0": 0.5 * 5 + 0.5 * 2, "d1": 0.1 * 5 + 0.9 * 2})


def test_the_summary_compares_the_plan_with_the_single_device():
    frames = [(0, 1, False), (1, 2, False), (2, 3, False)]
    plan = _run({"d0": [(0, 2)], "d1": [(0, 2)]}, frames)
    single = _run({"d0": [(0, 3)]}, [(0, 1.5, False), (1.5, 3, False)])
    unpredicted = type("P", (), {"predicted": None, "scheme": "pico"})()
    plan, single = replace(plan, plan=unpredicted), replace(single, plan=unpredicted)
    summary = energy_summary(plan, single, _fleet(PI, PI))
    # plan: window [0, 3], 1 fps; each device 2 s busy, 1 s idle over 3 s: 12/3 W, times 1 s a frame
    assert summary["per_frame_j"] == pytest.approx(2 * 12 / 3)
    # single: 0.667 fps, always busy: 5 W x 1.5 s
    assert summary["single_per_frame_j"] == pytest.approx(7.5)
    assert summary["ratio_vs_single"] == pytest.approx(8 / 7.5)
    assert summary["rapl"] is None and summary["no_power"] == []


def _rapl_folder(root, packages: dict[str, int], max_uj: int = 1000_000) -> None:
    for k, (name, value) in enumerate(packages.items()):
        folder = root / f"intel-rapl:{k}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "name").write_text(name + "\n")
        (folder / "energy_uj").write_text(f"{value}\n")
        (folder / "max_energy_range_uj").write_text(f"{max_uj}\n")
    sub = root / "intel-rapl:0:0"  # a core sub-domain: counted inside its package already
    sub.mkdir(exist_ok=True)
    (sub / "name").write_text("core\n")
    (sub / "energy_uj").write_text("5\n")
    (sub / "max_energy_range_uj").write_text(f"{max_uj}\n")


def test_rapl_reads_package_counters_unwrapped_and_interpolated(tmp_path):
    _rapl_folder(tmp_path, {"package-0": 900_000, "package-1": 100})
    domains = rapl_domains(tmp_path)
    assert [d.name for d in domains] == ["package-0", "package-1"]
    trace = RaplTrace(domains)
    trace.sample(now=10.0)
    _rapl_folder(tmp_path, {"package-0": 100_000, "package-1": 200_100})  # package-0 wrapped past 1 J
    trace.sample(now=12.0)
    # package-0: 900000 -> 1000000 -> 0 -> 100000 is 200001 uJ; package-1 200000 uJ; over 2 s
    assert trace.joules_between(10.0, 12.0) == pytest.approx(0.400001)
    assert trace.joules_between(10.5, 11.5) == pytest.approx(0.400001 / 2)
    assert trace.joules_between(9.0, 11.0) is None  # before the first sample


def test_no_rapl_means_no_measurement(tmp_path):
    assert rapl_domains(tmp_path / "absent") == []
    (tmp_path / "intel-rapl:0").mkdir()  # a package without readable counters (not root)
    assert rapl_domains(tmp_path) == []
    with RaplSampler(tmp_path) as sampler:
        pass
    assert sampler.trace is None


def test_the_sampler_samples_while_the_block_runs(tmp_path):
    _rapl_folder(tmp_path, {"package-0": 0})
    with RaplSampler(tmp_path, period_s=0.001) as sampler:
        (tmp_path / "intel-rapl:0" / "energy_uj").write_text("500000\n")
    trace = sampler.trace
    assert len(trace.times) >= 2 and trace.microjoules[-1] == [500_000]
    with RaplSampler(tmp_path, enabled=False) as off:
        pass
    assert off.trace is None


def test_bundled_device_profiles_carry_power_with_its_source():
    for name in bundled_profiles():
        profile = load_profile(name)
        power = profile.power
        if name.startswith("local") or "virtual machines" in profile.source:  # a VM's share of a CPU
            assert power is None  # has no published figure (this host's, EdgeLD's testbed)
            continue
        assert power is not None and 0 < power.idle_w < power.busy_w, name
        assert "not measured here" in power.source, name


def test_power_figures_are_checked_and_kept_when_a_profile_is_written(tmp_path):
    profile = Profile("p", "test", 1e9, {"default": OpCost(1, 0)}, Power(1.5, 4.0, "a meter"))
    write_profile(profile, tmp_path / "p.yaml")
    assert load_profile(str(tmp_path / "p.yaml")).power == profile.power
    bad = tmp_path / "bad.yaml"
    bad.write_text((tmp_path / "p.yaml").read_text().replace("busy_w: 4.0", "busy_w: 1.0"))
    with pytest.raises(FleetError, match=r"bad.yaml: power.busy_w: 1 W is less than idle_w 1.5 W"):
        load_profile(str(bad))
