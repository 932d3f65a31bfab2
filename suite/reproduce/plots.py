"""Each figure drawn on the paper's axes, the published points beside ours (seaborn over matplotlib).

One look everywhere: a colour per scheme (or model, or fleet); published points hollow with dashed
lines, our predicted ones filled with solid lines, simulated ones dotted with crosses, and measured
ones (the emulated lab's `measured_*` columns, when a table has them) as solid triangles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, ScalarFormatter

from suite.reproduce.common import CLOCKS_MHZ, Outcome

sns.set_theme(style="whitegrid", context="notebook")
PALETTE = sns.color_palette("deep")
SCHEME_COLOUR = {"lw": PALETTE[0], "efl": PALETTE[1], "ofl": PALETTE[2], "pico": PALETTE[3],
                 "modnn": PALETTE[0], "deepthings": PALETTE[1], "deepthings-reuse": PALETTE[2],
                 "halp": PALETTE[4]}  # fmt: skip
NAMES = {"lw": "LW", "efl": "EFL", "ofl": "OFL", "pico": "PICO", "modnn": "MoDNN", "deepthings": "FTP 5x5",
         "deepthings-reuse": "FTP 5x5 + reuse", "halp": "HALP"}  # fmt: skip
SOURCES = {  # how each source is drawn: line style, marker, marker face
    "published": {"ls": "--", "marker": "s", "mfc": "white", "ms": 7, "lw": 1.5},
    "predicted": {"ls": "-", "marker": "o", "ms": 5, "lw": 2},
    "simulated": {"ls": ":", "marker": "x", "ms": 6, "lw": 1.2},
    "measured": {"ls": "none", "marker": "^", "ms": 7},
    "wire": {"ls": "-.", "marker": "D", "ms": 5, "lw": 1.2},  # as a peer's own code sends it
}
BAR_STYLE = {  # bars: published hollow and hatched, predicted solid, simulated light, measured dark
    "published": {"fill": False, "hatch": "///"},
    "predicted": {"alpha": 1.0},
    "simulated": {"alpha": 0.45},
    "measured": {"alpha": 1.0, "hatch": ".."},
    "wire": {"alpha": 0.7, "hatch": "xx"},
}


def _sources(table: pd.DataFrame, quantity: str) -> list[str]:
    return [s for s in SOURCES if f"{s}_{quantity}" in table and table[f"{s}_{quantity}"].notna().any()]


def _lines(ax, data: pd.DataFrame, x: str, quantity: str, colour, sources: list[str] | None = None) -> None:
    for source in sources or _sources(data, quantity):
        column = f"{source}_{quantity}"
        points = data[[x, column]].dropna()
        if len(points):
            ax.plot(points[x], points[column], color=colour, **SOURCES[source])


def _bars(ax, data: pd.DataFrame, groups: list, group: str, quantity: str, colours: dict,
          sources: list[str]) -> None:  # fmt: skip
    """Bars of `quantity` per value of `group`, one bar per source side by side."""
    width = 0.8 / len(sources)
    for k, source in enumerate(sources):
        for i, value in enumerate(groups):
            rows = data[data[group] == value][f"{source}_{quantity}"].dropna()
            if len(rows):
                style = dict(BAR_STYLE[source])
                ax.bar(
                    i + (k - (len(sources) - 1) / 2) * width,
                    rows.iloc[0],
                    width,
                    **_face(style, colours[value]),
                    **style,
                )
    ax.set_xticks(range(len(groups)), [NAMES.get(g, g) if isinstance(g, str) else g for g in groups])


def _face(style: dict, colour) -> dict:
    """A hollow bar takes the colour on its edge, a filled one on its face."""
    return {"edgecolor": colour} if style.get("fill") is False else {"color": colour}


def _handles(colours: dict | None = None, lines: list[str] = (), bars: list[str] = ()) -> list:
    """Legend entries: a patch per colour, a line per drawn source, a bar per drawn source."""
    handles = [Patch(color=c, label=NAMES.get(k, str(k))) for k, c in (colours or {}).items()]
    handles += [Line2D([], [], color="0.3", label=s, **SOURCES[s]) for s in lines]
    handles += [Patch(facecolor="white" if BAR_STYLE[s].get("fill") is False else "0.4", edgecolor="0.3",
                      hatch=BAR_STYLE[s].get("hatch"), alpha=BAR_STYLE[s].get("alpha", 1), label=f"{s} (bar)")
                for s in bars]  # fmt: skip
    return handles


def _legend(fig: Figure, handles: list) -> None:
    """One legend for the whole figure, under its panels, clear of every line and bar; as many
    columns as fit the figure's width (an entry is about 7 points per character plus its key)."""
    longest = max(len(h.get_label()) for h in handles)
    fits = int(fig.get_figwidth() * 72 / (7 * longest + 45))
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, min(len(handles), fits, 6)),
               frameon=False)  # fmt: skip


