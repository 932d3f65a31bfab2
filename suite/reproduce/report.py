"""The report: one markdown section per figure (`<out>/<name>.md`) and `<out>/REPORT.md` assembled from
every section in the folder, so reproducing one figure again updates its section and keeps the rest.

A section gives the source, the setup, the headline, the image, a per-point table (published, ours,
ratio) and, for every point further than 25% from the paper, a paragraph on its cause, grouped by
scheme (or model, fleet) since the causes are the scheme's.
"""

from __future__ import annotations

import math

import pandas as pd

from suite.baselines import Figure
from suite.markdown import markdown_table
from suite.reproduce.common import OFF, Comparison, Outcome

KEY_FORMAT = {"clock_mhz": "{} MHz", "devices": "{} dev", "layers": "{} pieces",
              "tasks_per_batch": "{} task(s)", "grid": "grid {}", "offered_load_pct": "{}% load",
              "bandwidth_mbps": "{} Mbps"}  # fmt: skip
NAMES = {
    "lw": "LW",
    "efl": "EFL",
    "ofl": "OFL",
    "pico": "PICO",
    "modnn": "MoDNN",
    "deepthings": "FTP",
    "deepthings-reuse": "FTP with reuse",
    "halp": "HALP",
}


def number(value) -> str:
    if value is None or isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "inf"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _label(value) -> str:
    return NAMES.get(value, number(value)) if isinstance(value, str) else number(value)


def _key(row: pd.Series, keys: tuple[str, ...]) -> str:
    parts = [KEY_FORMAT.get(k, "{}").format(_label(row[k])) for k in keys
             if not (isinstance(row[k], float) and math.isnan(row[k])) and row[k] != ""]  # fmt: skip
    return ", ".join(parts)


def compared(outcome: Outcome) -> pd.DataFrame:
    """Every published point beside ours: keys, quantity, published, ours, ratio and whether it is off."""
    rows = []
    table = outcome.table
    for c in outcome.comparisons:
        ranged = f"published_{c.quantity}_low" in table
        published = f"published_{c.quantity}" + ("_low" if ranged else "")
        for _, row in table[table[published].notna()].iterrows():
            source = ours_source(row, c)
            mine = row.get(f"{source}_{c.quantity}", math.nan)
            group = row[c.group] if c.group in table else c.quantity
            entry = {"point": _key(row, outcome.keys), "group": group, "quantity": c.quantity,
                     "published": _published(row, c, ranged), "ours_column": source, "ours": mine,
                     **{s: row[f"{s}_{c.quantity}"] for s in ("predicted", "simulated", "measured")
                        if f"{s}_{c.quantity}" in table and s != source}}  # fmt: skip
            entry["ratio"], entry["off"] = _ratio(row, c, ranged, mine)
            rows.append(entry)
    return pd.DataFrame(rows)


def ours_source(row: pd.Series, c: Comparison) -> str:
    """The source a point's ratio uses: the lab's measured value where the point has one, else the
    comparison's own (predicted, simulated), else its fallback where its own has no value there."""
    measured = row.get(f"measured_{c.quantity}", math.nan)
    if isinstance(measured, float) and not math.isnan(measured):
        return "measured"
    own = row.get(f"{c.ours}_{c.quantity}", math.nan)
    return c.fallback if c.fallback and isinstance(own, float) and math.isnan(own) else c.ours


def _published(row: pd.Series, c: Comparison, ranged: bool) -> str:
    if ranged:
        low, high = row[f"published_{c.quantity}_low"], row[f"published_{c.quantity}_high"]
        return number(low) if low == high else f"{number(low)}-{number(high)}"
    bound = row.get(f"published_{c.quantity}_bound", "=")
    return ("" if bound == "=" else f"{bound} ") + number(row[f"published_{c.quantity}"])


