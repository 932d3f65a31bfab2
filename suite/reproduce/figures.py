"""The figures `suite reproduce` knows, and the run that writes their files."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as Plot

from suite.baselines import Figure, load_baselines
from suite.errors import UserError
from suite.reproduce import NAMES, aofl, deepthings, halp, modnn, pico, plots, report, select
from suite.reproduce.common import OFF, Outcome, Skipped
from suite.reproduce.lab import (
    TIME_SPLIT,
    TOLERANCE,
    LabFigure,
    Measured,
    aofl_latency,
    calibration_clause,
    deepthings_latency,
    describe_calibration,
    describe_exchanges,
    edgeld_latency,
    measure,
    measured_utilisation,
    one_dilation,
    pico_heterogeneous,
    pico_periods,
    pico_speedups,
)


@dataclass(frozen=True)
class Spec:
    compute: Callable[[Figure], Outcome]
    draw: Callable[[Outcome], Plot]


FIGURES: dict[str, Spec] = {
    "pico-fig8": Spec(lambda b: pico.periods(b, "vgg16"), plots.periods),
    "pico-fig9": Spec(lambda b: pico.periods(b, "yolov2"), plots.periods),
    "pico-fig12": Spec(pico.speedups, plots.speedups),
    "pico-table1": Spec(pico.heterogeneous, plots.heterogeneous),
    "pico-table2": Spec(pico.planning, plots.planning),
    "pico-fig10a": Spec(lambda b: pico.load_curves(b, "vgg16"), plots.load_curves),
    "pico-fig10b": Spec(pico.poisson_load, plots.poisson_load),
    "pico-fig11": Spec(lambda b: pico.load_curves(b, "yolov2"), plots.load_curves),
    "aofl": Spec(aofl.latency, plots.aofl),
    "deepthings-fig13": Spec(deepthings.latency, plots.deepthings),
    "memory-comm": Spec(deepthings.memory_and_comm, plots.memory_comm),
    "halp": Spec(halp.speedup_and_reliability, plots.halp),
    "modnn": Spec(modnn.speedups, plots.modnn),
}


def _stamp() -> str:
    from suite.runtime.metrics import run_metadata

    git = run_metadata()["git"]
    commit = "no git checkout"
    if git:
        commit = f"commit {git['commit'][:12]}" + (" with local changes" if git["dirty"] else "")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"Reproduced {when} from {commit} by `suite reproduce`."


def _publish(files: dict[Path, Callable[[Path], None]]) -> None:
    """Write every file beside its destination first, then move them all into place: a failure
    leaves the old files as they were and no partial ones."""
    staged = {path: path.with_name(f".{path.name}.partial") for path in files}
    try:
        for path, write in files.items():
            write(staged[path])
        for path, tmp in staged.items():
            os.replace(tmp, path)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def _summary_of(path: Path) -> dict | None:
    """A figure's summary in the folder (this run's or an earlier one's); None where there is none."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _text(text: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(text)


def _with_measured(outcome: Outcome, measured: Measured, headline: str, slow: pd.DataFrame) -> Outcome:
    """The figure's table with the lab's measured rows merged in on their keys (the report's ratios
    then use them), the headline, the calibration, and for each `slow` row (a measured frame well over
    its prediction) where its time goes and, in its group's cause paragraph, which part outgrew the
    prediction; the per-device columns behind that are dropped from the CSV."""
    table = outcome.table.merge(measured.rows, on=list(measured.keys), how="left")
    findings = [describe_calibration(measured.calibrations, measured.dilation, measured.rechecks)]
    causes = dict(outcome.causes)
    groups = dict.fromkeys(c.group for c in outcome.comparisons if c.group in slow)
    for row in slow.itertuples():
        model = f"{row.model} " if hasattr(row, "model") else ""  # a figure of several models names it
        name = f"{row.devices}-device {model}{report.NAMES.get(row.scheme, row.scheme)} frame"
        split = "; ".join(
            f"{d} computes {s['compute']:.2f} s, {describe_exchanges(s)}, idles {s['idle']:.2f} s"
            for d, s in zip(row.lab_devices, _device_splits(row))
        )
        findings.append(f"Where the {name}'s time goes, per frame, real time: {split}.")
        for value in (getattr(row, group) for group in groups):
            causes[value] = f"{_measured_cause(row, name)} {causes.get(value, '')}".strip()
    table = table.drop(columns=[c for c in table.columns if c.startswith("lab_")
                                and c not in ("lab_dilation", "lab_cores")])  # fmt: skip
    return replace(outcome, table=table, headline=headline, findings=(*outcome.findings, *findings),
                   causes=causes)  # fmt: skip


