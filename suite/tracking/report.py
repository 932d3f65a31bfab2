"""The nightly report: REPORT.md with the verdict and the tables, seaborn figures of each metric
beside the stored baseline, and the tidy tables as CSV (`measurements.csv`, `comparison.csv`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from suite.schema import write_atomically

if TYPE_CHECKING:
    from suite.tracking.nightly import Baseline, Matrix

sns.set_theme(style="whitegrid", context="notebook")
FIGURES = {  # metric: (file, axis label)
    "speedup": ("speedup.png", "throughput speedup over one device"),
    "latency_s": ("latency.png", "latency per frame, real time (s)"),
    "bytes_moved": ("bytes_moved.png", "bytes moved per run (MB)"),
}


def write_report(folder: Path, matrix: Matrix, measured: pd.DataFrame, comparison: pd.DataFrame,
                 baseline: Baseline | None, about: dict, failures: list[str]) -> None:  # fmt: skip
    """Everything into `folder` (a fresh folder the caller renames into place when done)."""
    write_atomically(folder / "measurements.csv", measured.to_csv(index=False))
    write_atomically(folder / "comparison.csv", comparison.to_csv(index=False))
    write_atomically(folder / "run.json", json.dumps(about, indent=1, default=str))
    drawn = [name for metric, (name, label) in FIGURES.items()
             if _draw(measured, baseline, metric, label, folder / name)]  # fmt: skip
    write_atomically(folder / "REPORT.md", markdown(matrix, measured, comparison, baseline, about, failures,
                                                    drawn))  # fmt: skip


def _draw(measured: pd.DataFrame, baseline: Baseline | None, metric: str, label: str, path: Path) -> bool:
    """Per model a panel: the metric against device count per scheme, measured (solid) beside the
    baseline (dashed, hollow). False when nothing was measured."""
    data = measured[measured["scheme"] != "single"].dropna(subset=[metric])
    if data.empty:
        return False
    models = list(dict.fromkeys(data["model"]))
    schemes = list(dict.fromkeys(data["scheme"]))
    colours = dict(zip(schemes, sns.color_palette("deep", len(schemes))))
    scale = 1e-6 if metric == "bytes_moved" else 1.0
    figure = Figure(figsize=(4.2 * len(models), 3.8), layout="constrained")
    axes = figure.subplots(1, len(models), squeeze=False)[0]
    stored = None if baseline is None else baseline.cells
    for ax, model in zip(axes, models):
        for scheme in schemes:
            rows = data[(data["model"] == model) & (data["scheme"] == scheme)].sort_values("devices")
            ax.plot(rows["devices"], rows[metric] * scale, "-o", color=colours[scheme], lw=2, ms=5)
            if stored is not None:
                before = stored[(stored["model"] == model) & (stored["scheme"] == scheme)]
                before = before.sort_values("devices")
                ax.plot(before["devices"], before[metric] * scale, "--s", color=colours[scheme], mfc="white",
                        lw=1.2, ms=6)  # fmt: skip
        if metric == "speedup":
            ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(model)
        ax.set_xlabel("devices")
        ax.set_xticks(sorted(set(data["devices"])))
    axes[0].set_ylabel(label)
    handles = [Line2D([], [], color=colours[s], lw=2, label=s) for s in schemes]
    handles += [Line2D([], [], color="black", ls="-", marker="o", label="tonight"),
                Line2D([], [], color="black", ls="--", marker="s", mfc="white", label="baseline")]
    figure.legend(handles=handles, loc="outside right center", frameon=False)
    figure.savefig(path, dpi=110)
    return True


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
        lines += [f"Compared with `{baseline.path.name}`: tolerances {tol} (measured run-to-run noise: "
                  f"{noise}).", ""]
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
                         "MB moved (baseline)": pair("bytes_moved", ".2f", 1e-6),
                         "verdict": twice})  # fmt: skip


def _measured(measured: pd.DataFrame) -> pd.DataFrame:
    table = measured[["model", "devices", "scheme", "input_size", "frames", "throughput_fps", "latency_s",
                      "throughput_error", "latency_error", "bit_exact"]].copy()  # fmt: skip
    for column in ("throughput_error", "latency_error"):
        table[column] = [("" if pd.isna(v) else f"{v:+.0%}") for v in table[column]]
    table["throughput_fps"] = table["throughput_fps"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    table["latency_s"] = table["latency_s"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return table.rename(columns={"throughput_error": "throughput vs predicted",
                                 "latency_error": "latency vs predicted"})  # fmt: skip


def _table(frame: pd.DataFrame) -> str:
    """A markdown table (pandas' to_markdown needs tabulate, not a dependency of the suite)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]  # fmt: skip
    return "\n".join([header, rule, *body])
