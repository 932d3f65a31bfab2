"""Faults and bad input, as a hostile or careless user brings them: every outcome is a result or one
line with exit 2 (1 for a mismatch, 130 when stopped), never a traceback, a hang or lost frames."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toys import ctrl_c_as_a_terminal_sends_it, said_lines

from suite.cli import main
from suite.errors import RunFailed, UserError
from suite.fleet import FLEETS_DIR, load_fleet
from suite.graph import from_model
from suite.models.load import load_model
from suite.plan import SCHEMA_VERSION, PlanError, check_plan, load_plan, load_plan_dict, save_plan
from suite.runtime.emulate import CPU_ROOT, cpu_quota_available, sweep_stale
from suite.runtime.metrics import CLAIM_WRITE_S, RESERVED, logs_folder, reserve_results, save_results
from suite.schemes import make_plan

SMALL = "3x64x64"


def one_line(capsys, argv: list[str], needle: str, code: int = 2) -> str:
    """Run `suite ARGV` in this process: exit `code` and one line on stderr holding `needle`."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err and len(said_lines(err)) == 1, err
    return err


@pytest.fixture(scope="module")
def halp(tmp_path_factory) -> tuple[Path, dict]:
    """A valid HALP plan for vgg16 at 64 px on pico-homo-4, as a file and as its JSON object."""
    graph = from_model(load_model("vgg16", (3, 64, 64), weights=False))
    plan = make_plan("halp", graph, load_fleet("pico-homo-4"))
    path = tmp_path_factory.mktemp("plans") / "halp.json"
    save_plan(plan, path)
    return path, json.loads(path.read_text())