def _device_splits(row) -> list[dict[str, float]]:
    """Each device's time split by kind, from a lab row's `lab_<kind>_s` lists (one value a device)."""
    return [
        dict(zip(TIME_SPLIT, seconds))
        for seconds in zip(*(getattr(row, f"lab_{kind}_s") for kind in TIME_SPLIT))
    ]


def _measured_cause(row, name: str) -> str:
    """The measured side of a slow point's cause paragraph: which took the most of a device's frame,
    from the lab's timelines: its compute, its transfers (sending and receiving once the other end has
    posted) or waiting for a peer, whichever peer was waited on longer: a sender (the stages before) or a
    receiver (the stages after: gloo's large sends block until the receive is posted)."""
    compute = max(row.lab_compute_s)
    transfers = max(s["send"] - s["send_wait"] + s["recv"] - s["recv_wait"] for s in _device_splits(row))
    for_sender, for_receiver = max(row.lab_recv_wait_s), max(row.lab_send_wait_s)
    if for_sender >= for_receiver:
        waiting, peer, posted, stages = for_sender, "sender", "its message", "before"
    else:
        waiting, peer, posted, stages = for_receiver, "receiver", "its receive", "after"
    if compute >= max(transfers, waiting):
        return (f"Measured in the lab, the {name}'s busiest device computes {compute:.2f} s a frame, more "
                f"than any device's transfers ({transfers:.2f} s at most) or waits for a {peer} "
                f"({waiting:.2f} s at most): the lab's compute, not its links, is what the prediction "
                "misses there.")  # fmt: skip
    if waiting > transfers:
        return (f"Measured in the lab, the {name}'s devices wait up to {waiting:.2f} s a frame for a {peer} "
                f"to post {posted}, against {compute:.2f} s computing and {transfers:.2f} s on "
                "transfers at most (the time split above): the frame's time goes to stages waiting on the "
                f"stages {stages} them, not to the links or to one device's compute.")  # fmt: skip
    return (
        f"Measured in the lab, the {name}'s devices spend up to {transfers:.2f} s a frame on transfers "
        f"(sending and receiving once the other end has posted) against {compute:.2f} s computing and "
        f"{waiting:.2f} s waiting for a {peer} at most (the time split above): the frame's time goes into "
        "moving data between the devices, not into their compute. One cause is tested: the lab caps a "
        "device's whole CPU so that its convolutions run at the profile's speed, and so caps the CPU each "
        "message costs (serialising, copying, authenticating) by the same factor, where the paper's engine "
        "was slow at convolutions, not at moving bytes; on MoDNN on EdgeLD's testbed (docs/reproduction.md) "
        "the devices' quota doubled, the link kept, more than halved the transfer seconds."
    )


