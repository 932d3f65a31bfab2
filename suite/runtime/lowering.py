"""A plan on the graph a backend executes, when that is not the graph the plan names.

Plans name the nodes of the *model graph* (`suite.graph.from_model`: the torch.fx node names of a
module, the tensor names of an ONNX file), so one plan file runs on every backend. A backend may
execute a graph derived from it under the same names: onnxruntime's (`suite/backends/ort.py`) is
the model graph less the nodes it folds into a later one (a convolution into its batch norm, whose
name the fused node keeps) and less the pass-through nodes it drops (dropout, identity), whose
value is their input's. `lower_plan` rewrites a plan onto such a graph: each stage keeps the nodes
the graph still has, every tensor the plan moves or gathers is named by the node that holds its
value there, each device's inputs follow again from its outputs, and the result is checked
through and through. A plan that moves a value the backend never computes (a convolution's output
before the batch norm folded into it) is refused with one line; no scheme cuts there, since a
batch norm joins its convolution's layer and piece.

The lowered plan says which graph it names (`Plan.graph`), so a worker can tell it is the one it
runs. The cost model and the results keep the plan as made: the model graph's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from suite.backends import mark_untiled_for
from suite.fleet import Fleet
from suite.graph import Graph, from_model
from suite.plan import Plan, PlanError, Stage, Transfer, Work, check_plan, work_inputs

if TYPE_CHECKING:
    from suite.models.load import LoadedModel

PASS_THROUGH = ("dropout", "identity")  # ops whose output is their input at inference


def model_graph(loaded: LoadedModel, executed: Graph) -> Graph:
    """The graph plans name: the backend's own where it runs the model graph itself (torch), else
    the model imported as `suite plan` imports it, with the nodes that backend (onnxruntime, whose
    graph's source is its name) cannot tile exactly marked as `suite plan` marks them
    (`mark_untiled_for`), so a plan runs them whole and both report the same coverage."""
    own = "torch" if loaded.module is not None else "onnx"
    if executed.source == own:
        return executed
    return mark_untiled_for(from_model(loaded), executed.source)


def lower_plan(plan: Plan, model: Graph, graph: Graph, fleet: Fleet) -> Plan:
    """`plan`, made on `model`, as a plan on `graph` (a backend's graph under the model's names)."""
    if plan.graph == graph.source:
        return plan
    if plan.graph != model.source:
        raise PlanError(f"the plan names the {plan.graph} graph of {plan.model}; this run's model graph is "
                        f"{model.source}'s and its backend runs {graph.source}'s: re-plan it")  # fmt: skip
    holder = _holders(model, graph)
    order = {n: i for i, n in enumerate(graph.nodes)}  # exporters may order a block's branches anew

    def held_by(tensor: str, where: str) -> str:
        name = holder[tensor]
        if name is None:
            raise PlanError(
                f"{where}: '{tensor}' does not exist on {graph.source}, which folds it into a "
                "later node; cut the plan after that node or run it on --backend torch"
            )
        return name

    members = _members(plan, model, graph)
    stages = []
    for stage in plan.stages:
        at = f"stage {stage.index}"
        nodes = sorted(members[stage.index], key=order.__getitem__)
        work = []
        for w in stage.work:
            outputs = {held_by(t, at): r for t, r in w.outputs.items()}
            reused = {held_by(t, at): bands for t, bands in w.reused.items()}
            work.append(Work(w.device, outputs, work_inputs(graph, nodes, outputs, reused) if nodes else {},
                             reused))  # fmt: skip
        transfers = [Transfer(t.src, t.dst, held_by(t.tensor, at), t.region, t.bytes)
                     for t in stage.transfers]  # fmt: skip
        stages.append(
            Stage(
                stage.index, stage.group, nodes, work, transfers, stage.overlap, stage.continues, stage.keeps
            )
        )
    lowered = replace(plan, graph=graph.source, stages=stages)
    try:
        check_plan(lowered, graph, fleet)
    except PlanError as exc:
        raise PlanError(f"the plan cannot run on {graph.source}'s graph of {plan.model}: {exc}") from None
    return lowered


def _members(plan: Plan, model: Graph, graph: Graph) -> list[list[str]]:
    """The nodes of `graph` each stage runs: the model's nodes it still has, and the nodes the
    backend added (the parts of an op its exporter decomposed), each with the first node they feed;
    a continuing stage runs the nodes of the stage it continues."""
    stage_of = {n: stage.index for stage in plan.stages if not stage.continues for n in stage.nodes
                if n in graph.nodes}  # fmt: skip
    users = graph.consumers()
    for name in reversed(graph.nodes):
        if name not in model.nodes:
            stage_of[name] = min(stage_of[u] for u in users[name])
    members: list[list[str]] = [[] for _ in plan.stages]
    for name, index in stage_of.items():
        members[index].append(name)
    for stage in plan.stages:
        if stage.continues:
            members[stage.index] = members[stage.index - 1]
    return members


def _holders(model: Graph, graph: Graph) -> dict[str, str | None]:
    """For every node of the model graph, the node of `graph` holding its value (itself, or what a
    dropped pass-through node passes on); None where `graph` folded it into a later node."""
    holder: dict[str, str | None] = {}
    for name, node in model.nodes.items():
        if name in graph.nodes:
            holder[name] = name
        elif node.op in PASS_THROUGH and len(node.inputs) == 1:
            holder[name] = holder[node.inputs[0]]
        else:
            holder[name] = None
    return holder