def _write(tmp_path: Path, data: dict, name: str = "plan.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


# -- tampered plans -------------------------------------------------------------------------------


def _check(data: dict) -> None:
    plan = load_plan_dict(data)
    graph = from_model(load_model(plan.model, tuple(plan.input_shape), weights=False))
    check_plan(plan, graph, load_fleet(plan.fleet))


def _renumber(stages: list[dict], data: dict) -> None:
    """Keep only `stages`, renumbered as a careful editor would."""
    data["stages"] = [{**stage, "index": i} for i, stage in enumerate(stages)]


def test_a_valid_plan_passes(halp):
    _check(halp[1])


@pytest.mark.parametrize(("tamper", "needle"), [
    (lambda d: d["stages"][0]["transfers"][0].update(region=[0, 999, 0, 64]), "is not a region of"),
    (lambda d: d["stages"][0]["transfers"][0].update(bytes=12), "declares 12 bytes"),
    (lambda d: d["stages"][0]["work"][0]["inputs"].clear(), "do not follow from its outputs"),
    (lambda d: d["stages"][0]["transfers"].pop(0), "which no transfer brings it"),
    (lambda d: d["stages"][0]["transfers"].pop(), "never reaches the hub"),
    (lambda d: _renumber(d["stages"][1:], d), "which no earlier stage gathers at the hub"),
    (lambda d: d["stages"].pop(), "never gathers the model output"),
    (lambda d: d.update(devices=["pi0", "pi1", "pi7", "pi3"]), "device 'pi7', which fleet 'pico-homo-4'"),
    (lambda d: d["stages"][0]["work"][1].update(device="ghost"), "device 'ghost' is not one of the plan's"),
    (lambda d: d["stages"][1]["nodes"].insert(0, d["stages"][0]["nodes"][0]), "computed by an earlier stage"),
    (lambda d: d["stages"][0]["nodes"].reverse(), "not in the model's order"),
    (lambda d: d.update(hub="nobody"), "hub 'nobody'"),
])  # fmt: skip
def test_a_tampered_plan_is_refused_naming_where(halp, tamper, needle):
    data = copy.deepcopy(halp[1])
    tamper(data)
    with pytest.raises(PlanError, match=needle):
        _check(data)


@pytest.mark.parametrize(("tamper", "needle"), [
    (lambda d: d.update(stages=[]), "stages: List should have at least 1 item"),
    (lambda d: d["stages"][0]["transfers"][0].update(bytes=10**400), "bytes: Input should be less than"),
    (lambda d: d["stages"][0]["transfers"][0].update(bytes=-5), "bytes: Input should be greater than"),
    (lambda d: d["stages"][0]["transfers"][0].update(region=[5, 2]), "is not a region"),
    (lambda d: d["stages"][0].update(nodes="features_0"), "nodes: Input should be a valid list"),
    (lambda d: d.update(schema_version=1),
     f"schema_version 1, but this suite reads version {SCHEMA_VERSION}"),  # fmt: skip
    (lambda d: d.update(frames_in_flight=0), "frames_in_flight: Input should be greater"),
    (lambda d: d.update(extra="x"), "extra: Extra inputs are not permitted"),
])  # fmt: skip
def test_a_malformed_plan_file_is_one_line(halp, tmp_path, capsys, tamper, needle):
    data = copy.deepcopy(halp[1])
    tamper(data)
    one_line(capsys, ["simulate", "--plan", _write(tmp_path, data)], needle)


def test_simulate_refuses_a_plan_missing_its_last_stage(halp, tmp_path, capsys):
    """It once reported 67 fps for a HALP plan that never computed the classifier."""
    data = copy.deepcopy(halp[1])
    data["stages"].pop()
    one_line(capsys, ["simulate", "--plan", _write(tmp_path, data)], "never gathers the model output")


def test_simulate_recomputes_the_prediction_rather_than_trusting_the_file(halp, tmp_path, capsys):
    data = copy.deepcopy(halp[1])
    data["predicted"]["throughput_fps"] = 1e6
    assert main(["simulate", "--plan", _write(tmp_path, data), "--frames", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["predicted"]["throughput_fps"] == pytest.approx(halp[1]["predicted"]["throughput_fps"])


# -- files a user wrote ------------------------------------------------------------------------------


def _fleet_yaml(**link) -> str:
    return yaml.safe_dump({"schema_version": 1, "name": "f", "source": "test",
                           "link": {"bandwidth_mbps": 50, "latency_ms": 2, "shared": True, **link},
                           "devices": [{"name": "a", "kind": "pi", "profile": "rpi4b-1500mhz", "cores": 1,
                                        "freq_ghz": 1.5, "memory_gib": 4}]})  # fmt: skip


def test_non_utf8_files_are_one_line(halp, tmp_path, capsys):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_bytes(_fleet_yaml().encode() + b"# caf\xe9\n")
    one_line(capsys, ["plan", "--scheme", "single", "--fleet", str(fleet)], "not UTF-8 text")
    plan = tmp_path / "plan.json"
    plan.write_bytes(halp[0].read_bytes().replace(b'"halp"', b'"h\xe4lp"'))
    one_line(capsys, ["simulate", "--plan", str(plan)], "not UTF-8 text")


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("memory_gib", float("inf"), "memory_gib: Input should be a finite number"),
    ("freq_ghz", float("nan"), "freq_ghz: Input should be a finite number"),
    ("count", 1_000_000, "count: Input should be less than or equal to 64"),
])  # fmt: skip
def test_fleet_numbers_are_bounded(tmp_path, capsys, field, value, needle):
    data = yaml.safe_load(_fleet_yaml())
    data["devices"][0][field] = value
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    start = time.monotonic()
    one_line(capsys, ["plan", "--scheme", "pico", "--fleet", str(path)], needle)
    assert time.monotonic() - start < 30


def test_profile_numbers_are_finite(tmp_path, capsys):
    profile = tmp_path / "p.yaml"
    profile.write_text("schema_version: 1\nname: p\nsource: t\nmacs_per_s: .inf\nops: {default: {alpha: 1, "
                       "overhead_s: 0}}\n")  # fmt: skip
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(_fleet_yaml().replace("rpi4b-1500mhz", "p.yaml"))
    one_line(capsys, ["plan", "--scheme", "single", "--fleet", str(fleet)],
             "macs_per_s: Input should be a finite")  # fmt: skip


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
               f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]  # fmt: skip
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n" + _fleet_yaml().replace("name: f", "name: *a8"))
    start = time.monotonic()
    one_line(capsys, ["plan", "--scheme", "single", "--fleet", str(path)], "aliases (*name) are not allowed")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(("argv", "needle"), [
    (["plan", "--scheme", "pico", "--devices", "100000"], "--devices 100000 must be between 1 and 64"),
    (["verify", "--threads", "-4"], "argument --threads: -4 must be at least 1"),
    (["verify", "--threads", "0"], "argument --threads: 0 must be at least 1"),
    (["simulate", "--plan", "p.json", "--tasks", "0"], "argument --tasks: 0 must be at least 1"),
    (["simulate", "--plan", "p.json", "--tasks", "-2"], "argument --tasks: -2 must be at least 1"),
    (["simulate", "--plan", "p.json", "--rate", "nan"], "argument --rate: nan must be a finite number"),
    (["simulate", "--plan", "p.json", "--snr-db", "nan"], "argument --snr-db: nan must be a finite"),
    (["run", "--timeout", "inf"], "argument --timeout: inf must be a finite number above 0"),
    (["run", "--port", "70000"], "70000 is not a TCP port"),
    (["run", "--timeout", "1e308"], "argument --timeout: 1e308 must be a finite number above 0 and at most "
                                    "86400"),
    (["run", "--seed", "1180591620717411303424"],
     "argument --seed: 1180591620717411303424 must be between 0 and 4294967295"),
    (["run", "--seed", "-1"], "argument --seed: -1 must be between 0 and 4294967295"),
    (["plan", "--scheme", "single", "--seed", "-1"], "argument --seed: -1 must be between 0 and 4294967295"),
    (["verify", "--seed", "4294967296"], "argument --seed: 4294967296 must be between 0 and 4294967295"),
    (["simulate", "--plan", "p.json", "--seed", "-1"], "argument --seed: -1 must be between 0 and 42949672"),
    (["simulate", "--plan", "p.json", "--frames", "100000000"],
     "argument --frames: 100000000 must be between 1 and 1000000"),
    (["deploy", "--inventory", "x", "--jobs", "0"], "argument --jobs: 0 must be between 1 and 64"),
    (["lab", "check", "--seconds", "1e9"], "argument --seconds: 1e9 must be a finite number above 0 and at"),
    (["plan", "--scheme", "single", "-o", "/nowhere/plan.json"], "folder '/nowhere' does not exist"),
    (["report", "-o", "/nowhere/speedups.csv"], "folder '/nowhere' does not exist"),
    (["profile", "-o", "/nowhere/p.yaml"], "folder '/nowhere' does not exist"),
])  # fmt: skip
def test_bad_arguments_are_one_line_and_fast(capsys, argv, needle):
    start = time.monotonic()
    one_line(capsys, argv, needle)
    assert time.monotonic() - start < 30  # profile -o fails before measuring; planning bounds stop at once


