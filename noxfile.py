"""Developer sessions. Every install is pinned by constraints.txt (torch's CPU wheel included)."""

import tomllib

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]  # plain `nox`; the others are long, root-only or the lab host's

INSTALL = ("-c", "constraints.txt", "-e", ".[test]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite without the whole-zoo matrix (see the `zoo` session)."""
    session.install(*INSTALL)
    session.run("pytest", "-p", "no:cacheprovider", "--timeout=1800", "-m", "not slow and not blas",
                *session.posargs)


@nox.session
def zoo(session: nox.Session) -> None:
    """The slow tests: every zoo model x parts x grids x modes x backends, bit for bit (tens of minutes)."""
    session.install(*INSTALL)
    session.run("pytest", "-p", "no:cacheprovider", "-m", "slow", "-v", *session.posargs)


@nox.session
def blas(session: nox.Session) -> None:
    """The exactness matrix under every BLAS code path this CPU has (MKL_CBWR, MKL's instruction cap,
    ATen's SIMD dispatch) at 1, 2 and 4 threads, on the 1x1-heavy models and YOLOv2's grid (about
    10 minutes); `nox -s zoo` runs one case per path."""
    session.install(*INSTALL)
    session.run("pytest", "-p", "no:cacheprovider", "-m", "blas", "-v", *session.posargs)


@nox.session(python=False)
def aarch64(session: nox.Session) -> None:
    """The exactness checks under a Raspberry Pi's instruction set (hardware/aarch64/README.md).

    qemu user mode, Debian's arm64 CPython 3.11 and the pinned aarch64 wheels, built once into
    .cache/aarch64/ (1.7 GB; root: apt and a chroot), then suite doctor and suite verify on an emulated
    Pi 4 and Pi 5 (10-15 minutes each); fails when a case the suite accepts is not bit-exact (a backend
    the doctor refuses is reported). `nox -s aarch64 -- --cpu pi4 --backend torch` picks cases."""
    session.run("hardware/aarch64/setup.sh", external=True)
    session.run("hardware/aarch64/check.sh", *(session.posargs or ["--doctor"]), external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """pytest-benchmark timings of the core, planning and runtime (tests/bench) to .benchmarks/bench.json.

    The other sessions skip these; asv tracks across commits (`nox -s asv`)."""
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
def asv(session: nox.Session) -> None:
    """asv on this commit vs the previous stored result (fails on a regression); HTML to reports/asv/.

    Runs in this session's environment (asv's `existing`); fails when a tracked speedup falls past the
    threshold or an output stops being bit-exact. `nox -s asv -- run --quick`, `-- backfill N`,
    `-- compare [OLD NEW]`, `-- noise --runs 3`, `-- publish` (suite/tracking/asvtrack.py). Commit
    benchmarks/results/ to keep the history. The page carries its libraries (suite/data/asv_vendor_js/):
    `python -m http.server -b 127.0.0.1 -d reports/asv` serves it without a network."""
    session.install(*INSTALL)
    session.run("python", "-m", "suite.tracking.asvtrack", *(session.posargs or ["run"]))


@nox.session
def lab(session: nox.Session) -> None:
    """Nightly lab run (root): lab up, deploy, matrix, baseline check, report, lab down; a cron calls it.

    The matrix `full` is every scheme x vgg16, resnet34, inception_v3 x 2, 4, 8 devices; every frame
    is checked, the cells are compared with suite/data/baselines/nightly/, a dated report goes to
    reports/nightly/, and the session fails on a regression or a mismatch. `nox -s lab -- --matrix
    smoke` is CI's short smoke, `-- --inventory I` a real fleet."""
    session.install(*INSTALL)
    session.run("suite", "nightly", "run", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, the tests, the asv benchmarks, the docs' hook and this file."""
    session.install("-c", "constraints.txt", "ruff")
    session.run("ruff", "check", "suite", "tests", "benchmarks", "docs/hooks", "noxfile.py")


@nox.session
def docs(session: nox.Session) -> None:
    """The manual (docs/) built into site/ with mkdocs --strict: a warning (a broken link or anchor, a
    page missing from the nav) fails it. The CLI reference is generated from suite.cli's parser at
    build time (docs/hooks/cli_reference.py), so only the `docs` extra is installed, not the suite."""
    with open("pyproject.toml", "rb") as file:
        requirements = tomllib.load(file)["project"]["optional-dependencies"]["docs"]
    session.install("-c", "constraints.txt", *requirements)
    session.run("mkdocs", "build", "--strict", *session.posargs)

