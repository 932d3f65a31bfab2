"""Markdown for what the suite writes: the nightly report, the reproduced figures' sections and the
docs' CLI reference."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


def markdown_table(columns: Sequence, rows: Iterable[Sequence], cell: Callable[[object], str] = str) -> str:
    """A markdown table of `rows` under `columns`, each value written by `cell` (pandas' to_markdown
    needs tabulate, not a dependency of the suite)."""
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
