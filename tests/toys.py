"""Tiny fleets, graphs and a CLI runner that several test modules share."""

from __future__ import annotations

import signal
import subprocess
import sys

from torch import nn

from suite.cost import predict
from suite.fleet import Device, Fleet, Link, OpCost, Profile
from suite.graph import Graph, from_torch
from suite.plan import COORDINATOR, Plan, build_stages
from suite.schemes.chain import pieces
from suite.schemes.pico import StageTimer, stage_steps

MB = 1_000_000


def profile(name: str, macs_per_s: float) -> Profile:
    return Profile(name, "test", macs_per_s, {"default": OpCost(1.0, 0.0)})


def fleet(*speeds: float, bandwidth_bps: float = 8 * MB, shared: bool = True) -> Fleet:
    """Devices d0, d1, ... at `speeds` MACs per second, every op priced like conv, no link latency."""
    devices = tuple(Device(f"d{i}", "test", profile(f"p{s:g}", s), 1, 1.0, 2**30)
                    for i, s in enumerate(speeds))  # fmt: skip
    return Fleet("test", devices, Link(bandwidth_bps, 0.0, shared), "test")


def conv_graph() -> Graph:
    """One 3x3 conv, 1 -> 1 channel, padding 1, on a 4x4 map: 9 MACs per output, 144 in all."""
    return from_torch(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False)), (1, 4, 4), "conv")


def conv_chain(convs: int, side: int = 8) -> Graph:
    """`convs` equal 3x3 convs, 1 -> 1 channel, padding 1, on a `side` x `side` map: 9 MACs per
    output, `9 * side**2` per conv (576 at side 8), so each conv is one pipeline stage's worth."""
    layers = [nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(convs)]
    return from_torch(nn.Sequential(*layers), (1, side, side), f"conv{convs}")


def forced_pico_plan(graph: Graph, fleet: Fleet) -> Plan:
    """One PICO stage of every piece on every device of `fleet`: a squeeze-and-excite net tiled
    through all its branches (PICO's search may choose otherwise)."""
    chain = pieces(graph)
    steps = stage_steps(StageTimer(graph, chain, fleet.link), 0, len(chain) - 1, fleet.devices)
    plan = Plan("pico", graph.name, list(graph.input_shape[1:]), fleet.name, [d.name for d in fleet.devices],
                COORDINATOR, build_stages(graph, COORDINATOR, steps), graph.source)  # fmt: skip
    plan.predicted = predict(plan, graph, fleet)
    return plan


def suite(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`suite ARGS...` in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def ctrl_c_as_a_terminal_sends_it() -> None:
    """A `preexec_fn` for a child that the test stops with SIGINT: a shell that starts the test run in
    the background (`cmd &`) leaves SIGINT ignored, which every child inherits, and Python then never
    turns SIGINT into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


BUSY_HOST = "warning: other processes use"  # what `suite run` says of a shared host, whatever the input


def said_lines(stderr: str) -> list[str]:
    """stderr's lines, less the busy-host warning (it describes the host, not the command)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith(BUSY_HOST)]


def assert_one_line_error(out: subprocess.CompletedProcess, needle: str) -> None:
    """A user mistake: exit 2 and one line on stderr naming what to fix, never a traceback."""
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(said_lines(out.stderr)) == 1, out.stderr
