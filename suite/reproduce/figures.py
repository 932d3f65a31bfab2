"""The figures `suite reproduce` knows, and the run that writes their files."""

from __future__ import annotations

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
from suite.reproduce.common import Outcome, Skipped


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


def _text(text: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(text)


def with_lab(outcome: Outcome, measured, progress: Callable[[str], None]) -> Outcome:
    """Fig. 8 with the emulated lab's measured points (`lab.measure_periods`) and what they show."""
    keys = ["scheme", "clock_mhz", "devices"]
    table = outcome.table.merge(measured, on=keys, how="left")
    pico = measured[measured.scheme == "pico"].set_index("devices")
    lw = measured[measured.scheme == "lw"].set_index("devices")
    speedup = pico.loc[1, "measured_period_s"] / pico.loc[8, "measured_period_s"]
    predicted = table[(table.scheme == "pico") & (table.clock_mhz == 1000)].set_index("devices")
    predicted_speedup = predicted.loc[1, "predicted_period_s"] / predicted.loc[8, "predicted_period_s"]
    paper_speedup = predicted.loc[1, "published_period_s"] / predicted.loc[8, "published_period_s"]
    findings = [f"Measured in the emulated lab (time dilated x{pico.loc[8, 'lab_dilation']:g} on 8 devices; "
                f"real-time figures): PICO's throughput speedup on 8 Pis at 1 GHz is {speedup:.2f}x "
                f"(predicted {predicted_speedup:.2f}x; the paper's Fig. 8a {paper_speedup:.2f}x), LW's "
                f"{lw.loc[1, 'measured_period_s'] / lw.loc[8, 'measured_period_s']:.2f}x. Every frame was "
                "bit-exact."]  # fmt: skip
    short = pico.loc[8, "measured_period_s"] > 1.15 * predicted.loc[8, "predicted_period_s"]
    if short or speedup < paper_speedup:
        row = pico.loc[8]
        split = "; ".join(f"{d} computes {c:.2f} s, sends {s:.2f} s, receives {r:.2f} s, idles {i:.2f} s"
                          for d, c, s, r, i in zip(row.lab_devices, row.lab_compute_s, row.lab_send_s,
                                                   row.lab_recv_s, row.lab_idle_s))  # fmt: skip
        findings.append(f"Where the 8-device PICO frame's time goes, per frame, real time: {split}.")
    table = table.drop(columns=[c for c in table.columns if c.startswith("lab_") and c != "lab_dilation"])
    return replace(outcome, table=table, findings=(*outcome.findings, *findings))


def reproduce(names: list[str], out: Path, progress: Callable[[str], None] | None = None,
              lab: bool = False) -> dict:  # fmt: skip
    """Make the named figures' files in `out` and re-assemble REPORT.md; returns what was written.
    With `lab`, PICO Fig. 8 and HALP also get the emulated lab's measured points (root only)."""
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
            if lab and name == "pico-fig8":
                from suite.reproduce.lab import measure_periods

                outcome = with_lab(outcome, measure_periods("vgg16", 1000, progress), progress)
            if lab and name == "halp":
                from suite.reproduce import halp_lab

                outcome = halp_lab.with_lab(outcome, halp_lab.measure(progress))
        except Skipped as skip:
            _publish({section: _text(report.skipped_section(name, baselines[name], str(skip), stamp))})
            written[name] = {"skipped": str(skip), "section": str(section)}
            progress(f"[{i}/{len(chosen)}] {name} skipped: {skip}")
            continue
        csv, png = out / f"{name}.csv", out / f"{name}.png"
        plot = FIGURES[name].draw(outcome)
        _publish({csv: partial(outcome.table.to_csv, index=False),
                  png: partial(plot.savefig, format="png", dpi=110),
                  section: _text(report.section(outcome, baselines[name], stamp))})  # fmt: skip
        written[name] = {"csv": str(csv), "png": str(png), "section": str(section),
                         "headline": outcome.headline}  # fmt: skip
        took = time.perf_counter() - start
        progress(f"[{i}/{len(chosen)}] {name} done in {took:.1f} s: {outcome.headline}")
    sections = [(n, baselines[n].title) for n in NAMES if (out / f"{n}.md").exists()]
    body = "\n".join((out / f"{n}.md").read_text() for n, _ in sections)
    target = out / "REPORT.md"
    _publish({target: _text(report.header(stamp, sections) + "\n" + body)})
    return {"report": str(target), "figures": written}
