"""The nightly report: REPORT.md with the verdict and the tables, seaborn figures of each metric
beside the stored baseline, and the tidy tables as CSV (`measurements.csv`, `comparison.csv`)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from suite.markdown import markdown_table
from suite.schema import write_atomically

if TYPE_CHECKING:
    from suite.tracking.matrix import Baseline, Matrix

sns.set_theme(style="whitegrid", context="notebook")
FIGURES = {  # metric: (file, title, axis label)
    "speedup": ("speedup.png", "Throughput speedup", "throughput over one device's"),
    "latency_s": ("latency.png", "Latency", "latency per frame, real time (s)"),
    "bytes_moved": ("bytes_moved.png", "Bytes moved", "MB moved per frame"),
}
# each metric's error bars: the columns (nightly.cell_rows) and what they are, for the legend
BARS = {"speedup": ("speedup_low", "speedup_high", "95% bootstrap CI"),
        "latency_s": ("latency_low_s", "latency_high_s", "p10-p90 of the frames")}  # fmt: skip


def write_report(folder: Path, matrix: Matrix, measured: pd.DataFrame, comparison: pd.DataFrame,
                 baseline: Baseline | None, about: dict, failures: list[str]) -> None:  # fmt: skip
    """Everything into `folder` (a fresh folder the caller renames into place when done)."""
    write_atomically(folder / "measurements.csv", measured.to_csv(index=False))
    write_atomically(folder / "comparison.csv", comparison.to_csv(index=False))
    write_atomically(folder / "run.json", json.dumps(about, indent=1, default=str))
    render(folder, matrix, measured, comparison, baseline, about, failures)


def render(folder: Path, matrix: Matrix, measured: pd.DataFrame, comparison: pd.DataFrame,
           baseline: Baseline | None, about: dict, failures: list[str]) -> list[str]:  # fmt: skip
    """The figures and REPORT.md of a night's tables (a stored night's too: `suite nightly report`);
    the figures' file names."""
    measured = per_frame_bytes(measured, matrix)
    stored = None if baseline is None else per_frame_bytes(baseline.cells, matrix)
    drawn = []
    for metric, (name, _, _) in FIGURES.items():
        drawing = figure(measured, stored, metric, about)
        if drawing is not None:  # drawn in memory, then written whole: a stored night's figure is replaced
            png = io.BytesIO()
            drawing.savefig(png, format="png", dpi=110)
            write_atomically(folder / name, png.getvalue())
            drawn.append(name)
    write_atomically(folder / "REPORT.md", markdown(matrix, measured, per_frame_bytes(comparison, matrix),
                                                    baseline, about, failures, drawn))  # fmt: skip
    return drawn


def per_frame_bytes(cells: pd.DataFrame, matrix: Matrix) -> pd.DataFrame:
    """`cells` with bytes_moved (and baseline_bytes_moved) per frame rather than per run: a run
    moves a frame's bytes for each of its model's warm-up and measured frames."""
    frames = {w.model: w.frames + w.warmup for w in matrix.workloads}
    per_run = cells["model"].map(frames)
    columns = [c for c in ("bytes_moved", "baseline_bytes_moved") if c in cells]
    return cells.assign(**{c: cells[c] / per_run for c in columns})


def figure(measured: pd.DataFrame, stored: pd.DataFrame | None, metric: str, about: dict) -> Figure | None:
    """Per model a panel: the metric against device count per scheme, tonight's (solid, with its
    frame-to-frame spread as error bars where the cells have it) beside the baseline's (dashed,
    hollow); y from zero. None when nothing was measured."""
    data = measured[measured["scheme"] != "single"].dropna(subset=[metric])
    if data.empty:
        return None
    _, title, label = FIGURES[metric]
    models = list(dict.fromkeys(data["model"]))
    schemes = list(dict.fromkeys(data["scheme"]))
    colours = dict(zip(schemes, sns.color_palette("deep", len(schemes))))
    scale = 1e-6 if metric == "bytes_moved" else 1.0
    low, high, bars = BARS.get(metric, (None, None, None))
    drawing = Figure(figsize=(4.2 * len(models) + 2.6, 4.4), layout="constrained")
    axes = drawing.subplots(1, len(models), squeeze=False)[0]
    drew_bars = drew_baseline = False
    for ax, model in zip(axes, models):
        for scheme in schemes:
            rows = data[(data["model"] == model) & (data["scheme"] == scheme)].sort_values("devices")
            values = rows[metric] * scale
            spread = None
            if low in rows and rows[[low, high]].notna().all(axis=None):
                spread = [values - rows[low] * scale, rows[high] * scale - values]
                drew_bars = drew_bars or len(rows) > 0
            ax.errorbar(rows["devices"], values, yerr=spread, fmt="-o", color=colours[scheme], lw=2, ms=5,
                        capsize=3, elinewidth=1)  # fmt: skip
            if stored is not None:
                before = stored[(stored["model"] == model) & (stored["scheme"] == scheme)]
                before = before.sort_values("devices")
                if len(before):
                    ax.plot(before["devices"], before[metric] * scale, "--s", color=colours[scheme],
                            mfc="white", lw=1.2, ms=6)  # fmt: skip
                    drew_baseline = True
        if metric == "speedup":
            ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(model)
        ax.set_xlabel("devices")
        ax.set_xticks(sorted(set(data["devices"])))
        ax.set_ylim(bottom=0)
    axes[0].set_ylabel(label)
    git = about.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
    when = about.get("timestamp_utc") or ""  # ISO 8601 in UTC
    drawing.suptitle(f"{title}\nnightly run of matrix {about.get('matrix', '?')}, "
                     f"{when[:10]} {when[11:16]} UTC, commit {commit}", fontsize=11)  # fmt: skip
    handles = [Line2D([], [], color=colours[s], lw=2, label=s) for s in schemes]
    if drew_baseline:  # tonight's and the baseline's lines need telling apart only when both are drawn
        handles += [
            Line2D([], [], color="black", ls="-", marker="o", label="tonight"),
            Line2D([], [], color="black", ls="--", marker="s", mfc="white", label="baseline"),
        ]
    if metric == "speedup":
        handles.append(Line2D([], [], color="grey", lw=0.8, label="one device"))
    if drew_bars:
        handles.append(Line2D([], [], color="black", marker="|", ms=12, ls="none", label=f"bars: {bars}"))
    drawing.legend(handles=handles, loc="outside right center", frameon=False)
    return drawing


