"""PICO (Yang et al., IEEE TMC 2023): a pipeline of stages, each a run of pieces on a group of devices
that split its output rows, with receptive-field redundancy.

Step 1 (suite/schemes/chain.py) turns the DAG into a chain of pieces. Step 2 groups pieces and
devices into stages with the paper's dynamic programme on a homogeneous proxy cluster, every device
at the mean capability:

    P[j][p] = min( T(0..j, p),  min over j' < j, 1 <= p' < p of max(P[j'][p - p'], T(j'+1..j, p')) )

where T(i..j, p) is the stage time of pieces i..j on p proxy devices: the slowest strip's compute
plus the communication through the coordinator (each device's input rows in, its output rows out).
A greedy pass then gives the real devices to the stages (the fastest device to the stage with
the most work per unit of capability so far), sizes each device's rows by its capability, and
swaps devices between stages while that lowers the period.

Choices the paper leaves to us, written down:
- the tail after the last spatial piece (pooling to 1x1, flatten, linear) is one piece that runs
  whole; when a stage holds it together with spatial pieces, the stage's first (fastest) device
  runs it after the stage's strips are gathered;
- rows only (1-D strips), as in the paper; a stage may use fewer devices than the fleet has;
- the frame starts at, and every stage's result returns to, a coordinator on the same medium;
  but when the whole model on the fastest device beats every pipeline (a fast device on a slow
  link), the plan is that one stage with the frames held on the device, as the single baseline.

`exhaustive` searches every grouping and every assignment of device kinds, for small instances;
its result against the DP's is the DP's optimality gap.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from suite.cost import stage_time, work_time, work_times
from suite.errors import UserError
from suite.fleet import Device, Fleet, Link, OpCost, Profile
from suite.graph import Graph
from suite.plan import COORDINATOR, Layout, Transfer, build_stages
from suite.regions import WHOLE, Box, split_range
from suite.schemes import single
from suite.schemes.chain import (
    Piece,
    Segment,
    StageDraft,
    TileCosts,
    branch_transfers,
    by_capability,
    chain_nodes,
    pieces,
    tile_transfers,
    whole_on,
)  # fmt: skip

INF = math.inf


@dataclass(frozen=True)
class Grouping:
    """Stages as (first piece, last piece, devices) and the period they give."""

    period: float
    stages: tuple[tuple[int, int, tuple[Device, ...]], ...]


class StageTimer:
    """Stage times of runs of pieces on groups of devices, memoised: what the DP, the greedy pass
    and the exhaustive search all compare."""

    def __init__(self, graph: Graph, chain: list[Piece], link: Link):
        self.graph = graph
        self.chain = chain
        self.costs = TileCosts(graph, chain)
        self.link = link
        self.memo: dict[tuple, float] = {}
        self.segment_memo: dict[tuple, float] = {}

    def time(self, i: int, j: int, profiles: tuple[Profile, ...]) -> float:
        key = (i, j, tuple(p.name for p in profiles))  # profiles are unhashable; names are unique
        if key not in self.memo:
            self.memo[key] = self._time(i, j, profiles)
        return self.memo[key]

    def spatial_end(self, i: int, j: int) -> int:
        """The last piece of i..j in the run of spatial pieces from i (i - 1 if there is none)."""
        last = i - 1
        while last < j and self.chain[last + 1].spatial:
            last += 1
        return last

    def tiled_end(self, i: int, j: int, devices: int) -> int:
        """The last piece of i..j that `devices` devices tile (i - 1: none): the spatial run from i,
        except that one device computes a run with squeeze-and-excite branches whole (in segments
        it would only send their maps to the coordinator and back)."""
        last = self.spatial_end(i, j)
        return i - 1 if devices == 1 and self.costs.branched(i, last) else last

    def _time(self, i: int, j: int, profiles: tuple[Profile, ...]) -> float:
        """Pieces i..j on devices with `profiles` (fastest first): strips sized by capability
        over the spatial pieces, each device's rows in from and out to the coordinator, then the
        rest whole on the first device (named d0, d1, ... in the order of `profiles`)."""
        last = self.tiled_end(i, j, len(profiles))
        if last < i and len(profiles) > 1:
            return INF
        time = self._tiled_time(i, last, profiles) if last >= i else 0.0
        if last < j:
            start, end = self.chain[last + 1].input, self.chain[j].output
            rest = {"d0": work_time(profiles[0], self.costs.whole(last + 1, j))}
            moves = [Transfer(COORDINATOR, "d0", start, WHOLE, self.graph[start].act_bytes),
                     Transfer("d0", COORDINATOR, end, WHOLE, self.graph[end].act_bytes)]  # fmt: skip
            time += stage_time(self.link, rest, moves)
        return time

    def _tiled_time(self, i: int, j: int, profiles: tuple[Profile, ...]) -> float:
        """Spatial pieces i..j in strips through the coordinator: one stage, or one per segment
        around squeeze-and-excite branches (`TileCosts.segments`), each branch a stage on the
        first device."""
        return sum(self._segment_time(segment, profiles) for segment in self.costs.segments(i, j))

    def _segment_time(self, segment: Segment, profiles: tuple[Profile, ...]) -> float:
        """One segment's strips, after its branches; memoised, since runs share their inner segments."""
        key = (segment.nodes[0], segment.nodes[-1], tuple(p.name for p in profiles))
        if key in self.segment_memo:
            return self.segment_memo[key]
        names = [f"d{k}" for k in range(len(profiles))]
        time = 0.0
        for branch in segment.branches:
            compute = {"d0": work_time(profiles[0], self.costs.nodes_work(branch.nodes))}
            time += stage_time(self.link, compute, branch_transfers(self.graph, COORDINATOR, "d0", branch))
        rows = self.strip_rows(segment, [p.macs_per_s for p in profiles])
        if rows is None:
            time = INF
        else:
            cols = {o: [(0, self.graph[o].shape[3])] for o in segment.outputs}
            reads, macs, calls = self.costs.segment_grid(segment, rows, cols)
            made = [{o: Box(*rows[o][k], *cols[o][0]) for o in segment.outputs} for k in range(len(names))]
            transfers = tile_transfers(self.graph, COORDINATOR, names, reads, made)
            time += stage_time(self.link, dict(zip(names, work_times(profiles, macs, calls))), transfers)
        self.segment_memo[key] = time
        return time

    def strip_rows(self, segment: Segment, weights: list[float]) -> dict[str, list[tuple[int, int]]] | None:
        """Each output's full-width row strips in proportion to `weights` (None: too few rows)."""
        return self.costs.output_splits(segment, lambda n: split_range(n, len(weights), weights), 0)

    def period(self, stages: Sequence[tuple[int, int, Sequence[Device]]]) -> float:
        return max(self.time(i, j, _profiles(devs)) for i, j, devs in stages)


