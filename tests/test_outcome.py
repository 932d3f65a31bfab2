"""A run's typed outcome, built from made-up measurements (no workers): its figures, its repeats and
statistics, its JSON form read back, and the stats table saved beside it."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
from toys import conv_graph, fleet

from suite.inventory import LabNetwork
from suite.runtime.measurement import FrameRecord, Measurement, Repeat, RunOptions, Runs, WorkerReport
from suite.runtime.outcome import RunSummary, network, summarize, summary_json
from suite.runtime.results import statistics_table
from suite.schemes import make_plan

FLEET = fleet(1e9, 1e9)
GRAPH = conv_graph()


def _measured(scheme: str, latencies: list[float], warmup: int = 1, error: str | None = None) -> Measurement:
    """Frames one after another (one in flight), `warmup` of 0.1 s first, then `latencies`."""
    plan = make_plan(scheme, GRAPH, FLEET)
    frames, clock = [], 0.0
    for index, seconds in enumerate([0.1] * warmup + latencies):
        frames.append(FrameRecord(index, "img", index < warmup, clock, clock + seconds, True))
        clock += seconds
    workers = {d: WorkerReport(d, rank, 100 + rank, 1, 10, None, 0.5, 0.1, 1, 2**20)
               for rank, d in enumerate(plan.devices, start=1)}  # fmt: skip
    return Measurement(plan, tuple(frames), (), workers, 1, 0.0, clock, error)


def _options(**changes) -> RunOptions:
    return RunOptions("conv", (1, 4, 4), frames=4, warmup=1, **changes)


def test_one_repeat_keeps_the_figures_a_run_always_had():
    run, single = _measured("modnn", [0.1, 0.2, 0.3, 0.2]), _measured("single", [0.4, 0.4, 0.5, 0.4])
    s = summarize(Runs((Repeat(1, run, single),)), FLEET, _options())
    assert s.latency_s == pytest.approx(run.latency_s) == pytest.approx(statistics.median([0.1, 0.2, 0.3]))
    assert s.throughput_fps == pytest.approx(run.throughput_fps) == pytest.approx(4 / 0.8)
    assert s.speedup_vs_single == pytest.approx(run.throughput_fps / single.throughput_fps)
    assert s.latency_speedup_vs_single == pytest.approx(single.latency_s / run.latency_s)
    assert s.single.device == single.plan.hub and s.complete and s.bit_exact and s.error is None
    figures = s.statistics
    assert figures.repeats == 1 and figures.latency_s.count == 4
    assert figures.speedup_vs_single.low <= s.speedup_vs_single <= figures.speedup_vs_single.high
    assert figures.latency_s.p99 == pytest.approx(0.3, abs=0.01)
    assert figures.latency_s.mean == pytest.approx(0.2)


def test_a_single_device_plan_is_its_own_baseline():
    run = _measured("single", [0.2, 0.2])
    s = summarize(Runs((Repeat(1, run, run),)), FLEET, _options())
    assert s.speedup_vs_single == s.latency_speedup_vs_single == 1.0 and s.single is None
    assert s.statistics.speedup_vs_single is None and s.statistics.inconclusive == {}


def test_repeats_pool_their_frames_and_a_failed_repeat_is_named_and_left_out():
    one = Repeat(1, _measured("modnn", [0.2] * 4), _measured("single", [0.4] * 4))
    two = Repeat(2, _measured("modnn", [0.3] * 4), _measured("single", [0.6] * 4))
    broken = Repeat(3, _measured("modnn", [0.2], error="device d1 (rank 2) exited with code 1"))
    s = summarize(Runs((one, two, broken)), FLEET, _options(repeats=3))
    assert not s.complete and s.error == "repeat 3 of 3: device d1 (rank 2) exited with code 1"
    assert s.statistics.repeats == 2 and s.statistics.latency_s.count == 8
    assert s.speedup_vs_single == pytest.approx(2.0) and s.latency_speedup_vs_single == pytest.approx(2.0)
    assert [(r.repeat, r.complete) for r in s.repeats] == [(1, True), (2, True), (3, False)]
    assert s.repeats[1].single_latency_s == pytest.approx(0.6)


def test_a_repeat_that_failed_to_start_makes_the_run_incomplete():
    one = Repeat(1, _measured("modnn", [0.2] * 4), _measured("single", [0.4] * 4))
    s = summarize(Runs((one,), "repeat 2 of 2: device d0 (rank 1): the worker did not start"), FLEET,
                  _options(repeats=2))  # fmt: skip
    assert not s.complete and s.error.startswith("repeat 2 of 2")
    assert s.speedup_vs_single == pytest.approx(2.0)


def test_a_noisy_speedup_near_1_is_called_inconclusive():
    run = _measured("modnn", [0.1, 0.5, 0.1, 0.5, 0.3, 0.1])
    single = _measured("single", [0.3, 0.1, 0.5, 0.1, 0.3, 0.5])
    s = summarize(Runs((Repeat(1, run, single),)), FLEET, _options())
    assert "spans 1x" in s.statistics.inconclusive["speedup_vs_single"]
    table = statistics_table(s).set_index("metric")
    assert table.loc["speedup_vs_single", "inconclusive"] == s.statistics.inconclusive["speedup_vs_single"]
    assert RunSummary.from_json(json.loads(json.dumps(summary_json(s)))) == s


def test_a_dilated_lab_shows_real_time_figures():
    lab = LabNetwork("lab1", 4.0, 200.0, True, "one shared medium", "no radio latency", {"d0": 0.5})
    inventory = SimpleNamespace(name="lab1", lab=lab)
    run = _measured("modnn", [0.1] * 4)
    s = summarize(Runs((Repeat(1, run),)), FLEET, _options(inventory=inventory))
    assert s.network == network(inventory) and s.network.shaped and s.network.dilation == 4.0
    assert s.real_time.latency_s == pytest.approx(0.4) and s.real_time.throughput_fps == pytest.approx(2.5)
    assert s.speedup_vs_single is None and s.statistics.speedup_vs_single is None


def test_the_json_form_keeps_its_keys_and_reads_back():
    run, single = _measured("modnn", [0.1, 0.2, 0.3]), _measured("single", [0.4, 0.4, 0.5])
    s = summarize(Runs((Repeat(1, run, single),)), FLEET, _options())
    document = json.loads(json.dumps(summary_json(s)))
    for key in (
        "scheme",
        "model",
        "input_shape",
        "fleet",
        "devices",
        "backend",
        "frames",
        "warmup",
        "in_flight",
        "latency_s",
        "throughput_fps",
        "speedup_vs_single",
        "latency_speedup_vs_single",
        "bit_exact",
        "complete",
        "error",
        "tiled_share",
        "bytes_moved",
        "plan_hash",
        "refused_count",
    ):
        assert key in document, key  # fmt: skip
    assert set(document["single"]) == {"device", "latency_s", "throughput_fps"}
    assert set(document["real_time"]) == {"latency_s", "throughput_fps"}
    assert set(document["predicted"]) == {"latency_s", "throughput_fps", "latency_error", "throughput_error"}
    assert document["network"]["kind"] == "loopback" and document["network"]["shaped"] is False
    assert RunSummary.from_json(document | {"results": "elsewhere", "metadata": {}}) == s
    # an older suite's summary lacks figures added since: those that may be None read as None
    older = {k: v for k, v in document.items() if k not in ("predicted", "simulated", "statistics", "energy")}
    read = RunSummary.from_json(older)
    assert (read.predicted, read.simulated, read.statistics, read.energy) == (None, None, None, None)
    assert read.latency_s == s.latency_s and read.network == s.network
    with pytest.raises(KeyError, match="plan_hash"):  # one it cannot do without
        RunSummary.from_json({k: v for k, v in document.items() if k != "plan_hash"})


def test_the_stats_table_has_every_figure_and_interval():
    run, single = _measured("modnn", [0.1, 0.2, 0.3]), _measured("single", [0.4, 0.4, 0.5])
    table = statistics_table(summarize(Runs((Repeat(1, run, single),)), FLEET, _options()))
    assert set(zip(table["run"], table["metric"])) == {
        *((r, f"latency_{p}_s") for r in ("plan", "single") for p in ("p50", "p90", "p99", "mean")),
        ("plan", "throughput_fps"), ("single", "throughput_fps"),
        ("speedup", "speedup_vs_single"), ("speedup", "latency_speedup_vs_single")}  # fmt: skip
    bounded = table.dropna(subset=["ci_low"])
    assert ((bounded["ci_low"] <= bounded["value"]) & (bounded["value"] <= bounded["ci_high"])).all()


def test_the_nightly_reads_a_cell_from_the_summary_in_real_time():
    from suite.tracking.measure import Workload
    from suite.tracking.nightly import cell_rows

    lab = LabNetwork("lab1", 2.0, 100.0, True, "one shared medium", "no radio latency", {})
    runs = Runs((Repeat(1, _measured("modnn", [0.1] * 4), _measured("single", [0.3] * 4)),))
    s = summarize(runs, FLEET, _options(inventory=SimpleNamespace(name="lab1", lab=lab)))
    (row,) = cell_rows(Workload("conv", (1, 4, 4), 4, 1), 2, {"modnn": s})
    assert row["latency_s"] == pytest.approx(0.2) and row["throughput_fps"] == pytest.approx(5.0)
    assert row["speedup"] == pytest.approx(3.0) and row["dilation"] == 2.0 and row["complete"]
    assert row["throughput_error"] == s.predicted.throughput_error and row["plan_hash"] == s.plan_hash


def test_the_reproductions_lab_point_reads_the_runs_json_by_field(tmp_path):
    """`suite reproduce`'s lab point takes the period, the frames and the lab's dilation from the
    run's `--json` (as `RunSummary.from_json` reads it) and each device's seconds from devices.csv."""
    import pandas as pd

    from suite.reproduce.lab import point

    lab = LabNetwork("lab1", 4.0, 200.0, True, "one shared medium", "no radio latency", {})
    runs = Runs((Repeat(1, _measured("modnn", [0.5] * 3)),))
    printed = json.dumps(summary_json(summarize(runs, FLEET, _options(inventory=SimpleNamespace(
        name="lab1", lab=lab)))) | {"results": "x", "backend_is_default": True})  # fmt: skip
    pd.DataFrame({"run": ["plan"] * 2, "device": ["coordinator", "d0"], "compute_s": [0.0, 1.0],
                  "send_s": [0.0, 0.4], "send_wait_s": [0.0, 0.1], "recv_s": [0.0, 0.3],
                  "recv_wait_s": [0.0, 0.2], "idle_s": [2.0, 0.3]}).to_csv(
        tmp_path / "devices.csv", index=False)  # fmt: skip
    found = point(RunSummary.from_json(json.loads(printed)), tmp_path / "devices.csv")
    assert found["measured_period_s"] == pytest.approx(0.5 * 4) and found["lab_dilation"] == 4.0
    assert found["lab_devices"] == ["d0"] and found["lab_compute_s"] == [pytest.approx(1.0 * 4 / 4)]
    assert found["lab_recv_s"] == [pytest.approx(0.3)] and found["lab_recv_wait_s"] == [pytest.approx(0.2)]
    assert found["lab_send_s"] == [pytest.approx(0.4)] and found["lab_send_wait_s"] == [pytest.approx(0.1)]


def test_the_text_gives_percentiles_intervals_and_what_is_inconclusive():
    from suite.cli import _describe_run

    run = _measured("modnn", [0.1, 0.5, 0.1, 0.5, 0.3, 0.1])
    single = _measured("single", [0.3, 0.1, 0.5, 0.1, 0.3, 0.5])
    s = summarize(Runs((Repeat(1, run, single), Repeat(2, run, single))), FLEET, _options(repeats=2))
    text = _describe_run(s, Path("out"), GRAPH)
    speedup = s.statistics.speedup_vs_single
    assert "6 frames (+1 warm-up) x 2 repeats" in text and f"p99 {s.statistics.latency_s.p99:.3f}" in text
    shown = f"speedup {s.speedup_vs_single:.2f}x [95% CI {speedup.low:.2f}-{speedup.high:.2f}] throughput"
    assert shown in text
    assert f"  inconclusive: {s.statistics.inconclusive['speedup_vs_single']}" in text.splitlines()
