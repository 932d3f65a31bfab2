"""Single device: the whole model on the fleet's fastest device. Every speedup is against it."""

from __future__ import annotations

from suite.fleet import Fleet
from suite.graph import Graph
from suite.plan import Layout, build_stages
from suite.schemes.chain import whole_on


def plan(graph: Graph, fleet: Fleet) -> Layout:
    device = fleet.fastest().name
    nodes = [n for n in graph.nodes if n != graph.input]
    return Layout(device, build_stages(graph, device, [whole_on(graph, device, nodes)]), {"device": device})