def _figure(outcome: Outcome, rows: int, cols: int, figsize: tuple[float, float], **kwargs
            ) -> tuple[Figure, np.ndarray]:  # fmt: skip
    """A figure of rows x cols panels under the figure's name and title. It is not registered with
    pyplot, so nothing needs closing: it goes when the caller drops it."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    fig.suptitle(f"{outcome.name}: {outcome.title}", fontsize=13)
    return fig, axes


# ---- PICO ------------------------------------------------------------------------------------------


OFF_SCALE = 1.5  # a measured point this far over every other point of its panel is drawn at its edge


def _per_clock(row, t: pd.DataFrame, clocks, colours: dict, quantity: str, title: str, ylabel: str) -> None:
    """One panel per clock in `row`: `quantity` against the device count, a line per scheme."""
    for ax, clock in zip(row, clocks):
        panel = t[t.clock_mhz == clock]
        for scheme, colour in colours.items():
            _lines(ax, panel[panel.scheme == scheme], "devices", quantity, colour)
        ax.set(
            title=f"{title}, {clock} MHz", xlabel="devices", ylabel=ylabel, ylim=(0, None), xticks=range(1, 9)
        )
        _measured_off_scale(ax, panel, quantity, colours)


def _measured_off_scale(ax, panel: pd.DataFrame, quantity: str, colours: dict) -> None:
    """Measured points far above the panel's other points (a lab's upper bound, see
    docs/lab.md) would squeeze every line into the bottom: the axis stops above the others and
    each such point is drawn at the top edge, pointing up, with its value."""
    column = f"measured_{quantity}"
    others = [
        panel[f"{s}_{quantity}"].max() for s in SOURCES if s != "measured" and f"{s}_{quantity}" in panel
    ]
    if column not in panel or not others or not panel[column].notna().any():
        return
    top = OFF_SCALE * max(others)
    if panel[column].max() <= top:
        return
    ax.set_ylim(0, top)
    for scheme, devices, value in zip(panel.scheme, panel.devices, panel[column]):
        if value > top:
            ax.annotate(f"{value:.0f} s", (devices, top), xytext=(0, -14), textcoords="offset points",
                        ha="center", fontsize=9, color=colours[scheme],
                        arrowprops={"arrowstyle": "-|>", "color": colours[scheme]})  # fmt: skip


def periods(outcome: Outcome) -> Figure:
    """Fig. 8 / 9: period vs devices per clock (top), 8-device throughput per scheme (bottom)."""
    t = outcome.table
    fig, axes = _figure(outcome, 2, 3, figsize=(16, 10), gridspec_kw={"height_ratios": [3, 2]})
    schemes = list(dict.fromkeys(t.scheme))
    colours = {s: SCHEME_COLOUR[s] for s in schemes}
    _per_clock(axes[0], t, CLOCKS_MHZ, colours, "period_s", "period", "inference period (s)")
    sources = _sources(t, "throughput_fpm")
    _legend(fig, _handles(colours, _sources(t, "period_s"), sources))
    for ax, clock in zip(axes[1], CLOCKS_MHZ):
        _bars(ax, t[(t.clock_mhz == clock) & (t.devices == 8)], schemes, "scheme", "throughput_fpm", colours,
              sources)  # fmt: skip
        ax.set(title=f"throughput with 8 devices, {clock} MHz", ylabel="frames per minute")
    return fig


def speedups(outcome: Outcome) -> Figure:
    """Fig. 12: PICO's 8-device speedup per clock, one panel per model."""
    t = outcome.table
    models = list(dict.fromkeys(t.model))
    fig, axes = _figure(outcome, 1, len(models), figsize=(12, 4.8), sharey=True)
    sources = _sources(t, "speedup")
    colours = {c: PALETTE[3] for c in CLOCKS_MHZ}
    for ax, model in zip(axes[0], models):
        _bars(ax, t[t.model == model], list(CLOCKS_MHZ), "clock_mhz", "speedup", colours, sources)
        ax.set_xticks(range(len(CLOCKS_MHZ)), [f"{c} MHz" for c in CLOCKS_MHZ])
        ax.axhline(8, color="0.5", lw=1, ls="-.")
        ax.set(title=f"{model}, 8 devices", ylabel="PICO throughput speedup (x)", ylim=(0, 8.6))
    _legend(fig, _handles(bars=sources))
    axes[0][-1].text(2.45, 8.1, "8 devices", ha="right", color="0.4", fontsize=9)
    return fig