def test_too_many_devices_for_memory_names_the_fix(capsys):
    one_line(capsys, ["plan", "--scheme", "pico", "--devices", "64", "--model", "vgg16"],
             "fewer --devices (they share this host's memory)")  # fmt: skip


def test_an_image_that_is_not_an_image_is_one_line(tmp_path, capsys):
    (tmp_path / "photo.png").write_bytes(b"this is not a png\n" * 40)
    one_line(capsys, ["run", "--model", "vgg16", "--input-size", SMALL, "--devices", "2", "--images",
                      str(tmp_path), "-o", str(tmp_path / "out")], "image")  # fmt: skip


# -- runs: claims, hosts, stale cgroups, interrupts -------------------------------------------------


def test_a_results_folder_is_claimed_before_the_run(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "summary.json").write_text("{}")
    start = time.monotonic()
    one_line(capsys, ["run", "--model", "vgg16", "--input-size", SMALL, "--devices", "2", "-o", str(taken)],
             "already exists and is not empty")  # fmt: skip
    assert time.monotonic() - start < 60 and (taken / "summary.json").read_text() == "{}"
    claimed = reserve_results(tmp_path / "mine")
    with pytest.raises(UserError, match="being written by another run"):
        reserve_results(claimed)


def test_a_bad_host_is_one_line_without_waiting_for_workers(tmp_path, capsys):
    start = time.monotonic()
    one_line(capsys, ["run", "--model", "vgg16", "--input-size", SMALL, "--devices", "2", "--host",
                      "256.1.1.1", "-o", str(tmp_path / "out")], "--host 256.1.1.1")  # fmt: skip
    assert time.monotonic() - start < 60
    assert not (tmp_path / "out").exists()  # the claim is given back


