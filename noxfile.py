"""Developer sessions. Every install is pinned by constraints.txt (torch's CPU wheel included)."""

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

INSTALL = ("-c", "constraints.txt", "-e", ".[test]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite without the whole-zoo matrix (see the `zoo` session)."""
    session.install(*INSTALL)
    session.run("pytest", "-p", "no:cacheprovider", "--timeout=1800", "-m", "not slow",
                *session.posargs)


@nox.session
def zoo(session: nox.Session) -> None:
    """Every zoo model x parts x grids x modes x backends, bit for bit (tens of minutes)."""
    session.install(*INSTALL)
    session.run("pytest", "-p", "no:cacheprovider", "-m", "slow", "-v", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks in tests/bench (the other sessions skip them); timings to .benchmarks/bench.json."""
    session.install(*INSTALL)
    session.run("pytest", "-p", "no:cacheprovider", "tests/bench", "--benchmark-only",
                "--benchmark-json=.benchmarks/bench.json", "--benchmark-columns=median,iqr,min,max,rounds",
                *session.posargs)


@nox.session
def reproduce(session: nox.Session) -> None:
    """The papers' figures beside their published numbers: reports/<figure>.csv, .png and REPORT.md."""
    session.install(*INSTALL)
    session.run("suite", "reproduce", *(session.posargs or ["all"]), "-o", "reports")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-c", "constraints.txt", "ruff")
    session.run("ruff", "check", "suite", "tests", "noxfile.py")

