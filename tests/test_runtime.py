"""The runtime: plans played in one process (fast), then on real worker processes over gloo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from toys import assert_one_line_error, said_lines

from suite.backends import make_backend
from suite.backends.torch import EXACT_KERNELS
from suite.fleet import load_fleet, uniform_fleet
from suite.models.load import load_model
from suite.plan import COORDINATOR
from suite.regions import full_box
from suite.runtime.engine import compile_program, parties
from suite.runtime.metrics import logs_folder
from suite.runtime.replay import locate_mismatch, replay
from suite.schemes import SCHEMES, make_plan
from suite.verify import compare_tensors

SMALL = (3, 112, 112)


@pytest.fixture(scope="module")
def vgg():
    backend = make_backend("torch")
    prepared = backend.prepare(load_model("vgg16", SMALL, 0))
    x = torch.randn(1, *SMALL, generator=torch.Generator().manual_seed(1))
    with backend.active():
        reference = prepared.monolithic(x)
    return prepared.graph, backend, x, reference


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("fleet", ["3", "pico-hetero", "halp-gpu"])
def test_replay_is_bit_exact(vgg, scheme, fleet):
    graph, backend, x, reference = vgg
    plan = make_plan(scheme, graph, uniform_fleet(3) if fleet == "3" else load_fleet(fleet))
    out = replay(plan, graph, backend, x, 60.0)
    assert compare_tensors(out[graph.outputs[0]], reference).bit_exact


def test_programs_pair_every_message(vgg):
    """Each send of one party is the receive of another, with the same tag and shape."""
    graph, _, _, _ = vgg
    plan = make_plan("halp", graph, load_fleet("halp-gpu"))
    programs = {p: compile_program(plan, graph, p) for p in parties(plan)}
    sends, recvs = set(), set()
    for party, program in programs.items():
        for step in program.steps:
            sends |= {(party, m.peer, m.index, m.shape) for m in step.send_before + step.send_after}
            recvs |= {(m.peer, party, m.index, m.shape) for m in step.recv_before + step.recv_after}
    assert sends == recvs and sends
    # the hub is a device: the frame enters it from the coordinator and the output returns
    coordinator = programs[COORDINATOR].steps
    assert coordinator[0].stage == -1 and coordinator[-1].stage == len(plan.stages)


def test_locate_mismatch_names_the_first_tiled_node_that_differs(vgg, monkeypatch):
    graph, backend, x, reference = vgg
    plan = make_plan("deepthings", graph, uniform_fleet(2))
    exact_pool = EXACT_KERNELS["maxpool"]

    def drifting_pool(node, xs, region):  # wrong in tiles only, like a kernel that depends on map size
        y = exact_pool(node, xs, region)
        return y if region.out == full_box(node) else y + 1e-3

    monkeypatch.setitem(EXACT_KERNELS, "maxpool", drifting_pool)
    said = locate_mismatch(plan, graph, backend, x, reference, 60.0)
    first_pool = next(n for n in graph.nodes if graph[n].op == "maxpool")
    assert f"'{first_pool}'" in said and "dev" in said


# -- real processes -----------------------------------------------------------------------------


def suite(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def run_json(tmp_path: Path, *args: str) -> dict:
    done = suite("run", "--frames", "2", "--warmup", "1", "--json", "-o", str(tmp_path / "out"), *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("scheme,devices", [("single", 2), ("modnn", 3), ("modnn-gather", 3),
                                            ("deepthings", 4), ("efl", 3), ("halp", 3), ("pico", 4),
                                            ("ofl", 3)])  # fmt: skip
def test_every_scheme_runs_bit_exact_on_workers(tmp_path, scheme, devices):
    result = run_json(tmp_path, "--model", "vgg16", "--input-size", "3x112x112", "--scheme", scheme,
                      "--devices", str(devices), "--no-baseline")  # fmt: skip
    assert result["bit_exact"] and result["complete"] and result["frames"] == 2
    assert result["scheme"] == scheme and result["latency_s"] > 0 and result["throughput_fps"] > 0
    frames = pd.read_csv(tmp_path / "out" / "frames.csv")
    assert len(frames) == 3 and frames["bit_exact"].all()
    # a receive's wait for its sender is part of the receive, a send's wait for its receiver part of the
    # send; a pipeline's later stages wait for the first
    devices = pd.read_csv(tmp_path / "out" / "devices.csv")
    assert ((devices.recv_wait_s >= 0) & (devices.recv_wait_s <= devices.recv_s)).all(), devices
    assert ((devices.send_wait_s >= 0) & (devices.send_wait_s <= devices.send_s)).all(), devices
    if scheme == "pico":
        assert (devices.recv_wait_s > 0).any(), devices


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_deepthings_reuse_runs_bit_exact_on_workers(tmp_path, backend):
    """DeepThings' data reuse on worker processes: YOLOv2's first 16 layers at 96x96 in a 2x3 grid on
    three devices, the B tiles taking bands that other devices computed, through the gateway; every
    frame bit-exact against the monolithic model."""
    from suite.graph import from_model
    from suite.plan import save_plan

    graph = from_model(load_model("yolov2_16", (3, 96, 96), 0, weights=False))
    planned = make_plan("deepthings-reuse", graph, uniform_fleet(3), grid=(2, 3), fused_pieces=16)
    first, then = planned.stages[:2]
    reused = {t for w in then.work for t in w.reused}
    assert then.continues and reused
    # bands cross devices: to the gateway after the A tiles, from it before the B tiles
    assert any(t.tensor in reused and t.dst == planned.hub for t in first.transfers)
    assert any(t.tensor in reused and t.src == planned.hub for t in then.transfers)
    save_plan(planned, tmp_path / "plan.json")
    result = run_json(tmp_path, "--plan", str(tmp_path / "plan.json"), "--model", "yolov2_16", "--input-size",
                      "3x96x96", "--devices", "3", "--backend", backend, "--no-baseline")  # fmt: skip
    assert result["bit_exact"] and result["complete"] and result["scheme"] == "deepthings-reuse"
    frames = pd.read_csv(tmp_path / "out" / "frames.csv")
    assert frames["bit_exact"].all()


# Each model and each scheme once in every run; the other two pairs nightly (`zoo`).
@pytest.mark.parametrize("model,size,scheme", [
    ("resnet18", "3x112x112", "pico"), ("inception_v3", "3x160x160", "halp"),
    pytest.param("resnet18", "3x112x112", "halp", marks=pytest.mark.zoo),
    pytest.param("inception_v3", "3x160x160", "pico", marks=pytest.mark.zoo),
])  # fmt: skip
def test_residual_and_inception_models_run_bit_exact(tmp_path, model, size, scheme):
    result = run_json(tmp_path, "--model", model, "--input-size", size, "--scheme", scheme,
                      "--devices", "3", "--no-baseline")  # fmt: skip
    assert result["bit_exact"] and result["complete"]


def test_run_reports_speedup_and_saves_traceable_results(tmp_path):
    result = run_json(tmp_path, "--model", "vgg16", "--input-size", "3x112x112", "--scheme", "pico",
                      "--devices", "2")  # fmt: skip
    for key in (
        "scheme",
        "model",
        "devices",
        "frames",
        "latency_s",
        "throughput_fps",
        "speedup_vs_single",
        "bit_exact",
        "predicted",
    ):
        assert result[key] is not None, key
    assert result["single"]["throughput_fps"] > 0
    assert set(result["predicted"]) >= {"latency_s", "throughput_fps", "latency_error", "throughput_error"}
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["plan_hash"] == summary["metadata"]["plan_hash"]
    assert summary["metadata"]["versions"]["torch"] == torch.__version__
    frames = pd.read_csv(out / "frames.csv")
    assert set(frames["run"]) == {"plan", "single"}
    devices = pd.read_csv(out / "devices.csv")
    plan_devices = devices[(devices["run"] == "plan") & (devices["device"] != "coordinator")]
    single = devices[(devices["run"] == "single") & (devices["device"] != "coordinator")]
    # each pipeline stage keeps only its own layers' weights
    assert (plan_devices["weights_bytes"] < single["weights_bytes"].max()).all()
    assert (plan_devices["compute_s"] > 0).all()
    trace = json.loads((out / "trace.json").read_text())
    assert {e["cat"] for e in trace["traceEvents"] if e["ph"] == "X"} == {"compute", "send", "recv"}


@pytest.mark.slow
def test_repeats_interleave_with_the_single_device_and_report_intervals(tmp_path):
    """--repeat 2: plan, single, plan, single on one clock; every frame kept by repeat; the summary,
    its JSON and stats.csv carry the percentiles and each speedup's interval."""
    result = run_json(tmp_path, "--model", "vgg16", "--input-size", "3x64x64", "--scheme", "pico",
                      "--devices", "2", "--repeat", "2")  # fmt: skip
    figures = result["statistics"]
    assert figures["repeats"] == 2 and figures["latency_s"]["count"] == 4
    speedup = figures["speedup_vs_single"]
    assert speedup["low"] <= result["speedup_vs_single"] == speedup["value"] <= speedup["high"]
    assert [(r["repeat"], r["complete"]) for r in result["repeats"]] == [(1, True), (2, True)]
    frames = pd.read_csv(tmp_path / "out" / "frames.csv")
    starts = frames.groupby(["repeat", "run"])["start_s"].min()  # every run's frames, in the order they ran
    assert list(starts.sort_values().index) == [(1, "plan"), (1, "single"), (2, "plan"), (2, "single")]
    table = pd.read_csv(tmp_path / "out" / "stats.csv").set_index(["run", "metric"])
    assert table.loc[("speedup", "speedup_vs_single"), "ci_low"] == pytest.approx(speedup["low"])
    assert table.loc[("plan", "latency_p99_s"), "value"] == pytest.approx(figures["latency_s"]["p99"])