def heterogeneous(outcome: Outcome) -> Figure:
    """Table I: utilisation and redundancy per scheme, one row of panels per model; utilisation also
    measured where the lab measured it."""
    t = outcome.table
    models = list(dict.fromkeys(t.model))
    fig, axes = _figure(outcome, len(models), 2, figsize=(12, 4.2 * len(models)))
    schemes = ["lw", "efl", "ofl", "pico"]
    colours = {s: SCHEME_COLOUR[s] for s in schemes}
    for row, model in zip(axes, models):
        data = t[t.model == model]
        for ax, quantity, label in zip(row, ("utilisation_pct", "redundancy_pct"),
                                       ("average utilisation (%)", "redundancy (%)")):  # fmt: skip
            sources = _sources(data, quantity)
            _bars(ax, data, schemes, "scheme", quantity, colours, sources)
            ax.set(title=f"{model}: {label}", ylabel=label)
            if sources == ["published"]:
                ax.text(0.5, 0.5, "ours: not reproduced here (see the report)", transform=ax.transAxes,
                        ha="center", color="0.2",
                        bbox={"facecolor": "white", "edgecolor": "0.6"})  # fmt: skip
    _legend(fig, _handles(colours, bars=_sources(t, "utilisation_pct")))  # measured: from the lab
    return fig


