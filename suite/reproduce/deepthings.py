"""DeepThings' Fig. 13 (TCAD 2018): single-frame latency of MoDNN and FTP 5x5 on 1-6 Pi 3B for the
first 16 layers of YOLOv2 at 608x608, with the communication per frame and the memory per device.

Fleets `deepthings-pi3-{1..6}` (suite/data/fleets/): one-core Pi 3B at Darknet+NNPACK speed, the WLAN's
bandwidth estimated from the paper's own MoDNN numbers. FTP runs DeepThings' configuration: all 16
layers fused, a fixed 5x5 grid (`deepthings` with `grid` and `fused_pieces`), tiles dealt statically
where DeepThings steals work at run time.
"""

from __future__ import annotations

from itertools import takewhile

import pandas as pd

from suite.baselines import Figure
from suite.reproduce.common import (
    Comparison,
    Outcome,
    bytes_per_frame,
    fleet,
    footprint,
    graph,
    plan,
    require_models,
    simulated,
)  # fmt: skip
from suite.schemes.chain import pieces

MODEL = "yolov2_16"
DEVICES = range(1, 7)
COMM_AT = 6  # devices at which communication per frame is compared (the paper's MoDNN figure is at 6)
MB = 1e6


def fleet_of(devices: int) -> str:
    return f"deepthings-pi3-{devices}"


def _ftp(devices: int, grid: tuple[int, int]):
    fused = sum(1 for _ in takewhile(lambda p: p.spatial, pieces(graph(MODEL))))
    return plan(MODEL, "deepthings", fleet_of(devices), grid=grid, fused_pieces=fused)


def _memory_reduction(p, single) -> float:
    """How much less the most loaded non-hub device holds than one device running everything."""
    g = graph(MODEL)
    held = footprint(p, g)
    workers = [size for device, size in held.items() if device != p.hub] or list(held.values())
    return 100 * (1 - max(workers) / max(footprint(single, g).values()))


