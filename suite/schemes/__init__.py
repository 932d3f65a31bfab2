"""Partitioning schemes. Each module has one job: `plan(graph, fleet, **options) -> Layout` (the
hub that holds the frames, the stages, the frames in flight and the choices it made); `make_plan`
times it, checks it and adds the prediction."""

from __future__ import annotations

import time
from importlib import import_module

from suite.cost import check_memory, predict
from suite.errors import UserError
from suite.fleet import Fleet
from suite.graph import Graph
from suite.plan import Plan, check_plan

SCHEMES = ("single", "modnn", "modnn-gather", "deepthings", "deepthings-reuse", "efl", "halp", "pico", "ofl")
VARIANTS = {
    "modnn-gather": ("modnn", {"gather": True}),  # a scheme's module with options set
    "deepthings-reuse": ("deepthings", {"reuse": True}),
}


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise UserError(f"unknown scheme '{scheme}'; choose one of {', '.join(SCHEMES)}")


def make_plan(scheme: str, graph: Graph, fleet: Fleet, **options) -> Plan:
    check_scheme(scheme)
    name, preset = VARIANTS.get(scheme, (scheme, {}))
    module = import_module(f"suite.schemes.{name}")
    start = time.perf_counter()
    layout = module.plan(graph, fleet, **preset, **options)
    elapsed = time.perf_counter() - start
    groups = len({s.group for s in layout.stages})
    plan = Plan(scheme=scheme, model=graph.name, input_shape=list(graph.input_shape[1:]),
                fleet=fleet.name, devices=[d.name for d in fleet.devices], hub=layout.hub,
                stages=layout.stages, graph=graph.source, frames_in_flight=layout.frames_in_flight or groups,
                options=layout.options, planning_time_s=elapsed)  # fmt: skip
    check_plan(plan, graph, fleet)
    check_memory(plan, graph, fleet)
    plan.predicted = predict(plan, graph, fleet)
    return plan