def _ratio(row: pd.Series, c: Comparison, ranged: bool, ours: float) -> tuple[str, bool]:
    """Ours over published (to the nearer end of a range); a bound is met or not."""
    if isinstance(ours, float) and math.isnan(ours):
        return "not computed", False
    if ranged:
        low, high = row[f"published_{c.quantity}_low"], row[f"published_{c.quantity}_high"]
        if low <= ours <= high:
            return "in range", False
        ratio = ours / (low if ours < low else high)
        return f"{ratio:.2f}", abs(ratio - 1) > OFF
    value = row[f"published_{c.quantity}"]
    bound = row.get(f"published_{c.quantity}_bound", "=")
    if bound != "=":
        met = ours < value if bound == "<" else ours > value
        return ("bound met" if met else "bound not met"), not met
    if math.isinf(ours) or value == 0:
        return "inf", True
    ratio = ours / value
    return f"{ratio:.2f}", abs(ratio - 1) > OFF


def median_error(points: pd.DataFrame) -> tuple[float, int]:
    """The median |ours / published - 1| over a figure's compared points, and how many: a point inside
    a published range counts 0, one beyond it counts from the nearer end; bounds have no ratio."""
    errors = [0.0 if r == "in range" else abs(float(r) - 1) for r in points.get("ratio", [])
              if r == "in range" or r.replace(".", "", 1).isdigit()]  # fmt: skip
    return (float(pd.Series(errors).median()) if errors else math.nan), len(errors)


def summary(outcome: Outcome) -> dict:
    """A figure's standing against its paper, for REPORT.md's table and `--json`: how many points have a
    ratio, their median |ours / published - 1| (None without one), how many are further than `OFF`
    from the paper's (bounds not met included), how many of the compared points are measured, and
    whether the figure has measured values at all (`lab`: HALP's lab fleet has none of the paper's)."""
    points = compared(outcome)
    error, counted = median_error(points)
    lab = any(outcome.table[c].notna().any() for c in outcome.table.columns if c.startswith("measured_"))
    return {"points": counted, "median_error": None if math.isnan(error) else round(error, 4),
            "off": int(points.off.sum()) if len(points) else 0,
            "measured": int((points.ours_column == "measured").sum()) if len(points) else 0,
            "lab": bool(lab)}  # fmt: skip


def section(outcome: Outcome, baseline: Figure, stamp: str) -> str:
    """The markdown section of a reproduced figure (the image and CSV sit beside it)."""
    points = compared(outcome)
    ours_names = sorted(set(points.ours_column))
    shown = points.drop(columns=["group", "off"] + (["ours_column"] if len(ours_names) == 1 else []))
    shown = shown.drop(columns=[s for s in ("predicted", "simulated", "measured")
                                if s in shown and shown[s].isna().all()])  # fmt: skip
    shown = shown.rename(columns={"ours": f"ours ({'/'.join(ours_names)})", "ours_column": "ours is",
                                  "ratio": "ours / published"})  # fmt: skip
    parts = [f"## {outcome.name}: {outcome.title}", "",
             f"*Source:* {outcome.source}.", "", f"*Setup:* {outcome.setup}", "",
             f"**{outcome.headline}**", ""]  # fmt: skip
    error, counted = median_error(points)
    if counted:
        parts += [f"Median |ours / published - 1| over the {counted} points with a ratio: {error:.0%}.", ""]
    parts += [f"{finding}\n" for finding in outcome.findings]
    parts += [f"![{outcome.name}]({outcome.name}.png)", "",
              f"Every published point beside ours (`{outcome.name}.csv` holds every point we computed):", "",
              markdown_table(shown.columns, shown.itertuples(index=False), number), ""]  # fmt: skip
    for d in baseline.discrepancies:
        values = ", ".join(f"{source} {number(v)}" for source, v in d.values.items())
        at = ", ".join(f"{k} {_label(v)}" for k, v in d.at.items())
        parts += [f"*Published discrepancy* at {at}, {d.quantity}: {values}; we use {d.used}. {d.why}", ""]
    parts += _differences(outcome, points)
    if outcome.missing:
        parts += [f"*Not reproduced here:* {outcome.missing}.", ""]
    parts += [f"*{stamp}*", ""]
    return "\n".join(parts)