def test_saved_plan_runs_and_is_checked_against_the_command(tmp_path):
    plan = tmp_path / "plan.json"
    assert suite("plan", "--model", "vgg16", "--input-size", "3x112x112", "--scheme", "halp", "--devices",
                 "2", "-o", str(plan)).returncode == 0  # fmt: skip
    result = run_json(tmp_path, "--plan", str(plan), "--input-size", "3x112x112", "--no-baseline")
    assert result["scheme"] == "halp" and result["bit_exact"]
    for args, said in [
        (("--model", "resnet18"), "is for vgg16 3x112x112"),
        (("--input-size", "3x112x112", "--devices", "3"), "made for fleet '2xlocal'"),
    ]:
        assert_one_line_error(suite("run", "--plan", str(plan), *args), said)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args,said", [
    (("--backend", "tpu"), "unknown backend 'tpu'"),
    (("--worker-python", "/nonexistent/python3"), "device dev0: cannot start a worker"),
    (("--frames", "0"), "argument --frames: 0 must be at least 1"),
    (("--repeat", "0"), "argument --repeat: 0 must be at least 1"),
])  # fmt: skip
def test_bad_run_input_is_one_line_exit_2(args, said):
    done = suite("run", "--model", "vgg16", "--input-size", "3x64x64", "--devices", "2", *args)
    assert_one_line_error(done, said)


