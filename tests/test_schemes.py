"""The schemes: small hand-computed plans, PICO's search, then invariants on the zoo."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
import user_models
from torch import nn
from toys import MB, assert_one_line_error, conv_graph, fleet, forced_pico_plan, suite

from suite.backends.exact import LINEAR_ROWS
from suite.cost import comm_time
from suite.errors import UserError
from suite.fleet import load_fleet
from suite.graph import from_model, from_torch
from suite.models.load import load_model
from suite.plan import COORDINATOR, PlanError, check_plan, load_plan, save_plan, work_regions
from suite.regions import Box, split_range, split_range_up
from suite.schemes import make_plan
from suite.schemes.chain import TileCosts, pieces, spatial_prefix
from suite.schemes.efl import fused_depth
from suite.schemes.halp import row_segments
from suite.schemes.pico import StageTimer, dp_search, exhaustive


def test_single_plan_is_the_whole_model_on_the_fastest_device():
    graph = conv_graph()
    plan = make_plan("single", graph, fleet(1000.0, 4000.0))
    assert plan.hub == "d1" and [w.device for w in plan.stages[0].work] == ["d1"]
    assert plan.predicted.latency_s == pytest.approx(144 / 4000)
    assert plan.predicted.throughput_fps == pytest.approx(4000 / 144)
    assert plan.predicted.redundancy == 0.0


def test_pico_two_strips_of_one_conv_by_hand():
    graph = conv_graph()
    plan = make_plan("pico", graph, fleet(1000.0, 1000.0))
    [stage] = plan.stages
    assert sorted(w.outputs["_0"].to_json() for w in stage.work) == [[0, 2, 0, 4], [2, 4, 0, 4]]
    # each strip: 2 rows x 4 cols x 9 MACs = 72 MACs; reads 3 input rows (48 bytes), sends 32 bytes
    compute = 72 / 1000
    comm = (48 + 48 + 32 + 32) / MB
    assert plan.predicted.period_s == pytest.approx(compute + comm)
    assert plan.predicted.redundancy == pytest.approx(0.0)
    assert {t.bytes for t in stage.transfers} == {48, 32}
    assert plan.hub == COORDINATOR


def test_pico_sizes_strips_by_capability():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 1, 1, bias=False)), (1, 12, 4), "pointwise")
    plan = make_plan("pico", graph, fleet(3000.0, 1000.0, bandwidth_bps=8e12))
    rows = {w.device: w.outputs["_0"].height for w in plan.stages[0].work}
    assert rows == {"d0": 9, "d1": 3}


def test_modnn_splits_linear_layers_on_multiples_of_four():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 6 * 6, 30))
    graph = from_torch(model, (1, 6, 6), "small")
    plan = make_plan("modnn", graph, fleet(1000.0, 1000.0, 1000.0))
    linear = next(s for s in plan.stages if graph[s.nodes[0]].op == "linear")
    spans = sorted(w.outputs[s] for w in linear.work for s in w.outputs)
    assert spans[0].start == 0 and spans[-1].stop == 30
    assert all(a.stop % LINEAR_ROWS == 0 for a in spans[:-1])  # whole chunks of the exact kernel's calls
    assert plan.hub == "d0" and all(s.group == 0 for s in plan.stages)
    assert plan.predicted.period_s == pytest.approx(plan.predicted.latency_s)


def test_modnn_keeps_its_strips_and_relays_only_halo_rows_through_the_owner():
    """BODP on 3 equal devices, two 3x3 convs on a 9x9 map: rows 0-3, 3-6 and 6-9 of the first conv
    stay where they were computed; for the second, each device takes the one row on each side it
    lacks, through the owner d0 (d0's own rows go straight); the model's output is gathered."""
    graph = from_torch(nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(2)]),
                       (1, 9, 9), "two")  # fmt: skip
    first = list(graph.nodes)[1]
    plan = make_plan("modnn", graph, fleet(1000.0, 1000.0, 1000.0))
    assert plan.hub == "d0" and [s.keeps for s in plan.stages] == [True, False]
    halo = {(t.src, t.dst, t.region.h0, t.region.h1)
            for s in plan.stages for t in s.transfers if t.tensor == first}  # fmt: skip
    assert halo == {("d0", "d1", 2, 3), ("d1", "d0", 3, 4), ("d1", "d0", 5, 6), ("d0", "d2", 5, 6),
                    ("d2", "d0", 6, 7), ("d0", "d1", 6, 7)}  # fmt: skip
    row = 9 * 4  # bytes of one row of a 1-channel 9-wide float32 map
    assert sum(t.bytes for t in plan.stages[0].transfers if t.tensor == first) == 3 * row  # to d0, after
    gathered = make_plan("modnn-gather", graph, fleet(1000.0, 1000.0, 1000.0))
    assert not any(s.keeps for s in gathered.stages)
    assert {t.dst for t in gathered.stages[0].transfers if t.tensor == first} == {"d0"}  # every strip
    moved = [sum(t.bytes for s in p.stages for t in s.transfers) for p in (plan, gathered)]
    assert moved[0] < moved[1]


def test_halp_segments_put_host_zones_between_secondaries():
    assert row_segments(10, [1.0, 1.0], 0.2) == [(0, (0, 4)), (None, (4, 6)), (1, (6, 10))]
    assert row_segments(10, [1.0], 0.3) == [(0, (0, 7)), (None, (7, 10))]
    assert row_segments(9, [2.0, 1.0, 1.0], 0.0) == [(0, (0, 4)), (1, (4, 7)), (2, (7, 9))]


def test_halp_multi_task_period_is_the_busiest_resource():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)),
                       (1, 16, 16), "two")  # fmt: skip
    toy = fleet(2000.0, 1000.0, 1000.0)
    one = make_plan("halp", graph, toy)
    four = make_plan("halp", graph, toy, tasks_per_batch=4)
    assert one.stages[0].overlap and four.options["tasks_per_batch"] == 4
    busiest = max(max(sum(c.device_compute_s.get(d, 0) for c in four.predicted.stages)
                      for d in four.devices),
                  comm_time(toy.link, [t for s in four.stages for t in s.transfers]))  # fmt: skip
    assert four.predicted.period_s == pytest.approx(busiest)
    assert four.predicted.period_s <= one.predicted.period_s + 1e-12


def test_deepthings_tiles_cover_the_fused_map_once():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2),
                                     nn.Conv2d(2, 2, 3, padding=1)), (1, 12, 12), "dt")  # fmt: skip
    toy = fleet(1000.0, 1000.0, 1000.0, 1000.0, bandwidth_bps=8e12)
    plan = make_plan("deepthings", graph, toy)
    check_plan(plan, graph, toy)
    n, m = map(int, plan.options["grid"].split("x"))
    assert len(plan.stages[0].work) == n * m > 1


def _chain4():
    return from_torch(nn.Sequential(*[nn.Conv2d(2 if i else 1, 2, 3, padding=1) for i in range(4)]),
                      (1, 16, 16), "chain4")  # fmt: skip


def test_ofl_on_a_free_link_splits_every_layer_with_no_redundancy():
    # transfers cost nothing, so fusing layers (recomputing their halos) can only lose
    plan = make_plan("ofl", _chain4(), fleet(1000.0, 1000.0, bandwidth_bps=8e15))
    assert [len(devices) for _, _, devices in plan.options["blocks"]] == [2, 2, 2, 2]
    assert plan.predicted.redundancy == 0.0
    assert all(s.group == 0 for s in plan.stages) and plan.hub == COORDINATOR
    assert plan.predicted.period_s == pytest.approx(plan.predicted.latency_s)


def test_ofl_on_a_slow_link_keeps_the_frame_on_one_device():
    graph = _chain4()
    toy = fleet(1000.0, 1000.0, bandwidth_bps=8.0)
    plan = make_plan("ofl", graph, toy)
    assert [s.devices for s in plan.stages] == [["d0"]] and plan.hub == "d0"
    assert plan.predicted.latency_s == pytest.approx(make_plan("single", graph, toy).predicted.latency_s)


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
    toy = fleet(1000.0, 1000.0, bandwidth_bps=8e12)
    plan = make_plan("deepthings", graph, toy, grid=(3, 3), fused_pieces=1)
    assert plan.options["grid"] == "3x3" and plan.options["fused_pieces"] == 1
    assert len(plan.stages[0].work) == 9 and len(plan.stages) == 2  # the rest whole on the gateway
    with pytest.raises(UserError, match="fused_pieces 5: model dt has 3 fusable pieces"):
        make_plan("deepthings", graph, toy, fused_pieces=5)
    with pytest.raises(UserError, match="grid 13x1 is finer than every fusable map"):
        make_plan("deepthings", graph, toy, grid=(13, 1))


def test_efl_fuses_the_pieces_nearest_deepthings_share_whatever_the_fleet():
    """PICO's EFL: a fixed early block. On a toy of three equal convs (a third of the MACs each) the
    piece nearest 49% is the first (33% is 0.16 off, 67% 0.18), on any fleet, and the rest runs
    whole on the gateway; the zoo's VGG-16 fuses conv1_1..conv3_2 (48% of its MACs)."""
    convs = nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1) for _ in range(3)])
    graph = from_torch(convs, (2, 12, 12), "three")
    for toy in (fleet(1000.0, 1000.0), fleet(*[1e6] * 6, bandwidth_bps=8e12)):
        plan = make_plan("efl", graph, toy)
        assert plan.scheme == "efl" and plan.options["fused_pieces"] == 1
        assert [s.nodes for s in plan.stages][-1] == list(graph.nodes)[2:]  # the rest, on the gateway
        assert {w.device for w in plan.stages[-1].work} == {plan.hub}
    vgg = from_model(load_model("vgg16", weights=False))
    assert fused_depth(vgg) == 8 and pieces(vgg)[7].output == "features_13"
    deep = make_plan("deepthings", vgg, load_fleet("pico-libtorch-1000mhz-8"))
    assert deep.options["fused_pieces"] > 8  # ours searches the depth and fuses deeper


