"""The import seams: no import cycle anywhere in `suite` (type-only and function-level imports
included), none between its top-level packages, and the data flowing one way: the core (model,
graph, plans, cost) knows nothing of the runtime, and the runtime nothing of what drives it
(orchestration, tracking, reproduction, the command line).

The graph is read from the source with `ast`, so it sees every import, wherever it is written.
`from package import name` is an edge to the submodule `package.name` when there is one (Python
imports it), else to the package itself, as the import resolves.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

SUITE = Path(__file__).resolve().parents[1] / "suite"
CORE = ("models", "graph", "regions", "plan", "schemes", "cost", "simulate", "fleet")
DRIVERS = ("orchestrate", "tracking", "reproduce", "cli")
# what each layer must not import (package or module names under suite)
FORBIDDEN = {**{name: ("runtime", *DRIVERS) for name in CORE}, "runtime": DRIVERS}


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, is_package: bool, node: ast.AST, modules: set[str]) -> list[str]:
    """The suite modules one import statement of `module` loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        targets.append(submodule if submodule in modules else base)
    return [t for t in targets if t in modules]


def import_graph(root: Path = SUITE) -> nx.DiGraph:
    """Module -> module it imports, each edge with the line of its first import."""
    files = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(module, path.name == "__init__.py", node, set(files)):
                if target != module and not graph.has_edge(module, target):
                    graph.add_edge(module, target, line=f"{path.relative_to(root.parent)}:{node.lineno}")
    return graph


