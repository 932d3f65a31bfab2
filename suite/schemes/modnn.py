"""MoDNN (Mao et al., DATE 2017): layer-wise partitioning through a group owner.

Every layer (a conv or pool with the pointwise and merge nodes it alone feeds, see
`graph.cuts.layers`) is cut into full-width row strips sized in proportion to each device's
capability (the Biased One-Dimensional Partition, BODP). The group owner, the fastest device,
scatters the input's rows; each device keeps the strips it computes, and before each layer takes
from the owner only the rows of its input it did not compute (the halo rows its neighbours
computed, which they sent the owner after the layer before; `plan.kept_transfers`). The model's
output and the maps the owner computes whole (see below) are gathered at the owner. Nothing is
pipelined. So BODP moves about 9 MB a frame for YOLOv2's first 16 layers at 608x608 on 6 devices
(DeepThings measured 19.6 MB for its MoDNN), where gathering every map moves 249 MB.

With `gather` (scheme `modnn-gather`), the owner gathers every layer's strips and scatters the
next layer's input rows (with their halo), as a reading of MoDNN's "group owner" that sends every
layer through it: the transfers grow with the devices, the compute shrinks, and on a shared
50 Mbps link it is slower than one device. Fully connected layers are split by output neurons in proportion to
capability, with cut points on whole chunks of the exact linear kernel's calls (16 features, so
no two devices compute one chunk; any cut is bit-exact, `suite/backends/exact.py`); the
remaining tail nodes (pooling to 1x1, flatten) run on the owner. A squeeze-and-excite branch
runs on the owner too, on the gathered map, before the layer that scales by its vector.

Choices the paper leaves to us: the owner also computes a share; a layer with fewer rows than
devices goes to its fastest devices, one row each; the sparse-FC co-clustering (MSCC) is not
modelled, since the zoo's linear layers are dense.
"""

from __future__ import annotations

from suite.backends.exact import LINEAR_ROWS
from suite.fleet import Device, Fleet
from suite.graph import Graph
from suite.graph.cuts import front_branches, layers, spatial_front
from suite.plan import Layout, build_stages
from suite.regions import Box, FeatureRange, split_range
from suite.schemes.chain import StageDraft, whole_on

ALIGN = LINEAR_ROWS  # linear output cut points: the exact kernel's chunks of features


def plan(graph: Graph, fleet: Fleet, gather: bool = False) -> Layout:
    """`gather`: every layer's map gathered at the owner (module docstring)."""
    devices = fleet.by_capability()
    owner = devices[0].name
    front = spatial_front(graph)
    pending = front_branches(graph, front)
    steps: list[StageDraft] = []
    for layer in layers(graph, front):
        reads = {src for n in layer for src in graph[n].inputs}
        for branch in [b for b in pending if b.vector in reads]:
            steps.append(whole_on(graph, owner, list(branch.nodes)))
            pending.remove(branch)
        out = graph[layer[-1]]
        use = devices[: min(len(devices), out.shape[2])]
        rows = split_range(out.shape[2], len(use), [d.capability for d in use])
        steps.append((0, layer, [(d.name, {out.name: Box(r0, r1, 0, out.shape[3])})
                                 for d, (r0, r1) in zip(use, rows)]))  # fmt: skip
    done = set(front) | {n for b in front_branches(graph, front) for n in b.nodes} | {graph.input}
    on_owner: list[str] = []
    for name in [n for n in graph.nodes if n not in done]:
        node = graph[name]
        if node.op == "linear" and len(node.shape) == 2:
            if on_owner:
                steps.append(whole_on(graph, owner, on_owner))
                on_owner = []
            steps.append((0, [name], _split_features(node.name, node.shape[-1], devices)))
        else:
            on_owner.append(name)
    if on_owner:
        steps.append(whole_on(graph, owner, on_owner))
    stages = build_stages(graph, owner, steps, keep=not gather)
    return Layout(owner, stages, {"owner": owner, "gather": gather})


def _split_features(name: str, features: int, devices: list[Device]) -> list:
    units = -(-features // ALIGN)
    use = devices[: min(len(devices), units)]
    spans = split_range(units, len(use), [d.capability for d in use])
    return [(d.name, {name: FeatureRange(a * ALIGN, min(b * ALIGN, features))})
            for d, (a, b) in zip(use, spans)]  # fmt: skip