@pytest.mark.skipif(not cpu_quota_available(), reason="needs root and a writable cgroup v1 cpu controller")
def test_cgroups_of_killed_runs_are_swept():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = CPU_ROOT / f"suite-{gone.pid}-deadbeef"
    stale.mkdir()
    try:
        assert stale in sweep_stale() and not stale.exists()
        mine = CPU_ROOT / f"suite-{os.getpid()}-cafecafe"  # a live run's cgroup stays
        mine.mkdir()
        try:
            assert mine not in sweep_stale() and mine.exists()
        finally:
            mine.rmdir()
    finally:
        if stale.exists():
            stale.rmdir()


def test_ctrl_c_stops_the_run_at_once_and_keeps_its_frames(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "suite", "run", "--model", "vgg16", "--input-size", "3x32x32", "--scheme",
            "pico", "--devices", "2", "--frames", "600", "--no-baseline", "-o", str(out)]  # fmt: skip
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=ctrl_c_as_a_terminal_sends_it)  # fmt: skip
    lines: list[str] = []
    read = lambda: lines.extend(iter(run.stderr.readline, ""))  # noqa: E731
    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 240
    while not any("/602 frames" in line and not line.startswith("pico on 2 devices: 0/") for line in lines):
        assert run.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.2)
    workers = [int(pid) for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(run.pid)],
                                                  capture_output=True, text=True).stdout.split()]  # fmt: skip
    run.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    run.wait(timeout=60)
    assert time.monotonic() - stopped < 10, "the run went on after Ctrl-C"  # ~2 s when the host is idle
    assert run.returncode == 130, "".join(lines)
    summary = json.loads((out / "summary.json").read_text())
    frames = (out / "frames.csv").read_text().splitlines()
    assert summary["complete"] is False and "interrupted" in summary["error"] and 1 < len(frames) < 600
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert not list(CPU_ROOT.glob(f"suite-{run.pid}-*"))


def test_a_failing_party_in_the_replay_is_reported_in_the_callers_thread(capfd, monkeypatch):
    """The replay once leaked thread tracebacks to stderr and blamed the workers' processes."""
    from suite.backends import make_backend
    from suite.runtime import engine
    from suite.runtime.replay import replay

    graph = make_backend("torch").prepare(load_model("vgg16", (3, 32, 32))).graph
    plan = make_plan("pico", graph, load_fleet("2xlocal"))
    real = engine.Runner.frame

    def broken(self, index, x=None):
        if self.program.party != "coordinator":
            raise RuntimeError("a device's kernel failed")
        return real(self, index, x)

    monkeypatch.setattr(engine.Runner, "frame", broken)
    with pytest.raises(RuntimeError, match="a device's kernel failed"):
        replay(plan, graph, make_backend("torch"), __import__("torch").zeros(1, 3, 32, 32), timeout_s=2.0)
    assert "Traceback" not in capfd.readouterr().err


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_worker_killed_while_starting_ends_the_run_with_exit_1(tmp_path):
    """It was a user error (exit 2); the README promises exit 1 for a killed worker."""
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "suite", "run", "--model", "vgg16", "--input-size",
                            "3x32x32", "--devices", "2", "--no-baseline", "-o", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (workers := _children(run.pid)):
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
            time.sleep(0.02)
        os.kill(workers[0], signal.SIGKILL)  # it is still importing torch
        _, err = run.communicate(timeout=120)
    finally:
        run.kill()
        run.wait()
    assert run.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "was killed by signal 9 (SIGKILL) while starting" in errors[0], err
    assert "Traceback" not in err and not out.exists()


