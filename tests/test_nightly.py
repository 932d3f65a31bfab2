"""The nightly lab run (suite/tracking/nightly.py): the comparison and its tolerances, the files it
reads, a slowed scheme caught on real workers (slow), and the emulated lab end to end (root)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from labkit import footprint, lab_name, needs_lab, write_fleet
from matplotlib.figure import Figure as MatplotlibFigure
from toys import said_lines

from suite.cli import EXIT_INTERRUPTED, main
from suite.errors import UserError
from suite.fleet import load_fleet
from suite.tracking import nightly
from suite.tracking.matrix import Baseline
from suite.tracking.nightly import (
    BASELINES_DIR,
    MATRICES_DIR,
    NightlyError,
    baseline_document,
    cell_verdicts,
    load_baseline,
    load_matrix,
    noise,
    tolerances,
)
from suite.tracking.report import figure, per_frame_bytes, write_report

TOLERANCE = {"speedup": 0.2, "latency_s": 0.3, "bytes_moved": 0.0}


def _cell(scheme="pico", devices=2, speedup=2.0, latency_s=1.0, bytes_moved=1e6, complete=True, exact=True,
          error=None) -> dict:  # fmt: skip
    return {"model": "vgg16", "devices": devices, "scheme": scheme, "speedup": speedup,
            "latency_s": latency_s, "bytes_moved": bytes_moved, "complete": complete, "bit_exact": exact,
            "error": error}  # fmt: skip


def _baseline(*cells: dict) -> Baseline:
    table = pd.DataFrame(cells)[["model", "devices", "scheme", "speedup", "latency_s", "bytes_moved"]]
    return Baseline("m", "d", TOLERANCE, dict.fromkeys(TOLERANCE, 0.0), table, Path("m.yaml"))


def test_each_metric_that_moves_the_worse_way_past_its_tolerance_is_one_sentence():
    stored = _baseline(_cell("pico"), _cell("halp"), _cell("modnn"), _cell("ofl"))
    measured = pd.DataFrame([
        _cell("pico", speedup=1.5),  # -25 %: past 20 %
        _cell("halp", speedup=1.7, latency_s=1.29, bytes_moved=1e6),  # within every tolerance
        _cell("modnn", latency_s=1.4, bytes_moved=1e6 + 1),  # +40 % latency; any extra byte
        _cell("ofl", speedup=3.0, latency_s=0.5, bytes_moved=1e5),  # better everywhere
    ])  # fmt: skip
    result = cell_verdicts(measured, stored).set_index("scheme")
    assert result["verdict"].to_dict() == {"pico": "regression", "halp": "ok", "modnn": "regression",
                                           "ofl": "ok"}  # fmt: skip
    assert result.loc["pico", "reason"] == ("pico vgg16 on 2 devices: speedup fell from 2 to 1.5 (-25.0%; "
                                            "tolerance 20%)")  # fmt: skip
    assert "latency_s rose from 1 to 1.4 (+40.0%; tolerance 30%)" in result.loc["modnn", "reason"]
    assert "bytes_moved rose from 1e+06 to 1e+06" in result.loc["modnn", "reason"]
    assert result.loc["pico", "baseline_speedup"] == 2.0 and result.loc["pico", "speedup"] == 1.5


def test_a_mismatch_a_failed_cell_and_a_new_cell_are_told_apart():
    stored = _baseline(_cell("pico"), _cell("halp"))
    measured = pd.DataFrame([_cell("pico", exact=False, error="frame 3 (astronaut): node conv7 differs"),
                             _cell("halp", complete=False, speedup=None, error="device pi1 stopped"),
                             _cell("ofl")])  # fmt: skip
    result = cell_verdicts(measured, stored).set_index("scheme")
    assert result["verdict"].to_dict() == {"pico": "mismatch", "halp": "failed", "ofl": "new"}
    assert "node conv7 differs" in result.loc["pico", "reason"]
    assert "did not complete: device pi1 stopped" in result.loc["halp", "reason"]
    assert cell_verdicts(measured.iloc[2:], None)["verdict"].tolist() == ["new"]  # no baseline at all


def test_noise_is_a_high_quantile_of_the_cells_changes_and_tolerances_round_it_up_with_a_margin():
    schemes = [f"s{i}" for i in range(10)]
    a = pd.DataFrame([_cell(s, speedup=2.0, latency_s=1.0) for s in schemes])
    b = pd.DataFrame([_cell(s, speedup=2.0 * (1 + i / 100), latency_s=1.0) for i, s in enumerate(schemes)])
    b.loc[9, "speedup"] = 4.0  # one cell measured while other jobs came and went: +100 %
    changes = nightly.relative_changes([a, b])
    assert changes["speedup"].max() == pytest.approx(1.0) and changes["latency_s"].max() == 0
    measured = noise([a, b])
    assert measured["speedup"] == pytest.approx(changes["speedup"].quantile(0.9))  # 0.08 + 0.1 x 0.92
    assert 0.16 < measured["speedup"] < 0.18  # the outlier does not set it
    floored = {"speedup": 0.3, "latency_s": 0.1, "bytes_moved": 0.0}  # latency: no noise, the floor
    assert tolerances(measured) == pytest.approx(floored)


def test_a_baseline_needs_two_clean_runs(tmp_path):
    matrix = load_matrix("smoke")
    clean = pd.DataFrame([_cell("pico", devices=3), _cell("single", devices=3, speedup=1.0)])
    with pytest.raises(NightlyError, match="two or more runs"):
        baseline_document(matrix, [(tmp_path, clean, "abc")])
    dirty = clean.assign(bit_exact=[True, False])
    with pytest.raises(NightlyError, match="single vgg16 on 3 devices did not complete bit-exact"):
        baseline_document(matrix, [(tmp_path, clean, "abc"), (tmp_path / "b", dirty, "abc")])
    faster = clean.assign(speedup=[2.2, 1.0])
    document = baseline_document(matrix, [(tmp_path, clean, "abc"), (tmp_path, faster, "abc")])
    assert document["cells"][0]["speedup"] == pytest.approx(2.1)  # the runs' mean
    assert document["largest_change"]["speedup"] == pytest.approx(0.1)
    assert document["tolerance"]["speedup"] == pytest.approx(0.15)  # 1.5 x 10 % (one pair), up to 5 %


def test_bundled_matrices_load_and_their_stored_baselines_cover_every_cell():
    for path in sorted(MATRICES_DIR.glob("*.yaml")):
        matrix = load_matrix(path.stem)
        stored = BASELINES_DIR / f"{matrix.name}.yaml"
        if stored.is_file():
            baseline = load_baseline(stored)
            assert baseline.matrix_digest == matrix.digest, f"{stored} is stale: write it again"
            cells = set(zip(baseline.cells["model"], baseline.cells["devices"], baseline.cells["scheme"]))
            assert {(m, n, s) for m, n, s in matrix.cells} <= cells


def _matrix(folder: Path, **changes) -> Path:
    fleet = write_fleet(folder, devices=2, mbps=200, shared=False, speed=0.4)
    document = {"schema_version": 1, "name": "tiny", "description": "a test matrix", "fleet": str(fleet),
                "devices": [2], "schemes": ["pico"], "frames": 6, "warmup": 2, "timeout_s": 60,
                "models": [{"name": "resnet18", "input_size": "3x64x64"}]} | changes  # fmt: skip
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(("changes", "said"), [
    ({"schemes": ["pico", "pcio"]}, "schemes: scheme 'pcio' is not one to compare"),
    ({"devices": [2, 9]}, "devices: 9 is more than fleet 'test-2' has (2)"),
    ({"frames": 0}, "frames: Input should be greater than or equal to 1"),
    ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
])  # fmt: skip
def test_a_bad_matrix_is_one_line_naming_the_field(tmp_path, capsys, changes, said):
    path = _matrix(tmp_path, **changes)
    with pytest.raises(UserError, match="tiny.yaml"):
        load_matrix(path)
    assert main(["nightly", "run", "--matrix", str(path)]) == 2
    err = capsys.readouterr().err
    assert said in err and len(said_lines(err)) == 1


def test_the_cli_names_what_to_fix(tmp_path, capsys):
    assert main(["nightly", "run", "--matrix", "nightlyy"]) == 2
    assert "no matrix 'nightlyy'" in capsys.readouterr().err
    assert main(["nightly", "baseline", str(tmp_path), str(tmp_path), "--matrix", "smoke"]) == 2
    assert "is not a nightly report folder" in capsys.readouterr().err


# ---- the report's figures, from fixture cells (no lab) ---------------------------------------


def _night(tmp_path: Path, with_baseline: bool):
    """A stored night of two schemes on 1 and 2 devices, written as `suite nightly run` writes it."""
    matrix = load_matrix(_matrix(tmp_path, devices=[1, 2], schemes=["pico", "halp"]))
    rows = [
        {
            "model": "resnet18",
            "devices": n,
            "scheme": s,
            "input_size": "3x64x64",
            "frames": 6,
            "complete": True,
            "bit_exact": True,
            "error": None,
            "speedup": speedup,
            "latency_s": 2.0 / n,
            "throughput_fps": speedup,
            "bytes_moved": 8e6 * n,
            "dilation": 1.0,
            "remeasured": False,
            "latency_low_s": 1.5 / n,
            "latency_high_s": 3.0 / n,
            "speedup_low": 0.9 * speedup,
            "speedup_high": 1.2 * speedup,
        }
        for n in (1, 2)
        for s, speedup in (("single", 1.0), ("pico", 1.1 * n), ("halp", 0.9 * n))
    ]
    measured = pd.DataFrame(rows).reindex(columns=nightly.MEASURED_COLUMNS)
    before = [_cell(r["scheme"], r["devices"], r["speedup"] * 1.05, r["latency_s"], r["bytes_moved"])
              for r in rows]  # fmt: skip
    baseline = _baseline(*before) if with_baseline else None
    if baseline is not None:
        baseline.cells["model"] = "resnet18"
    about = {"matrix": "tiny", "matrix_path": str(matrix.path), "matrix_digest": matrix.digest,
             "timestamp_utc": "2026-12-05T03:00:00+00:00",
             "git": {"commit": "0123456789abcdef", "dirty": False},
             "baseline": None, "error": None}  # fmt: skip
    folder = tmp_path / "night"
    folder.mkdir()
    write_report(folder, matrix, measured, cell_verdicts(measured, baseline), baseline, about, [])
    return folder, matrix, measured, baseline, about


def _legend(drawing) -> list[str]:
    return [t.get_text() for t in drawing.legends[0].get_texts()]


def test_the_figures_say_when_and_what_and_draw_the_frames_spread_from_zero(tmp_path):
    folder, matrix, measured, baseline, about = _night(tmp_path, with_baseline=True)
    assert {p.name for p in folder.glob("*.png")} == {"speedup.png", "latency.png", "bytes_moved.png"}
    cells = per_frame_bytes(measured, matrix)
    speedup = figure(cells, per_frame_bytes(baseline.cells, matrix), "speedup", about)
    title = speedup._suptitle.get_text()
    assert "2026-12-05 03:00 UTC" in title and "commit 0123456789ab" in title
    assert _legend(speedup) == ["pico", "halp", "tonight", "baseline", "one device", "bars: 95% bootstrap CI"]
    ax = speedup.axes[0]
    assert ax.get_ylim()[0] == 0
    bars = [c for c in ax.containers if c.has_yerr]  # tonight's lines carry the spread, the baseline's not
    assert len(bars) == 2
    segments = bars[0].lines[2][0].get_segments()  # pico's at 2 devices: 0.9x to 1.2x of 2.2
    assert segments[1][:, 1] == pytest.approx([0.9 * 2.2, 1.2 * 2.2])

    alone = figure(cells, None, "bytes_moved", about)  # no baseline, no spread: neither in the legend
    assert _legend(alone) == ["pico", "halp"]
    line = alone.axes[0].lines[0]
    assert line.get_ydata() == pytest.approx([8 / 8, 16 / 8])  # MB per frame: 6 measured + 2 warm-up frames
    assert _legend(figure(cells, None, "latency_s", about))[-1] == "bars: p10-p90 of the frames"


def test_a_stored_night_is_drawn_again_without_a_lab(tmp_path, capsys):
    folder, *_ = _night(tmp_path, with_baseline=False)
    for name in ("speedup.png", "REPORT.md"):
        (folder / name).unlink()
    assert main(["nightly", "report", str(folder), "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said == {"folder": str(folder), "report": str(folder / "REPORT.md"),
                    "figures": ["speedup.png", "latency.png", "bytes_moved.png"]}  # fmt: skip
    assert (folder / "speedup.png").is_file() and "MB moved per frame" in (folder / "REPORT.md").read_text()


def test_a_figure_drawn_again_replaces_the_stored_one_whole_or_not_at_all(tmp_path, capsys, monkeypatch):
    folder, *_ = _night(tmp_path, with_baseline=False)
    before = (folder / "speedup.png").read_bytes()

    def interrupted(self, target, **options):  # half a PNG written, then Ctrl-C
        if hasattr(target, "write"):
            target.write(before[:100])
        else:
            Path(target).write_bytes(before[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(MatplotlibFigure, "savefig", interrupted)
    assert main(["nightly", "report", str(folder)]) == EXIT_INTERRUPTED
    assert (folder / "speedup.png").read_bytes() == before
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_baseline_from_stored_nights_prints_one_json_object(tmp_path, capsys):
    folder, matrix, *_ = _night(tmp_path, with_baseline=False)
    again = tmp_path / "night-again"
    shutil.copytree(folder, again)
    output = tmp_path / "baseline.yaml"
    assert main(["nightly", "baseline", str(folder), str(again), "--matrix", str(matrix.path),
                 "-o", str(output), "--json"]) == 0  # fmt: skip
    said = json.loads(capsys.readouterr().out)
    assert said["baseline"] == str(output) and said["cells"] == 6
    assert said["runs"] == [str(folder), str(again)]
    assert said["noise"]["speedup"] == 0 and said["tolerance"] == load_baseline(output).tolerance


# ---- real workers -----------------------------------------------------------------------------


def _slow_pico(graph, fleet, **options):  # a deliberately worse plan: layer by layer, gathered after each
    from suite.schemes import modnn

    return modnn.plan(graph, fleet, gather=True)


@pytest.mark.slow
def test_a_slowed_scheme_fails_the_nightly_comparison_and_the_normal_run_passes(tmp_path, monkeypatch):
    """Two runs of a small matrix on local workers (capped at 0.4 cores) make the baseline and its
    tolerances; a third normal run passes it; a run whose PICO plans layer by layer, gathering every
    layer's output, fails it, measured twice, naming the cell and what moved."""
    matrix = load_matrix(_matrix(tmp_path, models=[{"name": "vgg16", "input_size": "3x64x64"}], frames=12))
    fleet = load_fleet(matrix.fleet)

    def run(name: str) -> pd.DataFrame:
        return pd.DataFrame(nightly.measure_matrix(matrix, fleet, None, tmp_path / name, lambda _: None))

    first, second = run("a"), run("b")
    stored = baseline_document(matrix, [(tmp_path / "a", first, "c"), (tmp_path / "b", second, "c")])
    # The timings are real but decide nothing here: on a shared 2-core CI host the load moved from 2 to 32
    # between runs, and PICO's measured speedup with it (a timed test failed 3 times in 8 on CI). The bytes
    # moved are counted, not timed: they are the same in every run of one plan, and the worse plan moves
    # several times as many, so the comparison must flag it whatever the host's load.
    floor = {"speedup": 0.9, "latency_s": 10.0, "bytes_moved": 0.0}
    stored["tolerance"] = {m: max(t, floor[m]) for m, t in stored["tolerance"].items()}
    path = tmp_path / "baseline.yaml"
    path.write_text(yaml.safe_dump(stored))
    baseline = load_baseline(path)

    def night(name: str) -> pd.DataFrame:  # as `suite nightly run` does: a cell past its tolerance runs again
        rows = list(nightly.measure_matrix(matrix, fleet, None, tmp_path / name, lambda _: None))
        confirmed = nightly.confirm(matrix, fleet, None, tmp_path / name, rows, baseline, lambda _: None)
        return cell_verdicts(pd.DataFrame(confirmed), baseline)

    normal = night("c")
    assert set(normal["verdict"]) == {"ok"}, normal[["scheme", "reason"]]

    monkeypatch.setattr("suite.schemes.pico.plan", _slow_pico)
    slowed = night("d").set_index("scheme")
    assert slowed.loc["pico", "verdict"] == "regression" and slowed.loc["pico", "remeasured"], slowed
    assert slowed.loc["pico", "reason"].startswith("pico vgg16 on 2 devices: ")
    assert "bytes_moved rose from" in slowed.loc["pico", "reason"]
    assert slowed.loc["pico", "bytes_moved"] > 2 * slowed.loc["pico", "baseline_bytes_moved"]
    assert slowed.loc["single", "verdict"] == "ok"