def _two_convs():
    return from_torch(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False),
                                    nn.Conv2d(1, 1, 3, padding=1, bias=False)), (1, 8, 8), "two")  # fmt: skip


def test_deepthings_reuse_of_a_1x2_grid_by_hand():
    """Two 3x3 convs on 8x8 in a 1x2 grid. Without reuse each tile computes 5 of the first conv's
    columns (its 4 and a halo column): 2 x (8x5 + 8x4) x 9 = 1296 MACs, 12.5% over 1152. With reuse
    the left (A) tile does the same; the right (B) tile needs the first conv's columns 3-8, takes
    columns 3-5 from the A tile and computes 5-8 itself: 8x3x9 + 8x4x9 MACs, none over 1152."""
    graph, toy = _two_convs(), fleet(1000.0, bandwidth_bps=8e12)
    options = {"grid": (1, 2), "fused_pieces": 2}
    assert make_plan("deepthings", graph, toy, **options).predicted.redundancy == pytest.approx(0.125)
    plan = make_plan("deepthings-reuse", graph, toy, **options)
    first, then = plan.stages
    assert [w.outputs["_1"] for w in first.work] == [Box(0, 8, 0, 4)] and not first.continues
    assert [w.outputs["_1"] for w in then.work] == [Box(0, 8, 4, 8)] and then.continues
    [b] = then.work
    assert b.reused == {"_0": [Box(0, 8, 3, 5)]} and b.inputs == {graph.input: Box(0, 8, 4, 8)}
    assert work_regions(graph, then.nodes, b.outputs, b.reused)["_0"].out == Box(0, 8, 5, 8)
    assert plan.predicted.redundancy == 0.0
    assert not then.transfers  # one device: the band stays where it was computed