def stage_steps(
    timer: StageTimer, i: int, j: int, devices: Sequence[Device], group: int = 0
) -> list[StageDraft]:
    """Pieces i..j on `devices` as `StageTimer` prices them: full-width row strips sized by
    capability over the run's spatial pieces (in segments around squeeze-and-excite branches, each
    branch whole on the fastest device), then the rest whole on the fastest device."""
    graph, chain = timer.graph, timer.chain
    devices = by_capability(devices)
    weights = [d.capability for d in devices]
    last = timer.tiled_end(i, j, len(devices))
    steps: list[StageDraft] = []
    if last >= i:
        for segment in timer.costs.segments(i, last):
            steps += [whole_on(graph, devices[0].name, list(b.nodes), group) for b in segment.branches]
            rows = timer.strip_rows(segment, weights)
            steps.append((group, list(segment.nodes),
                          [(d.name, {o: Box(*rows[o][k], 0, graph[o].shape[3]) for o in segment.outputs})
                           for k, d in enumerate(devices)]))  # fmt: skip
    if last < j:
        steps.append(whole_on(graph, devices[0].name, chain_nodes(chain, last + 1, j), group))
    return steps


def _profiles(devices: Sequence[Device]) -> tuple[Profile, ...]:
    return tuple(d.profile for d in by_capability(devices))


def proxy_profile(devices: Sequence[Device]) -> Profile:
    """PICO's homogeneous proxy: the mean capability and the mean per-op costs."""
    n = len(devices)
    kinds = set().union(*(d.profile.ops for d in devices))
    ops = {
        k: OpCost(
            sum(d.profile.cost(k).alpha for d in devices) / n,
            sum(d.profile.cost(k).overhead_s for d in devices) / n,
        )
        for k in kinds
    }
    return Profile("proxy", "mean of the fleet", sum(d.capability for d in devices) / n, ops)


def dp_search(timer: StageTimer, m: int, devices: Sequence[Device]) -> Grouping:
    """The paper's DP on the proxy for pieces 0..m-1, then the greedy device assignment."""
    n = len(devices)
    proxy = proxy_profile(devices)
    ts = lambda i, j, p: timer.time(i, j, (proxy,) * p)
    best: dict[tuple[int, int], tuple[float, tuple]] = {}
    for j in range(m):
        for p in range(1, n + 1):
            period, stages = ts(0, j, p), ((0, j, p),)
            for jj in range(j):
                for pp in range(1, p):
                    prev, before = best[(jj, p - pp)]
                    if prev >= period:  # max(prev, anything) cannot beat it; skip timing the stage
                        continue
                    option = max(prev, ts(jj + 1, j, pp))
                    if option < period:  # strictly: the first of equal options wins, as min() picks
                        period, stages = option, before + ((jj + 1, j, pp),)
            best[(j, p)] = (period, stages)
    period, shape = min((best[(m - 1, p)] for p in range(1, n + 1)), key=lambda o: o[0])
    if period == INF:
        return Grouping(INF, ())
    return improve(timer, assign(timer, shape, devices, proxy), devices)


