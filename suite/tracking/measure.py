"""One model's schemes measured on the same workers, against the same single-device run.

The single-device plan runs once and every scheme's speedup is measured against that run, so a
model costs one baseline however many schemes it has. Every frame of every run is checked bit for
bit against the monolithic model (the coordinator does it); the summaries are the ones
`suite run` makes (`RunSummary`: `speedup_vs_single`, `latency_s`, `bit_exact`, `predicted`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from suite.fleet import Fleet

if TYPE_CHECKING:
    from suite.inventory import Inventory
    from suite.runtime.outcome import RunSummary


@dataclass(frozen=True)
class Workload:
    """What each plan runs: a model at an input size, and how many frames (after the warm-up)."""

    model: str
    input_size: tuple[int, int, int]
    frames: int
    warmup: int
    seed: int = 0
    timeout_s: float = 60.0  # for any one worker to answer; workers start within their own limit

    @property
    def label(self) -> str:
        return f"{self.model} {'x'.join(map(str, self.input_size))}"


def first_devices(fleet: Fleet, count: int) -> Fleet:
    """The fleet's first `count` devices on its link: a smaller fleet made of the same machines, so
    one lab (or one real fleet) serves every device count of a matrix."""
    if count == len(fleet.devices):
        return fleet
    if not 1 <= count <= len(fleet.devices):
        from suite.errors import UserError

        raise UserError(f"{count} devices asked of fleet '{fleet.name}', which has {len(fleet.devices)}; "
                        "use a larger fleet or fewer devices")  # fmt: skip
    return Fleet(f"{fleet.name}[:{count}]", fleet.devices[:count], fleet.link,
                 f"the first {count} devices of {fleet.name}: {fleet.source}")  # fmt: skip


def measure_schemes(workload: Workload, fleet: Fleet, schemes: Sequence[str],
                    inventory: Inventory | None = None, results: Path | None = None,
                    say: Callable[[str], None] = lambda _: None) -> dict[str, RunSummary]:  # fmt: skip
    """`{scheme: summary}` for "single" and each of `schemes`, run on `fleet`'s devices: local
    worker processes, or the inventory's devices over SSH. With `results`, each run's tables,
    trace and plan are saved under `results/<scheme>/` as `suite run -o` saves them. A run stopped by
    Ctrl-C or SIGTERM is saved, then the interrupt goes on to the caller (a nightly stops there; a
    run that caught it must not leave the rest of the matrix to run)."""
    from suite.models.load import load_model
    from suite.orchestrate.remote import RemoteWorkers
    from suite.runtime.coordinator import INTERRUPTED
    from suite.runtime.measurement import Repeat, RunOptions, Runs
    from suite.runtime.outcome import summarize
    from suite.runtime.results import save
    from suite.runtime.setup import set_up_run
    from suite.schemes import make_plan

    setup = set_up_run(load_model(workload.model, workload.input_size, workload.seed), "torch")
    options = RunOptions(model=workload.model, input_size=setup.loaded.input_shape, seed=workload.seed,
                         frames=workload.frames, warmup=workload.warmup, timeout_s=workload.timeout_s,
                         inventory=inventory,
                         remote_workers=None if inventory is None else RemoteWorkers)  # fmt: skip
    coordinator = setup.coordinator(fleet, options)
    summaries: dict[str, RunSummary] = {}
    single = None
    for scheme in ["single", *schemes]:
        plan = make_plan(scheme, setup.model, fleet)
        run = coordinator.run(plan, label=scheme)
        if single is None:  # the first run is the single device's, every speedup's reference
            single = run
        runs = Runs((Repeat(1, run, single),))
        summaries[scheme] = summarize(runs, fleet, options)
        if results is not None:
            save(results / scheme, runs, summaries[scheme], fleet, options)
        say(_line(workload, fleet, summaries[scheme]))
        if run.error == INTERRUPTED:  # the coordinator stopped this run on Ctrl-C or SIGTERM: stop them all
            raise KeyboardInterrupt
    return summaries


def _line(workload: Workload, fleet: Fleet, s: RunSummary) -> str:
    """One progress line per run."""
    if not s.complete:
        return f"{s.scheme} {workload.label} on {fleet.name}: FAILED: {s.error}"
    speedup = "" if s.speedup_vs_single is None else f", speedup {s.speedup_vs_single:.2f}x"
    exact = "bit-exact" if s.bit_exact else "NOT bit-exact"
    return (
        f"{s.scheme} {workload.label} on {fleet.name}: latency {s.latency_s:.3f} s, "
        f"{s.throughput_fps:.2f} fps{speedup}, {exact}"
    )
