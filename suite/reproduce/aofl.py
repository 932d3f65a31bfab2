"""AOFL's own figure (SEC 2019, Fig. 9): VGG-16's time per image for LW, EFL and OFL on 1-8 Raspberry
Pi 3B+ at 1 GHz, 750 MHz and 500 MHz over 93.7 Mbps WiFi, with the paper's OFL speedup ranges.

Fleets `aofl-pi3bplus-{1000,750,500}mhz-{1..8}` (suite/data/fleets/): one-core Pi 3B+ whose profiles
are fitted to AOFL's own single-device times, 93.7 Mbps shared WiFi. LW = `modnn`, EFL =
`deepthings`, OFL = `ofl`, as in PICO's figures, each planned by its own search on the cost model.
One image at a time, so the time per image is the plan's latency; simulated: one frame in the
discrete-event simulator. Speedup: the single device's time over the scheme's.
"""

from __future__ import annotations

import pandas as pd

from suite.baselines import Figure
from suite.reproduce.common import SCHEME_OF, Comparison, Outcome, bytes_per_frame, plan, simulated

MODEL = "vgg16"
CLOCKS_MHZ = (1000, 750, 500)
DEVICES = range(1, 9)
LABELS = ("lw", "efl", "ofl")


def fleet_of(clock_mhz: int, devices: int) -> str:
    return f"aofl-pi3bplus-{clock_mhz}mhz-{devices}"


def latency(baseline: Figure) -> Outcome:
    """Fig. 9 (VGG-16): time per image of LW, EFL and OFL on 1-8 Pi 3B+ at each clock."""
    rows = []
    for clock in CLOCKS_MHZ:
        single = plan(MODEL, "single", fleet_of(clock, 1)).predicted.latency_s
        for n in DEVICES:
            for label in LABELS:
                p = plan(MODEL, SCHEME_OF[label], fleet_of(clock, n))
                rows.append({"scheme": label, "clock_mhz": clock, "devices": n,
                             "predicted_latency_s": p.predicted.latency_s,
                             "simulated_latency_s": simulated(p, frames=1)["latency_s"],
                             "predicted_speedup": single / p.predicted.latency_s,
                             "predicted_comm_mb": bytes_per_frame(p) / 1e6})  # fmt: skip
    keys = ["scheme", "clock_mhz", "devices"]
    table = pd.DataFrame(rows).merge(baseline.published("latency_s", keys), on=keys, how="left")
    table = _with_ranges(table, baseline)
    speedup = {(s, c): _speedup_at(table, s, c) for s in LABELS for c in CLOCKS_MHZ}
    headline = ("Speedup on 8 Pi 3B+ at 1 GHz / 750 MHz / 500 MHz, predicted against the paper's Fig. 9: "
                + "; ".join(f"{s.upper()} " + " / ".join(f"{speedup[s, c][0]:.2f}x" for c in CLOCKS_MHZ)
                            + " against " + " / ".join(f"{speedup[s, c][1]:.2f}x" for c in CLOCKS_MHZ)
                            for s in ("ofl", "lw"))
                + ".")  # fmt: skip
    return Outcome(
        name=baseline.name,
        title=baseline.title,
        source=f"{baseline.citation}; Fig. 9 and text",
        setup=__doc__.split("\n\n", 1)[1].strip(),
        table=table,
        keys=tuple(keys),
        comparisons=(Comparison("latency_s"), Comparison("speedup"), Comparison("speedup_over_efl")),
        headline=headline,
        causes=_causes(table),
    )


def _speedup_at(table: pd.DataFrame, scheme: str, clock: int, devices: int = 8) -> tuple[float, float]:
    """(ours predicted, the paper's) speedup of `scheme` on `devices` over one device."""
    rows = table[(table.scheme == scheme) & (table.clock_mhz == clock)].set_index("devices")
    return (
        rows.loc[devices, "predicted_speedup"],
        rows.loc[1, "published_latency_s"] / rows.loc[devices, "published_latency_s"],
    )


def _with_ranges(table: pd.DataFrame, baseline: Figure) -> pd.DataFrame:
    """The text's ranges on OFL's rows: its speedup on 8 devices, on 2 to 7 (the 2-to-8 range), and
    its speedup over EFL on 2 to 8 devices; and our OFL's speedup over our EFL beside them."""
    efl = table[table.scheme == "efl"].set_index(["clock_mhz", "devices"]).predicted_latency_s
    ofl = table.scheme == "ofl"
    table.loc[ofl, "predicted_speedup_over_efl"] = [efl[c, n] / t for c, n, t in zip(
        table[ofl].clock_mhz, table[ofl].devices, table[ofl].predicted_latency_s)]  # fmt: skip
    ranges = {str(s.labels["devices"]): s.range for s in baseline.ranges("speedup")}
    [over_efl] = baseline.ranges("speedup_over_efl")
    for quantity, band, devices in (("speedup", ranges["8"], [8]), ("speedup", ranges["2-8"], range(2, 8)),
                                    ("speedup_over_efl", over_efl.range, range(2, 9))):  # fmt: skip
        at = ofl & table.devices.isin(devices)
        table.loc[at, f"published_{quantity}_low"], table.loc[at, f"published_{quantity}_high"] = band
    return table


def _causes(table: pd.DataFrame) -> dict[str, str]:
    """Why each scheme's points differ from the paper's, from the 8-device plans at 1 GHz."""
    at = {s: plan(MODEL, SCHEME_OF[s], fleet_of(1000, 8)) for s in LABELS}
    ghz = table[table.clock_mhz == 1000].set_index(["scheme", "devices"])

    def where(label: str) -> str:
        p = at[label]
        comm = sum(c.comm_s for c in p.predicted.stages)
        return (
            f"at 8 devices and 1 GHz ours takes {p.predicted.latency_s:.1f} s against the paper's "
            f"{ghz.loc[(label, 8), 'published_latency_s']:.1f} s: {p.predicted.latency_s - comm:.1f} s "
            f"of compute and {comm:.1f} s of transfers, {bytes_per_frame(p) / 1e6:.0f} MB a frame"
        )

    efl, ofl = at["efl"], at["ofl"]
    paper_lw = max(_speedup_at(table, "lw", c, n)[1] for c in CLOCKS_MHZ for n in DEVICES)
    return {
        "lw": (
            f"Our LW gathers every layer's map at its owner over the shared link ({where('lw')}). The "
            f"paper's LW gains little (at most {paper_lw:.2f}x at any clock and device count): we "
            "believe it pays per-layer synchronisation and message costs that our model has no term "
            "for, and AOFL parallelises only VGG-16's conv layers, leaving the rest on one device (see "
            "the testbed in suite/data/baselines/aofl.yaml)."
        ),
        "efl": (
            f"Our EFL searches its fused depth and grid per device count ({where('efl')}; it fuses "
            f"{efl.options['fused_pieces']} pieces in a {efl.options['grid']} grid with "
            f"{100 * efl.predicted.redundancy:.0f}% redundant MACs). AOFL's EFL, 'an extension of "
            "DeepThings', fuses a fixed early block and runs the rest on one device, which is slower."
        ),
        "ofl": (
            f"Our OFL cuts VGG-16 into {len(ofl.options['blocks'])} fused blocks ({where('ofl')}). "
            "As in pico-fig8, we believe the rest is compute efficiency on thin strips: the engine runs "
            "a strip of a few rows at fewer MACs per second than the whole map, while our profile prices "
            "a MAC the same in any tile, and every OFL block is split across the devices."
        ),
    }
