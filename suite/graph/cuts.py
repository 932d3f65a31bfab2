"""Where a graph can be cut: the front of nodes that can be tiled, its layers and segments, the
squeeze-and-excite branches inside it, and how much of the model that covers.

Schemes plan with these and the verifier checks with them, so both cut a model the same way.

A squeeze-and-excite branch reduces a tiled map to one value per channel (a global pool, then a few
small layers on vectors) and scales the map by it. The branch needs the whole map, yet its result is
tiny and the scaled map is tiled again: so the front goes on through the `scale`, and a cut is made
at the branch's map, where the tiles are gathered, the branch is computed once (exactly as in the
whole model: a pool over the whole map), and its vector goes to every tile of the next segment.
"""

from __future__ import annotations

from dataclasses import dataclass

from suite.graph.ir import Graph, Node, is_channel_vector


@dataclass(frozen=True)
class Branch:
    """A squeeze-and-excite branch: `nodes` (in order) compute `vector` from the whole of `map`."""

    map: str
    nodes: tuple[str, ...]
    vector: str


def branches(graph: Graph) -> dict[str, Branch]:
    """Every squeeze-and-excite branch of the graph, by the `scale` node that reads its vector.

    A branch is the cone of nodes behind a scale's vector back to one map: every node in it holds a
    vector (a 1x1 map or a flat tensor), only whole-map reductions (global pools) read the map, and
    nothing outside the branch but scales reads it.
    """
    users = graph.consumers()
    found: dict[str, Branch] = {}
    for name, node in graph.nodes.items():
        if node.op != "scale" or not is_channel_vector(graph[node.inputs[1]].shape, node.shape):
            continue
        cone, maps, todo = set(), set(), [node.inputs[1]]
        while todo:
            current = graph[todo.pop()]
            if current.name in cone or current.name in maps:
                continue
            if current.name == graph.input or (current.is_map and current.shape[2:] != (1, 1)):
                maps.add(current.name)
                continue
            cone.add(current.name)
            todo.extend(current.inputs)
        if len(maps) != 1:
            continue
        (source,) = maps
        readers = [n for n in cone if source in graph[n].inputs]
        whole = all(graph[n].op == "adaptive_avgpool" for n in readers)
        private = all(u in cone or graph[u].op == "scale" for n in cone for u in users[n])
        if readers and whole and private and source != graph.input:
            found[name] = Branch(source, tuple(n for n in graph.nodes if n in cone), node.inputs[1])
    return found


def spatial_front(graph: Graph, min_size: tuple[int, int] = (1, 1)) -> list[str]:
    """The nodes, in order, that can be tiled: spatial ops fed only by the input or each other, and
    the scales of squeeze-and-excite branches whose map is tiled (their branches are not tiled).

    With `min_size` (rows, columns), the front also ends before maps smaller than that: a cut into
    R x C tiles needs a row and a column per tile, and ends where the map gets too small for it.
    """
    se = branches(graph)
    front: set[str] = set()
    for name, node in graph.nodes.items():
        if name != graph.input and _why_not_tiled(graph, node, front, min_size, se) is None:
            front.add(name)
    # A border added only for nodes past the front (a dynamic "same" pad before a strided conv that
    # is too small to tile) is added to the whole map with them: a tile of it may lie all in the
    # border, and would read an empty region of the map before it.
    users = graph.consumers()
    for name in reversed(graph.nodes):
        if (name in front and graph[name].op == "pad" and name not in graph.outputs
                and not any(u in front for u in users[name])):  # fmt: skip
            front.discard(name)
    return [n for n in graph.nodes if n in front]


def front_branches(graph: Graph, front: list[str]) -> list[Branch]:
    """The squeeze-and-excite branches a front goes through, in the order their maps are made."""
    inside = set(front)
    order = {n: i for i, n in enumerate(graph.nodes)}
    found = {b.vector: b for scale, b in branches(graph).items() if scale in inside}
    return sorted(found.values(), key=lambda b: order[b.map])