def top_level(module: str) -> str:
    """suite.runtime.engine -> suite.runtime; suite.cli -> suite.cli."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: nx.DiGraph) -> nx.DiGraph:
    packages = nx.DiGraph()
    for a, b, data in graph.edges(data=True):
        if top_level(a) != top_level(b) and not packages.has_edge(top_level(a), top_level(b)):
            packages.add_edge(top_level(a), top_level(b), line=data["line"])
    return packages


def cycles(graph: nx.DiGraph) -> list[str]:
    """Per knot of modules that import each other: its modules, and one cycle through them with each
    import named where it is written."""
    found = []
    for knot in nx.strongly_connected_components(graph):
        if len(knot) > 1:
            cycle = nx.find_cycle(graph.subgraph(knot))
            first = min(range(len(cycle)), key=lambda i: cycle[i][0])  # start at its first name, always
            cycle = cycle[first:] + cycle[:first]
            path = " -> ".join(f"{a} ({graph.edges[a, b]['line']})" for a, b in cycle)
            found.append(f"{', '.join(sorted(knot))}: {path} -> {cycle[0][0]}")
    return sorted(found)


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(tmp_path):
    package = tmp_path / "suite"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("from suite.low.data import Thing\n")
    (package / "low" / "data.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                             "    from suite.high import use\n")  # fmt: skip
    (package / "low" / "tool.py").write_text("from . import data\n")
    (package / "high.py").write_text("def use():\n    from suite.low import Thing\n    import suite\n")
    (package / "other.py").write_text("from suite.low import tool\n")
    graph = import_graph(package)
    assert set(graph.edges) == {("suite.low", "suite.low.data"), ("suite.low.data", "suite.high"),
                                ("suite.low.tool", "suite.low.data"), ("suite.high", "suite.low"),
                                ("suite.high", "suite"), ("suite.other", "suite.low.tool")}  # fmt: skip
    assert cycles(graph) == ["suite.high, suite.low, suite.low.data: suite.high (suite/high.py:2) -> "
                             "suite.low (suite/low/__init__.py:1) -> suite.low.data (suite/low/data.py:3) -> "
                             "suite.high"]  # fmt: skip
    assert cycles(package_graph(graph)) == ["suite.high, suite.low: suite.high (suite/high.py:2) -> "
                                            "suite.low (suite/low/data.py:3) -> suite.high"]  # fmt: skip


def test_no_module_imports_itself_around_a_cycle(graph):
    assert len(graph) > 50  # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles between modules:\n" + "\n".join(found)


def test_the_top_level_packages_import_each_other_without_a_cycle(graph):
    found = cycles(package_graph(graph))
    assert not found, "import cycles between suite's top-level packages:\n" + "\n".join(found)


def test_the_data_flows_from_the_core_through_the_runtime_to_its_drivers(graph):
    wrong = []
    for a, b, data in graph.edges(data=True):
        layer, imported = top_level(a).split(".")[-1], top_level(b).split(".")[-1]
        if imported in FORBIDDEN.get(layer, ()):
            wrong.append(f"{a} imports {b} ({data['line']})")
    against = "\n".join(sorted(wrong))
    assert not wrong, f"imports against the data flow (core -> runtime -> drivers):\n{against}"


# a string (its comment signs are text) or a comment, for cutting comments out of source
_STRING_OR_COMMENT = re.compile(r'"""(?:\\.|[^\\])*?"""|\'\'\'(?:\\.|[^\\])*?\'\'\'|"(?:\\.|[^"\\\n])*"'
                                r"|'(?:\\.|[^'\\\n])*'|#[^\n]*", re.DOTALL)  # fmt: skip


def code_lines(source: str) -> list[tuple[int, str]]:
    """(line number, text) of each line that holds code: comments cut off, white space folded; blank
    lines and import statements (not code one could share) left out."""
    code = _STRING_OR_COMMENT.sub(lambda m: "" if m.group().startswith("#") else m.group(), source)
    lines, in_import = [], False
    for number, line in enumerate(code.splitlines(), start=1):
        text = " ".join(line.split())
        if not in_import and re.match(r"(import|from \S+ import) ", text):
            in_import = True
        if text and not in_import:
            lines.append((number, text))
        if in_import and not text.endswith(("(", ",", "\\")):
            in_import = False
    return lines


def repeated_blocks(root: Path = SUITE, length: int = 6, skip: tuple[str, ...] = ("models",)) -> list[str]:
    """Each block of `length` or more code lines (`code_lines`) that stands in two places of the
    Python files under `root` (its folders `skip` left out), as `a.py:10 ~ b.py:40 (7 lines): its
    first line`."""
    places: dict[tuple[str, ...], list[tuple[str, int, int]]] = {}  # block -> (file, index, line)
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in skip:
            continue
        name = str(path.relative_to(root.parent))
        lines = code_lines(path.read_text(encoding="utf-8"))
        for k in range(len(lines) - length + 1):
            block = tuple(text for _, text in lines[k : k + length])
            places.setdefault(block, []).append((name, k, lines[k][0]))
    # the windows two places share, by the two files and how far apart they stand in them
    shared: dict[tuple[str, str, int], list[tuple[int, int, int, str]]] = {}
    for block, where in places.items():
        for (a, i, line_a), (b, j, line_b) in zip(where, where[1:]):
            shared.setdefault((a, b, i - j), []).append((i, line_a, line_b, block[0]))
    found = []
    for (a, b, _), windows in shared.items():
        windows.sort()
        first = 0
        for k in range(1, len(windows) + 1):  # windows one line apart make one block
            if k == len(windows) or windows[k][0] != windows[k - 1][0] + 1:
                _, line_a, line_b, text = windows[first]
                found.append(f"{a}:{line_a} ~ {b}:{line_b} ({k - first + length - 1} lines): {text}")
                first = k
    return sorted(found)


def test_the_repeat_check_finds_a_block_written_twice(tmp_path):
    package = tmp_path / "suite"
    (package / "models").mkdir(parents=True)
    steps = [f"    total += {k}  # step {k}\n" for k in range(7)]
    (package / "a.py").write_text("def f(total):\n" + "".join(steps) + "    return total\n")
    # the same steps, with other comments and spacing, a blank line and a comment line between
    respaced = "".join(s.replace("  #", "#") for s in steps[3:])
    (package / "b.py").write_text("def g(total):\n    # the same sum\n" + "".join(steps[:3]) + "\n"
                                  + respaced + "    return 0\n")  # fmt: skip
    # six lines alike but for the text after a comment sign in a string: no repeat
    (package / "c.py").write_text("def h(total):\n" + "".join(steps[:5]) + "    return '#1'\n")
    (package / "d.py").write_text("def d(total):\n" + "".join(steps[:5]) + "    return '#2'\n")
    imports = "from x import (\n" + "".join(f"    n{k},\n" for k in range(6)) + ")\n"
    (package / "e.py").write_text(imports)
    (package / "f.py").write_text(imports)
    (package / "models" / "zoo.py").write_text("def z(total):\n" + "".join(steps))
    assert repeated_blocks(package) == ["suite/a.py:2 ~ suite/b.py:3 (7 lines): total += 0"]


def test_no_block_of_six_lines_is_written_twice():
    found = repeated_blocks()
    assert not found, "blocks written twice in suite/ (share them):\n" + "\n".join(found)
