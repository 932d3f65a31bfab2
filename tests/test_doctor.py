"""`suite doctor`: per-host verdicts on each backend's exactness, cached, and what verify and run do
with them (refuse a backend that is not exact here, default to the fastest one that is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from suite import doctor
from suite.doctor import Case, Report, Verdict, cache_path, host_facts


def _suite(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})  # fmt: skip


def _verdict(backend: str, exact: bool, speed_s: float) -> Verdict:
    failures = [] if exact else [Case("conv 1x1 256->64", "3 strips", 2, False, 7)]
    return Verdict(backend, exact, 10, failures, [1, 2], 1.0, speed_s, "0" * 16)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh doctor cache for this test, and a way to write verdicts into it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def write(*verdicts: Verdict) -> None:
        host = host_facts()
        path = cache_path(host)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(Report(host, {v.backend: v for v in verdicts}).to_dict()))

    return write


def test_doctor_examines_a_backend_and_caches_the_verdict(cache):
    done = _suite("doctor", "--json", "--backend", "torch")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    torch_verdict = report["backends"]["torch"]
    assert torch_verdict["exact"] and torch_verdict["failures"] == [] and torch_verdict["threads"][0] == 1
    assert torch_verdict["cases"] >= 2 * 2 * len(doctor.PROBES)  # 2 cuts x 2 thread counts a probe
    assert report["default_backend"] == "torch" and report["host"]["isa"]
    assert doctor.recorded("torch").fingerprint == torch_verdict["fingerprint"]  # cached for this host


def test_a_backend_that_is_not_exact_here_is_refused_in_one_line(cache):
    cache(_verdict("torch", False, 0.1), _verdict("onnxruntime", True, 0.2))
    for command in (("verify", "--parts", "2"), ("run", "--devices", "2", "--frames", "1")):
        done = _suite(*command, "--model", "resnet18", "--input-size", "3x32x32", "--backend", "torch")
        assert done.returncode == 2 and done.stdout == ""
        (line,) = done.stderr.strip().splitlines()
        assert "backend 'torch' is not exact on this host" in line and "conv 1x1 256->64" in line
        assert "--backend onnxruntime" in line


def test_the_default_is_the_fastest_exact_backend_and_says_so(cache):
    cache(_verdict("torch", True, 0.1), _verdict("onnxruntime", True, 0.2))
    done = _suite("verify", "--model", "resnet18", "--input-size", "3x32x32", "--parts", "2")
    assert done.returncode == 0, done.stderr
    assert "on torch, the fastest exact backend on this host" in done.stdout
    cache(_verdict("torch", True, 0.1), _verdict("onnxruntime", False, 0.05))
    done = _suite("verify", "--model", "resnet18", "--input-size", "3x32x32", "--parts", "2", "--json")
    assert json.loads(done.stdout)["backend"] == "torch" and json.loads(done.stdout)["backend_is_default"]


def test_with_no_exact_backend_the_default_is_refused_but_torch_fast_runs(cache):
    cache(_verdict("torch", False, 0.1), _verdict("onnxruntime", False, 0.2),
          _verdict("torch-fast", False, 0.0))  # fmt: skip
    done = _suite("verify", "--model", "resnet18", "--input-size", "3x32x32", "--parts", "2")
    assert done.returncode == 2 and "no backend is exact on this host" in done.stderr
    done = _suite("verify", "--model", "resnet18", "--input-size", "3x32x32", "--parts", "2", "--backend",
                  "torch-fast")  # fmt: skip
    assert done.returncode in (0, 1) and "on torch-fast" in done.stdout  # measured, never refused


def test_the_blas_environment_and_the_kernels_name_the_cache(monkeypatch):
    plain = cache_path(host_facts())
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    assert cache_path(host_facts()) != plain  # another MKL code path is another arithmetic
    assert host_facts()["environment"]["MKL_CBWR"] == "AVX2"


def test_a_damaged_cache_is_examined_again(cache):
    path = cache_path(host_facts())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert doctor.recorded("torch") is None
