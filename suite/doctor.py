"""`suite doctor`: which backends compute tiles exactly on this host, and which of those is fastest.

Whether a tile's output equals the whole map's, bit for bit, depends on the CPU, its instruction
set, its BLAS and the thread count (DESIGN.md, "Across hosts"), so it is measured on each host, not
assumed. Each probe is a one-layer model of a kind and shape the zoo's plans cut (dense convs 1x1 to
7x7 at the zoo's widths, strided, dilated and asymmetric ones, depthwise and grouped convs, pools,
batch norm and pointwise functions), cut into 3 strips and a 3x3 grid and compared with the whole
map by `suite.verify` at 1 and N threads; a linear layer's features are split at awkward cuts as
MoDNN splits them, with the weight rows a device keeps. For `torch`, the BLAS premises its
construction rests on (`suite/backends/exact.py`) are probed too: a GEMM call's column does not
depend on the other columns' values, nor on the thread that makes the call.

The report is cached per host (`cache_path`): the CPU, the versions, the BLAS's environment and the
suite's own kernels name it. `suite verify` and `suite run` read it to refuse a backend that is not
exact here (`require_exact`) and to pick the fastest one that is (`default_backend`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from suite.backends import BackendError, make_backend, run_segment, run_whole
from suite.backends.exact import gemm_grid, linear_share
from suite.graph import Graph
from suite.models.load import LoadedModel
from suite.regions import WHOLE, FeatureRange, feature_region
from suite.verify import compare_tensors, verify

SCHEMA_VERSION = 1
EXACT_BACKENDS = ("onnxruntime", "torch")  # the backends that promise exactness, fastest first by design
CUTS = ((3, 1), (3, 3))  # 3 strips and a 3x3 grid: wide and narrow tiles, borders on every side
# The environment variables that change which code a BLAS or threading library runs.
ENVIRONMENT = (
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_NUM_THREADS",
    "MKL_DYNAMIC",
    "OMP_NUM_THREADS",
    "ATEN_CPU_CAPABILITY",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "DNNL_MAX_CPU_ISA",
)


@dataclass(frozen=True)
class Probe:
    """A one-layer model of one kind and shape, cut into tiles and compared with its whole map."""

    name: str
    layers: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]


def _conv(cin: int, cout: int, kernel, stride=1, padding=None, dilation=1, groups=1
          ) -> Callable[[], nn.Module]:  # fmt: skip
    padding = tuple(dilation * (k // 2) for k in kernel) if padding is None else padding
    return lambda: nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups)


def _pointwise() -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(24), nn.SiLU(), nn.BatchNorm2d(24), nn.Sigmoid(),
                         nn.BatchNorm2d(24), nn.Hardswish(), nn.GELU())  # fmt: skip


def _linear() -> nn.Module:
    return nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(2048, 1000))


PROBES = (
    Probe("conv 7x7/2 3->64 (ResNet stem)", _conv(3, 64, (7, 7), 2), (3, 64, 64)),
    Probe("conv 3x3 3->64 (VGG's first)", _conv(3, 64, (3, 3)), (3, 48, 48)),
    Probe("conv 3x3 64->64", _conv(64, 64, (3, 3)), (64, 40, 40)),
    Probe("conv 3x3/2 64->128", _conv(64, 128, (3, 3), 2), (64, 41, 41)),
    Probe("conv 1x1 256->64", _conv(256, 64, (1, 1)), (256, 28, 28)),
    Probe("conv 1x1 64->256", _conv(64, 256, (1, 1)), (64, 28, 28)),
    Probe("conv 1x1 1024->256", _conv(1024, 256, (1, 1)), (1024, 14, 14)),
    Probe("conv 3x3 256->512 (YOLOv2)", _conv(256, 512, (3, 3)), (256, 38, 38)),
    Probe("conv 3x3 512->512", _conv(512, 512, (3, 3)), (512, 14, 14)),
    Probe("conv 5x5 48->64 (Inception)", _conv(48, 64, (5, 5)), (48, 35, 35)),
    Probe(
        "conv 1x7 and 7x1 128->128 (Inception-v3)",
        lambda: nn.Sequential(_conv(128, 128, (1, 7))(), _conv(128, 128, (7, 1))()),
        (128, 17, 17),
    ),
    Probe("conv 3x3 dilated 2 64->64", _conv(64, 64, (3, 3), dilation=2), (64, 33, 33)),
    Probe("depthwise 3x3 576", _conv(576, 576, (3, 3), groups=576), (576, 14, 14)),
    Probe("depthwise 3x3/2 96", _conv(96, 96, (3, 3), 2, groups=96), (96, 56, 56)),
    Probe("depthwise 5x5 240", _conv(240, 240, (5, 5), groups=240), (240, 28, 28)),
    Probe("grouped 3x3 128->128, 32 groups", _conv(128, 128, (3, 3), groups=32), (128, 28, 28)),
    Probe("max pool 3x3/2 (ceil)", lambda: nn.MaxPool2d(3, 2, ceil_mode=True), (64, 55, 55)),
    Probe(
        "average pool 3x3 (padding not counted)",
        lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
        (64, 35, 35),
    ),
    Probe("batch norm, SiLU, sigmoid, hardswish, GELU", _pointwise, (24, 37, 37)),
    Probe("linear 2048->1000, features split", _linear, (2048, 1, 1)),
)
LINEAR_CUTS = (0, 1, 17, 333, 500, 1000)  # MoDNN's shares at cut points no kernel rounds to
SPEED_INPUT = (64, 56, 56)


@dataclass(frozen=True)
class Case:
    probe: str
    cut: str
    threads: int
    exact: bool
    max_ulp: int


@dataclass
class Verdict:
    """A backend on this host: exact when every case is; `speed_s`, a conv stack's time (`_speed`),
    ranks the exact backends; `fingerprint` hashes the probes' whole outputs, bit for bit (two hosts
    with the same fingerprint computed the same numbers)."""

    backend: str
    exact: bool
    cases: int
    failures: list[Case]
    threads: list[int]
    seconds: float
    speed_s: float
    fingerprint: str

    @property
    def first_failure(self) -> str | None:
        if not self.failures:
            return None
        first = self.failures[0]
        return f"{first.probe} in {first.cut} differs by {first.max_ulp} ULP at {first.threads} thread(s)"

    def describe(self) -> str:
        threads = " and ".join(map(str, self.threads))
        head = (
            f"{self.backend}: {'EXACT' if self.exact else 'NOT exact'} ({self.cases} cases at {threads} "
            f"thread(s), {self.seconds:.1f} s; speed probe {self.speed_s * 1e3:.0f} ms CPU)"
        )
        if self.exact:
            return head
        return f"{head}\n  first: {self.first_failure}; {len(self.failures)} of {self.cases} cases differ"


@dataclass
class Report:
    host: dict
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def default_backend(self) -> str | None:
        """The fastest backend that is exact here (None: none is)."""
        exact = [v for v in self.verdicts.values() if v.exact and v.backend in EXACT_BACKENDS]
        return min(exact, key=lambda v: v.speed_s).backend if exact else None

    def to_dict(self) -> dict:
        return {"schema_version": self.schema_version, "host": self.host,
                "backends": {b: asdict(v) for b, v in self.verdicts.items()},
                "default_backend": self.default_backend}  # fmt: skip


# -- the host ---------------------------------------------------------------------------------------


def host_facts() -> dict:
    """What decides a backend's arithmetic here: the CPU, the libraries and their environment."""
    import onnxruntime

    config = torch.__config__.show()
    blas = re.search(r"Intel\(R\) oneAPI Math Kernel Library Version \S+|BLAS_INFO=(\w+)", config)
    return {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "isa": torch.backends.cpu.get_cpu_capability(),
        "blas": (blas.group(1) or blas.group(0)) if blas else "unknown",  # MKL's version; NVPL, OpenBLAS
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "environment": {v: os.environ[v] for v in ENVIRONMENT if v in os.environ},
        "kernels": _kernels_digest(),
    }


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^(model name|Model|CPU part)\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)
    model = found.group(2).strip() if found else platform.processor() or "unknown"
    if flags:  # two CPUs of one name can differ in their vector units (a VM may hide AVX-512)
        return f"{model} [{hashlib.blake2b(flags.group(2).encode(), digest_size=4).hexdigest()}]"
    return model


