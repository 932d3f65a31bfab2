"""Plans, the cost model and the schemes: small hand-computed cases, then invariants on the zoo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from torch import nn

from suite.cost import comm_time, overlapped_time, predict
from suite.errors import UserError
from suite.fleet import Device, Fleet, Link, OpCost, Profile, load_fleet
from suite.graph import from_torch
from suite.plan import (
    COORDINATOR,
    SCHEMA_VERSION,
    PlanError,
    Transfer,
    check_plan,
    load_plan,
    save_plan,
)  # fmt: skip
from suite.schemes import make_plan
from suite.schemes.chain import pieces
from suite.schemes.halp import segments
from suite.schemes.pico import StageTimer, dp_search, exhaustive

MB = 1_000_000


def _profile(name: str, macs_per_s: float) -> Profile:
    return Profile(name, "test", macs_per_s, {"default": OpCost(1.0, 0.0)})


def _fleet(*speeds: float, bandwidth_bps: float = 8 * MB, shared: bool = True) -> Fleet:
    devices = tuple(Device(f"d{i}", "test", _profile(f"p{s:g}", s), 1, 1.0, 2**30)
                    for i, s in enumerate(speeds))  # fmt: skip
    return Fleet("test", devices, Link(bandwidth_bps, 0.0, shared), "test")


def _conv_graph():
    """One 3x3 conv, 1 -> 1 channel, padding 1, on a 4x4 map: 9 MACs per output, 144 in all."""
    return from_torch(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False)), (1, 4, 4), "conv")


# -- the cost model by hand -------------------------------------------------------------------


def test_comm_time_serializes_on_a_shared_medium_and_not_on_a_switch():
    t = [Transfer("a", "b", "x", None, 1000), Transfer("a", "c", "x", None, 1000),
         Transfer("c", "d", "x", None, 500)]  # fmt: skip
    # 8 Mbit/s = 1 byte per microsecond
    assert comm_time(Link(8 * MB, 0.0, True), t) == pytest.approx(2500e-6)
    # switched: a's uplink carries 2000 bytes, the busiest
    assert comm_time(Link(8 * MB, 0.0, False), t) == pytest.approx(2000e-6)
    assert comm_time(Link(8 * MB, 0.001, True), t[:1]) == pytest.approx(1000e-6 + 0.001)


def test_overlapped_stage_starts_each_device_when_its_input_arrives():
    link = Link(8 * MB, 0.0, True)
    sends = [Transfer("h", "a", "in", None, 1000), Transfer("h", "b", "in", None, 1000),
             Transfer("a", "h", "out", None, 100), Transfer("b", "h", "out", None, 100)]  # fmt: skip
    compute = {"h": 0.0030, "a": 0.0010, "b": 0.0010}
    # a: in at 1 ms, done 2 ms, sent 2.1 ms; b: in at 2 ms, done 3.1 ms; the host computes 3 ms
    assert overlapped_time(link, sends, compute, ["out"]) == pytest.approx(0.0031)


def test_single_plan_is_the_whole_model_on_the_fastest_device():
    graph = _conv_graph()
    plan = make_plan("single", graph, _fleet(1000.0, 4000.0))
    assert plan.hub == "d1" and [w.device for w in plan.stages[0].work] == ["d1"]
    assert plan.predicted.latency_s == pytest.approx(144 / 4000)
    assert plan.predicted.throughput_fps == pytest.approx(4000 / 144)
    assert plan.predicted.redundancy == 0.0


def test_pico_two_strips_of_one_conv_by_hand():
    graph = _conv_graph()
    plan = make_plan("pico", graph, _fleet(1000.0, 1000.0))
    [stage] = plan.stages
    assert sorted(w.outputs["_0"] for w in stage.work) == [[0, 2, 0, 4], [2, 4, 0, 4]]
    # each strip: 2 rows x 4 cols x 9 MACs = 72 MACs; reads 3 input rows (48 bytes), sends 32 bytes
    compute = 72 / 1000
    comm = (48 + 48 + 32 + 32) / MB
    assert plan.predicted.period_s == pytest.approx(compute + comm)
    assert plan.predicted.redundancy == pytest.approx(0.0)
    assert {t.bytes for t in stage.transfers} == {48, 32}
    assert plan.hub == COORDINATOR


def test_pico_sizes_strips_by_capability():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 1, 1, bias=False)), (1, 12, 4), "pointwise")
    plan = make_plan("pico", graph, _fleet(3000.0, 1000.0, bandwidth_bps=8e12))
    rows = {w.device: w.outputs["_0"][1] - w.outputs["_0"][0] for w in plan.stages[0].work}
    assert rows == {"d0": 9, "d1": 3}


def test_modnn_splits_linear_layers_on_multiples_of_four():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 6 * 6, 30))
    graph = from_torch(model, (1, 6, 6), "small")
    plan = make_plan("modnn", graph, _fleet(1000.0, 1000.0, 1000.0))
    linear = next(s for s in plan.stages if graph[s.nodes[0]].op == "linear")
    spans = sorted(w.outputs[s] for w in linear.work for s in w.outputs)
    assert spans[0][0] == 0 and spans[-1][1] == 30
    assert all(a[1] % 4 == 0 for a in spans[:-1])
    assert plan.hub == "d0" and all(s.group == 0 for s in plan.stages)
    assert plan.predicted.period_s == pytest.approx(plan.predicted.latency_s)


def test_halp_segments_put_host_zones_between_secondaries():
    assert segments(10, [1.0, 1.0], 0.2) == [(0, (0, 4)), (None, (4, 6)), (1, (6, 10))]
    assert segments(10, [1.0], 0.3) == [(0, (0, 7)), (None, (7, 10))]
    assert segments(9, [2.0, 1.0, 1.0], 0.0) == [(0, (0, 4)), (1, (4, 7)), (2, (7, 9))]


def test_halp_multi_task_period_is_the_busiest_resource():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)),
                       (1, 16, 16), "two")  # fmt: skip
    fleet = _fleet(2000.0, 1000.0, 1000.0)
    one = make_plan("halp", graph, fleet)
    four = make_plan("halp", graph, fleet, tasks_per_batch=4)
    assert one.stages[0].overlap and four.options["tasks_per_batch"] == 4
    busiest = max(max(sum(c.device_compute_s.get(d, 0) for c in four.predicted.stages)
                      for d in four.devices),
                  comm_time(fleet.link, [t for s in four.stages for t in s.transfers]))  # fmt: skip
    assert four.predicted.period_s == pytest.approx(busiest)
    assert four.predicted.period_s <= one.predicted.period_s + 1e-12


def test_deepthings_tiles_cover_the_fused_map_once():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2),
                                     nn.Conv2d(2, 2, 3, padding=1)), (1, 12, 12), "dt")  # fmt: skip
    plan = make_plan("deepthings", graph, _fleet(1000.0, 1000.0, 1000.0, 1000.0, bandwidth_bps=8e12))
    check_plan(plan, graph)
    n, m = map(int, plan.options["grid"].split("x"))
    assert len(plan.stages[0].work) == n * m > 1


def _chain4():
    return from_torch(nn.Sequential(*[nn.Conv2d(2 if i else 1, 2, 3, padding=1) for i in range(4)]),
                      (1, 16, 16), "chain4")  # fmt: skip


def test_ofl_on_a_free_link_splits_every_layer_with_no_redundancy():
    # transfers cost nothing, so fusing layers (recomputing their halos) can only lose
    plan = make_plan("ofl", _chain4(), _fleet(1000.0, 1000.0, bandwidth_bps=8e15))
    assert [len(devices) for _, _, devices in plan.options["blocks"]] == [2, 2, 2, 2]
    assert plan.predicted.redundancy == 0.0
    assert all(s.group == 0 for s in plan.stages) and plan.hub == COORDINATOR
    assert plan.predicted.period_s == pytest.approx(plan.predicted.latency_s)


def test_ofl_on_a_slow_link_keeps_the_frame_on_one_device():
    graph = _chain4()
    fleet = _fleet(1000.0, 1000.0, bandwidth_bps=8.0)
    plan = make_plan("ofl", graph, fleet)
    assert [s.devices for s in plan.stages] == [["d0"]] and plan.hub == "d0"
    assert plan.predicted.latency_s == pytest.approx(make_plan("single", graph, fleet).predicted.latency_s)


def test_ofl_is_no_slower_than_one_block_on_every_device_or_one_device():
    from suite.backends import make_backend
    from suite.models.load import load_model

    graph = make_backend("torch").prepare(load_model("vgg16")).graph
    for name in ("pico-libtorch-1000mhz-4", "pico-libtorch-hetero", "pico-homo-4"):
        fleet = load_fleet(name)
        ofl = make_plan("ofl", graph, fleet).predicted.latency_s
        timer = StageTimer(graph, pieces(graph), fleet.link)
        profiles = tuple(d.profile for d in sorted(fleet.devices, key=lambda d: -d.capability))
        one_block = timer.time(0, len(timer.chain) - 1, profiles)
        assert ofl <= min(one_block, make_plan("single", graph, fleet).predicted.latency_s) * (1 + 1e-9)


def test_deepthings_takes_a_papers_fixed_grid_and_depth():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2),
                                     nn.Conv2d(2, 2, 3, padding=1)), (1, 12, 12), "dt")  # fmt: skip
    fleet = _fleet(1000.0, 1000.0, bandwidth_bps=8e12)
    plan = make_plan("deepthings", graph, fleet, grid=(3, 3), fused_pieces=1)
    assert plan.options["grid"] == "3x3" and plan.options["fused_pieces"] == 1
    assert len(plan.stages[0].work) == 9 and len(plan.stages) == 2  # the rest whole on the gateway
    with pytest.raises(UserError, match="fused_pieces 5: model dt has 3 fusable pieces"):
        make_plan("deepthings", graph, fleet, fused_pieces=5)
    with pytest.raises(UserError, match="grid 13x1 is finer than every fusable map"):
        make_plan("deepthings", graph, fleet, grid=(13, 1))


# -- PICO's search -----------------------------------------------------------------------------


def test_pieces_cut_where_the_graph_narrows():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.a(x) + self.b(x)

    graph = from_torch(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), Block(), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)),
                       (1, 8, 8), "p")  # fmt: skip
    chain = pieces(graph)
    assert [len(p.nodes) for p in chain] == [2, 4, 3]  # conv+relu, block+relu, tail
    assert [p.spatial for p in chain] == [True, True, False]
    assert chain[1].input == chain[0].output


def test_dp_matches_exhaustive_on_a_homogeneous_fleet():
    graph = _chain4()
    fleet = _fleet(1000.0, 1000.0, 1000.0, bandwidth_bps=8e9)
    timer = StageTimer(graph, pieces(graph), fleet.link)
    dp = dp_search(timer, len(timer.chain), fleet.devices)
    best = exhaustive(timer, len(timer.chain), fleet.devices)
    assert dp.period == pytest.approx(best.period)


# -- plan files ---------------------------------------------------------------------------------


def test_plan_json_round_trip_and_schema_version(tmp_path):
    graph = _conv_graph()
    plan = make_plan("pico", graph, _fleet(1000.0, 1000.0))
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    back = load_plan(path)
    assert back.to_dict() == plan.to_dict() and back.digest == plan.digest
    data = json.loads(path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match="schema_version 2"):
        load_plan(path)


def test_check_plan_rejects_overlapping_regions():
    graph = _conv_graph()
    plan = make_plan("pico", graph, _fleet(1000.0, 1000.0))
    plan.stages[0].work[1].outputs["_0"] = [1, 4, 0, 4]
    with pytest.raises(PlanError, match="exactly once"):
        check_plan(plan, graph)


def test_a_model_that_does_not_fit_names_the_device():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 64, 3), nn.Flatten(), nn.Linear(64 * 14 * 14, 4096)),
                       (1, 16, 16), "big")  # fmt: skip
    pi = Device("pi", "test", _profile("p", 1e9), 1, 1.0, 2**20)
    small = Fleet("tiny", (pi,), Link(1e9, 0, False), "t")
    with pytest.raises(UserError, match="does not fit device 'pi'"):
        make_plan("single", graph, small)


def test_prediction_is_reproducible_from_the_plan():
    graph = _conv_graph()
    fleet = _fleet(1000.0, 2000.0)
    plan = make_plan("halp", graph, fleet)
    assert predict(plan, graph, fleet) == plan.predicted


# -- the zoo on the bundled fleets ---------------------------------------------------------------

PAPER_FLEETS = [f"pico-homo-{n}" for n in range(2, 9)] + ["pico-hetero", "halp-gpu", "halp-pi", "local"]


@pytest.mark.parametrize("model", ["vgg16", "resnet18", "resnet34", "resnet50", "inception_v3", "googlenet"])
def test_pico_is_at_least_single_and_deepthings_on_every_fleet(model):
    from suite.backends import make_backend
    from suite.models.load import load_model

    graph = make_backend("torch").prepare(load_model(model)).graph
    for name in PAPER_FLEETS:
        fleet = load_fleet(name)
        pico = make_plan("pico", graph, fleet).predicted.throughput_fps
        for other in ("single", "deepthings"):
            theirs = make_plan(other, graph, fleet).predicted.throughput_fps
            assert pico >= theirs * (1 - 1e-9), (model, name, other, pico, theirs)


# -- the command line ---------------------------------------------------------------------------


def _suite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_cli_plan_then_simulate(tmp_path):
    path = tmp_path / "plan.json"
    out = _suite("plan", "--model", "vgg16", "--input-size", "3x64x64", "--scheme", "pico",
                 "--fleet", "pico-homo-4", "-o", str(path))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "predicted: latency" in out.stdout and path.exists()
    out = _suite("simulate", "--plan", str(path), "--frames", "20", "--channel", "rayleigh",
                 "--deadline", "10", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["throughput_fps"] > 0 and 0 <= result["deadline_met"] <= 1


def _bad_fleet(tmp_path) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text("schema_version: 1\nname: x\nsource: test\nlink: {bandwidth_mbps: 50, shared: true}\n"
                    "devices:\n  - {name: a, kind: pi, profile: rpi4b-1500mhz, cores: 1, freq_ghz: 1.5,"
                    " memory_gib: 4}\n")  # fmt: skip
    return str(path)


def _old_plan(tmp_path) -> str:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema_version": 0, "stages": []}))
    return str(path)


@pytest.mark.parametrize(("args", "needle"), [
    (["plan", "--scheme", "magic", "--devices", "2"], "unknown scheme 'magic'"),
    (["plan", "--scheme", "pico", "--model", "alexnet", "--devices", "2"], "alexnet"),
    (["plan", "--scheme", "pico", "--fleet", "nowhere"], "nowhere"),
    (["plan", "--scheme", "pico", "--fleet", "{bad_fleet}"], "link.latency_ms"),
    (["simulate", "--plan", "{old_plan}"], "schema_version 0"),
    (["simulate", "--plan", "{old_plan}", "--frames", "0"], "schema_version 0"),
])  # fmt: skip
def test_cli_plan_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    args = [a.format(bad_fleet=_bad_fleet(tmp_path), old_plan=_old_plan(tmp_path)) for a in args]
    out = _suite(*args)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_simulated_single_device_stream_matches_the_cost_model():
    from suite.simulate import Workload, simulate

    graph = _conv_graph()
    fleet = _fleet(1000.0)
    plan = make_plan("single", graph, fleet)
    result = simulate(plan, fleet, Workload(frames=10))
    assert result.throughput_fps == pytest.approx(plan.predicted.throughput_fps)
    assert min(result.latencies_s) == pytest.approx(plan.predicted.latency_s)
    slow = simulate(plan, fleet, Workload(frames=10, rate=1.0))  # arrivals slower than service
    assert max(slow.latencies_s) == pytest.approx(plan.predicted.latency_s)
    assert slow.throughput_fps == pytest.approx(1.0)


def test_simulated_pipeline_overlaps_frames():
    from suite.simulate import Workload, simulate

    chain = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
    graph = from_torch(chain, (1, 8, 8), "two")
    fleet = _fleet(1000.0, 1000.0, bandwidth_bps=8e12, shared=False)
    plan = make_plan("pico", graph, fleet)
    result = simulate(plan, fleet, Workload(frames=30))
    assert result.throughput_fps == pytest.approx(plan.predicted.throughput_fps, rel=0.02)
