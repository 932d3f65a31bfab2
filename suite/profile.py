"""Measure a device profile on this machine: time each op kind on a backend and fit PICO's cost model.

Per cost kind (`Node.cost_kind`: the op kind, convs by class), `time = alpha * macs / macs_per_s +
overhead_s * calls` is fitted by least squares over several tile sizes, with `macs_per_s` taken from
the conv fit (so conv's alpha is 1); `calls` is `Node.calls` (a grouped conv's groups, else 1). MACs
are counted as `suite.graph.ir.node_flops` counts them, so the profile prices the nodes the cost
model will see.
Timing runs as the backend runs: on `torch` under the exact backend's own settings
(`TorchBackend.active`: oneDNN and NNPACK off: PyTorch's kernels; a profile of the exact kernels'
own fitted the zoo no better, 0.79-1.41 of its measured time against 0.79-1.26); on `onnxruntime`
each op is exported to ONNX and run in its own session at ORT_ENABLE_ALL, less what `session.run`
costs by itself (a segment's nodes share one call). Medians over repeats.

Predictions for this host's devices (profile `local`: `--devices N`, the `local` fleet) use its own
profile on the run's backend (`host_profile`), measured the first time one is made and cached per
host as the doctor's verdicts are (`suite.doctor.cache_path`); `--reprofile` measures again.
`SUITE_HOST_PROFILE=bundled` prices this host by the bundled `local` profiles instead (measured on
the developers' host: the tests, whose plans must not depend on the host they run on). `suite
profile` writes a profile to keep or to name in a fleet.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from suite import doctor
from suite.backends import make_backend
from suite.errors import UserError
from suite.fleet import Fleet, OpCost, Profile, load_profile, local_profile, on_host, runs_here
from suite.graph.ir import Window, node_flops
from suite.schema import write_atomically

# (cost kind, the op as a function of its one data input, that input, MACs, calls) for one measurement.
_Case = tuple[str, Callable[[torch.Tensor], torch.Tensor], torch.Tensor, int, int]

SIZES = (7, 14, 28, 56, 112, 224)
QUICK_SIZES = (4, 8, 16)
LINEAR_SHAPES = ((512, 1000), (2048, 1000), (4096, 4096), (25088, 4096))  # (in, out): ResNet/VGG heads
QUICK_LINEAR_SHAPES = ((256, 100), (1024, 256))


def _width(hw: int) -> int:
    """Channels a zoo CNN has at this map size (64 at 224 doubling per halving, capped at 512)."""
    return min(512, max(16, 64 * 224 // hw))


def _mobile_width(hw: int) -> int:
    """Channels a mobile net's depthwise convs have at this map size (MobileNetV2's expanded widths:
    32 at 112, 144 at 56, 192 at 28, 384 at 14, 960 at 7)."""
    return {224: 16, 112: 32, 56: 144, 28: 192, 14: 384, 7: 960}.get(hw, max(8, 64 * 224 // hw // 8))


def _cases(sizes: Sequence[int], linear_shapes: Sequence[tuple[int, int]]) -> list[_Case]:
    """Every measurement, with MACs from node_flops on the shapes the IR would record.

    Convs are the layers the zoo has at each map size (3x3 at full and half width, a bottleneck's
    1x1, and the RGB stem at the largest size), because conv speed per MAC depends on both; the
    mobile zoo's depthwise 3x3 and 5x5 convs at its widths, and grouped 3x3 convs (groups of 8
    channels, and 4 groups), each class fitted on its own (`Node.cost_kind`).
    """
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g)
    cases: list[_Case] = []

    def conv(cin: int, cout: int, k: int, hw: int, groups: int = 1) -> None:
        x, w, b = rand(1, cin, hw, hw), rand(cout, cin // groups, k, k), rand(cout)
        macs = node_flops("conv", (1, cout, hw, hw), [x.shape], window=Window((k, k)), groups=groups)
        kind = "conv" if groups == 1 else "depthwise_conv" if groups == cin else "grouped_conv"
        cases.append((kind, lambda x: F.conv2d(x, w, b, padding=k // 2, groups=groups), x, macs, groups))

    conv(3, 64, 3, max(sizes))
    for hw in sizes:
        c = _width(hw)
        conv(c, c, 3, hw)
        conv(c // 2, c // 2, 3, hw)
        conv(c, c // 4, 1, hw)
        m = _mobile_width(hw)  # a mobile net's depthwise 3x3 (and 5x5) at its expanded width
        conv(m, m, 3, hw, groups=m)
        conv(m, m, 5, hw, groups=m)
        conv(c // 2, c // 2, 3, hw, groups=max(1, c // 16))  # ResNeXt-style: groups of 8 channels
        conv(c, c, 3, hw, groups=4)
        for ch in (c, c // 4):
            x, y = rand(1, ch, hw, hw), rand(1, ch, hw, hw)
            mean, var, weight, bias = rand(ch), rand(ch).abs() + 1, rand(ch), rand(ch)
            out = (1, ch, hw, hw)
            pool_macs = node_flops("maxpool", (1, ch, hw // 2, hw // 2), [out], window=Window((2, 2), (2, 2)))
            cases += [(*case, 1) for case in [
                ("relu", torch.relu, x, node_flops("relu", out, [out])),
                ("elementwise", torch.sigmoid, x, node_flops("elementwise", out, [out])),
                ("batchnorm", lambda x, m=mean, v=var, w=weight, b=bias: F.batch_norm(x, m, v, w, b), x,
                 node_flops("batchnorm", out, [out])),
                ("add", lambda x, y=y: x + y, x, node_flops("add", out, [out, out])),
                ("mul", lambda x, y=y: x * y, x, node_flops("mul", out, [out, out])),
                ("concat", lambda x, y=y: torch.cat([x, y], 1), x, 0),
                ("maxpool", lambda x: F.max_pool2d(x, 2, 2), x, pool_macs),
                ("avgpool", lambda x: F.avg_pool2d(x, 2, 2), x, pool_macs),
                ("adaptive_avgpool", lambda x: F.adaptive_avg_pool2d(x, 1), x,
                 node_flops("adaptive_avgpool", (1, ch, 1, 1), [out])),
            ]]  # fmt: skip
    for n_in, n_out in linear_shapes:
        x, w, b = rand(1, n_in), rand(n_out, n_in), rand(n_out)
        macs = node_flops("linear", (1, n_out), [x.shape])
        cases.append(("linear", lambda x, w=w, b=b: F.linear(x, w, b), x, macs, 1))
    return cases


class _Op(torch.nn.Module):
    """One case's function as a module, for the ONNX exporter."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _on_torch(cases: list[_Case], threads: int) -> list[Callable[[], object]]:
    return [lambda fn=fn, x=x: fn(x) for _, fn, x, _, _ in cases]


