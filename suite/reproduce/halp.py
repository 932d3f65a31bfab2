"""HALP (ICC 2022; abstracts only): VGG-16 speedup for one task and for 4 tasks per batch, against
MoDNN, and service reliability (the share of frames that meet a deadline) under a time-variant
channel.

The abstracts give ranges and no setup, so everything else is ours and written down here:
- fleets: `halp-gpu` (the paper's GTX 1080 Ti host with two Jetson AGX Xavier, our estimates),
  `halp-pi` (the prototype's three Pi 4, ncnn speed) and `pico-libtorch-1000mhz-3` (three Pi 4
  cores at PICO's LibTorch speed on 50 Mbps WiFi): the same scheme under three compute/network
  ratios;
- speedup for one task: the single device's latency over HALP's; for 4 tasks per batch: four
  single-device frames one after another over HALP's batch latency;
- reliability: per frame a Rayleigh-faded channel (suite/simulate.py, mean SNR 20 dB), each frame on
  its own (no queueing), deadlines from 0.6 to 1.5 times the single device's latency;
- the GPU miss is tested, not tuned: the link swept from 1 to 1000 Gbps on our GPU fleet and on two
  other readings of the abstract's testbed (three 1080 Ti; three Xavier), none reaching the paper's
  speedup (`gpu_testbed_readings`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from suite.baselines import Figure
from suite.fleet import Fleet
from suite.reproduce.common import Comparison, Outcome, fleet, graph, plan, simulated
from suite.schemes import make_plan
from suite.simulate import SimWorkload, simulate

MODEL = "vgg16"
FLEETS = ("halp-gpu", "halp-pi", "pico-libtorch-1000mhz-3")
TASKS = 4
DEADLINES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)  # times the single device's latency
CHANNEL_FRAMES = 200  # independently faded frames per scheme and fleet
SNR_DB = 20.0
SWEEP_GBPS = (1, 10, 100, 1000)  # the GPU testbed's link, swept: the abstract gives none


def halp_speedup(f: Fleet) -> float:
    """HALP's predicted one-task speedup over the fleet's first device alone."""
    single, halp = (make_plan(s, graph(MODEL), f).predicted.latency_s for s in ("single", "halp"))
    return single / halp


def gpu_testbed_readings() -> dict[str, list[float]]:
    """HALP's speedup on three readings of the abstract's "on GTX 1080TI and JETSON AGX Xavier" (ours:
    a 1080 Ti host with two Xavier secondaries; or two testbeds of three equal devices), the link's
    bandwidth swept over SWEEP_GBPS: whether the link, or the reading, keeps halp-gpu off the paper's."""
    base = fleet("halp-gpu")
    host, secondary = base.devices[0], base.devices[-1]
    three = {"three 1080 Ti": host, "three Xavier": secondary}
    readings = {"halp-gpu": base} | {
        label: replace(base, devices=tuple(replace(device, name=f"es{k}") for k in range(3)))
        for label, device in three.items()}  # fmt: skip
    return {label: [halp_speedup(replace(f, link=replace(f.link, bandwidth_bps=gbps * 1e9)))
                    for gbps in SWEEP_GBPS] for label, f in readings.items()}  # fmt: skip


def _faded_latencies(p) -> np.ndarray:
    """The latencies of independently faded single frames (one channel draw each)."""
    return np.array([simulate(p, fleet(p.fleet), SimWorkload(frames=1, channel="rayleigh", snr_db=SNR_DB,
                                                             seed=seed)).latencies_s[0]
                     for seed in range(CHANNEL_FRAMES)])  # fmt: skip