def with_lab(outcome: Outcome, measured: Measured) -> Outcome:
    """A period figure (PICO Fig. 8, 9) with the emulated lab's measured points: `measured_*` columns
    beside the predicted ones, the measured speedups, where the largest fleet's PICO frame goes (when
    it falls short), and the calibration behind it all."""
    rows = measured.rows
    dilation = one_dilation(rows)
    clock = rows.clock_mhz.iloc[0]
    ours = outcome.table.merge(rows, on=list(measured.keys), how="left")
    ours = ours[ours.clock_mhz == clock].set_index(["scheme", "devices"])
    low, high = rows.devices.min(), rows.devices.max()

    def speedup(scheme: str, source: str) -> float:
        """Period on the fewest devices over the period on the most (a period read as 60 / fpm where
        the paper gives only frames per minute)."""
        period = ours[f"{source}_period_s"].fillna(60 / ours[f"{source}_throughput_fpm"])
        return period.loc[(scheme, low)] / period.loc[(scheme, high)]

    gains = {s: (speedup(s, "measured"), speedup(s, "predicted"), speedup(s, "published"))
             for s in dict.fromkeys(rows.scheme)}  # fmt: skip
    said = "; ".join(f"{s.upper()} {m:.2f}x (predicted {p:.2f}x, "
                     + ("no speedup in the paper" if math.isnan(q) else f"paper {report.number(q)}x") + ")"
                     for s, (m, p, q) in gains.items())  # fmt: skip
    headline = (
        f"Measured in the emulated lab at {clock} MHz (dilation x{dilation:g}, real time, every "
        f"frame bit-exact; {calibration_clause(measured.calibrations, measured.rechecks)}): "
        f"throughput speedup on {high} devices over {low}: {said}. {outcome.headline}"
    )
    pico = rows[(rows.scheme == "pico") & (rows.devices == high)]
    predicted = ours.loc[("pico", high), "predicted_period_s"]
    short = len(pico) and (pico.measured_period_s.iloc[0] > (1 + OFF) * predicted
                           or gains["pico"][0] < (1 - OFF) * gains["pico"][2])  # fmt: skip
    return _with_measured(outcome, measured, headline, pico if short else pico.iloc[:0])


def with_lab_latency(outcome: Outcome, measured: Measured) -> Outcome:
    """A latency figure (MoDNN on EdgeLD's testbed, AOFL Fig. 9, DeepThings' Fig. 13) with the emulated
    lab's measured points: `measured_latency_s` and `measured_speedup` (the same line's measured
    one-device latency over each point's) beside the predicted ones, a headline sentence per measured
    line (measured, predicted, paper; the paper's speedup where the table has one), the calibration
    and the host's load, where the frame's time goes on a line's largest fleet when it falls short of
    its prediction, and the calibration in full."""
    rows = measured.rows.copy()
    dilation = one_dilation(rows)
    line = [k for k in measured.keys if k != "devices"]  # one measured line per value of these
    one = rows[rows.devices == 1].set_index(line).measured_latency_s
    rows["measured_speedup"] = [one.loc[tuple(key)] / t for key, t in
                                zip(rows[line].itertuples(index=False), rows.measured_latency_s)]  # fmt: skip
    ours = outcome.table.merge(rows, on=list(measured.keys), how="inner")
    said = []
    for key, points in ours.groupby(line, sort=False):
        where = ", ".join(report.KEY_FORMAT.get(k, "{}").format(report.NAMES.get(v, v))
                          for k, v in zip(line, key) if v != "")  # fmt: skip
        paper = points.get("published_speedup", pd.Series([math.nan])).iloc[-1]
        said.append(f"{where} on {'/'.join(map(str, points.devices))} devices: measured "
                    + " / ".join(f"{t:.2f}" for t in points.measured_latency_s) + " s, predicted "
                    + " / ".join(f"{t:.2f}" for t in points.predicted_latency_s) + " s, paper "
                    + " / ".join(report.number(t) for t in points.published_latency_s) + " s (measured "
                    f"speedup {points.measured_speedup.iloc[-1]:.2f}x, predicted "
                    f"{points.predicted_speedup.iloc[-1]:.2f}x"
                    + ("" if math.isnan(paper) else f", paper {report.number(paper)}x") + ")")  # fmt: skip
    headline = (f"Measured in the emulated lab (dilation x{dilation:g}, real time, one frame at a time, "
                f"every frame bit-exact; {_conditions(measured)}): {'; '.join(said)}. "
                f"{outcome.headline}")  # fmt: skip
    largest = ours.devices == ours.groupby(line).devices.transform("max")
    slow = ours[largest & (ours.measured_latency_s > (1 + OFF) * ours.predicted_latency_s)]
    return _with_measured(outcome, replace(measured, rows=rows), headline, slow)