@pytest.fixture
def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def _claim(folder: Path, pid: int, started: str | None, host: str = socket.gethostname()) -> Path:
    folder.mkdir()
    (folder / RESERVED).write_text(json.dumps({"pid": pid, "host": host, "started": started}))
    return folder


def test_a_claim_whose_run_is_gone_is_reclaimed_with_a_note(tmp_path, capsys, dead_pid):
    folder = _claim(tmp_path / "out", dead_pid, "12345")
    logs = logs_folder(folder)
    logs.mkdir()
    (tmp_path / ".out.abc.partial").mkdir()  # a save cut short
    assert reserve_results(folder) == folder
    err = capsys.readouterr().err
    assert f"reclaimed results directory '{folder}': the run that claimed it (pid {dead_pid}) is gone" in err
    assert len(err.splitlines()) == 1 and not logs.exists() and not (tmp_path / ".out.abc.partial").exists()
    assert json.loads((folder / RESERVED).read_text())["pid"] == os.getpid()
    with pytest.raises(UserError, match=f"being written by another run \\(pid {os.getpid()} on "):
        reserve_results(folder)  # now it is this live process's


def test_a_claim_whose_pid_was_reused_is_reclaimed(tmp_path):
    folder = _claim(tmp_path / "out", os.getpid(), "1")  # this pid, but a process started at another time
    assert reserve_results(folder) == folder


@pytest.mark.parametrize("host", ["another-host", None])
def test_a_claim_that_cannot_be_judged_is_refused(tmp_path, host):
    folder = tmp_path / "out"
    if host is None:
        folder.mkdir()
        (folder / RESERVED).write_text("")  # as a run leaves it between creating and filling it
    else:
        _claim(folder, 1, "1", host)  # another host's run: its pid cannot be checked here
    with pytest.raises(UserError, match="being written by another run"):
        reserve_results(folder)
    assert (folder / RESERVED).exists()