def planning(outcome: Outcome) -> Figure:
    """Table II: planning time per (pieces, devices) on a log axis, and the DP's gap to the optimum."""
    t = outcome.table
    fig, axes = _figure(outcome, 1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0][0]
    x = np.arange(len(t))
    cases = [f"({a}, {b})" for a, b in zip(t.layers, t.devices)]
    ax.plot(x, t.published_exhaustive_time_s, color=PALETTE[0], **SOURCES["published"],
            label="paper: exhaustive (breadth-first)")  # fmt: skip
    published = zip(t.published_exhaustive_time_s_bound, t.published_exhaustive_time_s)
    for i, (bound, value) in enumerate(published):
        if bound != "=":  # an arrow from the bound towards where the time lies
            ax.annotate(
                "",
                (i, value * (3 if bound == ">" else 1 / 3)),
                (i, value),
                arrowprops={"arrowstyle": "->", "color": PALETTE[0]},
            )
    ax.axhline(1.0, color=PALETTE[3], ls="--", lw=1.5, label="paper: PICO's DP, under 1 s in every case")
    ax.plot(
        x, t.ours_exhaustive_time_s, color=PALETTE[0], ls="-", marker="o", label="ours: exhaustive (pruned)"
    )
    ax.plot(x, t.ours_dp_time_s, color=PALETTE[3], ls="-", marker="o", label="ours: PICO's DP")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 3e4)
    ax.set_xticks(x, cases)
    ax.set(xlabel="(pieces, devices)", ylabel="planning time (s)", title="planning time")
    ax.legend(loc="upper left", fontsize=9)
    ax = axes[0][1]
    ax.bar(x, t.predicted_dp_gap_pct.fillna(0), color=PALETTE[3])
    ax.set_xticks(x, cases, rotation=45)
    ax.set(
        xlabel="(pieces, devices)", ylabel="DP period over the optimum (%)", title="DP's gap to exhaustive"
    )
    return fig


def poisson_load(outcome: Outcome) -> Figure:
    """Fig. 10b: mean latency at 100% of EFL's capacity per clock and scheme."""
    t = outcome.table
    fig, axes = _figure(outcome, 1, 1, figsize=(10, 5.6))
    ax = axes[0][0]
    schemes = list(dict.fromkeys(t.scheme))
    sources = [s for s in ("published", "simulated", "measured") if f"{s}_latency_s" in t]
    width = 0.8 / len(schemes)
    top = np.nanmax(t[[f"{s}_latency_s" for s in sources]].to_numpy()) * 1.15
    for k, scheme in enumerate(schemes):
        data = t[t.scheme == scheme].set_index("clock_mhz").loc[list(CLOCKS_MHZ)]
        offsets = np.arange(len(CLOCKS_MHZ)) + (k - (len(schemes) - 1) / 2) * width
        half = width / len(sources)
        for j, source in enumerate(sources):
            style = BAR_STYLE[source]
            ax.bar(
                offsets + (j - (len(sources) - 1) / 2) * half,
                data[f"{source}_latency_s"],
                half,
                **_face(style, SCHEME_COLOUR[scheme]),
                **style,
            )
        theorem = data.predicted_latency_s.to_numpy()
        ax.plot(offsets, np.where(np.isinf(theorem), top * 0.97, theorem), "D", color="black", ms=5)
        for x, value in zip(offsets, theorem):
            if np.isinf(value):
                ax.text(x + 0.03, top * 0.97, "inf", va="center", fontsize=9)
    ax.set_xticks(range(len(CLOCKS_MHZ)), [f"{c} MHz" for c in CLOCKS_MHZ])
    ax.set(ylabel="mean latency (s)", ylim=(0, top))
    handles = _handles({s: SCHEME_COLOUR[s] for s in schemes}, bars=sources)
    handles.append(
        Line2D([], [], ls="none", marker="D", color="black", label="predicted (M/D/1; inf at the top)")
    )
    _legend(fig, handles)
    return fig


# ---- DeepThings, HALP, MoDNN -----------------------------------------------------------------------