def with_lab_speedup(outcome: Outcome, measured: Measured) -> Outcome:
    """A speedup figure (PICO Fig. 12, whose rows are all PICO's, so its table has no scheme column)
    with the emulated lab's measured points: on each model's row for the most devices, the measured
    period there and on the fewest (`measured_single_period_s`) and their ratio, `measured_speedup`
    (the report's ratio then uses it); a headline sentence per model (measured, predicted, paper; the
    calibration and host load); where the frame goes on the most devices when a model's measured
    speedup falls short of its prediction by more than the lab's calibration tolerance; and the
    calibration."""
    rows = measured.rows
    dilation = one_dilation(rows)
    keys = tuple(k for k in measured.keys if k != "scheme")
    line = [k for k in keys if k != "devices"]  # one measured speedup per value of these
    low, high = rows.devices.min(), rows.devices.max()
    one = rows[rows.devices == low][[*line, "measured_period_s"]]
    one = one.rename(columns={"measured_period_s": "measured_single_period_s"})
    gains = rows[rows.devices == high].merge(one, on=line)
    gains["measured_speedup"] = gains.measured_single_period_s / gains.measured_period_s
    ours = outcome.table.merge(gains, on=list(keys), how="inner")
    said = "; ".join(
        f"{r.model} {r.measured_speedup:.2f}x (measured periods {r.measured_single_period_s:.2f} s on {low} "
        f"and {r.measured_period_s:.2f} s on {high}; predicted {r.predicted_speedup:.2f}x, paper "
        f"{report.number(r.published_speedup)}x)"
        for r in ours.itertuples()
    )
    clock = ", ".join(f"{c} MHz" for c in dict.fromkeys(ours.clock_mhz))
    headline = (
        f"Measured in the emulated lab at {clock} (dilation x{dilation:g}, real time, every frame "
        f"bit-exact; {_conditions(measured)}): PICO's throughput speedup on {high} devices over {low}: "
        f"{said}. {outcome.headline}"
    )
    slow = ours[ours.measured_speedup < (1 - TOLERANCE) * ours.predicted_speedup]
    return _with_measured(outcome, replace(measured, rows=gains.drop(columns="scheme"), keys=keys), headline,
                          slow)  # fmt: skip


def _conditions(measured: Measured) -> str:
    """A latency or utilisation headline's clause on what the points were measured under: the
    calibration (`calibration_clause`) and the host's 1-minute load over the points."""
    load, cores = measured.rows.measured_host_load, next(iter(measured.calibrations.values()))[-1].host_cores
    return (f"{calibration_clause(measured.calibrations, measured.rechecks)}; host load "
            f"{load.min():.1f}-{load.max():.1f} on {cores} cores")  # fmt: skip


def with_lab_utilisation(outcome: Outcome, measured: Measured) -> Outcome:
    """PICO's Table I with the emulated lab's measured points: on each (model, scheme) row,
    `measured_period_s` and `measured_utilisation_pct` (`lab.measured_utilisation`), which the report's
    utilisation ratio then uses; a headline sentence per model (measured, predicted and paper
    utilisation, measured and predicted period; the calibration and host load); where the frame goes
    for a point whose measured period is more than 25% over its prediction; and the calibration.
    Redundancy stays predicted: it counts the MACs a plan computes, which a run does not change."""
    rows = measured.rows.copy()
    dilation = one_dilation(rows)
    rows["measured_utilisation_pct"] = [
        100 * measured_utilisation(c, n, p)
        for c, n, p in zip(rows.lab_compute_s, rows.devices, rows.measured_period_s)
    ]
    keys = tuple(k for k in measured.keys if k != "devices")  # one fleet: Table I keys by model and scheme
    ours = outcome.table.merge(rows, on=list(keys), how="inner")
    said = []
    for model, points in ours.groupby("model", sort=False):
        schemes = list(zip(points.scheme, points.measured_utilisation_pct, points.predicted_utilisation_pct,
                           points.published_utilisation_pct, points.measured_period_s,
                           points.predicted_period_s))  # fmt: skip
        said.append(f"{model}: utilisation "
                    + ", ".join(f"{report.NAMES.get(s, s)} {m:.1f}% (predicted {p:.1f}%, paper "
                                f"{report.number(q)}%)" for s, m, p, q, _, _ in schemes)
                    + "; period " + ", ".join(f"{report.NAMES.get(s, s)} {m:.2f} s (predicted {p:.2f} s)"
                                              for s, _, _, _, m, p in schemes))  # fmt: skip
    headline = (f"Measured in the emulated lab on `{pico.HETERO}` (dilation x{dilation:g}, real time, every "
                f"frame bit-exact; {_conditions(measured)}): {'; '.join(said)}. Redundancy stays "
                "predicted: it counts the MACs a plan computes, which a run does not change. "
                f"{outcome.headline}")  # fmt: skip
    definition = ("Measured utilisation: the mean over every device of the fleet of its compute seconds a "
                  "frame, from the run's own timelines, over the measured period (real time); a device the "
                  "plan leaves idle counts 0, as in the predicted column.")  # fmt: skip
    slow = ours[ours.measured_period_s > (1 + OFF) * ours.predicted_period_s]
    return _with_measured(replace(outcome, findings=(*outcome.findings, definition)),
                          replace(measured, rows=rows.drop(columns="devices"), keys=keys), headline,
                          slow)  # fmt: skip