def test_workers_with_other_weights_than_the_coordinator_are_named(tmp_path):
    """A factory whose weights depend on the process (not on --seed) once failed as a mismatch that
    blamed "threads, flags"; every worker now proves its weights before the first frame. (torch
    workers build the model; onnxruntime workers load the coordinator's, so theirs cannot drift.)"""
    (tmp_path / "drifting.py").write_text(
        "import os, torch\n"
        "def build():\n"
        "    conv = torch.nn.Conv2d(3, 4, 3, padding=1)\n"
        "    torch.nn.init.constant_(conv.weight, (os.getpid() % 97) / 100)\n"
        "    return torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "suite", "run", "--model", "drifting:build", "--input-size",
                           "3x32x32", "--scheme", "pico", "--devices", "2", "--backend", "torch",
                           "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "holds other weights for node '_0' than the coordinator" in done.stderr
    said = [line for line in said_lines(done.stderr) if not line.startswith("suite doctor:")]
    assert len(said) == 1 and not (tmp_path / "out").exists()  # the doctor speaks once a session


def test_port_in_use_is_one_line_exit_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", _free_port()))
        busy.listen()
        port = busy.getsockname()[1]
        done = suite("run", "--model", "vgg16", "--input-size", "3x64x64", "--devices", "2", "--port",
                     str(port))  # fmt: skip
    assert_one_line_error(done, f"--port {port} on 127.0.0.1 is in use")


def test_worker_without_torch_is_reported_by_device(tmp_path):
    python = "/usr/bin/python3"
    if not os.path.exists(python) or subprocess.run([python, "-c", "import torch"],
                                                    capture_output=True).returncode == 0:  # fmt: skip
        pytest.skip("needs a system python without torch")
    done = suite("run", "--model", "vgg16", "--input-size", "3x64x64", "--devices", "2", "--worker-python",
                 python, "-o", str(tmp_path / "results"))  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and "the worker could not start" in lines[0] and "torch" in lines[0]


def test_a_run_that_fails_before_its_first_frame_keeps_its_workers_logs(tmp_path):
    """Only a worker's last line reaches the error; the rest of its log (a traceback, gloo's complaint
    before it) is kept beside the unused results folder and named, one folder per failure."""
    worker = tmp_path / "worker"
    worker.write_text(
        "#!/bin/sh\necho 'the line before the last'\necho 'this worker will not start'\nexit 3\n"
    )
    worker.chmod(0o755)
    out = tmp_path / "results"
    for kept in ["results.failed-logs", "results.failed-logs-2"]:
        done = suite("run", "--model", "vgg16", "--input-size", "3x64x64", "--devices", "2",
                     "--worker-python", str(worker), "-o", str(out))  # fmt: skip
        assert_one_line_error(
            done, f"this worker will not start; the workers' logs are kept in {tmp_path / kept}"
        )
        logs = {log.name: log.read_text() for log in (tmp_path / kept).rglob("*.log")}
        assert "the line before the last" in logs["dev0.log"], logs
    assert not out.exists() and not logs_folder(out).exists()


# -- faults ----------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum,timeout", [(signal.SIGKILL, 30), (signal.SIGSTOP, 4)])
def test_a_failing_worker_ends_the_run_naming_its_device(tmp_path, signum, timeout):
    """A crashed (SIGKILL) or hung (SIGSTOP) worker: the run exits non-zero within the timeout,
    names the device, leaves no process behind and keeps the frames done, marked incomplete."""
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "suite", "run", "--model", "vgg16", "--input-size",
                            "3x112x112", "--scheme", "pico", "--devices", "2", "--frames", "500",
                            "--no-baseline", "--timeout", str(timeout), "-o", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        while "0/502 frames" not in run.stderr.readline():  # the workers are up and frames flow
            assert run.poll() is None, run.stderr.read()
        time.sleep(2)
        workers = sorted(_children(run.pid))
        assert len(workers) == 2
        victim = workers[-1]
        argv = Path(f"/proc/{victim}/cmdline").read_text().split("\0")
        device = f"dev{int(argv[argv.index('--rank') + 1]) - 1}"  # rank 0 is the coordinator
        os.kill(victim, signum)
        killed = time.monotonic()
        run.wait(timeout + 30)
        took = time.monotonic() - killed
        stderr = run.stderr.read()
    finally:
        run.kill()
    assert run.returncode == 1, stderr
    assert took < timeout + 15
    error = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and f"device {device}" in error[0], stderr
    assert not any(_alive(pid) for pid in workers)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and device in summary["error"]
    assert len(pd.read_csv(out / "frames.csv")) >= 1


def test_fleet_devices_are_slowed_to_their_profile(tmp_path):
    """A Pi 4B worker gets the share of a host core that its profile says (cgroup quota, root only)."""
    from suite.fleet import load_profile, local_profile
    from suite.runtime.emulate import cpu_quota_available

    result = run_json(tmp_path, "--model", "vgg16", "--input-size", "3x64x64", "--scheme", "single",
                      "--fleet", "pico-homo-2")  # fmt: skip
    assert result["bit_exact"] and result["speedup_vs_single"] == 1.0
    devices = pd.read_csv(tmp_path / "out" / "devices.csv").set_index("device")
    if not cpu_quota_available():
        assert pd.isna(devices.loc["pi0", "cpu_cores"])
        pytest.skip("cpu quotas need root and cgroup v1; checked that the worker ran unlimited")
    host = load_profile(local_profile(result["backend"]))  # the run's backend prices this host
    expected = load_profile("rpi4b-1500mhz").macs_per_s / host.macs_per_s
    assert devices.loc["pi0", "cpu_cores"] == pytest.approx(expected, abs=0.01)
