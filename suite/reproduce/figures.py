"""The figures `suite reproduce` knows, and the run that writes their files."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from matplotlib.figure import Figure as Plot

from suite.baselines import Figure, load_baselines
from suite.errors import UserError
from suite.reproduce import NAMES, deepthings, halp, modnn, pico, plots, report, select
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
    "pico-fig10b": Spec(pico.poisson_load, plots.poisson_load),
    "deepthings-fig13": Spec(deepthings.latency, plots.deepthings),
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


def reproduce(names: list[str], out: Path, progress: Callable[[str], None] | None = None) -> dict:
    """Make the named figures' files in `out` and re-assemble REPORT.md; returns what was written."""
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