def test_an_empty_claim_left_by_a_run_killed_while_claiming_is_reclaimed(tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    marker = folder / RESERVED
    marker.write_text("")  # killed between creating its claim and naming itself in it
    old = time.time() - CLAIM_WRITE_S - 1
    os.utime(marker, (old, old))
    assert reserve_results(folder) == folder
    err = capsys.readouterr().err
    assert f"reclaimed results directory '{folder}': the run that claimed it (it died before naming " in err
    assert json.loads(marker.read_text())["pid"] == os.getpid()


def test_a_sigkilled_run_does_not_block_its_folder(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "suite", "run", "--model", "vgg16", "--input-size", "3x32x32", "--devices",
            "2", "--no-baseline", "-o", str(out)]  # fmt: skip
    run = subprocess.Popen([*argv, "--frames", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not logs_folder(out).is_dir():
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
            time.sleep(0.05)
    finally:
        run.kill()  # SIGKILL: nothing is given back
        run.wait()
    assert (out / RESERVED).exists()
    again = subprocess.run([*argv, "--frames", "1", "--warmup", "0"], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"note: reclaimed results directory '{out}': the run that claimed it (pid {run.pid}) is gone" in (
        again.stderr
    )
    assert (out / "summary.json").exists() and not logs_folder(out).exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 200 KB tmpfs (root only), unmounted however the test ends."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("needs root to mount a tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_keeps_the_whole_files_written_and_says_what_is_missing(tiny_disk):
    out = tiny_disk / "run"
    reserve_results(out)
    big = pd.DataFrame({"x": range(60_000)})  # about 350 KB of CSV: more than the disk holds
    with pytest.raises(RunFailed) as failed:
        save_results(out, {"frames": pd.DataFrame({"x": [1, 2]}), "trace": big}, {"summary": {"a": 1}})
    assert str(failed.value) == (f"results directory '{out}' holds only frames.csv, summary.json (No space "
                                 "left on device; not written: trace.csv): free space on its disk (or pass "
                                 "-o on another one) and run again")  # fmt: skip
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["run"]  # no staging, no claim left
    assert sorted(p.name for p in out.iterdir()) == ["frames.csv", "summary.json"]
    assert json.loads((out / "summary.json").read_text()) == {"a": 1}


def test_a_run_onto_a_full_disk_is_one_line_exit_1_with_what_fit(tiny_disk):
    out = tiny_disk / "run"
    done = subprocess.run([sys.executable, "-m", "suite", "run", "--model", "vgg16", "--input-size",
                           "3x32x32", "--devices", "2", "--frames", "200", "--no-baseline", "-o", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and f"results directory '{out}' holds only " in errors[0], done.stderr
    assert "No space left on device" in errors[0] and "free space on its disk" in errors[0]
    assert "Traceback" not in done.stderr
    assert json.loads((out / "summary.json").read_text())["complete"] is True
    assert len((out / "frames.csv").read_text().splitlines()) == 203  # header, 2 warm-up and 200 frames
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["run"]


def test_a_plan_onto_a_full_disk_is_one_line(tiny_disk, capsys):
    with pytest.raises(OSError), (tiny_disk / "filler").open("wb") as filler:
        filler.write(bytes(300_000))
    plan = tiny_disk / "plan.json"
    one_line(capsys, ["plan", "--scheme", "single", "--input-size", SMALL, "-o", str(plan)],
             f"cannot write {plan} (No space left on device); free space on its disk")  # fmt: skip
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_a_plan_names_a_fleet_never_a_path_elsewhere(halp, tmp_path, capsys):
    for fleet in ("/proc/self/environ", "../fleet.yaml"):
        plan = _write(tmp_path, {**halp[1], "fleet": fleet})
        one_line(capsys, ["simulate", "--plan", plan], f"plan {plan}: fleet '{fleet}' is outside the fleets "
                                                       "folder and the plan's folder")  # fmt: skip
    plan = _write(tmp_path, {**halp[1], "fleet": "nowhere"})
    one_line(capsys, ["simulate", "--plan", plan], f"plan {plan}: unknown fleet 'nowhere'")
    (tmp_path / "mine.yaml").write_text((FLEETS_DIR / "pico-homo-4.yaml").read_text())
    plan = _write(tmp_path, {**halp[1], "fleet": "mine.yaml"})  # a fleet YAML beside the plan is fine
    assert main(["simulate", "--plan", plan, "--frames", "3"]) == 0


# -- fuzz: mutations of files a user may edit ------------------------------------------------------

_PATHS = st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=4)
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(-3, 300), max_size=5), st.just({}))  # fmt: skip


def _mutate(data: object, path: list[int], value: object) -> object:
    """Replace (or delete, for None at a dict key) the element that `path` picks, by index."""
    data = copy.deepcopy(data)
    node = data
    for step in path[:-1]:
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
        if not children or not isinstance(children[step % len(children)], dict | list):
            break
        node = children[step % len(children)]
    if isinstance(node, dict) and node:
        key = list(node)[path[-1] % len(node)]
        if value is None and path[-1] % 3 == 0:
            del node[key]
        else:
            node[key] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    return data


_FUZZ = settings(max_examples=150, deadline=5000, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])  # fmt: skip


@_FUZZ
@given(mutations=st.lists(st.tuples(_PATHS, _VALUES), min_size=1, max_size=3))
def test_fuzzed_plans_load_or_fail_in_one_line(halp, mutations):
    data = halp[1]
    for path, value in mutations:
        data = _mutate(data, path, value)
    try:
        _check(data)
    except UserError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)


@_FUZZ
@given(mutations=st.lists(st.tuples(_PATHS, _VALUES), min_size=1, max_size=3))
def test_fuzzed_fleets_load_or_fail_in_one_line(tmp_path_factory, mutations):
    data = yaml.safe_load(_fleet_yaml())
    for path, value in mutations:
        data = _mutate(data, path, value)
    path = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_fleet(str(path))
    except UserError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)


def test_a_saved_plan_round_trips_through_the_schema(halp):
    assert load_plan(halp[0]).to_dict() == halp[1]


