"""asv tracking (suite/tracking/asvtrack.py): the regression rule, and the driver end to end on a
small asv project of its own (real asv, real git, the existing environment), and on this project
with a deliberately slowed scheme (nightly: `nox -s zoo`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from toys import said_lines

from suite.errors import UserError
from suite.tracking.asvtrack import (
    EXACT,
    OFFLINE_COPIES,
    SPEEDUP,
    SPEEDUP_FALL_THRESHOLD,
    VENDOR,
    offline_page,
    regressions,
)

PROJECT = Path(__file__).resolve().parents[1]
PICO = f"{SPEEDUP}('pico')"


def test_a_speedup_that_falls_past_the_threshold_is_named_with_both_values():
    before = {PICO: 0.5, f"{SPEEDUP}('halp')": 0.8}  # periods over the single device's: speedups 2x, 1.25x
    after = {PICO: 0.9, f"{SPEEDUP}('halp')": 0.82}
    found = regressions(before, after)
    assert [r.benchmark for r in found] == [PICO]
    assert "speedup fell from 2.00x to 1.11x" in str(found[0]) and "0.5 -> 0.9" in str(found[0])


def test_a_fall_within_the_threshold_passes_and_the_threshold_is_a_fall_of_the_speedup():
    just_inside = 0.5 / (1 - SPEEDUP_FALL_THRESHOLD) * 0.999
    just_outside = 0.5 / (1 - SPEEDUP_FALL_THRESHOLD) * 1.001
    assert regressions({PICO: 0.5}, {PICO: just_inside}) == []
    assert len(regressions({PICO: 0.5}, {PICO: just_outside})) == 1
    assert regressions({PICO: 0.9}, {PICO: 0.3}) == []  # faster is never a regression


def test_exactness_may_never_fall_and_a_failed_benchmark_is_a_regression():
    exact = f"{EXACT}('pico')"
    assert "no longer bit-exact" in str(regressions({exact: 1}, {exact: 0})[0])
    assert "failed" in str(regressions({PICO: 0.5}, {PICO: None})[0])
    assert regressions({PICO: 0.5}, {}) == []  # not run this time (--bench): nothing to say
    assert regressions({PICO: None}, {PICO: 0.9}) == []  # nothing to compare with


def test_asvs_page_regressions_use_the_sessions_threshold():
    from asv.util import load_json

    config = load_json(str(PROJECT / "asv.conf.json"), js_comments=True)
    period_rise = 1 / (1 - SPEEDUP_FALL_THRESHOLD) - 1  # asv sees the period over single, 1 / speedup
    assert config["regressions_thresholds"] == {".*": pytest.approx(period_rise, abs=1e-4)}
    assert "project_url" not in config  # no placeholder


def test_every_offline_copy_is_vendored_with_its_licence():
    assert {p.name for p in VENDOR.iterdir()} == {*OFFLINE_COPIES.values(), "README.md"}
    licences = (VENDOR / "README.md").read_text()
    assert all(name in licences for name in OFFLINE_COPIES.values())


def test_a_cdn_library_without_a_copy_fails_naming_it_and_leaves_the_page(tmp_path):
    page = tmp_path / "index.html"
    page.write_text(
        '<script src="https://code.jquery.com/jquery-3.3.1.min.js" integrity="sha256-x" '
        'crossorigin="anonymous"></script>\n<script src="https://cdn.example/new.js"></script>\n'
        '<a href="https://github.com/airspeed-velocity/asv/">asv</a>\n'
    )
    before = page.read_text()
    with pytest.raises(UserError, match=r"loads https://cdn.example/new.js from the network"):
        offline_page(tmp_path)
    assert page.read_text() == before and not (tmp_path / "vendor").exists()  # nothing half-written

    page.write_text(before.replace('<script src="https://cdn.example/new.js"></script>\n', ""))
    offline_page(tmp_path)
    text = page.read_text()
    assert '<script src="vendor/jquery-3.3.1.min.js"></script>' in text  # the CDN's hash is not the copy's
    assert 'href="https://github.com/airspeed-velocity/asv/"' in text  # a link, not a library: kept
    assert (tmp_path / "vendor" / "jquery-3.3.1.min.js").is_file()


# ---- the driver on a small asv project of its own -------------------------------------------------

BENCHMARK = """
import speed  # the project's code: each commit's own


class Schemes:
    params = ["pico"]
    param_names = ["scheme"]

    def track_period_over_single(self, scheme):
        return speed.PERIOD

    def track_bit_exact(self, scheme):
        return speed.EXACT
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip


