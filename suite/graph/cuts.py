"""Where a graph can be cut: the front of nodes that can be tiled, its layers, and how much of the
model that covers.

Schemes plan with these and the verifier checks with them, so both cut a model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from suite.graph.ir import Graph, Node


def spatial_front(graph: Graph, min_size: tuple[int, int] = (1, 1)) -> list[str]:
    """The nodes, in order, that can be tiled: spatial ops fed only by the input or each other.

    With `min_size` (rows, columns), the front also ends before maps smaller than that: a cut into
    R x C tiles needs a row and a column per tile, and ends where the map gets too small for it.
    """
    front: set[str] = set()
    for name, node in graph.nodes.items():
        if name != graph.input and _why_not_tiled(graph, node, front, min_size) is None:
            front.add(name)
    return [n for n in graph.nodes if n in front]


@dataclass(frozen=True)
class Stop:
    """A node where the tiled part of a model ends, and why."""

    node: str
    op: str
    reason: str


@dataclass(frozen=True)
class Coverage:
    """How much of a model a cut computes in tiles: its MACs inside the front against all of them,
    and the nodes just past the front (reading a tiled map or the input) that end it."""

    tiled_macs: int
    total_macs: int
    stops: tuple[Stop, ...]

    @property
    def tiled_share(self) -> float:
        """The fraction of the model's multiply-accumulates computed in tiles."""
        return self.tiled_macs / self.total_macs if self.total_macs else 0.0


def coverage(graph: Graph, front: list[str], min_size: tuple[int, int] = (1, 1)) -> Coverage:
    """The coverage of `front` (from `spatial_front(graph, min_size)`)."""
    inside = set(front)
    reached = inside | {graph.input}
    stops = []
    for name, node in graph.nodes.items():
        if name not in reached and any(src in reached for src in node.inputs):
            stops.append(Stop(name, node.op, _why_not_tiled(graph, node, inside, min_size) or ""))
    tiled = sum(graph[n].flops for n in front)
    return Coverage(tiled, graph.total_flops(), tuple(stops))


def _why_not_tiled(graph: Graph, node: Node, front: set[str], min_size: tuple[int, int]) -> str | None:
    """Why `node` cannot join a front made of `front` (None: it can)."""
    if not node.spatial:
        if node.op == "opaque":
            return node.attrs.get("reason", "an op the IR does not know")
        return f"{node.op} reads the whole {'map' if node.is_map else 'tensor'}"
    untiled = [src for src in node.inputs if src != graph.input and src not in front]
    if untiled and node.op == "scale":
        return (f"scales by '{untiled[0]}', a per-channel vector computed from the whole map "
                "(squeeze-and-excite)")  # fmt: skip
    if untiled:
        return f"reads '{untiled[0]}', which is not tiled"
    rows, cols = min_size
    if node.shape[2] < rows or node.shape[3] < cols:
        return (f"its {node.shape[2]}x{node.shape[3]} map has fewer rows or columns than {rows}x{cols} "
                "tiles")  # fmt: skip
    return None


def layers(graph: Graph, front: list[str]) -> list[list[str]]:
    """The front cut into layers: a node with the chain of pointwise and merge nodes it alone feeds
    (conv + add + relu), the unit MoDNN scatters and gathers and that backends fuse.

    A merge also takes in a lone node whose only consumer it is (a residual block's last conv when
    the shortcut has its own conv): the layer then holds both convs, as the whole model does, and
    onnxruntime fuses the add into the same one of them (which rounds differently from the other).
    """
    users = graph.consumers()
    order = {n: i for i, n in enumerate(front)}
    groups: list[list[str]] = []
    group_of: dict[str, list[str]] = {}
    for name in front:
        node = graph[name]
        last = groups[-1][-1] if groups else None
        if (last is not None and node.window is None and last in node.inputs
                and users[last] == [name]):  # fmt: skip
            group = groups[-1]
            for src in node.inputs:
                if group_of.get(src) == [src] and group_of[src] is not group and users[src] == [name]:
                    groups.remove(group_of[src])
                    group[:] = sorted([*group, src], key=order.__getitem__)
                    group_of[src] = group
            group.append(name)
        else:
            group = [name]
            groups.append(group)
        group_of[name] = group
    return groups


def first_unpartitioned(graph: Graph, front: list[str]) -> str | None:
    """The first node in order that runs unpartitioned while a later node is spatial again."""
    inside = set(front) | {graph.input}
    rest = [n for n in graph.nodes if n not in inside]
    if rest and any(graph[n].spatial for n in rest):
        node = graph[rest[0]]
        reason = node.attrs.get("reason", node.op)
        return f"{rest[0]} ({reason})"
    return None
