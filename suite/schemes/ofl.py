"""Optimal fused layers, the baseline PICO calls OFL: AOFL (Zhou et al., SEC 2019), adaptive parallel
execution of fused layers on heterogeneous edge devices.

The chain of pieces (suite/schemes/chain.py) is cut at chosen *fusion points* into fused blocks,
and each block gets its own *parallelism*: the number of devices that split its output rows, each
computing its strip from its own input rows (receptive-field overlap recomputed). Blocks run one
after another on one frame; the next frame starts when the last block is done. Fusion points and
parallelism come from a dynamic programme over the chain, for the lowest latency of one frame:

    L[j] = min over i <= j, 1 <= p <= n of  L[i - 1] + T(i..j, p)

where T(i..j, p) is pieces i..j as one block on p devices, priced like a PICO stage (the slowest
strip's compute plus every device's input rows in and output rows out through the coordinator).

Choices the abstract leaves to us, written down:
- fusion points on piece boundaries, as in the other fused schemes: a residual or inception block
  is never cut inside;
- full-width row strips (1-D) sized by capability, as PICO and MoDNN cut, not 2-D grids;
- a block on p devices uses the p fastest: with one frame in flight the others would idle anyway,
  and faster devices only shorten the slowest strip;
- every block reads its input from and returns its output to the coordinator on the fleet's link,
  as PICO's stages do on the same testbed; nothing is pipelined across frames (what sets OFL
  apart from PICO), so the period equals the latency;
- the tail after the last spatial piece runs whole on the fastest device of its block;
- when the whole model on the fastest device beats every block layout, the plan is that device
  alone (the single plan), as in PICO.
"""

from __future__ import annotations

import math

from suite.cost import work_time
from suite.fleet import Fleet
from suite.graph import Graph
from suite.plan import COORDINATOR, Layout, build_stages
from suite.schemes import single
from suite.schemes.chain import by_capability, pieces
from suite.schemes.pico import StageTimer, stage_steps


def plan(graph: Graph, fleet: Fleet) -> Layout:
    chain = pieces(graph)
    timer = StageTimer(graph, chain, fleet.link)
    devices = by_capability(fleet.devices)
    fastest = [tuple(d.profile for d in devices[:p]) for p in range(1, len(devices) + 1)]
    # latency[j]: the best latency of pieces 0..j-1; last_block[j]: its last block as (first piece, devices)
    latency = [0.0] + [math.inf] * len(chain)
    last_block: list[tuple[int, int]] = [(0, 0)] * (len(chain) + 1)
    for j in range(1, len(chain) + 1):
        for i in range(j):
            for p, profiles in enumerate(fastest, start=1):
                t = latency[i] + timer.time(i, j - 1, profiles)
                if t < latency[j]:
                    latency[j], last_block[j] = t, (i, p)
    alone = work_time(devices[0].profile, timer.costs.whole(0, len(chain) - 1))
    if alone <= latency[-1]:
        layout = single.plan(graph, fleet)
        layout.options = {"pieces": len(chain), "blocks": [[0, len(chain) - 1, [layout.hub]]]}
        return layout
    blocks = []
    j = len(chain)
    while j > 0:
        i, p = last_block[j]
        blocks.insert(0, (i, j - 1, devices[:p]))
        j = i
    steps = [step for i, j, devs in blocks for step in stage_steps(timer, i, j, devs)]
    options = {"pieces": len(chain), "blocks": [[i, j, [d.name for d in devs]] for i, j, devs in blocks]}
    return Layout(COORDINATOR, build_stages(graph, COORDINATOR, steps), options)