def _commit(repo: Path, period: float, exact: int) -> str:
    (repo / "speed.py").write_text(f"PERIOD = {period}\nEXACT = {exact}\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"period {period}, exact {exact}")
    return _git(repo, "rev-parse", "HEAD")


def _asvtrack(repo: Path, *args: str, machine: str = "test-machine") -> subprocess.CompletedProcess:
    env = {**os.environ, "SUITE_ASV_MACHINE": machine}
    return subprocess.run([sys.executable, "-m", "suite.tracking.asvtrack", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "benchmarks" / "runtime.py").write_text(BENCHMARK)
    (repo / "asv.conf.json").write_text((PROJECT / "asv.conf.json").read_text())
    (repo / ".gitignore").write_text(".asv/\nreports/asv/\n")
    _git(repo, "init", "-q")
    return repo


def test_two_commits_give_two_points_and_a_slowed_one_fails_naming_the_benchmark(project):
    first = _commit(project, 0.50, 1)
    done = _asvtrack(project, "run")
    assert done.returncode == 0, done.stderr
    assert "nothing to compare with" in done.stdout
    stored = project / "benchmarks" / "results" / "test-machine" / f"{first[:8]}-existing-py3.11.json"
    result = json.loads(stored.read_text())  # one name for the environment, wherever the checkout is
    assert result["env_name"] == "existing-py3.11" and result["params"]["python"] == "3.11"
    machine = json.loads((stored.parent / "machine.json").read_text())  # the host's, as asv reads it
    assert machine["num_cpu"] == str(os.cpu_count()) and machine["os"].startswith(os.uname().sysname)
    assert machine["cpu"] and int(machine["ram"]) > 0
    page = (project / "reports" / "asv" / "index.html").read_text()
    assert "https://cdn" not in page and 'src="vendor/jquery-3.3.1.min.js"' in page  # draws offline

    second = _commit(project, 0.52, 1)  # 4 % slower: noise, within the threshold
    done = _asvtrack(project, "run")
    assert done.returncode == 0, done.stderr
    assert f"no regression from {first[:8]} to {second[:8]}" in done.stdout
    graphs = project / "reports" / "asv" / "graphs"
    graph = next(graphs.rglob("runtime.Schemes.track_period_over_single.json"))
    assert len(json.loads(graph.read_text())) == 2  # two commits, two points

    third = _commit(project, 0.90, 0)  # the deliberately slowed plan: speedup 1.92x -> 1.11x, not exact
    done = _asvtrack(project, "run")
    assert done.returncode == 1
    assert (f"REGRESSION {second[:8]} -> {third[:8]}: {PICO}: speedup fell from 1.92x to 1.11x"
            in done.stderr)  # fmt: skip
    assert f"{EXACT}('pico'): outputs are no longer bit-exact" in done.stderr
    assert _asvtrack(project, "compare", first, second).returncode == 0  # the stored pair still passes


def test_backfill_measures_each_commit_with_its_own_code(project):
    commits = [_commit(project, period, 1) for period in (0.4, 0.5, 0.6)]
    done = _asvtrack(project, "backfill", "2")
    assert done.returncode == 0, done.stderr
    folder = project / "benchmarks" / "results" / "test-machine"
    measured = {p.name[:8] for p in folder.glob("*-existing-*.json")}
    assert measured == {c[:8] for c in commits[1:]}  # the last two, oldest first
    values = {c[:8]: json.loads(next(folder.glob(f"{c[:8]}-*.json")).read_text())["results"]
              for c in commits[1:]}  # fmt: skip
    assert [v[SPEEDUP][0][0] for v in values.values()] == [0.5, 0.6]  # each commit's own speed.py
    assert not list((project / ".asv").glob("worktrees/*"))  # worktrees removed
    assert "already measured" in _asvtrack(project, "backfill", "1").stdout


def test_compare_without_stored_results_is_one_line(project):
    _commit(project, 0.5, 1)
    done = _asvtrack(project, "compare")
    assert done.returncode == 2 and len(said_lines(done.stderr)) == 1
    assert "need stored results" in done.stderr


# ---- this project's benchmarks with a slowed scheme ----------------------------------------------

SLOWED = """

def plan(graph, fleet, **options):  # deliberately slowed: PICO's plan keeps every layer on one device
    from suite.schemes import single

    return single.plan(graph, fleet)
"""


@pytest.mark.zoo  # two real benchmark runs (6 minutes); CI has the nightly gate's (tests/test_nightly.py)
def test_a_slowed_scheme_fails_the_asv_session_and_names_it(tmp_path):
    """The real scheme benchmarks on this commit, then on a commit whose PICO plans everything onto
    one device: the session fails naming PICO's tracked speedup with both values."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT), str(clone)], check=True)
    for folder in ("suite", "benchmarks"):  # this working tree is the code under test
        shutil.rmtree(clone / folder, ignore_errors=True)
        skip = shutil.ignore_patterns("__pycache__", "results")
        shutil.copytree(PROJECT / folder, clone / folder, ignore=skip)
    shutil.copy(PROJECT / "asv.conf.json", clone / "asv.conf.json")
    _git(clone, "add", "-A")
    _git(clone, "commit", "-q", "--allow-empty", "-m", "the code under test")
    normal = _asvtrack(clone, "run", "--bench", r"runtime\.Schemes", machine="test-slowed")
    assert normal.returncode == 0, normal.stderr
    with (clone / "suite" / "schemes" / "pico.py").open("a") as source:
        source.write(SLOWED)
    _git(clone, "commit", "-q", "-am", "pico: everything on one device")
    slowed = _asvtrack(clone, "run", "--bench", r"runtime\.Schemes", machine="test-slowed")
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    line = next(ln for ln in slowed.stderr.splitlines() if PICO in ln)
    assert "speedup fell from" in line and "period over the single device's" in line