def test_deepthings_reuse_sends_bands_through_the_gateway():
    """A 2x2 checkerboard on two devices: each B tile takes bands from the A tile on the other
    device, relayed by the gateway (d0): d1's band to d0 after the A stage, d0's to d1 before the
    B stage; the plan checks (every band is held where it is read)."""
    graph, toy = _two_convs(), fleet(1000.0, 1000.0, bandwidth_bps=8e12)
    plan = make_plan("deepthings-reuse", graph, toy, grid=(2, 2), fused_pieces=2)
    first, then = plan.stages
    assert sorted(w.outputs["_1"].to_json() for w in first.work) == [[0, 4, 0, 4], [4, 8, 4, 8]]
    bands = [(t.src, t.dst) for s in (first, then) for t in s.transfers if t.tensor == "_0"]
    assert ("d1", "d0") in bands and ("d0", "d1") in bands
    assert all(t.src == "d0" or t.dst == "d0" for s in plan.stages for t in s.transfers)
    assert {d.name for d in toy.devices} == {w.device for w in then.work}
    check_plan(plan, graph, toy)


def test_a_plan_whose_reuse_does_not_hold_is_one_line(tmp_path):
    """A band that is no edge of what a tile needs, a band no transfer brings, a band in a stage that
    continues nothing: each refused with one line naming the stage (and device). The plan file keeps
    the bands and the continuing stage."""
    graph, toy = _two_convs(), fleet(1000.0, 1000.0, bandwidth_bps=8e12)
    plan = make_plan("deepthings-reuse", graph, toy, grid=(2, 2), fused_pieces=2)
    save_plan(plan, tmp_path / "plan.json")
    assert load_plan(tmp_path / "plan.json").to_dict() == plan.to_dict()
    device = plan.stages[1].work[0].device

    def off_edge(p):
        p.stages[1].work[0].reused["_0"] = [Box(3, 4, 3, 4)]

    def not_brought(p):
        p.stages[1].transfers = [t for t in p.stages[1].transfers if t.tensor != "_0"]

    def not_continuing(p):
        p.stages[0].work[0].reused = {"_0": [Box(0, 1, 0, 8)]}

    for spoil, said in ((off_edge, f"stage 1, device {device}: its reused rows 3-4 cols 3-4 of '_0' is not "
                                   "an edge band"),
                        (not_brought, "which no transfer brings it"),
                        (not_continuing, "only a stage that continues")):  # fmt: skip
        broken = load_plan(tmp_path / "plan.json")
        spoil(broken)
        with pytest.raises(PlanError, match=re.escape(said)):
            check_plan(broken, graph, toy)


