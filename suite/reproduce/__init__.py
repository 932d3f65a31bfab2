"""`suite reproduce`: the papers' figures regenerated, each beside its published numbers.

For every figure it writes `<out>/<name>.csv` (tidy, one row per point: the keys, `published_*`,
`predicted_*` and `simulated_*` columns), `<out>/<name>.png` (the paper's axes, published points
beside ours), `<out>/<name>.md` (the report section) and `<out>/REPORT.md`, assembled from every
section in the folder. `figures.py` holds the registry, `pico.py`, `deepthings.py`, `halp.py` and
`modnn.py` compute the tables, `plots.py` draws them, `report.py` writes the markdown.

Measured points (the emulated lab) enter as `measured_*` columns of a figure's table; the plots and
the report draw and compare any such column they find.

This module stays free of heavy imports so that `suite --help` stays fast.
"""

from suite.errors import UserError

NAMES = ("pico-fig8", "pico-fig9", "pico-fig12", "pico-table1", "pico-table2", "pico-fig10a", "pico-fig10b",
         "pico-fig11", "aofl", "deepthings-fig13", "memory-comm", "halp", "modnn")  # fmt: skip


def select(names: list[str]) -> list[str]:
    """The figures to make, in the report's order: the named ones, or all."""
    if names == ["all"]:
        return list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise UserError(f"unknown figure '{unknown[0] if unknown else ''}'; choose from {', '.join(NAMES)} "
                        "or all")  # fmt: skip
    return [n for n in NAMES if n in names]