def latency(baseline: Figure) -> Outcome:
    require_models(MODEL)
    rows = []
    for n in DEVICES:
        for label, p in (("modnn", plan(MODEL, "modnn", fleet_of(n))), ("deepthings", _ftp(n, (5, 5)))):
            rows.append({"scheme": label, "grid": "5x5" if label == "deepthings" else "", "devices": n,
                         "predicted_latency_s": p.predicted.latency_s,
                         "simulated_latency_s": simulated(p, frames=1)["latency_s"],
                         "predicted_comm_mb": bytes_per_frame(p) / MB,
                         "predicted_redundancy_pct": 100 * p.predicted.redundancy})  # fmt: skip
    single = plan(MODEL, "single", fleet_of(1))
    for grid in ((3, 3), (4, 4)):
        p = _ftp(COMM_AT, grid)
        rows.append({"scheme": "deepthings", "grid": f"{grid[0]}x{grid[1]}", "devices": COMM_AT,
                     "predicted_latency_s": p.predicted.latency_s,
                     "predicted_comm_mb": bytes_per_frame(p) / MB,
                     "predicted_redundancy_pct": 100 * p.predicted.redundancy})  # fmt: skip
    table = pd.DataFrame(rows)
    for scheme, grid, devices, p in (("modnn", "", 4, plan(MODEL, "modnn", fleet_of(4))),
                                     ("deepthings", "3x3", COMM_AT, _ftp(COMM_AT, (3, 3))),
                                     ("deepthings", "5x5", COMM_AT, _ftp(COMM_AT, (5, 5)))):  # fmt: skip
        at = (table.scheme == scheme) & (table.grid == grid) & (table.devices == devices)
        table.loc[at, "predicted_memory_reduction_pct"] = _memory_reduction(p, single)
    table = _with_published(table, baseline)
    at6 = table[(table.devices == 6) & table.published_latency_s.notna()].set_index("scheme")
    single_s = single.predicted.latency_s
    headline = ("At 6 devices, predicted latency: FTP 5x5 "
                f"{at6.loc['deepthings', 'predicted_latency_s']:.1f} s (paper "
                f"{at6.loc['deepthings', 'published_latency_s']:.1f} s), MoDNN "
                f"{at6.loc['modnn', 'predicted_latency_s']:.1f} s (paper "
                f"{at6.loc['modnn', 'published_latency_s']:.1f} s); speedups over our one-device "
                f"{single_s:.1f} s: FTP {single_s / at6.loc['deepthings', 'predicted_latency_s']:.2f}x "
                f"(paper 3.5x), MoDNN {single_s / at6.loc['modnn', 'predicted_latency_s']:.2f}x "
                "(paper 2.1x).")
    modnn6, ftp6 = plan(MODEL, "modnn", fleet_of(6)), _ftp(6, (5, 5))
    link = fleet(fleet_of(6)).link
    largest = max(node.act_bytes for node in graph(MODEL).nodes.values())
    ftp1 = table[(table.scheme == "deepthings") & (table.grid == "5x5") & (table.devices == 1)].iloc[0]
    causes = {
        "modnn": (f"Our MoDNN gathers every layer's float32 map at its owner and scatters the next layer's "
                  f"input rows, as MoDNN's paper describes: {bytes_per_frame(modnn6) / MB:.0f} MB per frame "
                  f"at 6 devices, {8 * bytes_per_frame(modnn6) / link.bandwidth_bps:.0f} s on the "
                  f"{link.bandwidth_bps / 1e6:.1f} Mbps WLAN. DeepThings measured 19.6 MB per frame for its "
                  f"MoDNN, less than this model's largest map alone ({largest / MB:.0f} MB in float32), so "
                  "the MoDNN the DeepThings authors ran cannot have gathered every "
                  "map: we believe it exchanged only the halo rows between neighbours. With that much less "
                  "data it scales as the paper shows; ours is transfer-bound from 2 devices on."),
        "deepthings": (f"Our FTP recomputes every tile's receptive-field overlap: 5x5 tiles over all 16 "
                       f"layers cost {ftp1.predicted_redundancy_pct:.0f}% extra MACs, so one device takes "
                       f"{ftp1.predicted_latency_s:.1f} s where the paper measured 24.9 s (which implies "
                       f"about {100 * (24.9 / single_s - 1):.0f}% extra over its 17.0 s). DeepThings' work "
                       "scheduler runs neighbouring tiles on one device and reuses their overlapping "
                       "results, which we do not model; every point inherits the difference. At 6 devices "
                       f"our FTP moves {bytes_per_frame(ftp6) / MB:.1f} MB (float32 input tiles out, output "
                       "tiles back); we believe the paper's 18.9 MB also counts work-stealing requests and "
                       "message headers. Memory: we count weights and one buffer per layer output, not "
                       "Darknet's im2col workspace or network structures, which are the same on every "
                       "device, so our reductions come out larger than the paper's."),
    }
    return Outcome(
        name=baseline.name, title=baseline.title, source=f"{baseline.citation}; Fig. 13 and text",
        setup=("`yolov2_16` (YOLOv2's first 16 layers, 608x608) on `deepthings-pi3-{1..6}`. FTP = "
               "`deepthings` with all 16 layers fused in a fixed 5x5 grid, tiles dealt longest first "
               "(DeepThings steals work at run time and reuses overlapping data between tiles; we recompute "
               "every halo). MoDNN = `modnn`. Predicted: the cost model; simulated: one frame in the "
               f"simulator. Communication per frame at {COMM_AT} devices (the paper gives none for FTP). "
               "Memory: bytes the most loaded non-hub device holds when every layer's output has its own "
               "buffer (as in Darknet), against one device running everything."),
        table=table, keys=("scheme", "grid", "devices"),
        comparisons=(Comparison("latency_s"), Comparison("comm_mb"),
                     Comparison("memory_reduction_pct")),
        headline=headline, causes=causes)


def _with_published(table: pd.DataFrame, baseline: Figure) -> pd.DataFrame:
    """The paper's latency, communication and memory points beside ours; where the paper names no
    device count, at COMM_AT devices."""
    published = baseline.table()
    published["grid"] = published["grid"].fillna("")
    published["devices"] = published["devices"].fillna(COMM_AT).astype(int)
    for quantity in ("latency_s", "comm_mb", "memory_reduction_pct"):
        points = published[published.quantity == quantity][["scheme", "grid", "devices", "value"]]
        table = table.merge(points.rename(columns={"value": f"published_{quantity}"}),
                            on=["scheme", "grid", "devices"], how="left")  # fmt: skip
    return table