# the figures the lab measures, and how
LAB: dict[str, tuple[Callable[[], LabFigure], Callable[[Outcome, Measured], Outcome]]] = {
    "pico-fig8": (lambda: pico_periods("vgg16"), with_lab),
    "pico-fig9": (lambda: pico_periods("yolov2"), with_lab),
    "pico-fig12": (pico_speedups, with_lab_speedup),
    "pico-table1": (pico_heterogeneous, with_lab_utilisation),
    "modnn": (edgeld_latency, with_lab_latency),
    "aofl": (aofl_latency, with_lab_latency),
    "deepthings-fig13": (deepthings_latency, with_lab_latency),
}


def reproduce(names: list[str], out: Path, progress: Callable[[str], None] | None = None,
              lab: bool = False) -> dict:  # fmt: skip
    """Make the named figures' files in `out` and re-assemble REPORT.md; returns what was written.
    With `lab`, the figures in `LAB` and HALP also get the emulated lab's measured points (root only)."""
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    chosen = select(names)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"-o {out}: cannot create the output folder ({exc.strerror})") from None
    baselines = load_baselines()
    stamp = _stamp()
    written: dict[str, dict] = {}
    for i, name in enumerate(chosen, start=1):
        start = time.perf_counter()
        progress(f"[{i}/{len(chosen)}] {name} ...")
        section = out / f"{name}.md"
        try:
            outcome = FIGURES[name].compute(baselines[name])
            if lab and name in LAB:
                setup, merge = LAB[name]
                outcome = merge(outcome, measure(setup(), progress))
            if lab and name == "halp":  # its own measurements: speedup and a fading channel (`halp_lab`)
                from suite.reproduce import halp_lab

                outcome = halp_lab.with_lab(outcome, halp_lab.measure(progress))
        except Skipped as skip:
            _publish({section: _text(report.skipped_section(name, baselines[name], str(skip), stamp)),
                      out / f"{name}.json": _text(json.dumps({"skipped": str(skip)}))})  # fmt: skip
            written[name] = {"skipped": str(skip), "section": str(section)}
            progress(f"[{i}/{len(chosen)}] {name} skipped: {skip}")
            continue
        csv, png = out / f"{name}.csv", out / f"{name}.png"
        plot = FIGURES[name].draw(outcome)
        summary = report.summary(outcome)
        _publish({csv: partial(outcome.table.to_csv, index=False),
                  png: partial(plot.savefig, format="png", dpi=110),
                  section: _text(report.section(outcome, baselines[name], stamp)),
                  out / f"{name}.json": _text(json.dumps(summary))})  # fmt: skip
        written[name] = {"csv": str(csv), "png": str(png), "section": str(section),
                         "headline": outcome.headline, **summary}  # fmt: skip
        took = time.perf_counter() - start
        standing = (
            ""
            if summary["median_error"] is None
            else f", median |ours / paper - 1| {summary['median_error']:.0%} over {summary['points']} points"
        )
        progress(f"[{i}/{len(chosen)}] {name} done in {took:.1f} s{standing}: {outcome.headline}")
    sections = [
        (n, baselines[n].title, _summary_of(out / f"{n}.json")) for n in NAMES if (out / f"{n}.md").exists()
    ]
    body = "\n".join((out / f"{n}.md").read_text() for n, _, _ in sections)
    target = out / "REPORT.md"
    _publish({target: _text(report.header(stamp, sections) + "\n" + body)})
    return {"report": str(target), "figures": written}