def assign(timer: StageTimer, shape: Sequence[tuple[int, int, int]], devices: Sequence[Device],
           proxy: Profile) -> list[tuple[int, int, list[Device]]]:  # fmt: skip
    """Fastest device first, to the stage with the most proxy work per capability given so far."""
    work = [timer.time(i, j, (proxy,) * p) * p * proxy.macs_per_s for i, j, p in shape]
    given: list[list[Device]] = [[] for _ in shape]
    for device in by_capability(devices):
        open_ = [k for k, (_, _, p) in enumerate(shape) if len(given[k]) < p]
        if not open_:
            break
        k = max(open_, key=lambda k: work[k] / (sum(d.capability for d in given[k]) or 1e-30))
        given[k].append(device)
    return [(i, j, given[k]) for k, (i, j, _) in enumerate(shape)]


def improve(timer: StageTimer, stages: list[tuple[int, int, list[Device]]], devices: Sequence[Device]
            ) -> Grouping:  # fmt: skip
    """Swap devices between stages, or hand an unused device to a stage, while the period drops."""
    stages = [(i, j, list(devs)) for i, j, devs in stages]
    period = timer.period(stages)
    improved = True
    while improved:
        improved = False
        used = {d.name for _, _, devs in stages for d in devs}
        spare = [d for d in devices if d.name not in used]
        moves = [(a, x, b, y) for a in range(len(stages)) for b in range(a + 1, len(stages))
                 for x in range(len(stages[a][2])) for y in range(len(stages[b][2]))]  # fmt: skip
        for a, x, b, y in moves:
            trial = [(i, j, list(devs)) for i, j, devs in stages]
            trial[a][2][x], trial[b][2][y] = trial[b][2][y], trial[a][2][x]
            if (t := timer.period(trial)) < period - 1e-12:
                stages, period, improved = trial, t, True
                break
        if improved or not spare:
            continue
        for k in range(len(stages)):
            trial = [(i, j, list(devs)) for i, j, devs in stages]
            trial[k][2].append(spare[0])
            if (t := timer.period(trial)) < period - 1e-12:
                stages, period, improved = trial, t, True
                break
    return Grouping(period, tuple((i, j, tuple(devs)) for i, j, devs in stages))


def exhaustive(timer: StageTimer, m: int, devices: Sequence[Device], limit: int = 2_000_000) -> Grouping:
    """Every contiguous grouping of pieces 0..m-1 and every split of the device kinds among stages.

    Devices with the same profile are interchangeable, so kinds are counted rather than named.
    """
    kinds: dict[str, list[Device]] = {}
    for d in by_capability(devices):
        kinds.setdefault(d.profile.name, []).append(d)
    names = list(kinds)
    counts = tuple(len(kinds[k]) for k in names)
    choices = [c for c in itertools.product(*(range(n + 1) for n in counts)) if any(c)]
    best = Grouping(INF, ())
    tried = 0

    def stage_devices(c: tuple[int, ...], used: Counter) -> list[Device]:
        return [d for k, n in zip(names, c) for d in kinds[k][used[k] : used[k] + n]]

    def search(start: int, left: tuple[int, ...], stages: tuple, period: float) -> None:
        nonlocal best, tried
        if period >= best.period:
            return
        if start == m:
            best = Grouping(period, stages)
            return
        for end in range(start, m):
            for c in choices:
                if any(x > y for x, y in zip(c, left)):
                    continue
                tried += 1
                if tried > limit:
                    raise ValueError(f"exhaustive search over {m} pieces and {len(devices)} devices "
                                     f"exceeds {limit} stage evaluations")  # fmt: skip
                used = Counter({k: n - rest for k, n, rest in zip(names, counts, left)})
                devs = tuple(stage_devices(c, used))
                t = timer.time(start, end, _profiles(devs))
                rest = tuple(x - y for x, y in zip(left, c))
                search(end + 1, rest, stages + ((start, end, devs),), max(period, t))

    search(0, counts, (), 0.0)
    return best


def plan(graph: Graph, fleet: Fleet, search: str = "dp") -> Layout:
    chain = pieces(graph)
    timer = StageTimer(graph, chain, fleet.link)
    finder = {"dp": dp_search, "exhaustive": exhaustive}[search]
    grouping = finder(timer, len(chain), fleet.devices)
    if grouping.period == INF:
        raise UserError(f"no stage layout fits model {graph.name} on fleet {fleet.name}")
    alone = work_time(fleet.fastest().profile, timer.costs.whole(0, len(chain) - 1))
    if alone <= grouping.period:
        # One stage on one device beats every pipeline: keep the frames on that device.
        layout = single.plan(graph, fleet)
        layout.options = {"search": search, "pieces": len(chain),
                          "stages": [[0, len(chain) - 1, [layout.hub]]]}  # fmt: skip
        return layout
    steps = [step for group, (i, j, devs) in enumerate(grouping.stages)
             for step in stage_steps(timer, i, j, devs, group)]  # fmt: skip
    options = {
        "search": search,
        "pieces": len(chain),
        "stages": [[i, j, [d.name for d in devs]] for i, j, devs in grouping.stages],
    }
    return Layout(COORDINATOR, build_stages(graph, COORDINATOR, steps), options)