def _on_onnxruntime(cases: list[_Case], threads: int) -> list[Callable[[], object]]:
    """Each case as a call of its own onnxruntime session (the op exported, at ORT_ENABLE_ALL)."""
    import io
    import warnings

    from suite.backends.ort import OrtBackend

    backend = OrtBackend(threads=threads)
    calls = []
    for _, fn, x, _, _ in cases:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Op(fn), (x,), buf, dynamo=False, input_names=["x"], opset_version=17)
        session, feed = backend.session(buf.getvalue()), {"x": x.numpy()}
        calls.append(lambda session=session, feed=feed: session.run(None, feed))
    return calls


def _call_cost(threads: int, repeats: int, clock: Callable[[], float]) -> float:
    """What one `session.run` costs by itself (a 1-element ReLU): paid once per segment, not per node."""
    (call,) = _on_onnxruntime([("relu", torch.relu, torch.ones(1), 0, 1)], threads)
    return _median_time(call, repeats * 10, clock)


def _median_time(fn: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    fn()  # warm-up: allocator and lazy initialisation
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def _fit(macs: np.ndarray, calls: np.ndarray, seconds: np.ndarray, measured: np.ndarray
         ) -> tuple[float, float]:  # fmt: skip
    """Weighted least squares of `seconds = slope * macs + overhead * calls`, both terms kept >= 0;
    `measured`: the times as timed (`seconds` may have a session's own cost taken off them).

    Each residual is weighted by 1/sqrt(t), as if a timing's variance grew with its length: plain
    least squares lets the largest tiles set everything (it overshot ResNet-50's whole-model time by
    60% on this suite's host), relative error lets the smallest ones set the slope (VGG-16 22% short);
    this middle way kept the zoo within about a third, VGG-16 within a tenth.
    """
    if not macs.any():
        return 0.0, float(np.median(seconds / calls))
    w = 1 / np.sqrt(np.maximum(measured, 1e-9))  # not `seconds`: an op about a session.run long
    # would count far too much
    a = np.stack([macs, calls], axis=1) * w[:, None]
    (slope, overhead), *_ = np.linalg.lstsq(a, seconds * w, rcond=None)
    if overhead < 0:  # refit through the origin
        overhead = 0.0
        slope = float(np.sum(macs * seconds * w**2) / np.sum((macs * w) ** 2))
    if slope < 0:
        slope, overhead = 0.0, float(np.median(seconds / calls))
    return float(slope), float(overhead)


def measure_profile(name: str, threads: int = 1, sizes: Sequence[int] | None = None,
                    repeats: int | None = None, quick: bool = False,
                    backend: str = "torch") -> Profile:  # fmt: skip
    """Time every op kind on this machine on `backend` with `threads` threads and fit a profile.

    `quick` measures a few small tiles only (seconds, for tests); the default takes 10-30 s on a
    2-core host (onnxruntime: a minute, exporting each case). With one thread, torch and onnxruntime
    run each op inline in this thread, so its CPU time is timed: other processes on a busy host then
    barely disturb the profile. With more threads the wall clock is the only honest measure, and the
    host should be otherwise idle.
    """
    sizes = tuple(sizes or (QUICK_SIZES if quick else SIZES))
    repeats = repeats or (3 if quick else 11)
    cases = _cases(sizes, QUICK_LINEAR_SHAPES if quick else LINEAR_SHAPES)
    clock = time.thread_time if threads == 1 else time.perf_counter
    on_backend = {"torch": _on_torch, "onnxruntime": _on_onnxruntime}.get(backend)
    if on_backend is None:
        raise UserError(f"--backend {backend}: profiles are measured on torch or onnxruntime")
    with make_backend(backend, threads).active():
        runs = on_backend(cases, threads)
        fixed = _call_cost(threads, repeats, clock) if backend == "onnxruntime" else 0.0
        timed = [(op, macs, n, _median_time(call, repeats, clock))
                 for (op, _, _, macs, n), call in zip(cases, runs)]  # fmt: skip
    fits = {}
    for op in dict.fromkeys(op for op, *_ in timed):
        rows = np.array([(m, n, t) for o, m, n, t in timed if o == op], float)
        fits[op] = _fit(rows[:, 0], rows[:, 1], np.maximum(rows[:, 2] - fixed, 0.0), rows[:, 2])
    macs_per_s = 1.0 / fits["conv"][0]
    ops = {op: OpCost(slope * macs_per_s, overhead) for op, (slope, overhead) in fits.items()}
    ops["default"] = ops["elementwise"]  # an unknown kind is priced like a generic pointwise op
    host = platform.node() or "unknown-host"
    how = "oneDNN and NNPACK off" if backend == "torch" else _ort_settings(fixed)
    source = (f"measured: {host} {datetime.date.today().isoformat()} ({_cpu_name()}, "
              f"torch {torch.__version__}, {how}, {threads} thread(s), tiles {list(sizes)}, "
              f"median of {repeats} {'thread CPU' if threads == 1 else 'wall'} times)")  # fmt: skip
    return Profile(name, source, macs_per_s, ops)


HOST_PROFILE = "SUITE_HOST_PROFILE"


def host_profile(backend: str, reprofile: bool = False, say: Callable[[str], None] = lambda _: None
                 ) -> Profile:  # fmt: skip
    """This host's profile on `backend` (named `local`): from the cache, or measured now (`say` hears a
    line before and after) and cached. Commands started together measure once: the others wait."""
    if os.environ.get(HOST_PROFILE) == "bundled":
        return load_profile(local_profile(backend))
    path = doctor.cache_path(doctor.host_facts(), f"profile-{backend}", ".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file() and not reprofile:
            return load_profile(str(path))
        say(f"suite profile: measuring this host on {backend} for the predictions (once per host, "
            f"10-30 s; cached in {path}; --reprofile measures again)")
        profile = measure_profile("local", backend=backend)
        write_profile(profile, path)
        say(f"suite profile: {profile.macs_per_s / 1e9:.3g} GMAC/s for conv on {backend}")
    return profile


def priced_here(fleet: Fleet, backend: str, reprofile: bool = False,
                say: Callable[[str], None] = lambda _: None) -> Fleet:  # fmt: skip
    """`fleet` with its devices on this host priced by this host's profile on `backend` (measured the
    first time: `host_profile`); a fleet of other devices as it is."""
    return on_host(fleet, host_profile(backend, reprofile, say)) if runs_here(fleet) else fleet


def _ort_settings(call_s: float) -> str:
    import onnxruntime as ort

    return (f"onnxruntime {ort.__version__} CPU, ORT_ENABLE_ALL, one op per session less "
            f"{call_s * 1e6:.0f} us a session.run")


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where Linux has one, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def write_profile(profile: Profile, path: str | Path) -> None:
    """Write `profile` as the YAML `suite.fleet.load_profile` reads, one line per op kind."""
    head = {"schema_version": 1, "name": profile.name, "source": profile.source}
    lines = [yaml.safe_dump(head, sort_keys=False, width=100).rstrip(),
             f"macs_per_s: {profile.macs_per_s:.4g}", "ops:"]  # fmt: skip
    for op, cost in profile.ops.items():
        lines.append(f"  {op}: {{alpha: {cost.alpha:.4g}, overhead_s: {cost.overhead_s:.4g}}}")
    if profile.power is not None:
        lines.append(yaml.safe_dump({"power": asdict(profile.power)}, sort_keys=False, width=100).rstrip())
    write_atomically(Path(path), "\n".join(lines) + "\n")
