"""Plans: region types, JSON round trips, validation, frames in flight."""

from __future__ import annotations

import json

import pytest
from toys import conv_chain, conv_graph, fleet

from suite.plan import SCHEMA_VERSION, PlanError, check_plan, load_plan, save_plan
from suite.regions import (
    WHOLE,
    Box,
    FeatureRange,
    RegionError,
    hull_of,
    index_in,
    region_from_json,
)  # fmt: skip
from suite.schemes import make_plan


def test_regions_read_and_write_their_json_form():
    for value, region in (([1, 4, 0, 8], Box(1, 4, 0, 8)), ([0, 12], FeatureRange(0, 12)), (None, WHOLE)):
        assert region_from_json(value) == region and region.to_json() == value
    for bad in ([1, 2, 3], [4, 1], [0, 0, 0, 4], [-1, 2], ["a", "b"], "0-4", [True, 3], [1.5, 2]):
        with pytest.raises(RegionError, match="is not a region"):
            region_from_json(bad)


def test_region_shapes_hulls_and_indices():
    graph = conv_graph()
    node = graph["_0"]  # 1x1x4x4
    assert Box(1, 3, 0, 4).shape(node.shape) == (1, 1, 2, 4) and WHOLE.shape(node.shape) == node.shape
    assert FeatureRange(2, 5).shape((1, 10)) == (1, 3)
    assert hull_of([Box(0, 2, 0, 4), Box(2, 4, 0, 4)], node) == WHOLE  # the whole map normalises
    assert hull_of([Box(0, 1, 0, 2), Box(2, 3, 1, 4)], node) == Box(0, 3, 0, 4)
    assert index_in(Box(1, 3, 0, 4), Box(1, 4, 0, 4), node) == (..., slice(0, 2), slice(0, 4))
    assert index_in(Box(1, 3, 0, 4), WHOLE, node) == (..., slice(1, 3), slice(0, 4))
    with pytest.raises(RegionError, match="not inside"):
        index_in(Box(0, 3, 0, 4), Box(1, 4, 0, 4), node)


def test_plan_json_round_trip_and_schema_version(tmp_path):
    graph = conv_graph()
    plan = make_plan("pico", graph, fleet(1000.0, 1000.0))
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    back = load_plan(path)
    assert back.to_dict() == plan.to_dict() and back.digest == plan.digest
    data = json.loads(path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=f"schema_version {SCHEMA_VERSION + 1}"):
        load_plan(path)


def test_check_plan_rejects_overlapping_regions():
    graph = conv_graph()
    toy = fleet(1000.0, 1000.0)
    plan = make_plan("pico", graph, toy)
    plan.stages[0].work[1].outputs["_0"] = Box(1, 4, 0, 4)
    with pytest.raises(PlanError, match="exactly once"):
        check_plan(plan, graph, toy)


def test_frames_in_flight_is_one_per_pipeline_group_or_the_tasks_kept_together():
    """Equal 3x3 convs on as many equal devices over a fast link: tiling a conv computes halo rows
    twice, so PICO gives each device one conv, a pipeline of one group per conv."""
    fast = dict(bandwidth_bps=8e12, shared=False)
    two, three = fleet(1000.0, 1000.0, **fast), fleet(1000.0, 1000.0, 1000.0, **fast)
    assert make_plan("single", conv_chain(2), two).frames_in_flight == 1
    pipeline = make_plan("pico", conv_chain(2), two)
    assert [s.devices for s in pipeline.stages] == [["d0"], ["d1"]]
    assert pipeline.frames_in_flight == 2
    assert make_plan("pico", conv_chain(3), three).frames_in_flight == 3
    assert make_plan("pico", conv_graph(), two).frames_in_flight == 1  # one conv: nothing to pipeline
    assert make_plan("halp", conv_graph(), two, tasks_per_batch=3).frames_in_flight == 3