def _fake_coordinator(monkeypatch, repeats: int, fails: dict[str, Exception]):
    """A coordinator whose runs are stand-ins: each label in `fails` raises its exception."""
    from types import SimpleNamespace

    from toys import conv_graph

    from suite.backends import make_backend
    from suite.fleet import uniform_fleet
    from suite.runtime.coordinator import Coordinator
    from suite.runtime.measurement import RunOptions

    graph, fleet = conv_graph(), uniform_fleet(2)
    options = RunOptions("conv", (1, 4, 4), repeats=repeats)
    coordinator = Coordinator(graph, make_backend("torch"), fleet, [], {}, options)

    def run(plan, progress=None, label="plan"):
        if label in fails:
            raise fails[label]
        return SimpleNamespace(complete=True, label=label)

    monkeypatch.setattr(coordinator, "run", run)
    return coordinator, make_plan("modnn", graph, fleet)


def test_a_run_on_an_inventory_starts_its_workers_with_the_callers_remote_workers(tmp_path):
    """The runtime does not import orchestration: the caller that has an inventory passes in what
    starts its devices' workers (`RemoteWorkers`), called with the inventory and the run's log
    folder; an inventory without it is refused before anything starts."""
    from types import SimpleNamespace

    from toys import conv_graph

    from suite.backends import make_backend
    from suite.fleet import uniform_fleet
    from suite.runtime.coordinator import Coordinator
    from suite.runtime.measurement import RunOptions

    class Started(Exception):
        pass

    def remote_workers(inventory, log_dir):
        calls.append((inventory, log_dir))
        raise Started

    graph, fleet, calls = conv_graph(), uniform_fleet(2), []
    inventory = SimpleNamespace(coordinator=SimpleNamespace(host="127.0.0.1", interface=None))
    plan = make_plan("modnn", graph, fleet)
    for workers, raised in [(None, ValueError), (remote_workers, Started)]:
        options = RunOptions("conv", (1, 4, 4), inventory=inventory, remote_workers=workers, log_dir=tmp_path)
        with pytest.raises(raised):
            Coordinator(graph, make_backend("torch"), fleet, [], {}, options).run(plan)
    assert calls == [(inventory, tmp_path / "plan")]


def test_a_failed_single_device_run_keeps_the_plans_results(monkeypatch, capsys):
    """The baseline after a complete run fails to start (a worker killed): the run's frames stand,
    with a warning that no speedup is reported, rather than being lost with the baseline."""
    killed = RunFailed("device dev0 (rank 1): the worker was killed by signal 9 while starting")
    coordinator, plan = _fake_coordinator(monkeypatch, 1, {"single": killed})
    runs = coordinator.run_repeats(plan, True, lambda _: None)
    assert [(r.plan.label, r.single) for r in runs.repeats] == [("plan", None)] and runs.failure is None
    assert "the single-device run failed, so the repeats stop there" in capsys.readouterr().err


def test_a_repeat_that_fails_to_start_keeps_the_repeats_before_it(monkeypatch, capsys):
    """Repeats run plan, single, plan, single...; the third plan run fails to start: the two
    repeats before it stand, and the failure names the repeat."""
    killed = RunFailed("device dev1 (rank 2): the worker did not start within 30 s")
    coordinator, plan = _fake_coordinator(monkeypatch, 4, {"plan-3": killed})
    runs = coordinator.run_repeats(plan, True, lambda _: None)
    assert [(r.number, r.plan.label, r.single.label) for r in runs.repeats] == [
        (1, "plan", "single"),
        (2, "plan-2", "single-2"),
    ]
    assert runs.failure == f"repeat 3 of 4: {killed}"
    assert "repeat 3 of 4 failed; the 2 before it are kept" in capsys.readouterr().err


def test_ctrl_c_while_a_repeats_workers_start_keeps_the_runs_before_it(monkeypatch):
    from suite.runtime.coordinator import INTERRUPTED

    coordinator, plan = _fake_coordinator(monkeypatch, 3, {"single-2": KeyboardInterrupt()})
    runs = coordinator.run_repeats(plan, True, lambda _: None)
    assert [(r.plan.label, r.single and r.single.label) for r in runs.repeats] == [
        ("plan", "single"),
        ("plan-2", None),
    ]
    assert runs.failure == f"repeat 2 of 3: {INTERRUPTED}"