def speedup_and_reliability(baseline: Figure) -> Outcome:
    published = _published(baseline)
    gpu_one, pi_one = published[("halp-gpu", "halp", 1)], published[("halp-pi", "halp", 1)]
    rows = []
    for name in FLEETS:
        single = plan(MODEL, "single", name)
        base = single.predicted.latency_s
        sim_base = simulated(single, frames=1)["latency_s"]
        for scheme, tasks in (("halp", 1), ("halp", TASKS), ("modnn", 1)):
            options = {"tasks_per_batch": tasks} if scheme == "halp" else {}
            p = plan(MODEL, scheme, name, **options)
            sim = simulate(p, fleet(name), SimWorkload(frames=tasks, tasks_per_batch=tasks))
            low, high = published.get((name, scheme, tasks), (np.nan, np.nan))
            rows.append({"fleet": name, "scheme": scheme, "tasks_per_batch": tasks,
                         "published_speedup_low": low, "published_speedup_high": high,
                         "predicted_speedup": tasks * base / p.predicted.latency_s,
                         "simulated_speedup": tasks * sim_base / max(sim.finish_s)})  # fmt: skip
            if tasks == 1:
                latencies = _faded_latencies(p)
                for factor in DEADLINES:
                    rows.append(
                        {
                            "fleet": name,
                            "scheme": scheme,
                            "tasks_per_batch": 1,
                            "deadline_x_single": factor,
                            "deadline_s": factor * base,
                            "simulated_deadline_met": float(np.mean(latencies <= factor * base)),
                        }
                    )
    table = pd.DataFrame(rows)
    speed = table[table.deadline_s.isna()].set_index(["fleet", "scheme", "tasks_per_batch"])
    gpu = speed.loc[("halp-gpu", "halp", 1), "predicted_speedup"]
    pi = speed.loc[("halp-pi", "halp", 1), "predicted_speedup"]
    lt = speed.loc[("pico-libtorch-1000mhz-3", "halp", 1), "predicted_speedup"]
    headline = (f"HALP's predicted VGG-16 speedup for one task: {gpu:.2f}x on halp-gpu (paper "
                f"{gpu_one[0]}-{gpu_one[1]}x), {pi:.2f}x on halp-pi (prototype paper {pi_one[0]}x), "
                f"{lt:.2f}x on three Pi 4 cores at LibTorch speed.")  # fmt: skip
    gpu_single, gpu_halp = plan(MODEL, "single", "halp-gpu"), plan(MODEL, "halp", "halp-gpu")
    link = fleet("halp-gpu").link
    to_secondary = min(t.bytes for s in gpu_halp.stages for t in s.transfers if t.src == gpu_halp.hub)
    pi = plan(MODEL, "halp", "halp-pi")
    pi_comm = sum(c.comm_s for c in pi.predicted.stages)
    readings = gpu_testbed_readings()
    sweep = "; ".join(f"{label} {'/'.join(f'{x:.2f}' for x in speedups)}x"
                      for label, speedups in readings.items())  # fmt: skip
    ratio = fleet("halp-gpu").devices[0].capability / fleet("halp-gpu").devices[-1].capability
    tested = (
        f" Tested whether the link or our reading of the testbed causes this: HALP's predicted speedup "
        f"with the link at {'/'.join(map(str, SWEEP_GBPS))} Gbps is {sweep}. No link brings our "
        f"halp-gpu to the paper's {gpu_one[0]}x (its host computes {ratio:.1f}x as fast as a "
        "secondary, so the secondaries can take little of the work), and reading the abstract as two "
        "testbeds of three equal devices stays short of it too: the miss is not the link alone, and "
        "the abstract does not give what else differs."
    )
    causes = {
        "halp-gpu": (
            "On the GTX 1080 Ti host the whole VGG-16 takes "
            f"{1e3 * gpu_single.predicted.latency_s:.1f} ms by our profile (Paddle's measured "
            "batch-1 time); sending a secondary even its smallest input segment "
            f"({to_secondary / 1e6:.2f} MB) takes {1e3 * link.transfer_time(to_secondary):.1f} ms "
            f"on our 1 Gbps link, so every split loses ({gpu:.2f}x; with 4 tasks in flight the "
            "transfers overlap other frames' compute and it nearly breaks even). Our GPU fleet is "
            "an estimate (suite/data/fleets/halp-gpu.yaml): the paper's framework, batch handling "
            "and link are not public." + tested
        ),
        "halp-pi": (
            f"On three ncnn-speed Pi 4 over 50 Mbps WiFi, HALP's transfers take {pi_comm:.2f} s of "
            f"its {pi.predicted.latency_s:.2f} s frame; the prototype's engine and link are not "
            "public."
        ),
    }
    better = all(speed.loc[(n, "halp", 1), "predicted_speedup"]
                 > speed.loc[(n, "modnn", 1), "predicted_speedup"] for n in FLEETS)  # fmt: skip
    deadlines = table.dropna(subset=["deadline_s"])
    met = deadlines.pivot_table(index=["fleet", "deadline_x_single"], columns="scheme",
                                values="simulated_deadline_met")  # fmt: skip
    never = [n for n in FLEETS if not met.loc[n].to_numpy().any()]
    # a fleet where neither meets any deadline ties at 0 everywhere: it says nothing, so it is left out
    informative = [n for n in FLEETS if n not in never]
    ahead = [n for n in informative if (met.loc[n, "halp"] >= met.loc[n, "modnn"]).all()
             and (met.loc[n, "halp"] > met.loc[n, "modnn"]).any()]  # fmt: skip
    behind = [n for n in informative if n not in ahead]
    nowhere = f"; on {', '.join(never)} neither meets any, both being slower than one device" if never else ""
    findings = (
        f"HALP's predicted speedup beats MoDNN's on {'every fleet' if better else 'not every fleet'} "
        "here (both abstracts: better everywhere). Reliability, for which no paper number is public: "
        "HALP meets more deadlines than MoDNN, and at no deadline fewer, on "
        f"{', '.join(ahead) or 'no fleet'}"
        + (f"; not on {', '.join(behind)}" if behind else "")
        + f"{nowhere}.",
    )
    return Outcome(
        name=baseline.name,
        title=baseline.title,
        source=f"{baseline.citation}; abstracts",
        setup=__doc__.split("\n\n", 1)[1].strip(),
        table=table,
        keys=("fleet", "scheme", "tasks_per_batch"),
        comparisons=(Comparison("speedup", group="fleet"),),
        headline=headline,
        findings=findings,
        causes=causes,
    )


def _published(baseline: Figure) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(fleet, scheme, tasks) -> the abstracts' (low, high) speedup: the GPU testbed's ranges on
    halp-gpu, the Pi prototype's single number on halp-pi."""
    out = {}
    for s in baseline.series:
        name = {"gpu": "halp-gpu", "pi": "halp-pi"}[s.labels["testbed"]]
        key = (name, "halp", int(s.labels["tasks_per_batch"]))
        if s.range is not None:
            out[key] = s.range
        elif s.bounds == ("=",):
            out.setdefault(key, (s.values[0], s.values[0]))
    return out
