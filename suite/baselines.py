"""The papers' published numbers (`suite/data/baselines/<paper>.yaml`), loaded and checked once.

Each file holds one paper's figures; a figure is a list of *series*: one quantity (`period_s`,
`speedup`, ...) at some fixed labels (`scheme: pico, clock_mhz: 1000`) over x values (`devices: [1..8]`),
or, where a paper gives only an abstract's range, a `range: [low, high]`. Every series says where it
comes from (`source`) and whether it is printed (`exact: true`) or read off a plot. Where two sources
in a paper disagree, a `discrepancies` entry records both and which one the series uses.

pydantic checks the YAML shape; the checks here add what a schema cannot say (an x list as long as
its values, a discrepancy that points at a real point holding the value it claims to use). Every
mistake is one `UserError` line naming the file, the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from suite.errors import UserError
from suite.package import data
from suite.schema import Strict, read_yaml

BASELINES_DIR = data("baselines")

Value = str | int | float
QUANTITY = r"^[a-z][a-z0-9_]*$"


class BaselineError(UserError):
    """A baseline file that cannot be used; one line naming the file, the field and the fix."""


@dataclass(frozen=True)
class Series:
    """One quantity at fixed labels over x values (or a published range)."""

    quantity: str
    labels: Mapping[str, Value]
    x: Mapping[str, tuple[Value, ...]]
    values: tuple[float, ...]  # empty when the paper gives only a range
    bounds: tuple[str, ...]  # per value: "=" (the value), "<" or ">" (a bound)
    range: tuple[float, float] | None
    exact: bool  # printed in the text or a table, not read off a plot
    source: str
    note: str

    def points(self) -> list[dict]:
        """One dict per value: the labels, the x values, and the value with its bound and source."""
        return [{**self.labels, **{k: v[i] for k, v in self.x.items()}, "quantity": self.quantity,
                 "value": value, "bound": self.bounds[i], "exact": self.exact, "source": self.source}
                for i, value in enumerate(self.values)]  # fmt: skip


@dataclass(frozen=True)
class Discrepancy:
    """Two sources in one paper that give different numbers for one point, and which one we use."""

    at: Mapping[str, Value]
    quantity: str
    values: Mapping[str, float]  # source -> value
    used: str
    why: str


@dataclass(frozen=True)
class Figure:
    name: str
    paper: str
    citation: str
    title: str
    model: str | None
    notes: tuple[str, ...]
    series: tuple[Series, ...]
    discrepancies: tuple[Discrepancy, ...]

    def table(self) -> pd.DataFrame:
        """Every published point as a tidy row: label and x columns, quantity, value, bound, exact, source."""
        return pd.DataFrame([p for s in self.series for p in s.points()])

    def published(self, quantity: str, keys: list[str]) -> pd.DataFrame:
        """`quantity`'s points as `keys` + `published_<quantity>` columns, ready to merge with ours."""
        points = [p for s in self.series if s.quantity == quantity for p in s.points()]
        if not points:
            return pd.DataFrame(columns=[*keys, f"published_{quantity}"])
        rows = pd.DataFrame(points)
        for key in keys:
            if key not in rows:
                rows[key] = pd.NA
        return rows[[*keys, "value"]].rename(columns={"value": f"published_{quantity}"})

    def ranges(self, quantity: str) -> list[Series]:
        return [s for s in self.series if s.quantity == quantity and s.range is not None]


# ---- YAML schema (the boundary) -------------------------------------------------------------------


class _SeriesSpec(Strict):
    quantity: str = Field(pattern=QUANTITY)
    labels: dict[str, Value] = {}
    x: dict[str, list[Value]] = {}
    values: list[float] | None = None
    bounds: list[Literal["=", "<", ">"]] | None = None
    range: tuple[float, float] | None = None
    exact: bool
    source: str = Field(min_length=1)
    note: str = ""


class _DiscrepancySpec(Strict):
    at: dict[str, Value] = Field(min_length=1)
    quantity: str = Field(pattern=QUANTITY)
    values: dict[str, float] = Field(min_length=2)
    used: str
    why: str = Field(min_length=1)


class _FigureSpec(Strict):
    title: str = Field(min_length=1)
    model: str | None = None
    notes: list[str] = []
    series: list[_SeriesSpec] = Field(min_length=1)
    discrepancies: list[_DiscrepancySpec] = []


