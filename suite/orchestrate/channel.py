"""A time-variant channel on a running lab: a rate trace (`suite.simulate.rayleigh_trace`) played on
every shaped link with `tc class change`, and the lab's own rates put back when it stops.

The trace is in the real fleet's time and rates; on a lab dilated F times, a block of `t` seconds
lasts t / F seconds and every htb class the lab made runs at (trace rate / fleet rate) x its own
rate, so the whole network fades together (one channel, as the simulator's per-frame fading has it)
and a shared medium keeps its fair share per sender. The trace repeats when it runs out.

The player is a thread of the caller: `with playing(lab, trace):` starts it, and leaving the block
(normally, on an exception, or on Ctrl-C) stops it and restores the rates with the very classes
`suite lab up` made; a failure to change or restore a rate is raised after the restore was tried.
A process killed outright leaves the faded rates in the lab's namespaces only, which `suite lab down`
removes with them.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from suite.orchestrate.labplan import Lab, LabError, shaping_commands

MIN_RATE_BPS = 8000  # htb's smallest sensible rate; a deep fade is held here, not at zero


def class_changes(lab: Lab, scale: float) -> list[str]:
    """`tc -batch` lines that set every htb class the lab made to `scale` x its rate and ceil."""
    lines = []
    for argv in shaping_commands(lab):  # ["tc", "-n", NS, "class", "add", "dev", ...]
        if argv[0] != "tc" or argv[3:5] != ["class", "add"]:
            continue
        line = ["class", "change", *argv[5:]]
        for key in ("rate", "ceil"):
            at = line.index(key) + 1
            line[at] = f"{max(MIN_RATE_BPS, round(int(line[at].removesuffix('bit')) * scale))}bit"
        lines.append(" ".join(line))
    return lines


def _apply(lab: Lab, scale: float) -> None:
    batch = "\n".join(class_changes(lab, scale)) + "\n"
    done = subprocess.run(["tc", "-n", lab.ap_namespace, "-batch", "-"], input=batch, capture_output=True,
                          text=True, timeout=10)  # fmt: skip
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(f"lab '{lab.name}': changing its links' rate to x{scale:.3g} failed: "
                       f"{said[-1] if said else f'tc exit {done.returncode}'}")  # fmt: skip


@contextmanager
def playing(lab: Lab, trace: Sequence[tuple[float, float]], fleet_rate_bps: float) -> Iterator[list[float]]:
    """Play `trace` ((real start time, real rate) from 0, in order) on the lab's links while the block
    runs; yields the list of scales applied so far (for the report). `fleet_rate_bps` is the real
    fleet's link rate, which the lab shapes at `lab.rate_bps`."""
    if not trace or trace[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(trace, trace[1:])):
        raise LabError("a channel trace needs blocks that start at 0 s and follow one another in time")
    if len(trace) < 2:
        raise LabError("a channel trace needs at least two blocks (one is a fixed rate)")
    period = 2 * trace[-1][0] - trace[-2][0]  # the last block ends one block length after it starts
    stop = threading.Event()
    applied: list[float] = []
    failure: list[BaseException] = []

    def play() -> None:
        start = time.monotonic()
        try:
            for repeat in itertools.count():
                for begins, rate in trace:
                    at = start + (repeat * period + begins) / lab.dilation
                    if stop.wait(max(0.0, at - time.monotonic())):
                        return
                    _apply(lab, rate / fleet_rate_bps)
                    applied.append(rate / fleet_rate_bps)
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)

    player = threading.Thread(target=play, name=f"channel-{lab.name}", daemon=True)
    player.start()
    try:
        yield applied
    finally:
        stop.set()
        player.join()
        _apply(lab, 1.0)
    if failure:
        raise failure[0]
