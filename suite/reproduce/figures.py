"""The figures `suite reproduce` knows, and the run that writes their files."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from matplotlib.figure import Figure as Plot

from suite.baselines import Figure, load_baselines
from suite.errors import UserError
from suite.reproduce import NAMES, aofl, deepthings, halp, modnn, pico, plots, report, select
from suite.reproduce.common import OFF, Outcome, Skipped
from suite.reproduce.lab import LabFigure, Measured, describe_calibration, measure, one_dilation, pico_periods


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


def with_lab(outcome: Outcome, measured: Measured) -> Outcome:
    """A period figure (PICO Fig. 8, 9) with the emulated lab's measured points: `measured_*` columns
    beside the predicted ones (the report's ratios then use them), the measured speedups, where the
    largest fleet's PICO frame goes, and the calibration behind it all."""
    keys = ["scheme", "clock_mhz", "devices"]
    rows = measured.rows
    dilation = one_dilation(rows)
    table = outcome.table.merge(rows, on=keys, how="left")
    clock = rows.clock_mhz.iloc[0]
    ours = table[table.clock_mhz == clock].set_index(["scheme", "devices"])
    low, high = rows.devices.min(), rows.devices.max()

    def speedup(scheme: str, source: str) -> float:
        """Period on the fewest devices over the period on the most (a period read as 60 / fpm where
        the paper gives only frames per minute)."""
        period = ours[f"{source}_period_s"].fillna(60 / ours[f"{source}_throughput_fpm"])
        return period.loc[(scheme, low)] / period.loc[(scheme, high)]

    gains = {s: (speedup(s, "measured"), speedup(s, "predicted"), speedup(s, "published"))
             for s in dict.fromkeys(rows.scheme)}  # fmt: skip
    said = "; ".join(f"{s.upper()} {m:.2f}x (predicted {p:.2f}x, paper {report.number(q)}x)"
                     for s, (m, p, q) in gains.items())  # fmt: skip
    headline = (
        f"Measured in the emulated lab at {clock} MHz (dilation x{dilation:g}, real time, every "
        f"frame bit-exact): throughput speedup on {high} devices over {low}: {said}. "
        f"{outcome.headline}"
    )
    findings = [describe_calibration(measured.calibrations, measured.dilation)]
    pico = rows[(rows.scheme == "pico") & (rows.devices == high)]
    predicted = ours.loc[("pico", high), "predicted_period_s"]
    if len(pico) and (pico.measured_period_s.iloc[0] > (1 + OFF) * predicted
                      or gains["pico"][0] < (1 - OFF) * gains["pico"][2]):  # fmt: skip
        row = pico.iloc[0]
        split = "; ".join(f"{d} computes {c:.2f} s, sends {s:.2f} s, receives {r:.2f} s, idles {i:.2f} s"
                          for d, c, s, r, i in zip(row.lab_devices, row.lab_compute_s, row.lab_send_s,
                                                   row.lab_recv_s, row.lab_idle_s))  # fmt: skip
        findings.append(f"Where the {high}-device PICO frame's time goes, per frame, real time: {split}.")
    table = table.drop(columns=[c for c in table.columns if c.startswith("lab_")
                                and c not in ("lab_dilation", "lab_cores")])  # fmt: skip
    return replace(outcome, table=table, headline=headline, findings=(*outcome.findings, *findings))


# the figures the lab measures, and how
LAB: dict[str, tuple[Callable[[], LabFigure], Callable[[Outcome, Measured], Outcome]]] = {
    "pico-fig8": (lambda: pico_periods("vgg16"), with_lab),
    "pico-fig9": (lambda: pico_periods("yolov2"), with_lab),
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
            if lab and name == "halp":  # its own calibration, of the Pi 4 it measures (`halp_lab`)
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
