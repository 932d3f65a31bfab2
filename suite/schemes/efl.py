"""Early fused layers, the baseline PICO (ICDCS 2021) and AOFL (SEC 2019) call EFL: DeepThings' Fused
Tile Partitioning with a fixed, early fused block.

In PICO's words, EFL fuses the first few conv layers, splits them across the devices, and runs the
rest of the model on one device; AOFL calls it "an extension of DeepThings". Neither paper says how
deep the block is, so we take DeepThings' own configuration: its fused block, YOLOv2's first 16
layers, holds "49% of the computation". EFL fuses the leading pieces (suite/schemes/chain.py) whose
share of the model's MACs is closest to that (VGG-16: conv1_1..conv3_2, 48%; YOLOv2: the 17 pieces
to its last conv at 1/16 resolution, 47%), whatever the fleet. The block is then planned as
`deepthings` plans it (grid searched up to 5 x 5 for the lowest latency, tiles dealt statically,
no data reuse, the gateway runs the rest), so only the depth differs from our `deepthings`, which
also searches the depth and fuses much deeper.
"""

from __future__ import annotations

from suite.errors import UserError
from suite.fleet import Fleet
from suite.graph import Graph
from suite.plan import Layout
from suite.schemes import deepthings
from suite.schemes.chain import pieces, spatial_prefix

DEEPTHINGS_SHARE = 0.49  # the share of YOLOv2's MACs in DeepThings' fused block (TCAD 2018, Sec. VI)


def fused_depth(graph: Graph) -> int:
    """The number of leading pieces whose share of the MACs is closest to DeepThings' (the shallower
    on a tie), among the pieces that can be fused."""
    chain = pieces(graph)
    total, done, shares = graph.total_flops(), 0, []
    for piece in chain[: spatial_prefix(chain)]:
        done += sum(graph[n].flops for n in piece.nodes)
        shares.append(done / total)
    if not shares:
        raise UserError(f"model {graph.name} has no spatial layers to fuse")
    return 1 + min(range(len(shares)), key=lambda k: abs(shares[k] - DEEPTHINGS_SHARE))


def plan(graph: Graph, fleet: Fleet, grid: tuple[int, int] | None = None, grid_rounding: str = "up"
         ) -> Layout:  # fmt: skip
    """`grid` fixes the tiles (else searched); `grid_rounding` as in `deepthings`."""
    return deepthings.plan(graph, fleet, grid=grid, fused_pieces=fused_depth(graph),
                           grid_rounding=grid_rounding)  # fmt: skip
