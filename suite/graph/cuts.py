"""Where a graph can be cut: the front of nodes that can be tiled, and its layers.

Schemes plan with these and the verifier checks with them, so both cut a model the same way.
"""

from __future__ import annotations

from suite.graph.ir import Graph


def spatial_front(graph: Graph) -> list[str]:
    """The nodes, in order, that can be tiled: spatial ops fed only by the input or each other."""
    front: set[str] = set()
    for name, node in graph.nodes.items():
        if name == graph.input:
            continue
        if node.spatial and all(src == graph.input or src in front for src in node.inputs):
            front.add(name)
    return [n for n in graph.nodes if n in front]


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
