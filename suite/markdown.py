"""Markdown for the reports the suite writes (the nightly run's, the reproduced figures')."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd


def markdown_table(frame: pd.DataFrame, cell: Callable[[object], str]) -> str:
    """`frame` as a markdown table, each value written by `cell` (pandas' to_markdown needs tabulate,
    not a dependency of the suite)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