def deepthings(outcome: Outcome) -> Figure:
    """Fig. 13: latency vs devices; communication per frame; memory reduction per device."""
    t = outcome.table
    fig, axes = _figure(outcome, 1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [5, 3, 3]})
    ax = axes[0][0]
    curves = {"modnn": t[t.scheme == "modnn"]}
    curves |= {s: t[(t.scheme == s) & (t.grid == "5x5")] for s in ("deepthings", "deepthings-reuse")}
    for scheme, data in curves.items():
        _lines(ax, data.dropna(subset=["predicted_latency_s"]), "devices", "latency_s", SCHEME_COLOUR[scheme])
    ax.set(
        ylim=(0, None),
        xlabel="edge devices",
        ylabel="single-frame latency (s)",
        title="latency, YOLOv2 16 layers at 608x608",
    )
    _legend(
        fig,
        _handles(
            {s: SCHEME_COLOUR[s] for s in curves},
            _sources(t, "latency_s"),
            list(dict.fromkeys(_sources(t, "comm_mb") + _sources(t, "memory_reduction_pct"))),
        ),
    )
    for ax, quantity, label in (
        (axes[0][1], "comm_mb", "communication per frame (MB)"),
        (axes[0][2], "memory_reduction_pct", "memory per device, less than one (%)"),
    ):
        data = t.dropna(subset=[f"published_{quantity}"]).copy()
        data["case"] = [("MoDNN" if s == "modnn" else f"FTP {g}" + (" + reuse" if s != "deepthings" else ""))
                        + f", {d} dev" for s, g, d in zip(data.scheme, data.grid, data.devices)]  # fmt: skip
        colours = {c: SCHEME_COLOUR[s] for c, s in zip(data.case, data.scheme)}
        _bars(ax, data, list(data.case), "case", quantity, colours, _sources(data, quantity))
        ax.tick_params(axis="x", labelrotation=20)
        ax.set(ylabel=label, title=label)
        if quantity == "comm_mb":
            ax.set_yscale("log")
    return fig


def halp(outcome: Outcome) -> Figure:
    """Speedups per fleet against the abstracts' ranges; reliability vs deadline under fading."""
    t = outcome.table
    fig, axes = _figure(outcome, 1, 2, figsize=(15, 6))
    ax = axes[0][0]
    speed = t[t.deadline_s.isna()]
    fleets = list(dict.fromkeys(speed.fleet))
    cases = [("halp", 1), ("halp", 4), ("modnn", 1)]
    colours = [SCHEME_COLOUR["halp"], sns.desaturate(SCHEME_COLOUR["halp"], 0.4), SCHEME_COLOUR["modnn"]]
    width = 0.8 / len(cases)
    for k, ((scheme, tasks), colour) in enumerate(zip(cases, colours)):
        rows = speed[(speed.scheme == scheme) & (speed.tasks_per_batch == tasks)]
        rows = rows.set_index("fleet").loc[fleets]
        x = np.arange(len(fleets)) + (k - 1) * width
        ax.bar(
            x,
            rows.predicted_speedup,
            width,
            color=colour,
            label=f"{NAMES[scheme]}, {tasks} task{'s' if tasks > 1 else ''} per batch, predicted",
        )
        ax.plot(x, rows.simulated_speedup, "x", color="black", ms=7)
        if "measured_speedup" in rows:
            ax.plot(x, rows.measured_speedup, "D", color="black", ms=7)
        for xi, low, high in zip(x, rows.published_speedup_low, rows.published_speedup_high):
            if not np.isnan(low):
                ax.plot([xi, xi], [low, high + 0.02], color="black", lw=5, alpha=0.5, solid_capstyle="butt")
                ax.plot(xi, (low + high) / 2, "s", mfc="white", color="black", ms=7)
    ax.axhline(1, color="0.4", lw=1)
    ax.set_xticks(range(len(fleets)), fleets)
    ax.set(ylabel="speedup over one device (x)", title="VGG-16 speedup")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="none", marker="x", color="black", label="simulated"),
                Line2D([], [], color="black", lw=5, alpha=0.5, marker="s", mfc="white",
                       label="published (abstract; a bar is a range)")]  # fmt: skip
    if "measured_speedup" in t:
        handles.append(Line2D([], [], ls="none", marker="D", color="black", label="measured in the lab"))
    _legend(fig, handles)
    ax = axes[0][1]
    reliability = t[t.deadline_s.notna()]
    for i, name in enumerate(fleets):
        for scheme, ls in (("halp", "-"), ("modnn", "--")):
            rows = reliability[(reliability.fleet == name) & (reliability.scheme == scheme)]
            ax.plot(rows.deadline_x_single, 100 * rows.simulated_deadline_met, ls=ls, marker="o", ms=4,
                    color=PALETTE[i + 5], label=f"{NAMES[scheme]} on {name}")  # fmt: skip
            if "measured_deadline_met" in rows and rows.measured_deadline_met.notna().any():
                ax.plot(rows.deadline_x_single, 100 * rows.measured_deadline_met, ls=":", marker="D", ms=5,
                        color=PALETTE[i + 5], label=f"{NAMES[scheme]} on {name}, measured")  # fmt: skip
    never = [
        name for name in fleets if not reliability[reliability.fleet == name].simulated_deadline_met.any()
    ]
    if never:
        ax.text(1.05, 4, f"{', '.join(never)}: no frame meets any of these deadlines", ha="center",
                color="0.3", fontsize=9)  # fmt: skip
    ax.set(xlabel="deadline (x the single device's latency)", ylabel="frames meeting the deadline (%)",
           title="service reliability, Rayleigh fading, simulated"
           + (" and measured" if "measured_deadline_met" in t else ""), ylim=(-3, 103))  # fmt: skip
    ax.legend(fontsize=9, loc="center right")
    return fig


