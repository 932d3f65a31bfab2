"""`suite compare`: measured runs side by side, from the folders `suite run -o` writes.

Every figure is read through one function, `load_result`, which takes what a summary.json has and
leaves out what it lacks (older runs, runs without a baseline, profiles without power), so the
table and the figure work on any mix of result folders. Latencies and throughputs are real-time
figures (a dilated lab's times are scaled back to the fleet it emulates).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from suite.errors import UserError
from suite.runtime.outcome import RunSummary
from suite.schema import write_atomically

GROUP = ("model", "fleet", "scheme", "backend")


@dataclass(frozen=True)
class Result:
    """One run's figures as compare shows them; None where its results do not have the figure."""

    path: str
    model: str
    fleet: str
    scheme: str
    backend: str
    variant: str  # what tells apart runs of one scheme in a sweep: devices, grid, frames in flight
    devices: int
    frames: int
    bit_exact: bool
    complete: bool
    latency_p50_s: float | None
    latency_p90_s: float | None
    latency_p99_s: float | None
    throughput_fps: float | None
    speedup: float | None  # throughput over the single device's
    speedup_low: float | None  # its confidence interval, where the run has one
    speedup_high: float | None
    latency_speedup: float | None
    bytes_per_frame: float | None
    energy_per_frame_j: float | None
    energy_ratio: float | None  # over the single device's energy per frame
    host_energy_per_frame_j: float | None  # this host's RAPL package energy (every process on it)
    throughput_vs_predicted: float | None  # measured over predicted
    latency_vs_predicted: float | None


def load_result(path: str | Path) -> Result:
    """A result folder (or its summary.json) as a `Result`, its summary read by
    `RunSummary.from_json`; a path that is not one is a UserError naming it. A summary without
    `statistics` (latency percentiles and a bootstrap speedup interval), `energy` or `predicted` (an
    older suite's) loads with those figures missing; percentiles then come from frames.csv."""
    path = Path(path)
    folder = path.parent if path.name == "summary.json" and path.is_file() else path
    if not folder.exists():
        raise UserError(f"{path}: no such result folder")
    if not folder.is_dir():
        raise UserError(f"{path} is not a result folder (`suite run -o DIR` writes one with summary.json)")
    summary_file = folder / "summary.json"
    if not summary_file.is_file():
        raise UserError(f"{path}: no summary.json here; give a folder that `suite run -o DIR` wrote")
    try:
        document = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{summary_file}: not a readable run summary ({exc}); give a folder that `suite "
                        "run -o DIR` wrote") from None  # fmt: skip
    try:
        s = RunSummary.from_json(document)
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        why = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UserError(f"{summary_file}: not a run summary ({why}); give a folder that `suite run -o DIR` "
                        "wrote") from None  # fmt: skip
    dilation = _number(s.network.dilation) or 1.0
    latency = _number(s.real_time.latency_s) or _number(s.latency_s)
    throughput = _number(s.real_time.throughput_fps) or _number(s.throughput_fps)
    figures = s.statistics
    if figures is None:
        p50, p90, p99 = _percentiles(folder / "frames.csv", dilation)
        latency = latency or p50
    else:
        p90, p99 = figures.latency_s.p90 * dilation, figures.latency_s.p99 * dilation
    ci = None if figures is None else figures.speedup_vs_single
    energy = s.energy or {}
    runs = s.frames + s.warmup  # bytes_moved counts warm-up frames too
    return Result(
        path=str(folder), model=s.model, fleet=s.fleet, scheme=s.scheme, backend=s.backend,
        variant=_variant(s, folder / "plan.json"), devices=s.devices, frames=s.frames,
        bit_exact=s.bit_exact, complete=s.complete,
        latency_p50_s=latency, latency_p90_s=p90, latency_p99_s=p99, throughput_fps=throughput,
        speedup=_number(s.speedup_vs_single), speedup_low=None if ci is None else ci.low,
        speedup_high=None if ci is None else ci.high, latency_speedup=_number(s.latency_speedup_vs_single),
        bytes_per_frame=s.bytes_moved / runs if runs else None,
        energy_per_frame_j=_number(energy.get("per_frame_j")),
        energy_ratio=_number(energy.get("ratio_vs_single")),
        host_energy_per_frame_j=_number(_get(energy, "rapl", "per_frame_j")),
        throughput_vs_predicted=None if s.predicted is None else _plus_one(s.predicted.throughput_error),
        latency_vs_predicted=None if s.predicted is None else _plus_one(s.predicted.latency_error),
    )  # fmt: skip