def _kernels_digest() -> str:
    """The suite's own arithmetic: the backends' source and this probe's."""
    here = Path(__file__).parent
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted([*(here / "backends").glob("*.py"), Path(__file__), here / "verify.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_path(host: dict, kind: str = "doctor", suffix: str = ".json") -> Path:
    """Where what was measured on `host` is cached (the doctor's report, the host's profiles): a
    host whose CPU, libraries, BLAS environment or kernels differ gets a file of its own."""
    key = hashlib.blake2b(json.dumps(host, sort_keys=True).encode(), digest_size=8).hexdigest()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "suite" / f"{kind}-{key}{suffix}"


def report_from_dict(data: dict) -> Report:
    """A report as `Report.to_dict` wrote it (a cache file, `suite doctor --json`)."""
    verdicts = {b: Verdict(**{**v, "failures": [Case(**c) for c in v["failures"]]})
                for b, v in data["backends"].items()}  # fmt: skip
    return Report(data["host"], verdicts, data["schema_version"])


def _load(path: Path, host: dict) -> Report:
    try:
        report = report_from_dict(json.loads(path.read_text()))
        if report.schema_version != SCHEMA_VERSION or report.host != host:
            raise ValueError("another host or version")
        return report
    except (OSError, ValueError, KeyError, TypeError):
        return Report(host)


def _save(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(report.to_dict(), tmp, indent=1)
    os.replace(tmp.name, path)


# -- the probes ---------------------------------------------------------------------------------------


def examine(backend: str, threads: Sequence[int], say: Callable[[str], None] = lambda _: None) -> Verdict:
    """Every probe on `backend`: tiles at each thread count against the whole map at the first."""
    start = time.perf_counter()
    cases: list[Case] = []
    digest = hashlib.blake2b(digest_size=8)
    if backend == "torch":
        cases += _gemm_premises()
    for i, probe in enumerate(PROBES):
        say(f"{backend}: {probe.name} ({i + 1}/{len(PROBES)})")
        loaded = LoadedModel(f"probe{i}", probe.input_shape, module=_seeded(probe.layers, i))
        x = torch.randn(1, *probe.input_shape, generator=torch.Generator().manual_seed(i))
        maker = make_backend(backend, threads[0])
        prepared = maker.prepare(loaded)  # its reference: the whole model at the first thread count
        for count in threads:
            runner = make_backend(backend, count)
            if probe.layers is _linear:
                cases += _linear_cases(runner, prepared.graph, x, probe.name, count)
                continue
            for rows, cols in CUTS:
                report = verify(prepared, runner, x, rows, cols)
                cut = f"{rows} strips" if cols == 1 else f"a {rows}x{cols} grid"
                cases.append(Case(probe.name, cut, count, report.bit_exact, report.max_ulp))
        with maker.active():
            digest.update(prepared.monolithic(x).contiguous().view(torch.int32).numpy().tobytes())
    say(f"{backend}: timing the speed probe")
    failures = [c for c in cases if not c.exact]
    return Verdict(
        backend,
        not failures,
        len(cases),
        failures,
        list(threads),
        time.perf_counter() - start,
        _speed(backend, threads[-1]),
        digest.hexdigest(),
    )


def _speed(backend: str, threads: int) -> float:
    """CPU seconds a conv stack like a classifier's middle takes on `backend` (median of 5 runs): what
    ranks the exact backends. CPU time, not wall time: the backends are probed one after the other,
    and other processes on a shared host would slow whichever ran during their burst."""
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 1),
    ]
    loaded = LoadedModel("speed", SPEED_INPUT, module=nn.Sequential(*layers).eval())
    runner = make_backend(backend, threads)
    prepared = runner.prepare(loaded)
    x = torch.randn(1, *SPEED_INPUT)
    times = []
    with runner.active():
        prepared.monolithic(x)  # warm: a session is built at its first call
        for _ in range(5):
            began = time.process_time()
            prepared.monolithic(x)
            times.append(time.process_time() - began)
    return sorted(times)[2]


def _seeded(layers: Callable[[], nn.Module], seed: int) -> nn.Module:
    """The probe's layers with seeded weights, batch norms with statistics far from the identity."""
    torch.manual_seed(seed)
    module = nn.Sequential(layers()).eval()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    return module


def _linear_cases(backend, graph: Graph, x: torch.Tensor, probe: str, threads: int) -> list[Case]:
    """The linear layer's features computed in MoDNN's shares, each by a device holding only the
    weight rows `prune_weights` leaves it, against the whole layer."""
    name = next(n for n in graph.nodes if graph[n].op == "linear")
    node = graph[name]
    cases = []
    with backend.active():
        values = run_whole(graph, x, backend, [*node.inputs, name])
        whole = values[name]
        held = {src: (WHOLE, values[src]) for src in node.inputs}
        for start, stop in zip(LINEAR_CUTS, LINEAR_CUTS[1:]):
            share = FeatureRange(start, stop)
            kept = linear_share(node, share)
            alone = replace(graph, nodes={**graph.nodes, name: kept})
            region = {name: feature_region(kept, share)}
            got = run_segment(alone, [name], held, backend, region, [name])[name][1]
            diff = compare_tensors(got, whole[..., start:stop])
            cases.append(Case(probe, f"features {start}-{stop}", threads, diff.bit_exact, diff.max_ulp))
    return cases


def _gemm_premises() -> list[Case]:
    """What `suite/backends/exact.py` assumes of the BLAS, for the GEMM calls the probes' convs make:
    a column's result does not depend on the other columns' values, and the call gives the same
    result on a pool thread as on the main one."""
    from concurrent.futures import ThreadPoolExecutor

    cases = []
    generator = torch.Generator().manual_seed(0)
    with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for m, k, n in _gemm_shapes():
                a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
                other = b.clone()
                other[:, n // 2 :] = torch.randn(k, n - n // 2, generator=generator)
                alone = a @ b
                moved = a @ other
                elsewhere = pool.submit(torch.mm, a, b).result()
                same = torch.equal(alone[:, : n // 2], moved[:, : n // 2]) and torch.equal(alone, elsewhere)
                ulp = 0 if same else max(compare_tensors(moved[:, : n // 2], alone[:, : n // 2]).max_ulp,
                                         compare_tensors(elsewhere, alone).max_ulp)  # fmt: skip
                cases.append(Case(f"GEMM {m}x{k}x{n}", "columns and threads", 1, same, ulp))
        finally:
            torch.set_num_threads(saved)
    return cases


def _gemm_shapes() -> list[tuple[int, int, int]]:
    """(M, K, N) of the block calls the probes' dense convs make (`gemm_grid`)."""
    from suite.graph import from_model

    shapes = set()
    for probe in PROBES:
        graph = from_model(LoadedModel("probe", probe.input_shape, module=nn.Sequential(probe.layers())))
        for node in graph.nodes.values():
            if node.op == "conv" and node.attrs["groups"] == 1:
                grid = gemm_grid(node)
                w = node.params["weight"]
                shapes.add((w.shape[0], w[0].numel(), grid.rows * grid.cols))
    return sorted(shapes)


# -- what the commands use ----------------------------------------------------------------------------


def doctor(backends: Sequence[str], threads: Sequence[int] | None = None,
           say: Callable[[str], None] = lambda _: None) -> Report:  # fmt: skip
    """Examine `backends` now (at `threads`, default 1 and this host's cores) and cache the verdicts."""
    host = host_facts()
    path = cache_path(host)
    report = _load(path, host)
    counts = list(threads or sorted({1, host["cores"]}))
    for backend in backends:
        report.verdicts[backend] = examine(backend, counts, say)
    _save(report, path)
    return report


def cached(backends: Sequence[str], say: Callable[[str], None] = lambda _: None) -> Report:
    """This host's report, examining now (and caching) any of `backends` it lacks; `say` hears one
    line before and one after each examination. Commands started together examine a backend once:
    the others wait for it."""
    host = host_facts()
    path = cache_path(host)
    report = _load(path, host)
    if all(b in report.verdicts for b in backends):
        return report
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = _load(path, host)  # what another command examined meanwhile
        for backend in [b for b in backends if b not in report.verdicts]:
            say(
                f"suite doctor: checking that {backend} computes tiles exactly on this host (once per host, "
                f"about a minute; cached in {path})"
            )
            report = doctor([backend])
            say(f"suite doctor: {report.verdicts[backend].describe()}")
    return report


def recorded(backend: str) -> Verdict | None:
    """This host's cached verdict on `backend`, examining nothing (a worker's look before it starts)."""
    host = host_facts()
    return _load(cache_path(host), host).verdicts.get(backend)


def refusal(verdict: Verdict, where: str = "this host") -> str:
    """Why a backend that promises exactness cannot run on `where`, and what to use instead."""
    others = [b for b in EXACT_BACKENDS if b != verdict.backend]
    return (
        f"backend '{verdict.backend}' is not exact on {where}: {verdict.first_failure} (`suite doctor`); "
        f"use --backend {' or '.join(others)}, or torch-fast to measure without the promise"
    )


def summary(report: Report) -> dict:
    """What a deploy or a lab records of a host's report: each backend's verdict and fingerprint."""
    return {
        "default_backend": report.default_backend,
        "exact": {b: v.exact for b, v in report.verdicts.items()},
        "fingerprints": {b: v.fingerprint for b, v in report.verdicts.items()},
        "first_failure": {b: v.first_failure for b, v in report.verdicts.items() if not v.exact},
    }


def require_exact(backend: str, say: Callable[[str], None] = lambda _: None) -> Verdict | None:
    """Refuse (`BackendError`, one line) a backend that promises exactness but is not exact here;
    `torch-fast` promises none and is never refused."""
    if backend not in EXACT_BACKENDS:
        return None
    verdict = cached([backend], say).verdicts[backend]
    if not verdict.exact:
        raise BackendError(refusal(verdict))
    return verdict


def default_backend(say: Callable[[str], None] = lambda _: None, examine: bool = True) -> str:
    """The fastest backend this host runs exactly: by measured speed once `suite doctor` has examined
    them all, else the first exact one in the order they usually rank (examining only as needed).
    Without `examine` (a plan, which prices but computes nothing), what is known, else that order's
    first."""
    host = host_facts()
    report = _load(cache_path(host), host)
    if all(b in report.verdicts for b in EXACT_BACKENDS) and report.default_backend is not None:
        return report.default_backend
    if not examine:  # the first not known to differ
        unrefuted = [b for b in EXACT_BACKENDS if b not in report.verdicts or report.verdicts[b].exact]
        return (unrefuted or EXACT_BACKENDS)[0]
    for backend in EXACT_BACKENDS:
        if cached([backend], say).verdicts[backend].exact:
            return backend
    raise BackendError(
        "no backend is exact on this host (`suite doctor` says where each differs); "
        "pass --backend torch-fast to measure without the promise"
    )