def modnn(outcome: Outcome) -> Figure:
    """Speedup vs devices per fleet family, the abstract's range on 2-4 devices shaded, and the lab's
    measured speedups where the table has them."""
    t = outcome.table
    fig, axes = _figure(outcome, 1, 1, figsize=(11, 6))
    ax = axes[0][0]
    band = t.dropna(subset=["published_speedup_low"])
    low, high = band.published_speedup_low.iloc[0], band.published_speedup_high.iloc[0]
    ax.fill_between(
        [2, 4], [low, low], [high, high], color="0.85", label=f"paper (abstract): {low}-{high}x on 2-4"
    )
    ax.plot([1, 4], [1, 4], color="0.5", ls="-.", lw=1, label="linear")
    sources = _sources(t, "speedup")  # predicted, simulated and, from the lab, measured
    for i, (family, data) in enumerate(t.groupby("fleet", sort=False)):
        colour = PALETTE[i]
        _lines(ax, data, "devices", "speedup", colour, sources)
        ax.plot([], [], color=colour, lw=6, label=f"ours, {family}")
        measured = data.dropna(subset=["published_latency_s"])
        if len(measured):  # EdgeLD's latencies, as speedups over its own one device
            one = measured[measured.devices == 1].published_latency_s.iloc[0]
            ax.plot(measured.devices, one / measured.published_latency_s, "s", color=colour, ms=9,
                    label=f"EdgeLD's BODP, {family}")  # fmt: skip
    ax.set(xlabel="devices", ylabel="speedup over one device (x)", xticks=range(1, 5), ylim=(0, 4.6),
           title="VGG-16: Pi 4B over 50 Mbps shared WiFi; EdgeLD's VMs over 100 Mbps")  # fmt: skip
    handles, _ = ax.get_legend_handles_labels()
    _legend(fig, handles + _handles(lines=sources))
    return fig


def load_curves(outcome: Outcome) -> Figure:
    """Fig. 10a / 11: mean latency vs offered load per scheme (log axis; M/D/1 stops at a scheme's own
    capacity), and each scheme's capacity as a share of the paper's EFL capacity."""
    t = outcome.table
    fig, axes = _figure(outcome, 1, 2, figsize=(15, 5.8), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0][0]
    curves = t.dropna(subset=["offered_load_pct"]).replace(np.inf, np.nan)
    schemes = list(dict.fromkeys(curves.scheme))
    colours = {s: SCHEME_COLOUR[s] for s in schemes}
    for scheme in schemes:
        _lines(ax, curves[curves.scheme == scheme], "offered_load_pct", "latency_s", colours[scheme])
    ax.axvline(100, color="0.5", lw=1, ls="-.")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set(xlabel="offered load (% of the paper's EFL capacity)", ylabel="mean latency (s, log)",
           title="mean latency under Poisson arrivals")  # fmt: skip
    ax = axes[0][1]
    capacities = t[t.offered_load_pct.isna()]
    sources = _sources(capacities, "capacity_pct")
    _bars(ax, capacities, schemes, "scheme", "capacity_pct", colours, sources)
    ax.axhline(100, color="0.5", lw=1, ls="-.")
    ax.set(ylabel="capacity (% of the paper's EFL capacity)", title="load at which the queue diverges")
    _legend(fig, _handles(colours, _sources(curves, "latency_s"), sources))
    return fig