def _get(document: Mapping, *keys: str):
    """A nested value, or None where any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(document, Mapping):
            return None
        document = document.get(key)
    return document


def _number(value) -> float | None:
    """A finite number, or None (missing, null, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _plus_one(error) -> float | None:
    """A summary's error (measured / predicted - 1) as the ratio measured / predicted."""
    error = _number(error)
    return None if error is None else 1 + error


def _percentiles(frames_csv: Path, dilation: float) -> tuple[float | None, float | None, float | None]:
    """Median, 90th and 99th percentile latency of the plan's timed frames in frames.csv."""
    try:
        frames = pd.read_csv(frames_csv)
        timed = frames[(frames["run"] == "plan") & ~frames["warmup"].astype(bool)]["latency_s"].dropna()
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return None, None, None
    if timed.empty:
        return None, None, None
    p50, p90, p99 = np.percentile(timed.to_numpy(float) * dilation, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def _variant(summary: RunSummary, plan_json: Path) -> str:
    """What sets this run apart from others of its scheme: devices, a DeepThings grid, frames in flight."""
    parts = [f"{summary.devices} dev"]
    try:
        options = json.loads(plan_json.read_text(encoding="utf-8")).get("options") or {}
    except (OSError, ValueError, AttributeError):
        options = {}
    if isinstance(options, Mapping) and isinstance(options.get("grid"), str):
        parts.append(f"grid {options['grid']}")
    if summary.in_flight > 1:
        parts.append(f"{summary.in_flight} in flight")
    return ", ".join(parts)


def compare_table(results: Sequence[Result]) -> pd.DataFrame:
    """One row per run, grouped by model, fleet, scheme and backend (sorted so a group's runs sit
    together), the result folders' order kept within a group."""
    table = pd.DataFrame([asdict(r) for r in results], columns=[f.name for f in fields(Result)])
    return table.sort_values(list(GROUP), kind="stable").reset_index(drop=True)


def pareto_front(latency: Sequence[float], throughput: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats: none has lower-or-equal latency and higher-or-equal
    throughput with one of them strictly better. Sorted by latency."""
    points = list(zip(latency, throughput))
    front = [i for i, (lat, thr) in enumerate(points)
             if not any(a <= lat and b >= thr and (a < lat or b > thr) for a, b in points)]  # fmt: skip
    return sorted(front, key=lambda i: (latency[i], -throughput[i]))


def on_front(table: pd.DataFrame) -> pd.Series:
    """Whether each run is on the latency-throughput Pareto front of its model and fleet."""
    flags = pd.Series(False, index=table.index)
    usable = table.dropna(subset=["latency_p50_s", "throughput_fps"])
    for _, group in usable.groupby(["model", "fleet"], sort=False):
        front = pareto_front(list(group["latency_p50_s"]), list(group["throughput_fps"]))
        flags[group.index[front]] = True
    return flags


# ---- text ------------------------------------------------------------------------------------------

COLUMNS = {  # column: (heading, format)
    "variant": ("variant", "{}"),
    "latency_p50_s": ("p50 ms", "{:.1f}"),
    "latency_p90_s": ("p90 ms", "{:.1f}"),
    "latency_p99_s": ("p99 ms", "{:.1f}"),
    "throughput_fps": ("fps", "{:.3g}"),
    "speedup": ("speedup", "{:.2f}x"),
    "bytes_per_frame": ("MB/frame", "{:.3g}"),
    "energy_per_frame_j": ("J/frame", "{:.3g}"),
    "energy_ratio": ("J vs single", "{:.2f}"),
    "throughput_vs_predicted": ("fps meas/pred", "{:.2f}"),
    "latency_vs_predicted": ("lat meas/pred", "{:.2f}"),
}
SCALE = {"latency_p50_s": 1e3, "latency_p90_s": 1e3, "latency_p99_s": 1e3, "bytes_per_frame": 1e-6}


def describe(table: pd.DataFrame) -> str:
    """The table as text: a heading per model and fleet, a row per run, '-' where a run lacks a figure;
    a speedup's confidence interval beside it where the run has one; '*' marks the Pareto front."""
    front = on_front(table)
    lines = []
    for (model, fleet), group in table.groupby(["model", "fleet"], sort=False):
        lines.append(f"{model} on {fleet}:")
        rows = [["scheme", "backend", *(h for h, _ in COLUMNS.values()), "exact"]]
        for i, r in group.iterrows():
            cells = [r["scheme"] + ("*" if front[i] else ""), r["backend"]]
            for column, (_, fmt) in COLUMNS.items():
                value = r[column]
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    cells.append("-")
                    continue
                text = fmt.format(value * SCALE.get(column, 1))
                if column == "speedup" and pd.notna(r["speedup_low"]) and pd.notna(r["speedup_high"]):
                    text += f" [{r['speedup_low']:.2f}, {r['speedup_high']:.2f}]"
                cells.append(text)
            cells.append("yes" if r["bit_exact"] else "NO" if r["complete"] else "incomplete")
            rows.append(cells)
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.append("* on the latency-throughput Pareto front of its model and fleet; latencies and fps in real "
                 "time; meas/pred: measured over the cost model's prediction")  # fmt: skip
    return "\n".join(lines)


def records(table: pd.DataFrame) -> list[dict]:
    """The table as JSON records (NaN as null), each with its `pareto` flag."""
    table = table.assign(pareto=on_front(table))
    return json.loads(table.to_json(orient="records"))


# ---- figure ----------------------------------------------------------------------------------------


def figure(table: pd.DataFrame):
    """Three panels: throughput speedup per run (with its interval where there is one), energy per
    frame, and latency against throughput with the Pareto front, per model and fleet."""
    import seaborn as sns
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    sns.set_theme(style="whitegrid", context="notebook")
    schemes = list(dict.fromkeys(table["scheme"]))
    colour = dict(zip(schemes, sns.color_palette("deep", len(schemes))))
    fig = Figure(figsize=(16, 6.2), layout="constrained")
    speed, energy, pareto = fig.subplots(1, 3)
    groups = list(dict.fromkeys(zip(table["model"], table["fleet"])))
    labels = [f"{r.scheme}, {r.variant}" + (f"\n{r.model}, {r.fleet}" if len(groups) > 1 else "")
              for r in table.itertuples()]  # fmt: skip
    x = np.arange(len(table))
    panels = (
        (speed, "speedup", "throughput speedup over one device", "speedup (x)"),
        (energy, "energy_per_frame_j", "energy per frame (published power)", "joules per frame"),
    )
    for ax, column, title, unit in panels:
        values = table[column].astype(float)
        ax.bar(x, values.fillna(0), color=[colour[s] for s in table["scheme"]])
        if column == "speedup":
            has_ci = table["speedup_low"].notna() & table["speedup_high"].notna()
            low, high = table["speedup_low"].astype(float), table["speedup_high"].astype(float)
            shown = values[has_ci]
            ax.errorbar(x[has_ci], shown, yerr=[shown - low[has_ci], high[has_ci] - shown], fmt="none",
                        ecolor="0.2", capsize=4)  # fmt: skip
            ax.axhline(1, color="0.4", lw=1, ls="--")
        for k in np.flatnonzero(values.isna().to_numpy()):
            ax.text(x[k], 0, "n/a", ha="center", va="bottom", color="0.4", fontsize=9)
        ax.set_xticks(x, labels, fontsize=8, rotation=30, ha="right", rotation_mode="anchor")
        ax.set(title=title, ylabel=unit, ylim=(0, None))
    front = on_front(table)
    plotted = table.dropna(subset=["latency_p50_s", "throughput_fps"])
    markers = dict(zip(dict.fromkeys(zip(plotted["model"], plotted["fleet"])), "os^Dvp*"))
    for (model, fleet), group in plotted.groupby(["model", "fleet"], sort=False):
        for i, r in group.iterrows():
            pareto.scatter(r["latency_p50_s"] * 1e3, r["throughput_fps"], color=colour[r["scheme"]],
                           marker=markers[(model, fleet)], s=90 if front[i] else 45, zorder=3,
                           edgecolor="black" if front[i] else "none")  # fmt: skip
            pareto.annotate(r["variant"], (r["latency_p50_s"] * 1e3, r["throughput_fps"]), fontsize=8,
                            xytext=(4, 4), textcoords="offset points")  # fmt: skip
        best = group[front[group.index]].sort_values("latency_p50_s")
        pareto.step(best["latency_p50_s"] * 1e3, best["throughput_fps"], where="post", color="0.2", lw=1.2,
                    ls="--", zorder=2)  # fmt: skip
    right = (plotted["latency_p50_s"].max() * 1e3 * 1.3) if len(plotted) else None  # room for the labels
    top = plotted["throughput_fps"].max() * 1.15 if len(plotted) else None
    pareto.set(title="latency vs throughput (Pareto front dashed)", xlabel="median latency (ms, real time)",
               ylabel="throughput (frames/s, real time)", xlim=(0, right), ylim=(0, top))  # fmt: skip
    handles = [Line2D([], [], marker="o", ls="none", color=c, label=s) for s, c in colour.items()]
    handles += [Line2D([], [], marker=m, ls="none", color="0.4", label=f"{model}, {fleet}")
                for (model, fleet), m in markers.items()]  # fmt: skip
    handles.append(Line2D([], [], marker="o", ls="--", color="0.2", mfc="white", mec="black",
                          label="Pareto front (outlined)"))  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
    where = f" of {groups[0][0]} on {groups[0][1]}" if len(groups) == 1 else ""
    fig.suptitle(f"suite compare: {len(table)} runs{where}", fontsize=13)
    return fig


def save_figure(table: pd.DataFrame, path: Path) -> None:
    """Draw the figure to `path` whole (`schema.write_atomically`)."""
    png = io.BytesIO()
    figure(table).savefig(png, format="png", dpi=110)
    write_atomically(path, png.getvalue())
