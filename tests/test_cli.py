"""The command line as a user meets it: each command's output, and bad input as one line, exit 2."""

from __future__ import annotations

import argparse
import json
import os
import time

import pytest
from toys import assert_one_line_error, suite

from suite.cli import build_parser


def test_cli_plan_then_simulate(tmp_path):
    path = tmp_path / "plan.json"
    out = suite("plan", "--model", "vgg16", "--input-size", "3x64x64", "--scheme", "pico",
                 "--fleet", "pico-homo-4", "-o", str(path))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "predicted: latency" in out.stdout and path.exists()
    out = suite("simulate", "--plan", str(path), "--frames", "20", "--channel", "rayleigh",
                 "--deadline", "10", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["throughput_fps"] > 0 and 0 <= result["deadline_met"] <= 1


def _bad_fleet(tmp_path) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text("schema_version: 1\nname: x\nsource: test\nlink: {bandwidth_mbps: 50, shared: true}\n"
                    "devices:\n  - {name: a, kind: pi, profile: rpi4b-1500mhz, cores: 1, freq_ghz: 1.5,"
                    " memory_gib: 4}\n")  # fmt: skip
    return str(path)


def _old_plan(tmp_path) -> str:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema_version": 0, "stages": []}))
    return str(path)


@pytest.mark.parametrize(("args", "needle"), [
    (["plan", "--scheme", "magic", "--devices", "2"], "unknown scheme 'magic'"),
    (["plan", "--scheme", "pico", "--model", "alexnet", "--devices", "2"], "alexnet"),
    (["plan", "--scheme", "pico", "--fleet", "nowhere"], "nowhere"),
    (["plan", "--scheme", "pico", "--fleet", "{bad_fleet}"], "link.latency_ms"),
    (["simulate", "--plan", "{old_plan}"], "schema_version 0"),
    (["simulate", "--plan", "{old_plan}", "--frames", "0"], "--frames: 0 must be between 1 and 1000000"),
])  # fmt: skip
def test_cli_plan_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    args = [a.format(bad_fleet=_bad_fleet(tmp_path), old_plan=_old_plan(tmp_path)) for a in args]
    assert_one_line_error(suite(*args), needle)


def test_cli_verify_json():
    out = suite("verify", "--model", "resnet18", "--input-size", "3x64x64", "--parts", "2",
                 "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for key in ("bit_exact", "max_abs_diff", "max_ulp", "first_mismatch", "model", "input_shape",
                "backend", "parts", "grid"):  # fmt: skip
        assert key in report
    assert report["bit_exact"] is True and report["parts"] == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "alexnet"], "unknown model 'alexnet'"),
        (["--input-size", "3x2x"], "--input-size '3x2x'"),
        (["--model", "resnet18", "--parts", "300"], "300x1 split needs at least 300 rows"),
        (["--input-size", "3x16x16"], "vanishes at node 'features_30'"),
        (["--grid", "2by2"], "--grid '2by2'"),
        (["--backend", "tpu"], "unknown backend 'tpu'"),
        (["--model", "nowhere.onnx"], "'nowhere.onnx' does not exist"),
        (["--model", "json:dumps", "--input-size", "3x8x8"], "calling dumps() failed"),
        (["--model", "json:JSONDecoder", "--input-size", "3x8x8"], "not a torch nn.Module"),
    ],
)
def test_cli_verify_bad_input_is_one_line_exit_2(args, needle):
    assert_one_line_error(suite("verify", *args), needle)


def test_cli_plan_needs_no_weights_and_answers_fast():
    """Planning builds zoo models on the meta device: the plan equals one made from the real
    weights, and the command takes about as long as importing torch (a benchmark times it)."""
    start = time.perf_counter()
    out = suite("plan", "--model", "vgg16", "--scheme", "pico", "--fleet", "pico-hetero", "--json")
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    from suite.backends import make_backend
    from suite.fleet import load_fleet
    from suite.models.load import load_model
    from suite.schemes import make_plan

    graph = make_backend("torch").prepare(load_model("vgg16")).graph
    real = make_plan("pico", graph, load_fleet("pico-hetero"))
    planned = json.loads(out.stdout)
    assert planned["stages"] == real.to_dict()["stages"] and elapsed < 60


def test_report_and_profile_print_json(tmp_path):
    report = suite("report", "--models", "resnet18", "--fleets", "pico-homo-2", "--json")
    assert report.returncode == 0, report.stderr
    table = json.loads(report.stdout)
    assert {row["scheme"] for row in table["predicted"]} >= {"single", "pico", "halp"}
    assert all(row["model"] == "resnet18" and row["fleet"] == "pico-homo-2" for row in table["predicted"])
    assert "pico" in table["papers"]
    profile = suite("profile", "--quick", "-o", str(tmp_path / "p.yaml"), "--json")
    assert profile.returncode == 0, profile.stderr
    measured = json.loads(profile.stdout)
    assert measured["path"] == str(tmp_path / "p.yaml") and (tmp_path / "p.yaml").is_file()
    assert measured["macs_per_s"] > 0 and measured["ops"]["conv"]["alpha"] == pytest.approx(1.0)


def _commands(parser: argparse.ArgumentParser, name: str = "suite"):
    """Every command that runs something (`suite lab down`, ...), with its parser."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield name, parser
    for group in groups:
        for sub, child in group.choices.items():
            yield from _commands(child, f"{name} {sub}")


def test_every_command_documents_its_exit_codes_in_its_help():
    commands = dict(_commands(build_parser()))
    assert {"suite run", "suite lab down", "suite nightly run", "suite nightly report"} <= commands.keys()
    for name, parser in commands.items():
        text = parser.format_help()
        epilog = text.split("exit codes:\n", 1)[-1].splitlines()
        codes = [line.split()[0] for line in epilog if line[2:3].isdigit()]
        assert "exit codes:" in text and {"0", "2", "130", "141"} <= set(codes), name
    assert "1    the run failed" in commands["suite run"].format_help()


def test_nightly_run_takes_the_lab_name_as_suite_lab_does_and_the_old_spelling_with_a_note(capsys):
    parser = build_parser()
    assert parser.parse_args(["nightly", "run"]).name == "nightly"
    assert parser.parse_args(["nightly", "run", "--name", "n2"]).name == "n2"
    assert parser.parse_args(["nightly", "run", "--lab-name", "old"]).name == "old"
    assert capsys.readouterr().err == "note: --lab-name is deprecated; use --name\n"
    text = dict(_commands(parser))["suite nightly run"].format_help()
    assert "--name NAME" in text and "--lab-name" not in text


def test_lab_down_json_is_one_object_even_with_nothing_to_remove():
    done = suite("lab", "down", "--name", "nosuchlab", "--json")
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said["lab"] == "nosuchlab"
    assert set(said["removed"]) == {"namespaces", "processes", "cgroups", "links"}
    assert not any(said["removed"].values())


def test_a_speedup_above_what_the_cores_allow_is_called_a_slowed_baseline(capsys, monkeypatch):
    """The flagship run once printed 3.22x beside "capped near 2x": the cap is now checked against
    what was measured, and a speedup past it blames the baseline, not the plan."""
    from suite.cli import _warn_above_cap

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    _warn_above_cap(3.22, threads=4)
    said = capsys.readouterr().err
    assert "speedup 3.22x is above the 2x that 2 core(s) allow" in said and "--repeat" in said
    for speedup in (1.9, 2.4, None):  # within the cap, or a little past it (caches), or no baseline
        _warn_above_cap(speedup, threads=4)
    assert capsys.readouterr().err == ""
