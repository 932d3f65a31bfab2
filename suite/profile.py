"""Measure a device profile on this machine: time each op kind on a backend and fit PICO's cost model.

A node's time is the sum over its units (`suite.cost.node_work`) of `alpha * units / macs_per_s`,
plus `overhead_s * calls`, for its cost kind (`Node.cost_kind`: the op kind, convs by class: kxk,
1x1, depthwise, strided depthwise, grouped): its MACs, and for a conv run as matrix products the
values copied to and from them (`conv_copy`) and the products' calls (`gemm_call`); `calls` is
`Node.calls`. Every price is fitted at once by non-negative least squares over synthetic layers of
several sizes (never a zoo model: those are what the profile is checked on); `macs_per_s` is the kxk
conv's rate, so its alpha is 1. The nodes timed are the graph's own (`backend.prepare` of each
layer), so the profile prices the nodes the cost model will see.
Timing runs as a run runs: on `torch` each node through the exact backend (its kernels, and what it
does around each node); on `onnxruntime` whole synthetic blocks (`_blocks`: ResNet, inception and
mobile blocks, each one session at ORT_ENABLE_ALL, as a model's forward is), since a session fuses
a conv's activation and residual add into it and keeps maps in its NCHWc layout between convs: the
fit prices each block's nodes by their MACs (the fused kinds free, `FUSED_ON_ORT`) and the session's
own call and layout changes apart (`_session_work`), and drops the latter. Medians over repeats.

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
import functools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from scipy.optimize import nnls

from suite import doctor
from suite.backends import make_backend, run_segment
from suite.cost import KIND_INDEX, OpWork, node_work
from suite.errors import UserError
from suite.fleet import Fleet, OpCost, Profile, load_profile, local_profile, on_host, profile_yaml, runs_here
from suite.graph.ir import COST_KINDS, GEMM_CONVS, Node
from suite.models.load import LoadedModel
from suite.regions import WHOLE
from suite.schema import write_atomically

SIZES = (7, 14, 28, 56, 112, 224)
QUICK_SIZES = (4, 8, 16)
# What a whole-model onnxruntime session fuses into the conv before it (its ReLU or ReLU6, a residual
# add): free there, so the fit prices them at zero rather than sharing a conv's time with them.
FUSED_ON_ORT = ("relu", "clamp", "add")
LINEAR_SHAPES = ((512, 1000), (2048, 1000), (4096, 4096), (25088, 4096))  # (in, out): ResNet/VGG heads
QUICK_LINEAR_SHAPES = ((256, 100), (1024, 256))


def _width(hw: int) -> int:
    """Channels a zoo CNN has at this map size (64 at 224 doubling per halving, capped at 512)."""
    return min(512, max(16, 64 * 224 // hw))


def _mobile_width(hw: int) -> int:
    """Channels a mobile net's depthwise convs have at this map size (MobileNetV2's expanded widths:
    32 at 112, 144 at 56, 192 at 28, 384 at 14, 960 at 7)."""
    return {224: 16, 112: 32, 56: 144, 28: 192, 14: 384, 7: 960}.get(hw, max(8, 64 * 224 // hw // 8))


class _Merge(nn.Module):
    """`op(x, relu(x))`: a merge of two maps (add, mul, concat) with two real inputs, the last node."""

    def __init__(self, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, torch.relu(x))


class _Scale(nn.Module):
    """A map times a per-channel vector (squeeze-and-excite's `scale`): its mean here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.nn.functional.adaptive_avg_pool2d(x, 1)


# A measurement: a module whose last node is the op timed, and its input's (C, H, W).
_Case = tuple[nn.Module, tuple[int, int, int]]


def _cases(sizes: Sequence[int], linear_shapes: Sequence[tuple[int, int]]) -> list[_Case]:
    """Every measurement: synthetic layers of the shapes CNNs have at each map size, never a model's
    own, so a model's prediction is a test of the profile, not a fit to it.

    Convs: the RGB stems at the largest size; at each size 3x3 at full and half width, 1x1 that
    narrow and widen (a bottleneck's, and a mobile net's projection and expansion), stride-2 3x3 and
    1x1 that double the width; the mobile zoo's depthwise 3x3 (also stride 2) and 5x5 at its widths;
    grouped 3x3 (groups of 8 channels, and 4 groups). Pointwise ops (activations, batch norm, a
    folded one's pass-through), merges, a per-channel scale and pools at two widths.
    """
    top = max(sizes)
    cases: list[_Case] = [(nn.Conv2d(3, 64, 7, 2, 3), (3, top, top)),
                          (nn.Conv2d(3, 32, 3, 2, 1), (3, top, top))]  # fmt: skip

    def conv(cin: int, cout: int, k: int, hw: int, stride: int = 1, groups: int = 1) -> None:
        cases.append((nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups), (cin, hw, hw)))

    for hw in sizes:
        c, m = _width(hw), _mobile_width(hw)
        thin = max(8, m // 6)
        conv(c, c, 3, hw)
        conv(c // 2, c // 2, 3, hw)
        conv(c, c // 4, 1, hw)
        conv(m, thin, 1, hw)
        conv(thin, m, 1, hw)
        if hw >= 2 * min(sizes):
            conv(c // 2, c, 3, hw, stride=2)
            conv(c // 2, c, 1, hw, stride=2)
            conv(m, m, 3, hw, stride=2, groups=m)
        conv(m, m, 3, hw, groups=m)
        conv(m, m, 5, hw, groups=m)
        conv(c // 2, c // 2, 3, hw, groups=max(1, c // 16))  # ResNeXt-style: groups of 8 channels
        conv(c, c, 3, hw, groups=4)
        for ch in (c, c // 4):
            shape = (ch, hw, hw)
            cases += [
                (nn.Sequential(op), shape)
                for op in (  # a module of its own: traced as one node
                    nn.ReLU(),
                    nn.ReLU6(),
                    nn.Sigmoid(),
                    nn.SiLU(),
                    nn.BatchNorm2d(ch).eval(),
                    _Merge(torch.add),
                    _Merge(torch.mul),
                    _Merge(lambda x, y: torch.cat([x, y], 1)),
                    _Scale(),
                    nn.MaxPool2d(2, 2),
                    nn.MaxPool2d(3, 2, 1),
                    nn.MaxPool2d(3, 1, 1),
                    nn.AvgPool2d(2, 2),
                    nn.AvgPool2d(3, 1, 1),
                    nn.AdaptiveAvgPool2d(1),
                )
            ]
            # a batch norm after a conv: folded into it, what is left of it is a node that passes its input on
            cases.append((nn.Sequential(nn.Conv2d(ch, ch, 1), nn.BatchNorm2d(ch).eval()), shape))
    for n_in, n_out in linear_shapes:
        # a ReLU first: onnxruntime cannot make a session of a flatten alone, the linear's input
        cases.append((nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(n_in, n_out)), (n_in, 1, 1)))
    return cases


def _conv_bn(cin: int, cout: int, k: int, act: type[nn.Module] | None = nn.ReLU, stride: int = 1,
             groups: int = 1) -> list[nn.Module]:  # fmt: skip
    """A conv, its batch norm (folded into it by onnxruntime) and its activation, as the zoo has them."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout).eval()]
    return layers + ([act()] if act is not None else [])


class _Residual(nn.Module):
    """`act(body(x) + x)`: a ResNet block (a ReLU after the add), or a mobile one (`act` None)."""

    def __init__(self, body: list[nn.Module], act: nn.Module | None = None):
        super().__init__()
        self.body, self.act = nn.Sequential(*body), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x) + x
        return self.act(y) if self.act is not None else y


class _Excite(nn.Module):
    """Squeeze-and-excite as EfficientNet has it: the map times a sigmoid gate from its mean."""

    def __init__(self, channels: int):
        super().__init__()
        squeezed = max(8, channels // 24)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeezed, 1), nn.SiLU(),
                                  nn.Conv2d(squeezed, channels, 1), nn.Sigmoid())  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class _Inception(nn.Module):
    """GoogLeNet's module: a 1x1, a 1x1 then 3x3, and a max pool then 1x1 branch, concatenated."""

    def __init__(self, c: int):
        super().__init__()
        self.branches = nn.ModuleList([
            nn.Sequential(*_conv_bn(c, c // 4, 1)),
            nn.Sequential(*_conv_bn(c, c // 4, 1), *_conv_bn(c // 4, c // 2, 3)),
            nn.Sequential(nn.MaxPool2d(3, 1, 1), *_conv_bn(c, c // 4, 1))])  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


def _block_width(hw: int) -> int:
    """Channels a ResNet has at this map size (64 at 56, doubling per halving, 32 to 512)."""
    return max(32, min(512, 64 * 56 // hw))


def _blocks(sizes: Sequence[int], linear_shapes: Sequence[tuple[int, int]]) -> list[_Case]:
    """Every measurement on onnxruntime: synthetic blocks of layers as CNNs chain them (never a
    model's own), each run as one session, as a model's forward runs: onnxruntime fuses a conv's
    batch norm, activation and residual add into it and keeps the maps between convs in its blocked
    NCHWc layout, which a session of one node cannot show.

    At each size: two kxk convs in a row, a ResNet basic and bottleneck block, grouped convs, an
    inception module, max and average pools; MobileNetV2's inverted residual (ReLU6) and
    EfficientNet's (SiLU, 5x5 depthwise, squeeze-and-excite), and their parts apart: the pointwise
    pair, the depthwise convs after their expansion, with and without the excitation (in a whole
    block they come in one ratio, which leaves their prices free to trade off). The stride-2 convs
    that halve a map; the RGB stems at the largest size; classifier heads.
    """
    seq = nn.Sequential

    def after_conv(ch: int, hw: int, *block: nn.Module) -> _Case:
        """`block` on a map a 1x1 conv made, held in NCHWc as in a model (a residual add of the
        session's own input would not fuse into its conv)."""
        return seq(*_conv_bn(ch, ch, 1), *block), (ch, hw, hw)

    sizes = sorted(sizes)
    top = sizes[-1]
    cases: list[_Case] = [(seq(*_conv_bn(3, 64, 7, stride=2), nn.MaxPool2d(3, 2, 1)), (3, top, top)),
                          (seq(*_conv_bn(3, 32, 3, nn.ReLU6, stride=2)), (3, top, top))]  # fmt: skip
    for hw in sizes[:-1]:  # the largest size is a stem's input only
        c, m = _block_width(hw), _mobile_width(hw)
        thin = max(8, m // 6)
        expand = functools.partial(_conv_bn, thin, m, 1)  # a mobile block's first conv, with its activation
        cases += [
            after_conv(c, hw, *_conv_bn(c, c, 3), *_conv_bn(c, c, 3)),
            after_conv(c, hw, _Residual([*_conv_bn(c, c, 3), *_conv_bn(c, c, 3, None)], nn.ReLU())),
            after_conv(4 * c, hw, _Residual([*_conv_bn(4 * c, c, 1), *_conv_bn(c, c, 3),
                                             *_conv_bn(c, 4 * c, 1, None)], nn.ReLU())),
            after_conv(c, hw, *_conv_bn(c, c, 3, groups=max(1, c // 8)), *_conv_bn(c, c, 3, groups=4)),
            after_conv(c, hw, _Inception(c)),
            after_conv(c, hw, nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1)),
            after_conv(thin, hw, _Residual([*expand(nn.ReLU6), *_conv_bn(m, m, 3, nn.ReLU6, groups=m),
                                            *_conv_bn(m, thin, 1, None)])),
            after_conv(thin, hw, *expand(nn.ReLU6), *_conv_bn(m, thin, 1, None)),
            (seq(*expand(nn.ReLU6), *_conv_bn(m, m, 3, nn.ReLU6, groups=m),
                 *_conv_bn(m, m, 5, nn.ReLU6, groups=m)), (thin, hw, hw)),
            (seq(*expand(nn.SiLU), *_conv_bn(m, m, 5, nn.SiLU, groups=m)), (thin, hw, hw)),
            (seq(*expand(nn.SiLU), *_conv_bn(m, m, 5, nn.SiLU, groups=m), _Excite(m)), (thin, hw, hw)),
            after_conv(thin, hw, _Residual([*expand(nn.SiLU), *_conv_bn(m, m, 5, nn.SiLU, groups=m),
                                            _Excite(m), *_conv_bn(m, thin, 1, None)])),
        ]  # fmt: skip
        if hw >= 2 * min(sizes):
            cases += [
                after_conv(c // 2, hw, *_conv_bn(c // 2, c, 3, stride=2), *_conv_bn(c, c, 1),
                           nn.MaxPool2d(2, 2)),
                (seq(*expand(nn.ReLU6), *_conv_bn(m, m, 3, nn.ReLU6, stride=2, groups=m)), (thin, hw, hw)),
            ]  # fmt: skip
    for n_in, n_out in linear_shapes:  # a head: the last map's mean, then the classifier
        head = seq(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(n_in, n_out))
        cases.append((head, (n_in, sizes[0], sizes[0])))
    return cases


def _prepared(backend_name: str, threads: int, case: _Case, clock: Callable[[], float]
              ) -> tuple[list[Node], Callable[[], float]]:  # fmt: skip
    """The nodes a case times, and a call that runs them as a run runs them and times itself. On
    torch the case's last node, through the exact backend (its kernel, with what the backend does
    around each node) on inputs the backend computed; on onnxruntime every node of the case, as one
    session of the whole case (a block: `_blocks`), as a model's forward is one session of the whole
    model. A backend of its own: an onnxruntime backend keeps the sessions of one graph only."""
    backend = make_backend(backend_name, threads)
    module, shape = case
    prepared = backend.prepare(LoadedModel("profile", shape, module=module.eval()))
    graph = prepared.graph
    *before, last = [n for n in graph.nodes if n != graph.input]
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    if backend_name == "onnxruntime":

        def forward() -> float:
            start = clock()
            prepared.monolithic(x)
            return clock() - start

        return [graph[n] for n in (*before, last)], forward
    values = {graph.input: (WHOLE, x)}
    if before:
        values |= run_segment(graph, before, values, backend, outputs=graph[last].inputs)
    inputs = [values[src][1] for src in graph[last].inputs]

    def run() -> float:
        for x in inputs:  # untimed: the input just written, as the node before it leaves it
            x.mul_(1.0)
        start = clock()
        backend.run(graph, [last], dict(values), {}, [last])
        return clock() - start

    return [graph[last]], run


def _session_work(nodes: Sequence[Node], input_shape: tuple[int, ...]) -> np.ndarray:
    """What a session costs beyond its nodes, as columns the fit prices and then drops: one call,
    and the values it lays out into onnxruntime's blocked layout and back (its input and output)."""
    return np.array([1.0, math.prod(input_shape) + math.prod(nodes[-1].shape)])


def _round_robin(runs: Sequence[Callable[[], float]], repeats: int) -> list[float]:
    """The median of the seconds each call times itself, called in turn round after round: between
    two runs of one op the others run, so its code and weights are no warmer than in a model's
    forward, while its input is as warm as the node before it leaves it. (Timed over and over alone,
    an op ran several times faster than in a forward: a folded batch norm's pass-through 3 us
    against 20-40, a 64x56x56 ReLU 33 us against a few hundred.)"""
    for run in runs:
        run()  # warm-up: allocator, lazy initialisation, a session's build
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, seconds in zip(runs, times):
            seconds.append(run())
    return [statistics.median(seconds) for seconds in times]


def _priced(backend: str) -> np.ndarray:
    """Which prices a backend's fit sets, per unit then per call of each of `COST_KINDS`; the rest stay
    zero. On torch (the exact kernels, which cut a conv's map into blocks: `gemm_grid`) a GEMM conv
    pays its fixed costs per product (`gemm_call`), not per node: fitted per node as well, a 3x3
    conv's came out at 1 ms, a misfit of the slow products of 7x7 maps that tripled the time of the
    small 3x3 convs GoogLeNet has many of. On onnxruntime, units only: its NCHWc convs copy no
    matrix columns (`conv_copy`), a node's call costs little inside a session (fitted per kind they
    took up what the blocks' sizes left over: 20-40 us a pointwise conv, MobileNetV2 1.3x its time),
    and the kinds it fuses into the conv before them (`FUSED_ON_ORT`) cost nothing."""
    units, calls = np.ones(len(COST_KINDS), bool), np.ones(len(COST_KINDS), bool)
    if backend == "torch":
        calls[[KIND_INDEX[k] for k in GEMM_CONVS]] = False
    else:
        units[[KIND_INDEX[k] for k in (*FUSED_ON_ORT, "conv_copy", "gemm_call")]] = False
        calls[:] = False
    return np.concatenate([units, calls])


def _fit(rows: Sequence[OpWork], measured: np.ndarray, priced: np.ndarray, sessions: np.ndarray | None = None
         ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Seconds per unit and per call of every cost kind (indexed like `COST_KINDS`), from the timed
    work of each case (`OpWork`: one node's, or a block's sum): `measured = units . per_unit + calls
    . per_call (+ sessions . per_session)` by non-negative weighted least squares, all the prices
    `priced` lets it set (`_priced`) at once; `sessions`: what each case's session costs beyond its
    nodes (`_session_work`), fitted with the rest and left out of the prices.

    Each residual is weighted by 1/sqrt(t), as if a timing's variance grew with its length: plain
    least squares lets the largest cases set everything, relative error the smallest ones.
    """
    a = np.array([np.concatenate([r.units, r.calls]) for r in rows])
    used = priced & (a != 0).any(axis=0)
    a = a[:, used] if sessions is None else np.hstack([a[:, used], sessions])
    scale = np.abs(a).max(axis=0)  # columns of units (~1e9) and calls (~1) comparable
    w = 1 / np.sqrt(np.maximum(measured, 1e-9))
    solved, _ = nnls(a / scale * w[:, None], measured * w)
    prices = np.zeros(len(used))
    prices[used] = (solved / scale)[: used.sum()]
    return prices[: len(COST_KINDS)], prices[len(COST_KINDS) :]


def measure_profile(name: str, threads: int = 1, sizes: Sequence[int] | None = None,
                    repeats: int | None = None, quick: bool = False,
                    backend: str = "torch") -> Profile:  # fmt: skip
    """Time every op kind on this machine on `backend` with `threads` threads and fit a profile.

    `quick` measures a few small tiles only (seconds, for tests); the default takes about a minute
    on a 2-core host. With one thread, torch and onnxruntime run each op inline in this thread, so its
    CPU time is timed: other processes on a busy host then barely disturb the profile. With more
    threads the wall clock is the only honest measure, and the host should be otherwise idle.
    """
    if backend not in ("torch", "onnxruntime"):
        raise UserError(f"--backend {backend}: profiles are measured on torch or onnxruntime")
    sizes = tuple(sizes or (QUICK_SIZES if quick else SIZES))
    repeats = repeats or (3 if quick else 11)
    make_cases = _blocks if backend == "onnxruntime" else _cases
    cases = make_cases(sizes, QUICK_LINEAR_SHAPES if quick else LINEAR_SHAPES)
    clock = time.thread_time if threads == 1 else time.perf_counter
    runner = make_backend(backend, threads)
    by_size: dict[int, list[_Case]] = {}
    for case in cases:  # the layers of one map size together, as a forward runs them
        by_size.setdefault(case[1][1], []).append(case)
    nodes, rows, sessions, measured = [], [], [], []
    with runner.active():
        for group in by_size.values():
            prepared = [_prepared(backend, threads, case, clock) for case in group]
            for (timed, _), (_, shape) in zip(prepared, group):
                nodes += timed
                rows.append(OpWork.of((n, n.flops) for n in timed))
                sessions.append(_session_work(timed, shape))
            measured += _round_robin([run for _, run in prepared], repeats)
            del prepared
    on_ort = backend == "onnxruntime"
    per_unit, per_call = _fit(rows, np.array(measured), _priced(backend),
                              np.array(sessions) if on_ort else None)  # fmt: skip
    macs_per_s = 1.0 / per_unit[KIND_INDEX["conv"]]
    kinds = dict.fromkeys(kind for n in nodes for kind in (*node_work(n), n.cost_kind))
    ops = {k: OpCost(per_unit[KIND_INDEX[k]] * macs_per_s, per_call[KIND_INDEX[k]]) for k in kinds}
    ops["default"] = ops["elementwise"]  # an unknown kind is priced like a generic pointwise op
    if on_ort:  # the blocks' sigmoids all come with a mul (SiLU: one fused kernel there), which the
        # fit prices either way (the sigmoid 0 and the mul 8.7, or 7.1 and 0): the pair, a pass of a
        # transcendental over a map
        ops["default"] = OpCost(ops["elementwise"].alpha + ops["mul"].alpha, 0.0)
    host = platform.node() or "unknown-host"
    how = "exact kernels, oneDNN and NNPACK off" if backend == "torch" else _ort_settings()
    source = (f"measured: {host} {datetime.date.today().isoformat()} ({_cpu_name()}, "
              f"torch {torch.__version__}, {how}, {threads} thread(s), tiles {list(sizes)}, "
              f"median of {repeats} {'thread CPU' if threads == 1 else 'wall'} times)")  # fmt: skip
    return Profile(name, source, macs_per_s, ops)


HOST_PROFILE = "SUITE_HOST_PROFILE"
# Bumped when what a profile measures changes: a host's cached profile of an older suite (v1: no
# `conv_copy`, `gemm_call` or conv classes, ops timed alone; v2: no `clamp`, onnxruntime's nodes
# timed one session each) is measured again, not reused.
CACHE_VERSION = 3


def host_profile(backend: str, reprofile: bool = False, say: Callable[[str], None] = lambda _: None
                 ) -> Profile:  # fmt: skip
    """This host's profile on `backend` (named `local`): from the cache, or measured now (`say` hears a
    line before and after) and cached. Commands started together measure once: the others wait."""
    if os.environ.get(HOST_PROFILE) == "bundled":
        return load_profile(local_profile(backend))
    path = doctor.cache_path(doctor.host_facts(), f"profile-{backend}-v{CACHE_VERSION}", ".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file() and not reprofile:
            return load_profile(str(path))
        say(
            f"suite profile: measuring this host on {backend} for the predictions (once per host, "
            f"about a minute; cached in {path}; --reprofile measures again)"
        )
        profile = measure_profile("local", backend=backend)
        write_profile(profile, path)
        say(f"suite profile: {profile.macs_per_s / 1e9:.3g} GMAC/s for conv on {backend}")
    return profile


def priced_here(fleet: Fleet, backend: str, reprofile: bool = False,
                say: Callable[[str], None] = lambda _: None) -> Fleet:  # fmt: skip
    """`fleet` with its devices on this host priced by this host's profile on `backend` (measured the
    first time: `host_profile`); a fleet of other devices as it is."""
    return on_host(fleet, host_profile(backend, reprofile, say)) if runs_here(fleet) else fleet


def _ort_settings() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} CPU, ORT_ENABLE_ALL, synthetic blocks one session each"


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
    """Write `profile` as the YAML `suite.fleet.load_profile` reads (`suite.fleet.profile_yaml`)."""
    write_atomically(Path(path), profile_yaml(profile))