def markdown(matrix: Matrix, measured: pd.DataFrame, comparison: pd.DataFrame, baseline: Baseline | None,
             about: dict, failures: list[str], figures: list[str]) -> str:  # fmt: skip
    verdict = "FAIL" if failures else "PASS"
    commit = (about.get("git") or {}).get("commit", "unknown")
    dirty = " (with uncommitted changes)" if (about.get("git") or {}).get("dirty") else ""
    network = about.get("network")
    if isinstance(network, dict):
        network = (f"emulated lab '{network['name']}': {network['shaping']}; time dilated "
                   f"{network['dilation']:g}x (times below are the real fleet's: measured x dilation); link "
                   "latency not emulated")  # fmt: skip
    lines = [f"# Nightly lab run, {about.get('timestamp_utc', '')}: {verdict}", "",
             f"Matrix `{matrix.name}` ({matrix.description}): fleet {matrix.fleet}, "
             f"{', '.join(map(str, matrix.devices))} devices, schemes {', '.join(matrix.schemes)}; "
             f"commit {commit[:12]}{dirty}, host {about.get('hostname')}, "
             f"{about.get('seconds', 0) / 60:.1f} min.",
             "", f"Network: {network or 'not reached'}.", ""]  # fmt: skip
    if baseline is None:
        lines += ["No stored baseline for this matrix: nothing compared. Write one from two clean runs with "
                  "`suite nightly baseline RUN RUN`.", ""]  # fmt: skip
    else:
        tol = ", ".join(f"{m} {v:.0%}" for m, v in baseline.tolerance.items())
        noise = ", ".join(f"{m} {v:.1%}" for m, v in baseline.noise.items())
        lines += [
            f"Compared with `{baseline.path.name}`: tolerances {tol} (measured run-to-run noise: {noise}).",
            "",
        ]
    if failures:
        lines += ["## Failures", "", *[f"- {f}" for f in failures], ""]
    counts = comparison["verdict"].value_counts().to_dict() if len(comparison) else {}
    lines += ["## Cells", "", ", ".join(f"{n} {v}" for v, n in counts.items()) or "none ran", ""]
    if len(comparison):
        lines += [_table(_cells(comparison)), ""]
    for name in figures:
        lines += [f"![{name}]({name})", ""]
    if len(measured):
        lines += ["## Measured (real time)", "", _table(_measured(measured)), ""]
    return "\n".join(lines)


def _cells(comparison: pd.DataFrame) -> pd.DataFrame:
    def pair(metric: str, fmt: str, scale: float = 1.0):
        return [("" if pd.isna(now) else format(now * scale, fmt))
                + ("" if pd.isna(before) else f" ({format(before * scale, fmt)})")
                for now, before in zip(comparison[metric], comparison[f"baseline_{metric}"])]  # fmt: skip

    twice = [v + (" (measured twice)" if again else "")
             for v, again in zip(comparison["verdict"], comparison["remeasured"])]  # fmt: skip
    return pd.DataFrame({"model": comparison["model"], "devices": comparison["devices"],
                         "scheme": comparison["scheme"], "speedup (baseline)": pair("speedup", ".2f"),
                         "latency s (baseline)": pair("latency_s", ".3f"),
                         "MB moved per frame (baseline)": pair("bytes_moved", ".3f", 1e-6),
                         "verdict": twice})  # fmt: skip


def _measured(measured: pd.DataFrame) -> pd.DataFrame:
    energy = measured.get("energy_per_frame_j")  # None for a night from before energy was reported
    table = measured[["model", "devices", "scheme", "input_size", "frames", "throughput_fps", "latency_s",
                      "throughput_error", "latency_error", "bit_exact"]].copy()  # fmt: skip
    for column in ("throughput_error", "latency_error"):
        table[column] = [("" if pd.isna(v) else f"{v:+.0%}") for v in table[column]]
    table["throughput_fps"] = table["throughput_fps"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    table["latency_s"] = table["latency_s"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    if energy is not None:  # from the fleet's published power figures (suite.runtime.energy)
        table.insert(7, "J per frame", energy.map(lambda v: "" if pd.isna(v) else f"{v:.3g}"))
    return table.rename(columns={"throughput_error": "throughput vs predicted",
                                 "latency_error": "latency vs predicted"})  # fmt: skip


def _table(frame: pd.DataFrame) -> str:
    """A markdown table, a missing value a blank cell."""
    return markdown_table(frame.columns, frame.itertuples(index=False),
                          lambda v: "" if pd.isna(v) else str(v))  # fmt: skip