def aofl(outcome: Outcome) -> Figure:
    """AOFL Fig. 9: time per image vs devices per clock (top); OFL's speedup against the text's
    ranges (bottom)."""
    t = outcome.table
    clocks = list(dict.fromkeys(t.clock_mhz))
    fig, axes = _figure(outcome, 2, len(clocks), figsize=(16, 9.5), gridspec_kw={"height_ratios": [3, 2]})
    schemes = list(dict.fromkeys(t.scheme))
    colours = {s: SCHEME_COLOUR[s] for s in schemes}
    _per_clock(axes[0], t, clocks, colours, "latency_s", "time per image", "time per image (s)")
    for ax, clock in zip(axes[1], clocks):
        ofl = t[(t.scheme == "ofl") & (t.clock_mhz == clock)].dropna(subset=["published_speedup_low"])
        ax.fill_between(ofl.devices, ofl.published_speedup_low, ofl.published_speedup_high, step="mid",
                        color="0.85", label="paper's range (text)")  # fmt: skip
        data = t[(t.scheme == "ofl") & (t.clock_mhz == clock)]
        _lines(ax, data, "devices", "speedup", colours["ofl"])  # predicted and, from the lab, measured
        published = data.dropna(subset=["published_latency_s"])
        ax.plot(published.devices, published.published_latency_s.iloc[0] / published.published_latency_s,
                color=colours["ofl"], **SOURCES["published"])  # fmt: skip
        ax.set(title=f"OFL speedup over one device, {clock} MHz", xlabel="devices", ylabel="speedup (x)",
               xticks=range(1, 9), ylim=(0, None))  # fmt: skip
    handles = _handles(colours, _sources(t, "latency_s"))
    handles.append(Patch(color="0.85", label="paper's OFL speedup range (text)"))
    _legend(fig, handles)
    return fig


def memory_comm(outcome: Outcome) -> Figure:
    """Memory per device, its reduction against one device, and communication per frame, per scheme."""
    t = outcome.table.copy()
    t["case"] = [NAMES.get(s, s) if not g else f"FTP {g}" + (" + reuse" if s == "deepthings-reuse" else "")
                 for s, g in zip(t.scheme, t.grid)]  # fmt: skip
    t["case"] = [f"{c}, {n} dev" for c, n in zip(t.case, t.devices)]
    fig, axes = _figure(outcome, 1, 3, figsize=(18, 6.5))
    colours = {c: PALETTE[5] if s == "ofl" else SCHEME_COLOUR[s] for c, s in zip(t.case, t.scheme)}
    panels = (("memory_per_device_mb", "memory per device (the paper's is a bound, <)", "MB"),
              ("memory_reduction_pct", "memory per device, less than one device", "%"),
              ("comm_mb", "communication per frame", "MB, log"))  # fmt: skip
    for ax, (quantity, label, unit) in zip(axes[0], panels):
        _bars(ax, t, list(t.case), "case", quantity, colours, _sources(t, quantity))
        for tick in ax.get_xticklabels():
            tick.set(rotation=50, ha="right", rotation_mode="anchor")
        ax.set(ylabel=unit, title=label)
    axes[0][2].set_yscale("log")
    _legend(fig, _handles(bars=_sources(t, "comm_mb")))
    return fig