def segments(graph: Graph, front: list[str]) -> list[list[str]]:
    """The front cut where squeeze-and-excite branches need a whole map: each segment ends at a
    branch's map (gathered there, the branch computed on it), and the next reads the map again and
    the branch's vector. A front without branches is one segment."""
    maps = {b.map for b in front_branches(graph, front)}
    cut: list[list[str]] = [[]]
    for name in front:
        cut[-1].append(name)
        if name in maps:
            cut.append([])
    return [s for s in cut if s]


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
    """The coverage of `front` (from `spatial_front(graph, min_size)`); the squeeze-and-excite
    branches it goes through are computed whole, but do not end it."""
    inside = set(front)
    handled = {n for b in front_branches(graph, front) for n in b.nodes}
    reached = inside | {graph.input}
    se = branches(graph)
    stops = []
    for name, node in graph.nodes.items():
        if name not in reached and name not in handled and any(src in reached for src in node.inputs):
            reason = _why_not_tiled(graph, node, inside, min_size, se) or _border_for(
                graph, name, inside, min_size, se
            )
            stops.append(Stop(name, node.op, reason))
    tiled = sum(graph[n].flops for n in front)
    return Coverage(tiled, graph.total_flops(), tuple(stops))


def _border_for(graph: Graph, pad: str, front: set[str], min_size: tuple[int, int],
                se: dict[str, Branch]) -> str:  # fmt: skip
    """Why a pad that could be tiled is not: the node it pads for is not (`spatial_front`)."""
    user = next(u for u in graph.consumers()[pad] if u not in front)
    why = _why_not_tiled(graph, graph[user], front | {pad}, min_size, se)
    return f"a border for '{user}', added to the whole map with it" + (f": {why}" if why else "")


def _why_not_tiled(graph: Graph, node: Node, front: set[str], min_size: tuple[int, int],
                   se: dict[str, Branch]) -> str | None:  # fmt: skip
    """Why `node` cannot join a front made of `front` (None: it can)."""
    if not node.spatial:
        if node.op == "opaque":
            return node.attrs.get("reason", "an op the IR does not know")
        if "untiled" in node.attrs:
            return node.attrs["untiled"]
        return f"{node.op} reads the whole {'map' if node.is_map else 'tensor'}"
    untiled = [src for src in node.inputs if src != graph.input and src not in front]
    if node.op == "scale" and untiled == [node.inputs[1]] and node.name in se and se[node.name].map in front:
        untiled = []  # the vector of a squeeze-and-excite branch on a tiled map: computed between segments
    if untiled and node.op == "scale":
        return (f"scales by '{untiled[0]}', a per-channel vector computed from the whole map, and no "
                "squeeze-and-excite branch from a tiled map makes it")  # fmt: skip
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
    A conv with its batch norm counts as lone: deployment folds the one into the other, so a plan
    made on the torch graph cuts onnxruntime's graph where its own layers would.
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
                other = group_of.get(src)
                if other and other is not group and _one_op(graph, other) and users[src] == [name]:
                    groups.remove(other)
                    group[:] = sorted([*group, *other], key=order.__getitem__)
                    group_of.update(dict.fromkeys(other, group))
            group.append(name)
        else:
            group = [name]
            groups.append(group)
        group_of[name] = group
    return groups


def _one_op(graph: Graph, group: list[str]) -> bool:
    """A lone node, or a conv and the batch norm folded into it once deployed."""
    return len(group) == 1 or (len(group) == 2 and graph[group[0]].op == "conv"
                               and graph[group[1]].op == "batchnorm")  # fmt: skip


def first_unpartitioned(graph: Graph, front: list[str]) -> str | None:
    """The first node in order that runs unpartitioned while a later node is spatial again."""
    inside = set(front) | {graph.input}
    rest = [n for n in graph.nodes if n not in inside]
    if rest and any(graph[n].spatial for n in rest):
        node = graph[rest[0]]
        reason = node.attrs.get("reason", node.op)
        return f"{rest[0]} ({reason})"
    return None
