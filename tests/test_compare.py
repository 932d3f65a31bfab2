"""`suite compare`: two small real runs compared, the loader's defensive reading, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from toys import said_lines, suite

from suite.cli import main
from suite.compare import compare_table, describe, load_result, pareto_front


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    """Two runs of a small VGG-16 on two Pi 4B (published power figures) at full speed: PICO and MoDNN."""
    folder = tmp_path_factory.mktemp("compare")
    out = {}
    for scheme in ("pico", "modnn"):
        out[scheme] = folder / scheme
        done = suite(
            "run",
            "--model",
            "vgg16",
            "--input-size",
            "3x32x32",
            "--scheme",
            scheme,
            "--fleet",
            "pico-homo-2",
            "--no-emulate",
            "--frames",
            "3",
            "--warmup",
            "1",
            "-o",
            str(out[scheme]),
        )
        assert done.returncode == 0, done.stderr
        assert "J/frame over 2 devices" in done.stdout  # `suite run` says its energy per frame
    return out


def test_runs_save_energy_per_frame(results):
    summary = json.loads((results["pico"] / "summary.json").read_text())
    energy = summary["energy"]
    assert energy["per_frame_j"] == pytest.approx(sum(energy["devices"].values()))
    assert set(energy["devices"]) == {"pi0", "pi1"} and energy["no_power"] == []
    # two Pi 4B at 2.7-3.62 W: a frame costs each between idle and busy power times the seconds a frame takes
    seconds = 1 / summary["throughput_fps"]
    assert 2 * 2.7 * seconds <= energy["per_frame_j"] <= 2 * 3.62 * seconds + 1e-9
    assert energy["ratio_vs_single"] == pytest.approx(energy["per_frame_j"] / energy["single_per_frame_j"])
    assert energy["predicted_per_frame_j"] > 0 and energy["rapl"] is None  # this host has no RAPL
    table = pd.read_csv(results["pico"] / "energy.csv")
    assert set(table["run"]) == {"plan", "single"}
    plan = table[table["run"] == "plan"]
    assert plan["energy_per_frame_j"].sum() == pytest.approx(energy["per_frame_j"])


def test_compare_tables_runs_with_their_figures(results, tmp_path, capsys):
    png = tmp_path / "compare.png"
    assert main(["compare", str(results["pico"]), str(results["modnn"]), "-o", str(png)]) == 0
    text = capsys.readouterr().out
    assert "vgg16 on pico-homo-2:" in text and "modnn" in text and "pico" in text and "J/frame" in text
    with Image.open(png) as image:
        assert image.size[0] > 1000 and image.size[1] > 400
    assert main(["compare", str(results["pico"]), str(results["modnn"]), "--json"]) == 0
    rows = {r["scheme"]: r for r in json.loads(capsys.readouterr().out)}
    for scheme, row in rows.items():
        summary = json.loads((results[scheme] / "summary.json").read_text())
        assert row["speedup"] == pytest.approx(summary["speedup_vs_single"])
        assert row["energy_per_frame_j"] == pytest.approx(summary["energy"]["per_frame_j"])
        assert row["throughput_vs_predicted"] == pytest.approx(1 + summary["predicted"]["throughput_error"])
        assert row["latency_p50_s"] <= row["latency_p90_s"] <= row["latency_p99_s"]
        assert row["bytes_per_frame"] == pytest.approx(summary["bytes_moved"] / 4)  # 3 timed + 1 warm-up
    assert any(r["pareto"] for r in rows.values())
    assert main(["compare", str(results["pico"]), "--csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("path,model,fleet,scheme,backend") and len(csv) == 2


def test_the_loader_reads_repeated_runs_statistics(results, tmp_path):
    """Runs with repeats carry latency percentiles and a bootstrap interval on the speedup."""
    folder = tmp_path / "repeated"
    shutil.copytree(results["pico"], folder)
    summary = json.loads((folder / "summary.json").read_text())
    summary["statistics"]["latency_s"] |= {"p50": 0.1, "p90": 0.2, "p99": 0.3}
    summary["statistics"]["speedup_vs_single"] |= {"value": 1.5, "low": 1.2, "high": 1.8}
    (folder / "summary.json").write_text(json.dumps(summary))
    result = load_result(folder)
    assert (result.latency_p90_s, result.latency_p99_s) == (0.2, 0.3)
    assert (result.speedup_low, result.speedup_high) == (1.2, 1.8)
    assert "[1.20, 1.80]" in describe(compare_table([result]))
    # an older summary without energy, predictions, statistics or frames.csv still loads, its figures missing
    for key in ("energy", "predicted", "statistics"):
        summary.pop(key)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "frames.csv").unlink()
    old = load_result(folder / "summary.json")
    assert old.energy_per_frame_j is None and old.throughput_vs_predicted is None
    assert old.latency_p90_s is None
    assert compare_table([old]).loc[0, "scheme"] == "pico"


def test_pareto_front_keeps_the_points_nothing_beats():
    latency = [1.0, 2.0, 2.0, 3.0, 0.5]
    throughput = [5.0, 9.0, 8.0, 9.0, 1.0]
    # (2, 8) is beaten by (2, 9); (3, 9) by (2, 9); the rest trade latency for throughput
    assert pareto_front(latency, throughput) == [4, 0, 1]


def _not_json(tmp_path: Path) -> str:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    return str(tmp_path / "broken")


def _not_a_summary(tmp_path: Path) -> str:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary.json").write_text(json.dumps({"model": "vgg16"}))
    return str(tmp_path / "other")


@pytest.mark.parametrize("make,needle", [
    (lambda t: str(t / "absent"), "absent: no such result folder"),
    (lambda t: str(t), "no summary.json here"),
    (lambda t: (t / "f.txt").write_text("x") and str(t / "f.txt"), "f.txt is not a result folder"),
    (_not_json, "summary.json: not a readable run summary"),
    (_not_a_summary, "summary.json: not a run summary (no 'scheme')"),
])  # fmt: skip
def test_bad_results_are_one_line_exit_2(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    assert main(["compare", path, "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(said_lines(err)) == 1 and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()  # nothing half-written