# ---- the emulated lab (root, sshd, tc) --------------------------------------------------------


@needs_lab
def test_the_night_takes_the_lab_down_and_reports_when_a_cell_fails(tmp_path, monkeypatch):
    name = lab_name("n")
    matrix = load_matrix(_matrix(tmp_path))

    def broken(*args, **kwargs):
        raise UserError("device d1: the worker could not start: out of memory")

    monkeypatch.setattr("suite.tracking.measure.measure_schemes", broken)
    try:
        night = nightly.run_night(matrix, lab_name=name, root=tmp_path / "reports")
        assert night.failures == ["device d1: the worker could not start: out of memory"]
        report = (night.folder / "REPORT.md").read_text()
        assert ": FAIL" in report and "out of memory" in report and "cells of the matrix" not in report
        assert not list((tmp_path / "reports" / "nightly").glob(".*"))  # no half-written report left
    finally:
        left = footprint(name)
        main(["lab", "down", "--name", name])
    assert not any(left.values()), left


@needs_lab
def test_nightly_run_end_to_end_on_the_lab_fails_on_a_regression(tmp_path):
    """`suite nightly run` as a cron runs it: lab up, deploy, the matrix, every frame checked, the
    comparison with a stored baseline (here one whose PICO speedup no run can reach), the report,
    exit 1 naming the cell, and the lab down."""
    name = lab_name("e")
    matrix = _matrix(tmp_path)
    fake = {"schema_version": 1, "matrix": "tiny", "matrix_digest": load_matrix(matrix).digest,
            "written_utc": "2026-01-01T00:00:00+00:00", "runs": ["a", "b"], "commits": ["x"],
            "noise": {"speedup": 0.1, "latency_s": 0.1, "bytes_moved": 0.0},
            "largest_change": {"speedup": 0.1, "latency_s": 0.1, "bytes_moved": 0.0},
            "tolerance": {"speedup": 0.15, "latency_s": 100.0, "bytes_moved": 100.0},
            "cells": [{"model": "resnet18", "devices": 2, "scheme": s, "speedup": v, "latency_s": 1.0,
                       "bytes_moved": 1e6} for s, v in (("single", 1.0), ("pico", 50.0))]}  # fmt: skip
    (tmp_path / "baseline.yaml").write_text(yaml.safe_dump(fake))
    try:
        done = subprocess.run([sys.executable, "-m", "suite", "nightly", "run", "--matrix", str(matrix),
                               "--name", name, "--baseline", str(tmp_path / "baseline.yaml"),
                               "-o", str(tmp_path / "reports"), "--json"], capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        left = footprint(name)
    finally:
        main(["lab", "down", "--name", name])
    assert done.returncode == 1, done.stderr
    assert "FAIL pico resnet18 on 2 devices: speedup fell from 50 to" in done.stderr
    assert not any(left.values()), left
    folder = next((tmp_path / "reports" / "nightly").iterdir())
    measured = pd.read_csv(folder / "measurements.csv")
    assert measured["bit_exact"].all() and set(measured["scheme"]) == {"single", "pico"}
    assert {"REPORT.md", "comparison.csv", "speedup.png", "latency.png", "bytes_moved.png"} <= {
        p.name for p in folder.iterdir()
    }
    assert "dilated" in (folder / "REPORT.md").read_text()
    said = json.loads(done.stdout)  # --json: one object on stdout, progress and FAIL lines on stderr
    assert said["verdict"] == "FAIL" and said["folder"] == str(folder)
    assert said["cells"] == {"regression": 1, "ok": 1}
    assert said["failures"][0].startswith("pico resnet18 on 2 devices: speedup fell from 50 to")
    spread = measured.set_index("scheme")  # each frame's spread, for the figures' error bars
    assert 0 < spread.loc["pico", "speedup_low"] <= spread.loc["pico", "speedup_high"]
    low, median, high = spread.loc["pico", ["latency_low_s", "latency_s", "latency_high_s"]]
    assert low <= median <= high  # p10, median and p90 of the frames, in real time
    assert pd.isna(spread.loc["single", "speedup_low"])  # one device's speedup over itself has no interval


def test_a_run_stopped_by_ctrl_c_stops_the_matrix_not_only_its_cell(monkeypatch):
    """The coordinator turns Ctrl-C (or SIGTERM) into a stopped run, so `suite run` can save it; one of
    a matrix's runs stopped so must not leave the night going on to the next scheme and cell."""
    from suite.fleet import uniform_fleet
    from suite.runtime.coordinator import INTERRUPTED, Coordinator
    from suite.runtime.measurement import Measurement
    from suite.tracking.measure import Workload, measure_schemes

    ran, said = [], []
    real = Coordinator.run

    def run(self, plan, *args, **kwargs):
        ran.append(plan.scheme)
        if plan.scheme == "pico":
            return Measurement(plan, (), (), {}, 1, 0.0, 0.1, INTERRUPTED)
        return real(self, plan, *args, **kwargs)

    monkeypatch.setattr(Coordinator, "run", run)
    with pytest.raises(KeyboardInterrupt):
        measure_schemes(Workload("resnet18", (3, 32, 32), 1, 0), uniform_fleet(2), ["pico", "modnn"],
                        say=said.append)  # fmt: skip
    assert ran == ["single", "pico"]
    assert said[-1].startswith("pico resnet18 3x32x32 on ") and said[-1].endswith(f"FAILED: {INTERRUPTED}")