def test_a_modnn_plan_missing_a_halo_row_or_gathering_a_kept_map_is_one_line(tmp_path):
    """The plan file keeps the kept strips; a halo row no transfer brings, and a stage that keeps its
    strips but was already gathered, are each refused with one line naming the stage and device."""
    graph, toy = _two_convs(), fleet(1000.0, 1000.0, bandwidth_bps=8e12)
    plan = make_plan("modnn", graph, toy)
    save_plan(plan, tmp_path / "plan.json")
    assert load_plan(tmp_path / "plan.json").to_dict() == plan.to_dict() and plan.stages[0].keeps
    broken = load_plan(tmp_path / "plan.json")
    broken.stages[1].transfers = [t for t in broken.stages[1].transfers if t.tensor != "_0"]
    said = "stage 1, device d1: reads rows 3-8 cols 0-8 of '_0', which no transfer brings it"
    with pytest.raises(PlanError, match=re.escape(said)):
        check_plan(broken, graph, toy)
    broken = load_plan(tmp_path / "plan.json")
    broken.stages[0].keeps = False  # then d1's strip must reach the hub, and no transfer takes it there
    with pytest.raises(PlanError, match=re.escape("stage 0, device d1: its rows 4-8 cols 0-8 of '_0' never "
                                                  "reaches the hub")):  # fmt: skip
        check_plan(broken, graph, toy)


def test_deepthings_reuse_cuts_yolov2_16_work_as_deepthings_code_does():
    """DeepThings' 5x5 grid over YOLOv2's first 16 layers at 608x608: 2.20x the monolithic MACs
    without reuse and 1.28x with it, as the regions of DeepThings' own `ftp.c` give (1.28x ideal,
    1.49x as its executor widens each conv to its input tile); half the B tiles' bands cross devices
    on two devices."""
    graph = from_model(load_model("yolov2_16", None, 0, weights=False))
    fused = spatial_prefix(pieces(graph))
    ratio = {scheme: 1 + make_plan(scheme, graph, load_fleet("deepthings-pi3-1"), grid=(5, 5),
                                   fused_pieces=fused).predicted.redundancy
             for scheme in ("deepthings", "deepthings-reuse")}  # fmt: skip
    assert ratio == {"deepthings": pytest.approx(2.20, abs=0.005),
                     "deepthings-reuse": pytest.approx(1.28, abs=0.005)}  # fmt: skip
    plan = make_plan("deepthings-reuse", graph, load_fleet("deepthings-pi3-1"), grid=(5, 5),
                     fused_pieces=fused)  # fmt: skip
    first, then = plan.stages[:2]
    assert len(first.work) == 13 and len(then.work) == 12 and then.continues
    assert all(w.reused for w in then.work)


