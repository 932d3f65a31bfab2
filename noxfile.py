"""Developer sessions, all run by the interpreter that runs nox: the project's .venv, made by the
README's command 2 (`python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[test]'
&& .venv/bin/nox -s lint tests`), so torch (and every pinned dependency, constraints.txt) is installed
once, not again per session.

The tests come in three sets, by marker:
- `nox -s tests` (README, CI): everything not marked `slow`, `zoo` or `blas`.
- `nox -s slow` (CI): the long cases that catch real regressions: every zoo model fused and layer-wise
  on torch, and on onnxruntime all but the big models' slowest runs (the model idioms the tiler meets:
  plain, residual, bottleneck, branched, depthwise, squeeze-excite, shuffled, space-to-depth), one
  BLAS code path per case, Inception's branches replayed on onnxruntime, the nightly regression gate
  and `suite reproduce all`.
- `nox -s zoo` (nightly): `slow` and the rest (`zoo`): onnxruntime on VGG-16 and, layer-wise, on
  ResNet-34/50, GoogLeNet and Inception, every scheme x model on onnxruntime workers, VGG-16's replays, more
  model x scheme pairs on torch workers, and the asv gate on the real benchmarks.
`nox -s blas` runs the exactness matrix under every BLAS code path.
"""

import importlib.util
import sys
import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"  # the running interpreter's environment
nox.options.sessions = ["lint", "tests"]  # plain `nox`; the others are long, root-only or the lab host's

HERE = Path(__file__).resolve().parent
PYTEST = ("-m", "pytest", "-p", "no:cacheprovider", "--durations=15")  # CI prints its slowest tests


def _python(session: nox.Session) -> str:
    """This interpreter, once it is known to import this checkout's `suite` (else the session would
    test another copy, or fail on a missing import far from the cause)."""
    spec = importlib.util.find_spec("suite")
    found = Path(spec.origin).resolve().parent.parent if spec and spec.origin else None
    if found != HERE:
        where = f"imports suite from {found}" if found else "has no suite installed"
        session.error(
            f"{sys.executable} {where}; run this checkout's environment's nox: python3 -m venv "
            f".venv && .venv/bin/pip install -q -c constraints.txt -e '.[test]' && .venv/bin/nox"
        )
    return sys.executable


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite without the long ones (`nox -s slow`, `nox -s zoo`, `nox -s blas`)."""
    session.run(
        _python(session),
        *PYTEST,
        "--timeout=1800",
        "-m",
        "not slow and not zoo and not blas",
        *session.posargs,
    )


@nox.session
def slow(session: nox.Session) -> None:
    """CI's long tests (`slow`): one case per backend, model idiom and BLAS code path, the nightly
    regression gate and the reproduction; all of the long tests are `nox -s zoo`."""
    session.run(_python(session), *PYTEST, "--timeout=1800", "-m", "slow", "-v", *session.posargs)


@nox.session
def zoo(session: nox.Session) -> None:
    """Every long test (`slow` and `zoo`): every zoo model x parts x grids x modes x backends, bit for
    bit, replayed and on workers, and the asv gate on the real benchmarks (about 30 minutes; nightly)."""
    session.run(_python(session), *PYTEST, "--timeout=1800", "-m", "slow or zoo", "-v", *session.posargs)


@nox.session
def blas(session: nox.Session) -> None:
    """The exactness matrix under every BLAS code path this CPU has (MKL_CBWR, MKL's instruction cap,
    ATen's SIMD dispatch) at 1, 2 and 4 threads, on the 1x1-heavy models and YOLOv2's grid (about
    10 minutes); `nox -s slow` runs one case per path."""
    session.run(_python(session), *PYTEST, "-m", "blas", "-v", *session.posargs)


@nox.session
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
    session.run(
        _python(session),
        *PYTEST,
        "tests/bench",
        "--benchmark-only",
        "--benchmark-json=.benchmarks/bench.json",
        "--benchmark-columns=median,iqr,min,max,rounds",
        *session.posargs,
    )


@nox.session
def reproduce(session: nox.Session) -> None:
    """The papers' figures beside their published numbers: reports/<figure>.csv, .png and REPORT.md."""
    session.run(_python(session), "-m", "suite", "reproduce", *(session.posargs or ["all"]), "-o", "reports")


@nox.session
def asv(session: nox.Session) -> None:
    """asv on this commit vs the previous stored result (fails on a regression); HTML to reports/asv/.

    Runs in this session's environment (asv's `existing`); fails when a tracked speedup falls past the
    threshold or an output stops being bit-exact. `nox -s asv -- run --quick`, `-- backfill N`,
    `-- compare [OLD NEW]`, `-- noise --runs 3`, `-- publish` (suite/tracking/asvtrack.py). Commit
    benchmarks/results/ to keep the history. The page carries its libraries (suite/data/asv_vendor_js/):
    `python -m http.server -b 127.0.0.1 -d reports/asv` serves it without a network."""
    session.run(_python(session), "-m", "suite.tracking.asvtrack", *(session.posargs or ["run"]))


@nox.session
def lab(session: nox.Session) -> None:
    """Nightly lab run (root): lab up, deploy, matrix, baseline check, report, lab down; a cron calls it.

    The matrix `full` is every scheme x vgg16, resnet34, inception_v3 x 2, 4, 8 devices; every frame
    is checked, the cells are compared with suite/data/baselines/nightly/, a dated report goes to
    reports/nightly/, and the session fails on a regression or a mismatch. `nox -s lab -- --matrix
    smoke` is CI's short smoke, `-- --inventory I` a real fleet."""
    session.run(_python(session), "-m", "suite", "nightly", "run", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff's linter and its formatter (`ruff format --check`: a file it would change fails; `# fmt: skip`
    keeps a hand-aligned table as written) over the package, the tests, the asv benchmarks, the docs'
    hook and this file."""
    paths = ["suite", "tests", "benchmarks", "docs/hooks", "noxfile.py"]
    session.run(_python(session), "-m", "ruff", "check", *paths)
    session.run(_python(session), "-m", "ruff", "format", "--check", *paths)


@nox.session
def docs(session: nox.Session) -> None:
    """The manual (docs/) built into site/ with mkdocs --strict: a warning (a broken link or anchor, a
    page missing from the nav) fails it. The CLI reference is generated from suite.cli's parser at
    build time (docs/hooks/cli_reference.py); the `docs` extra (mkdocs) is installed into the
    environment nox runs from, as every session's needs are."""
    with open("pyproject.toml", "rb") as file:
        requirements = tomllib.load(file)["project"]["optional-dependencies"]["docs"]
    session.run(_python(session), "-m", "pip", "install", "-q", "-c", "constraints.txt", *requirements)
    session.run(_python(session), "-m", "mkdocs", "build", "--strict", *session.posargs)
