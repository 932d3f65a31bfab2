"""The package as a user installs it: a wheel, away from the checkout, finds its bundled fleets,
profiles and baselines; `--version`; a closed pipe ends quietly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from toys import assert_one_line_error

from suite import package
from suite.cli import EXIT_BROKEN_PIPE, main

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (no stale build/ or egg-info of the checkout's can
    leak into it) and installed alone into a folder: its dependencies stay this environment's."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(PROJECT / name, source / name)
    shutil.copytree(PROJECT / "suite", source / "suite", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", source],
                   check=True)  # fmt: skip
    [wheel] = (root / "dist").glob("suite-*.whl")
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    return site


def _installed(site: Path, cwd: Path, *argv: str | Path) -> subprocess.CompletedProcess:
    """Run with the wheel's folder first on the path: ahead of site-packages, whose editable install
    would otherwise import the checkout."""
    env = os.environ | {"PYTHONPATH": str(site)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_wheel_finds_its_data_from_another_folder(wheel_site, tmp_path):
    script = "import suite.package as p; print(p.__file__, p.data('fleets'), p.checkout())"
    found = _installed(wheel_site, tmp_path, sys.executable, "-c", script)
    here = wheel_site / "suite"  # the wheel's files, not the checkout's; and no checkout found
    assert found.stdout.split() == [str(here / "package.py"), str(here / "data/fleets"), "None"], found.stderr
    suite = wheel_site / "bin" / "suite"
    version = _installed(wheel_site, tmp_path, suite, "--version")
    assert re.fullmatch(r"suite \d+\.\d+\.\d+\S*\n", version.stdout), version.stderr  # no checkout, no commit
    plan = _installed(wheel_site, tmp_path, suite, "plan", "--model", "vgg16", "--input-size", "3x64x64",
                      "--scheme", "pico", "--fleet", "pico-hetero")  # fmt: skip
    assert plan.returncode == 0 and "predicted: latency" in plan.stdout, plan.stderr
    table = _installed(wheel_site, tmp_path, suite, "reproduce", "pico-table1", "-o", "out")
    assert table.returncode == 0, table.stderr
    assert (tmp_path / "out" / "pico-table1.csv").is_file() and (tmp_path / "out" / "REPORT.md").is_file()
    deploy = _installed(wheel_site, tmp_path, suite, "deploy", "--inventory", "pi-lab")
    assert_one_line_error(deploy, "needs the suite's source checkout")


def test_version_names_the_commit_in_a_checkout(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert re.fullmatch(r"suite \d+\.\d+\.\d+\S* \(git [0-9a-f]{12}(-dirty)?\)\n", capsys.readouterr().out)


def test_checkout_only_commands_say_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(package, "checkout", lambda: None)
    assert main(["deploy", "--inventory", "pi-lab"]) == 2
    assert "suite deploy needs the suite's source checkout" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_the_output_quietly():
    """`suite plan --json | head -1`: the pipe's reader is gone before the plan is written."""
    started = subprocess.Popen([sys.executable, "-m", "suite", "plan", "--model", "vgg16", "--input-size",
                                "3x64x64", "--scheme", "pico", "--fleet", "pico-hetero", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    started.stdout.close()
    _, err = started.communicate(timeout=300)
    assert started.returncode == EXIT_BROKEN_PIPE and err == ""