def test_grid_rounding_up_is_deepthings_and_nearest_is_ours():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), (1, 19, 19), "c19")
    toy = fleet(1000.0, bandwidth_bps=8e12)
    for rounding, rows in (("up", [0, 4, 8, 12, 16, 19]), ("nearest", [0, 4, 8, 11, 15, 19])):
        plan = make_plan("deepthings", graph, toy, grid=(5, 1), grid_rounding=rounding)
        assert sorted({w.outputs["_0"].h0 for w in plan.stages[0].work} | {19}) == rows
        assert plan.options["grid_rounding"] == rounding
    with pytest.raises(UserError, match="grid rounding 'down' is not one of up, nearest"):
        make_plan("deepthings", graph, toy, grid_rounding="down")
    tall = from_torch(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), (1, 9, 9), "c9")
    with pytest.raises(UserError, match="grid 4x1 is finer .* --grid-rounding up"):
        make_plan("deepthings", tall, toy, grid=(4, 1))  # 3, 3, 3 and nothing


@pytest.mark.parametrize("rounding", ["up", "nearest"])
def test_suite_plan_takes_the_grid_rounding(rounding):
    out = suite("plan", "--model", "yolov2_16", "--input-size", "3x160x160", "--scheme", "deepthings-reuse",
                "--fleet", "deepthings-pi3-2", "--grid-rounding", rounding, "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["options"]["grid_rounding"] == rounding and plan["options"]["reuse"]
    n, m = map(int, plan["options"]["grid"].split("x"))
    cut = split_range_up if rounding == "up" else split_range
    graph = from_model(load_model("yolov2_16", (3, 160, 160), 0, weights=False))
    height, width = graph[plan["options"]["fused_until"]].shape[2:]
    tiles = [next(iter(w["outputs"].values())) for s in plan["stages"][:2] for w in s["work"]]
    assert sorted({(h0, h1) for h0, h1, _, _ in tiles}) == cut(height, n)
    assert sorted({(w0, w1) for _, _, w0, w1 in tiles}) == cut(width, m)


def test_suite_plan_refuses_a_grid_rounding_for_other_schemes():
    out = suite("plan", "--model", "yolov2_16", "--scheme", "pico", "--fleet", "deepthings-pi3-2",
                "--grid-rounding", "up")  # fmt: skip
    assert_one_line_error(out, "scheme pico has none")


# -- squeeze-and-excite --------------------------------------------------------------------------


class ResidualSE(nn.Module):
    """A stem, then a residual block whose middle map is scaled by squeeze-and-excite, then a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.expand, self.project = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.fc1, self.fc2 = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = torch.relu(self.expand(x))
        y = y * torch.sigmoid(self.fc2(torch.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        return self.head(F.adaptive_avg_pool2d(x + self.project(y), 1).flatten(1))


ZOO_BRANCHES = {"mobilenet_v3_large": 8, "efficientnet_b0": 16}


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


def test_a_squeeze_excite_piece_is_tiled_in_segments_around_its_branch():
    """A map, its SE branch and the scale inside one residual piece: the piece is spatial, and its
    tiling is cut at the branch's map, which is gathered with the residual the scale's side reads."""
    graph = from_torch(ResidualSE(), (3, 8, 8), "se")
    chain = pieces(graph)
    assert [p.spatial for p in chain] == [True, True, False]
    [branch] = chain[1].branches
    assert graph[branch.nodes[0]].op == "adaptive_avgpool" and graph[branch.map].op == "relu"
    first, second = TileCosts(graph, chain).segments(1, 1)
    assert first.nodes[-1] == branch.map and first.branches == ()
    assert set(first.outputs) == {branch.map}
    assert second.branches == (branch,) and second.outputs == (chain[1].output,)
    assert not set(branch.nodes) & set(first.nodes + second.nodes)


def test_deepthings_plans_the_branch_between_two_tiled_segments_by_hand():
    """Stem (conv + relu) tiled in two rows, the branch whole on the gateway on the gathered map, the
    scaled conv tiled again: the other device gets its rows with a halo and the vector whole."""
    graph = from_torch(ResidualSE(), (3, 8, 8), "se")
    plan = make_plan("deepthings", graph, fleet(1000.0, 1000.0, bandwidth_bps=8e9),
                     fused_pieces=2, grid=(2, 1))  # fmt: skip
    tiled, branch, scaled, tail = plan.stages
    assert [len(s.work) for s in plan.stages] == [2, 1, 2, 1]
    assert branch.work[0].device == plan.hub == "d0" and branch.transfers == []
    vector = branch.outputs[0]
    assert graph[branch.nodes[0]].op == "adaptive_avgpool" and graph[vector].shape == (1, 8, 1, 1)
    other = next(w for w in scaled.work if w.device == "d1")
    assert str(other.inputs[vector]) == "whole"
    moved = {(t.tensor, t.bytes) for t in scaled.transfers if t.dst == "d1"}
    assert (vector, 8 * 4) in moved  # the vector, whole; and the rows the d1 tile reads, with a halo
    assert graph[scaled.nodes[0]].op == "scale" and plan.predicted.tiled_share > 0.9


@pytest.mark.parametrize("model", ["mobilenet_v3_large", "efficientnet_b0"])
def test_every_scheme_plans_squeeze_excite_nets(model):
    """Every scheme plans the SE nets with valid plans (`make_plan` checks them); forced through all
    the fusable pieces, DeepThings and PICO tile nearly the whole model, branch after branch."""
    from suite.models import ZOO
    from suite.models.load import load_model

    graph = from_torch(load_model(model, weights=False).module, ZOO[model].input_size, model)
    three = load_fleet("pico-homo-3")
    for scheme in ("modnn", "deepthings", "halp", "pico", "ofl"):
        make_plan(scheme, graph, three)
    chain = pieces(graph)
    assert spatial_prefix(chain) == len(chain) - 1  # every piece but the classifier
    through = make_plan("deepthings", graph, three, fused_pieces=len(chain) - 1, grid=(2, 2))
    assert through.predicted.tiled_share > 0.95
    forced = forced_pico_plan(graph, three)
    check_plan(forced, graph, three)
    assert forced.predicted.tiled_share > 0.95
    assert sum(len(s.work) == 1 for s in forced.stages) == ZOO_BRANCHES[model] + 1  # + the tail


def test_dp_matches_exhaustive_on_a_homogeneousfleet():
    graph = _chain4()
    toy = fleet(1000.0, 1000.0, 1000.0, bandwidth_bps=8e9)
    timer = StageTimer(graph, pieces(graph), toy.link)
    dp = dp_search(timer, len(timer.chain), toy.devices)
    best = exhaustive(timer, len(timer.chain), toy.devices)
    assert dp.period == pytest.approx(best.period)


# -- the zoo on the bundled fleets ---------------------------------------------------------------

PAPER_FLEETS = [f"pico-homo-{n}" for n in range(2, 9)] + ["pico-hetero", "halp-gpu", "halp-pi", "local"]


@pytest.mark.parametrize("model", ["vgg16", "resnet18", "resnet34", "resnet50", "inception_v3", "googlenet"])
def test_pico_is_at_least_single_and_deepthings_on_everyfleet(model):
    from suite.backends import make_backend
    from suite.models.load import load_model

    graph = make_backend("torch").prepare(load_model(model)).graph
    for name in PAPER_FLEETS:
        fleet = load_fleet(name)
        pico = make_plan("pico", graph, fleet).predicted.throughput_fps
        for other in ("single", "deepthings"):
            theirs = make_plan(other, graph, fleet).predicted.throughput_fps
            assert pico >= theirs * (1 - 1e-9), (model, name, other, pico, theirs)


@pytest.mark.parametrize("scheme", ["modnn", "deepthings", "efl", "halp", "pico", "ofl"])
def test_every_scheme_plans_for_2_to_64_devices(scheme):
    """Slow devices on a fast link, so the schemes tile all they can: dynamic "same" pads before
    strided convs down to 2x2 maps. More devices than rows leave some idle or end the tiled part
    early; none is refused (PICO's strips of a lone border at 8 devices, and HALP beyond the
    first map's rows, were)."""
    graph = from_torch(user_models.SameStridedStack().eval(), (3, 32, 32), "same")
    for devices in (2, 5, 8, 16, 64):
        plan = make_plan(scheme, graph, fleet(*[1e6] * devices, bandwidth_bps=8e12))
        check_plan(plan, graph, fleet(*[1e6] * devices, bandwidth_bps=8e12))
        assert plan.predicted.latency_s > 0