class _PaperSpec(Strict):
    schema_version: Literal[1]
    paper: str = Field(min_length=1)
    citation: str = Field(min_length=1)
    testbed: str = Field(min_length=1)
    figures: dict[str, _FigureSpec] = Field(min_length=1)


def _series(where: str, spec: _SeriesSpec) -> Series:
    if (spec.values is None) == (spec.range is None):
        raise BaselineError(f"{where}: give either values (points) or range ([low, high]), not "
                            f"{'both' if spec.values is not None else 'neither'}")  # fmt: skip
    values = tuple(spec.values or ())
    for key, xs in spec.x.items():
        if len(xs) != len(values):
            raise BaselineError(f"{where}: x.{key} has {len(xs)} entries but values has {len(values)} "
                                "(give one x per value)")  # fmt: skip
    if spec.range is not None and (spec.x or spec.bounds):
        raise BaselineError(f"{where}: a range has no x or bounds; put its conditions in labels")
    if spec.range is not None and spec.range[0] > spec.range[1]:
        raise BaselineError(f"{where}: range {list(spec.range)} runs backwards (write [low, high])")
    if spec.bounds is not None and len(spec.bounds) != len(values):
        raise BaselineError(f"{where}: bounds has {len(spec.bounds)} entries but values has {len(values)}")
    shared = set(spec.labels) & set(spec.x)
    if shared:
        raise BaselineError(f"{where}: '{sorted(shared)[0]}' is both a label and an x (keep it in one)")
    return Series(spec.quantity, dict(spec.labels), {k: tuple(v) for k, v in spec.x.items()}, values,
                  tuple(spec.bounds or ("=",) * len(values)), spec.range, spec.exact, spec.source,
                  spec.note)  # fmt: skip


def _check_points(where: str, series: tuple[Series, ...]) -> None:
    seen = set()
    for s in series:
        for p in s.points():
            key = tuple(sorted((k, str(v)) for k, v in p.items() if k not in ("value", "bound", "exact",
                                                                                "source")))  # fmt: skip
            if key in seen:
                raise BaselineError(f"{where}: the point {dict(key)} is given twice (keep one; record "
                                    "a disagreement under discrepancies)")  # fmt: skip
            seen.add(key)


def _discrepancy(where: str, spec: _DiscrepancySpec, series: tuple[Series, ...]) -> Discrepancy:
    if spec.used not in spec.values:
        raise BaselineError(f"{where}: used '{spec.used}' is not one of its values' sources "
                            f"({', '.join(spec.values)})")  # fmt: skip
    matches = [p for s in series if s.quantity == spec.quantity for p in s.points()
               if all(str(p.get(k)) == str(v) for k, v in spec.at.items())]  # fmt: skip
    if len(matches) != 1:
        raise BaselineError(f"{where}: 'at' {spec.at} matches {len(matches)} {spec.quantity} points "
                            "(name exactly one)")  # fmt: skip
    if matches[0]["value"] != spec.values[spec.used]:
        raise BaselineError(
            f"{where}: the series holds {matches[0]['value']} but '{spec.used}' gives "
            f"{spec.values[spec.used]} (make the series use the value you say you use)"
        )
    return Discrepancy(dict(spec.at), spec.quantity, dict(spec.values), spec.used, spec.why)


def _paper_figures(path: Path) -> list[Figure]:
    paper = read_yaml(path, _PaperSpec, BaselineError)
    figures = []
    for name, fig in paper.figures.items():
        where = f"{path.parent.name}/{path.name}: figures.{name}"
        series = tuple(_series(f"{where}.series.{i}", s) for i, s in enumerate(fig.series))
        _check_points(where, series)
        discrepancies = tuple(_discrepancy(f"{where}.discrepancies.{i}", d, series)
                              for i, d in enumerate(fig.discrepancies))  # fmt: skip
        figures.append(Figure(name, paper.paper, paper.citation, fig.title, fig.model, tuple(fig.notes),
                              series, discrepancies))  # fmt: skip
    return figures


def load_baselines(folder: Path = BASELINES_DIR) -> dict[str, Figure]:
    """Every figure of every `<paper>.yaml` in `folder`, by figure name (names are unique)."""
    figures: dict[str, Figure] = {}
    for path in sorted(folder.glob("*.yaml")):
        for figure in _paper_figures(path):
            if figure.name in figures:
                other = figures[figure.name].paper
                raise BaselineError(f"{path.parent.name}/{path.name}: figure '{figure.name}' is also in "
                                    f"{other}.yaml (figure names are unique)")  # fmt: skip
            figures[figure.name] = figure
    return figures
