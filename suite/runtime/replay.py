"""Play one frame of a plan with every party in this process, and name where tiles go wrong.

When a run's output differs from the monolithic model, the replay runs the same programs over an
in-process transport (one thread per party), watching every tile each party computes against the
whole model run node by node: the first node that differs, and the device and stage that computed
it, are what the user needs to know.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from suite.backends import Backend, Tile, run_whole
from suite.graph import Graph
from suite.plan import COORDINATOR, Plan
from suite.regions import WHOLE, index_in
from suite.runtime.engine import Runner, compile_program, parties
from suite.runtime.transport import LocalTransport
from suite.verify import compare_tensors

Watch = Callable[[str], Callable[[int, dict[str, Tile]], None] | None]  # party -> tile observer


def replay(plan: Plan, graph: Graph, backend: Backend, x: torch.Tensor, timeout_s: float,
           watch: Watch | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Play one frame of `plan` with every party in this process; returns what the coordinator
    holds at the end. `watch(party)` may return an observer of every tile that party computes."""
    local = LocalTransport()
    runners = {p: Runner(graph, compile_program(plan, graph, p), backend, local.party(p), timeout_s,
                         observe=watch(p) if watch else None) for p in parties(plan)}  # fmt: skip
    held: dict[str, dict[str, torch.Tensor]] = {}
    failures: list[BaseException] = []

    def play(party: str) -> None:
        try:
            held[party] = runners[party].frame(0, x if party == COORDINATOR else None)
        except BaseException as exc:  # reported by the caller's thread, not as a thread traceback
            failures.append(exc)

    threads = [threading.Thread(target=play, args=(p,), daemon=True) for p in runners]
    with backend.active():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if failures:
        raise failures[0]
    return held.get(COORDINATOR, {})


def locate_mismatch(plan: Plan, graph: Graph, backend: Backend, x: torch.Tensor, reference: torch.Tensor,
                    timeout_s: float) -> str:  # fmt: skip
    """Replay one frame in this process and name the first node whose tile differs from the whole
    model's node-by-node run."""
    with backend.active():
        whole = run_whole(graph, x, backend)
    if not compare_tensors(whole[graph.outputs[0]], reference).bit_exact:
        return (
            f"the graph run node by node already differs from the monolithic model on {backend.name} "
            "(the backend fuses or reorders ops in the whole model); run on --backend torch"
        )
    order = {n: i for i, n in enumerate(graph.nodes)}
    bad: list[tuple[int, str, str]] = []  # (node order, node, where)

    def watch(device: str):
        def observe(stage: int, tiles: dict[str, Tile]) -> None:
            for name, (region, tile) in tiles.items():
                if name in whole and name != graph.input:
                    expected = whole[name][index_in(region, WHOLE, graph[name])]
                    if expected.shape == tile.shape and not compare_tensors(tile, expected).bit_exact:
                        bad.append((order[name], name, f"{device}, stage {stage}"))

        return observe

    replay(plan, graph, backend, x, timeout_s, watch)
    if not bad:
        return (
            "its output differs from the monolithic model, but a one-process replay of the plan "
            "is exact: the difference comes from the workers' processes (threads, flags)"
        )
    _, node, where = min(bad)
    return f"its output differs from the monolithic model; the first node that differs is '{node}' ({where})"