def _differences(outcome: Outcome, points: pd.DataFrame) -> list[str]:
    off = points[points.off]
    if off.empty:
        return [
            f"Every compared point is within {OFF:.0%} of the paper's, inside its range or within its bound.",
            "",
        ]
    lines = [f"**Differences over {OFF:.0%}** (the ratio is ours over the paper's):", ""]
    for group, rows in off.groupby("group", sort=False):
        prefix = f"{_label(group)}, "  # the bullet names the group; its points need not repeat it
        where = "; ".join(f"{quantity}: " + ", ".join(f"{ratio} at {_short(point, prefix)}"
                                                      for point, ratio in zip(q.point, q.ratio))
                          for quantity, q in rows.groupby("quantity", sort=False))  # fmt: skip
        because = outcome.causes.get(group, "We have no explanation for this difference yet.")
        lines += [f"- **{_label(group)}** ({where}). {because}", ""]
    return lines


def _short(point: str, prefix: str) -> str:
    """A point's name inside its group's bullet: without the group, without commas."""
    return point.removeprefix(prefix).replace(",", "")


def skipped_section(name: str, baseline: Figure, reason: str, stamp: str) -> str:
    return "\n".join([f"## {name}: {baseline.title}", "", f"*Source:* {baseline.citation}.", "",
                      f"**Not reproduced here:** {reason}.", "", f"*{stamp}*", ""])  # fmt: skip


def header(stamp: str, sections: list[tuple[str, str, dict | None]]) -> str:
    """The top of REPORT.md: what the points are, which figures have measured ones, and a table of the
    figures (each `summary`, or None for a section written before summaries were kept)."""
    measured = [name for name, _, s in sections if s and (s.get("measured") or s.get("lab"))]
    lab = ("None is measured: measured points come from the emulated lab (`suite reproduce NAME --lab`), "
           "which no figure here used." if not measured else
           f"**Measured** points (the emulated lab, `--lab`: the figure's own plans run through namespaces, "
           f"shaped links and calibrated cgroup quotas, bit-exact, converted to real time) are in "
           f"{', '.join(measured)}; where a point has one, its ratio and flag use it, else the predicted "
           "(or simulated) one, and each table says which.")  # fmt: skip
    rows = []
    for name, title, s in sections:
        link = f"[{name}](#{_anchor(f'{name}: {title}')})"
        if s is None or "skipped" in s:
            rows.append((link, title, "-", "-" if s is None else "skipped", "-", "-"))
            continue
        median = "-" if s["median_error"] is None else f"{s['median_error']:.0%}"
        rows.append((link, title, s["points"], median, s["off"], s["measured"]))
    off = f"off (over {OFF:.0%}, or a bound missed)"
    columns = ("figure", "what", "ratios", "median \\|ours / paper - 1\\|", off, "measured")
    table = markdown_table(columns, rows, number)
    return "\n".join([
        "# Paper figures, reproduced", "",
        "Each section puts one published figure or table beside ours, point by point. Our points are "
        "**predicted** (the cost model, `suite/cost.py`) and **simulated** (the discrete-event simulator, "
        "`suite/simulate.py`, which adds contention for a shared medium between pipeline stages and "
        "queueing) on device profiles calibrated to each paper's own single-device times "
        f"(`suite/data/profiles/rpi4b-libtorch-*`, `rpi3b-darknet-*`). {lab} The papers' numbers are in "
        "`suite/data/baselines/`, each with its source and whether it is printed or read off a plot "
        "(about +-0.3 s, +-0.1x). A "
        f"ratio is ours over the paper's; every point further than {OFF:.0%} from the paper's has a "
        "paragraph on what we believe causes the difference. A point inside a published range counts 0 "
        f"in the median; a bound is met or not (counted over {OFF:.0%} when not met, never in the "
        "median).", "",
        f"*{stamp}*", "", table, "",
    ])  # fmt: skip


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")
