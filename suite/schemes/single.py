"""Single device: the whole model on the fleet's fastest device. Every speedup is against it."""

from __future__ import annotations

from suite.fleet import Fleet
from suite.graph import Graph
from suite.plan import build_stages


def plan(graph: Graph, fleet: Fleet) -> tuple[str, list, dict]:
    device = fleet.fastest().name
    nodes = [n for n in graph.nodes if n != graph.input]
    outputs = {o: None for o in graph.outputs}
    return device, build_stages(graph, device, [(0, nodes, [(device, outputs)])]), {"device": device}
