"""Measured points for the reproduction: a figure's own plans run through the emulated lab.

For PICO's Fig. 8, 9 and 12 at 1 GHz and its Table I, MoDNN on EdgeLD's testbed, AOFL's Fig. 9 at
1 GHz and DeepThings' Fig. 13 at 1 and 6 devices, each device count's paper fleet
(`pico-libtorch-1000mhz-N`, `pico-libtorch-hetero`, `edgeld-vm-N`, `aofl-pi3bplus-1000mhz-N`,
`deepthings-pi3-N`) becomes a lab (`suite lab up --deploy`) and the very plans the figure predicts run
through it with `suite run --inventory --plan`, every frame checked bit for bit. A figure of several
models (Fig. 12: ResNet34 and InceptionV3) runs each of them on every one of its labs, its rows keyed
by `model`; a label's own plan options (FTP's grid and fused pieces) and key values (its grid) come
with it (`LabFigure.options`, `LabFigure.label_keys`).

One dilation per figure: every lab of a figure runs at the same F, the largest that its largest fleet
allows on this host (`figure_dilation`), so no two of its measured periods come from labs scaled
differently; every period is also converted to real time (measured x F) before any ratio.

Calibration: before a figure is measured, each device class (profile) of its fleets runs each of the
figure's models alone on a one-device lab at that F, and its real-time frame is compared with the
profile's prediction for that model (`calibration_step`), so a class is calibrated per model: within
`TOLERANCE` it is kept; otherwise the device's cgroup quota is scaled by measured / target and the run
repeated, at most `CALIBRATION_TRIES` times, and a reading taken while the host was loaded (1-minute
load average above its cores) is first re-measured at the same quota. Every lab of the figure then
gives each device the quota its class was calibrated to on the model it runs. The calibration
(target, measured, quota, host load) reaches the CSV's `calibration_*` columns (for a fleet of several
classes, Table I's, the class furthest from its profile: `furthest_class`) and the report. After the
points, each kept calibration run is made once more (`recheck`): a shared host's speed moves under its
caps, and the report says by how much it moved while the points were measured (`calibration_drift`).

Each device's compute, send, receive and idle seconds come from the run's own timelines (its
devices.csv), a receive's split into waiting for the sender to post it and transfer, a send's into
waiting for the receiver to post its receive and transfer, so a point that falls short of its
prediction shows where the time went.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from suite.errors import UserError
from suite.plan import save_plan
from suite.reproduce import deepthings
from suite.reproduce.common import SCHEME_OF, fleet, plan
from suite.reproduce.pico import HETERO
from suite.runtime.emulate import CPU_ROOT, MIN_CORES, write_cap
from suite.runtime.outcome import RunSummary

TOLERANCE = 0.10  # a calibrated device's frame is within 10% of its profile's
CALIBRATION_TRIES = 4  # single-device runs per device class, at most
CALIBRATION_FRAMES = 2
TIME_SPLIT = ("compute", "send", "send_wait", "recv", "recv_wait", "idle")  # devices.csv's `<kind>_s`


@dataclass(frozen=True)
class LabFigure:
    """What a figure measures in the lab: its models, its fleets by device count, the schemes (the
    figure's labels) with their frames per run, the key columns every measured row carries, and our
    scheme behind each label. A figure of several models (PICO's Fig. 12) also keys its rows by
    `model`. With `single_on_one` the figure's one-device point is the single device's plan (MoDNN's
    speedup is over one device alone), else the label's scheme on one device. A label may plan with
    options of its own (`options`: DeepThings' FTP grid and fused pieces) and give the key columns
    values of its own (`label_keys`: FTP's grid "5x5" where MoDNN's is "")."""

    models: tuple[str, ...]
    fleets: Mapping[int, str]
    frames: Mapping[str, int]
    keys: Mapping[str, object]
    schemes: Mapping[str, str] = field(default_factory=lambda: SCHEME_OF)
    single_on_one: bool = False
    options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # label -> plan options
    label_keys: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # label -> its key values

    def scheme(self, label: str, devices: int) -> str:
        """Our scheme behind the figure's point (`label`, `devices`)."""
        return "single" if self.single_on_one and devices == 1 else self.schemes[label]

    def plan_options(self, label: str, devices: int) -> dict[str, object]:
        """The plan options of the figure's point (`label`, `devices`): the label's, none for the single
        device's plan."""
        return {} if self.scheme(label, devices) == "single" else dict(self.options.get(label, {}))

    def row_keys(self, label: str, model: str) -> dict[str, object]:
        """The key columns' values of a measured row of `label` on `model`: its `model` where the figure
        has several, then the figure's keys, overridden by the label's."""
        named = {"model": model} if len(self.models) > 1 else {}
        return {**named, **self.keys, **self.label_keys.get(label, {})}

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns that name a measured row (and on which it meets the figure's table)."""
        return ("scheme", *(("model",) if len(self.models) > 1 else ()), *self.keys, "devices")


def pico_periods(model: str) -> LabFigure:
    """PICO Fig. 8 (VGG-16) or 9 (YOLOv2) at 1 GHz on 1, 2, 4 and 8 Pis: PICO and LW (LW's frames take
    about as long as one device's, so it runs fewer)."""
    return LabFigure((model,), {n: f"pico-libtorch-1000mhz-{n}" for n in (1, 2, 4, 8)}, {"pico": 8, "lw": 3},
                     {"clock_mhz": 1000})  # fmt: skip


def pico_speedups() -> LabFigure:
    """PICO Fig. 12 at 1 GHz: PICO's period on 1 and 8 Pis for ResNet34 and InceptionV3, whose ratio is
    the figure's throughput speedup (their frames are short, so each point runs more of them)."""
    return LabFigure(("resnet34", "inception_v3"), {n: f"pico-libtorch-1000mhz-{n}" for n in (1, 8)},
                     {"pico": 10}, {"clock_mhz": 1000})  # fmt: skip


def pico_heterogeneous() -> LabFigure:
    """PICO Table I on its heterogeneous cluster (2 x 1.2 GHz, 2 x 800 MHz, 4 x 600 MHz Pi 4B), VGG-16
    and YOLOv2: LW, EFL, OFL and PICO's period, and each device's compute a frame, from which the
    utilisation is measured (`measured_utilisation`). Each of its three device classes is calibrated
    on a device of its own (`calibration_fleet`). LW's and EFL's frames are the slow ones, so they run
    fewer."""
    return LabFigure(("vgg16", "yolov2"), {8: HETERO}, {"lw": 2, "efl": 2, "ofl": 3, "pico": 8}, {})


def edgeld_latency() -> LabFigure:
    """MoDNN (BODP) on EdgeLD's testbed, 1-4 VMs of one 800 MHz core on 100 Mbps tc-shaped links, which
    is what the lab emulates: VGG-16's latency, one frame at a time, against EdgeLD's Table I."""
    return LabFigure(("vgg16",), {n: f"edgeld-vm-{n}" for n in range(1, 5)}, {"modnn": 5},
                     {"fleet": "edgeld-100mbps"}, {"modnn": "modnn"}, single_on_one=True)  # fmt: skip


def deepthings_latency() -> LabFigure:
    """DeepThings' Fig. 13 at its end points, 1 and 6 Pi 3B (the lab time of every count between is
    too long for a shared host): MoDNN and FTP 5x5 without and with data reuse, planned as the figure
    plans them (`deepthings.ftp_options`), one frame at a time (FTP without reuse is the slow one)."""
    grid = (5, 5)
    return LabFigure((deepthings.MODEL,), {n: deepthings.fleet_of(n) for n in (1, 6)},
                     {"modnn": 5, "deepthings": 3, "deepthings-reuse": 5}, {"grid": ""},
                     {s: s for s in ("modnn", *deepthings.FTP)},
                     options={s: deepthings.ftp_options(grid) for s in deepthings.FTP},
                     label_keys={s: {"grid": f"{grid[0]}x{grid[1]}"} for s in deepthings.FTP})  # fmt: skip


def aofl_latency() -> LabFigure:
    """AOFL Fig. 9 at 1 GHz on 1, 2, 4 and 8 Pi 3B+: LW, EFL and OFL's time per image (LW's and EFL's
    frames are the slow ones, so they run fewer)."""
    return LabFigure(("vgg16",), {n: f"aofl-pi3bplus-1000mhz-{n}" for n in (1, 2, 4, 8)},
                     {"lw": 2, "efl": 2, "ofl": 3}, {"clock_mhz": 1000})  # fmt: skip


@dataclass(frozen=True)
class Calibration:
    """One single-device run of a device class against its profile's time for the figure's model."""

    profile: str
    target_s: float  # the profile's predicted frame, real time
    measured_s: float  # the lab's frame, real time
    cores: float  # the device's cgroup quota during the run
    load: float  # this host's 1-minute load average after the run
    host_cores: int

    @property
    def error(self) -> float:
        return self.measured_s / self.target_s - 1

    @property
    def loaded(self) -> bool:
        return self.load > self.host_cores


@dataclass(frozen=True)
class Measured:
    """A figure's measured rows (real time) and the calibration of each device class behind them."""

    rows: pd.DataFrame
    calibrations: Mapping[tuple[str, str], tuple[Calibration, ...]]  # (model, profile) -> every try
    dilation: float
    keys: tuple[str, ...]  # the columns that name a row (`LabFigure.columns`)
    rechecks: Mapping[tuple[str, str], Calibration] = field(default_factory=dict)  # `recheck`'s runs


def available() -> str | None:
    """Why the lab cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "the emulated lab needs root (network namespaces, tc, cgroups, sshd)"
    if not Path("/usr/sbin/sshd").is_file():
        return "the emulated lab needs openssh-server (apt-get install -y openssh-server)"
    return None


# ---- pure decisions --------------------------------------------------------------------------------


def figure_dilation(fleet_ratios: list[dict[str, float]], host_cores: float) -> float:
    """The one dilation of a figure: the largest F at which every one of its fleets fits this host
    (each fleet's devices' speeds relative to this host's thread; see `labplan.auto_dilation`)."""
    from suite.orchestrate.labplan import auto_dilation

    return min(auto_dilation(ratios, host_cores) for ratios in fleet_ratios)


def calibration_step(tries: tuple[Calibration, ...]) -> float | None:
    """The quota for the next single-device run, or None when calibration is done: the last run is
    within `TOLERANCE`, or `CALIBRATION_TRIES` runs were made. An off reading on a loaded host is first
    re-measured at the same quota (the load, not the quota, may be the cause); an off reading repeated,
    or taken on an idle host, scales the quota by measured / target (a frame's time goes as 1 / cores)."""
    last = tries[-1]
    if abs(last.error) <= TOLERANCE or len(tries) >= CALIBRATION_TRIES:
        return None
    repeated = len(tries) > 1 and tries[-2].cores == last.cores
    if last.loaded and not repeated:
        return last.cores
    return min(1.0, max(MIN_CORES, round(last.cores * last.measured_s / last.target_s, 4)))


def one_dilation(rows: pd.DataFrame) -> float:
    """The dilation every measured row shares; a UserError when rows from labs scaled differently meet."""
    found = sorted(set(rows.lab_dilation))
    if len(found) != 1:
        raise UserError(f"measured points from labs at dilations {', '.join(f'{f:g}' for f in found)} cannot "
                        "be compared; measure a figure at one dilation")  # fmt: skip
    return found[0]


def calibration_columns(calibrations: Mapping[tuple[str, str], tuple[Calibration, ...]], model: str,
                        profile: str) -> dict:  # fmt: skip
    """The CSV's record of a device class's calibration on a model: its last try, and how many it took."""
    tries = calibrations[(model, profile)]
    last = tries[-1]
    return {"calibration_profile": profile, "calibration_target_s": round(last.target_s, 4),
            "calibration_measured_s": round(last.measured_s, 4), "calibration_cores": last.cores,
            "calibration_load": last.load, "calibration_host_cores": last.host_cores,
            "calibration_tries": len(tries)}  # fmt: skip


def furthest_class(calibrations: Mapping[tuple[str, str], tuple[Calibration, ...]], model: str,
                   profiles: Sequence[str]) -> str:  # fmt: skip
    """The device class whose calibration a measured row's `calibration_*` columns give: of a fleet's
    `profiles`, the one whose kept run on `model` is furthest from its profile (a heterogeneous fleet's
    point is no nearer its prediction than its worst class; the report gives every class)."""
    return max(profiles, key=lambda p: abs(calibrations[(model, p)][-1].error))


def measured_utilisation(compute_s: Sequence[float], devices: int, period_s: float) -> float:
    """The mean over a fleet's `devices` of the share of the period each one computes: the run's
    compute seconds per frame (`lab_compute_s`, one per device the run had) over the measured period,
    a device the plan leaves idle counting 0 whether or not the run listed it."""
    return sum(compute_s) / devices / period_s


def drift(kept: Calibration, again: Calibration) -> float:
    """How far the host's speed moved between a device class's kept calibration run and the same run at
    the same quota after the figure's points (`recheck`): their frames' ratio, less one."""
    return again.measured_s / kept.measured_s - 1


def recheck_columns(kept: Calibration, again: Calibration) -> dict:
    """The CSV's record of `recheck`: the run after the figure's points, and its drift from the kept one."""
    return {"calibration_recheck_s": round(again.measured_s, 4),
            "calibration_drift": round(drift(kept, again), 4)}  # fmt: skip


def describe_calibration(calibrations: Mapping[tuple[str, str], tuple[Calibration, ...]], dilation: float,
                         rechecks: Mapping[tuple[str, str], Calibration]) -> str:  # fmt: skip
    """The report's sentence on how the lab's devices were calibrated, per model and device class, and
    how far the host's speed moved while the figure's points were measured (`recheck`)."""
    parts = []
    for (model, profile), tries in calibrations.items():
        runs = "; ".join(f"{t.measured_s:.2f} s at {t.cores:.4g} cores (load {t.load:.1f} on {t.host_cores} "
                         f"cores, {t.error:+.0%})" for t in tries)  # fmt: skip
        last = tries[-1]
        verdict = (f"within {TOLERANCE:.0%}" if abs(last.error) <= TOLERANCE else
                   f"still {last.error:+.0%} after {len(tries)} tries, so every measured point of this class "
                   "carries that offset")  # fmt: skip
        again = rechecks.get((model, profile))
        if again is not None:
            moved = drift(last, again)
            verdict += (f"; after the figure's points the same run at the same quota took "
                        f"{again.measured_s:.2f} s (load {again.load:.1f}), {moved:+.0%} from the kept one"
                        + (f", more than the {TOLERANCE:.0%} tolerance: the host's speed moved while "
                           "the points were measured, and they carry it" if abs(moved) > TOLERANCE
                           else ""))  # fmt: skip
        parts.append(f"{profile} on {model}: target {last.target_s:.2f} s a frame (the profile's "
                     f"prediction); measured {runs}; {verdict}")  # fmt: skip
    return (
        f"Lab calibration at dilation x{dilation:g} (single-device runs per device class and model, real "
        f"time): {'. '.join(parts)}."
    )


def calibration_clause(calibrations: Mapping[tuple[str, str], tuple[Calibration, ...]],
                       rechecks: Mapping[tuple[str, str], Calibration]) -> str:  # fmt: skip
    """A measured headline's clause on the calibration: each device class's error against its profile,
    and how far the host moved while the points were measured (`recheck`); each class names its model
    where the figure has several (Table I calibrates three classes on each of two)."""
    several = len({model for model, _ in calibrations}) > 1
    said = ", ".join(f"{tries[-1].profile}{f' on {key[0]}' if several else ''} {tries[-1].error:+.0%}"
                     + (f" (then {drift(tries[-1], rechecks[key]):+.0%} after the points)"
                        if key in rechecks else "")
                     for key, tries in calibrations.items())  # fmt: skip
    return f"devices calibrated to their profile's frame: {said}"


# ---- the lab -------------------------------------------------------------------------------------


def _suite(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True, text=True,
                          timeout=3600)  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"`suite {' '.join(args[:2])}` for the lab failed: {last}")
    return done.stdout


def _set_cores(lab_name: str, profiles: Mapping[str, float]) -> dict[str, float]:
    """Give every device of a lab up the calibrated quota of its profile; returns each device's cores."""
    from suite.orchestrate.lab import load_lab

    lab = load_lab(lab_name)
    devices = {d.name: d.profile.name for d in fleet(lab.fleet).devices}
    cores = {}
    for d in lab.devices:
        cores[d.name] = profiles[devices[d.name]]
        write_cap(CPU_ROOT / d.cgroup, cores[d.name])
    return cores


class _Lab:
    """A lab up (and deployed) for one fleet at the figure's dilation; down on leaving, even on failure."""

    def __init__(self, fleet_name: str, dilation: float, tag: str, progress: Callable[[str], None]):
        self.fleet_name, self.dilation, self.progress = fleet_name, dilation, progress
        self.name = f"rp{tag}{os.getpid() % 10000}"[:12]

    def __enter__(self) -> dict:
        self.progress(f"lab: {self.fleet_name} up at x{self.dilation:g} and deployed ...")
        try:
            up = _suite("lab", "up", "--fleet", self.fleet_name, "--dilate", f"{self.dilation:g}",
                        "--name", self.name, "--deploy", "--json")  # fmt: skip
            return json.loads(up)
        except BaseException:  # a failed or interrupted `lab up` (Ctrl-C) may leave part of a lab behind
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        _suite("lab", "down", "--name", self.name)


def run_plan(model: str, planned, inventory: str, frames: int, folder: Path,
             progress: Callable[[str], None]) -> RunSummary:  # fmt: skip
    """`planned` run on the lab of `inventory` (`suite run --plan`), every frame checked bit for bit.

    A run that fails (a worker that did not join, a stall past the timeout: a shared host's moments,
    which cost a figure every point measured before them) runs once more, its results and logs kept
    beside (`results-failed`, or only the logs, `results.failed-logs`, when it failed before its first
    frame); a second failure ends the figure. A frame that is not bit-exact is a finding, not a
    moment, and ends it at once."""
    folder.mkdir(parents=True)
    save_plan(planned, folder / "plan.json")
    args = ("run", "--inventory", inventory, "--model", model, "--plan", str(folder / "plan.json"),
            "--frames", str(frames), "--warmup", "1", "--no-baseline", "--json",
            "-o", str(folder / "results"))  # fmt: skip
    try:
        out = _suite(*args)
    except UserError as exc:
        kept = "it wrote no results"  # a run that fails before its first frame (a join) writes none
        if (folder / "results").exists():
            (folder / "results").rename(folder / "results-failed")
            kept = f"results and logs in {folder / 'results-failed'}"
        progress(f"lab: {model} {planned.scheme} on {planned.fleet} failed, running it once more "
                 f"({kept}): {exc}")  # fmt: skip
        out = _suite(*args)
    run = RunSummary.from_json(json.loads(out))
    if not run.bit_exact:
        raise UserError(f"lab run of {planned.scheme} on {planned.fleet} was not bit-exact: {run.error}")
    return run


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """The folder of a figure's lab runs: removed once the figure is measured or interrupted, kept when
    a run fails, the error naming it, so the runs' results and workers' logs say why."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    except UserError as exc:
        raise UserError(f"{exc} (the figure's lab runs, results and logs are kept in {folder})") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)


def calibration_fleet(fleets: Mapping[int, str], profile: str) -> str:
    """Where a device class is calibrated: the figure's smallest fleet made only of it (its link and
    device as the figure has them), else one bundled device of that profile (`1xPROFILE`)."""
    own = [name for _, name in sorted(fleets.items())
           if {d.profile.name for d in fleet(name).devices} == {profile}]  # fmt: skip
    return own[0] if own else f"1x{profile}"


def calibrate(model: str, calibration: str, profile: str, dilation: float, scratch: Path,
              progress: Callable[[str], None]) -> tuple[Calibration, ...]:  # fmt: skip
    """Single-device runs of `profile` on a lab of fleet `calibration` at `dilation` until
    `calibration_step` is done."""
    planned = plan(model, "single", calibration)
    tries: tuple[Calibration, ...] = ()
    with _Lab(calibration, dilation, "c", progress) as up:
        cores = up["devices"][0]["cpu_cores"]
        while cores is not None:
            folder = scratch / f"calibrate-{model}-{profile}-{len(tries)}"
            tries += (_single_run(up, model, planned, profile, cores, folder, progress),)
            progress(
                f"lab: calibrating {profile} on {model}: {tries[-1].measured_s:.2f} s against "
                f"{tries[-1].target_s:.2f} s at {cores:.4g} cores (load {tries[-1].load:.1f})"
            )
            cores = calibration_step(tries)
    return tries


def recheck(model: str, calibration: str, kept: Calibration, dilation: float, scratch: Path,
            progress: Callable[[str], None]) -> Calibration:  # fmt: skip
    """The kept calibration run once more, at its quota on a fresh lab, after the figure's points: on a
    shared host a capped device's speed can move by more than the calibration's tolerance within
    minutes, and this says by how much it moved while the points were taken."""
    planned = plan(model, "single", calibration)
    folder = scratch / f"recheck-{model}-{kept.profile}"
    with _Lab(calibration, dilation, "r", progress) as up:
        again = _single_run(up, model, planned, kept.profile, kept.cores, folder, progress)
    progress(f"lab: rechecking {kept.profile} on {model}: {again.measured_s:.2f} s at {kept.cores:.4g} "
             f"cores, {drift(kept, again):+.0%} from the kept {kept.measured_s:.2f} s "
             f"(load {again.load:.1f})")  # fmt: skip
    return again


def _single_run(up: dict, model: str, planned, profile: str, cores: float, folder: Path,
                progress: Callable[[str], None]) -> Calibration:  # fmt: skip
    """One single-device run of `profile` at `cores` on the lab `up`, against the plan's predicted frame."""
    _set_cores(up["lab"], {profile: cores})
    run = run_plan(model, planned, up["inventory"], CALIBRATION_FRAMES, folder, progress)
    return Calibration(profile, planned.predicted.latency_s, run.real_time.latency_s, cores,
                       os.getloadavg()[0], os.cpu_count() or 1)  # fmt: skip


def measure(setup: LabFigure, progress: Callable[[str], None]) -> Measured:
    """Every (scheme, devices) point of `setup` measured in the lab at one dilation, on calibrated devices."""
    from suite.fleet import load_profile
    from suite.orchestrate.labplan import speed_ratios

    reason = available()
    if reason is not None:
        raise UserError(reason)
    host = load_profile("local").macs_per_s
    dilation = figure_dilation([speed_ratios(fleet(f), host) for f in setup.fleets.values()],
                               os.cpu_count() or 1)  # fmt: skip
    profiles = dict.fromkeys(d.profile.name for f in setup.fleets.values() for d in fleet(f).devices)
    made = []  # ((model, profile) of its calibration, row)
    with scratch_folder("suite-reproduce-lab-") as scratch:
        calibrations = {(m, p): calibrate(m, calibration_fleet(setup.fleets, p), p, dilation, scratch,
                                          progress)
                        for m in setup.models for p in profiles}  # fmt: skip
        for n, fleet_name in setup.fleets.items():
            classes = tuple(dict.fromkeys(d.profile.name for d in fleet(fleet_name).devices))
            with _Lab(fleet_name, dilation, str(n), progress) as up:
                for model in setup.models:
                    shown = furthest_class(calibrations, model, classes)
                    # the quota calibrated on this model at this dilation, per profile
                    cores = _set_cores(up["lab"], {p: calibrations[(model, p)][-1].cores for p in profiles})
                    for label, frames in setup.frames.items():
                        folder = scratch / f"{model}-{label}-{n}"
                        options = setup.plan_options(label, n)
                        planned = plan(model, setup.scheme(label, n), fleet_name, **options)
                        run = run_plan(model, planned, up["inventory"], frames, folder, progress)
                        row = point(run, folder / "results" / "devices.csv")
                        load = os.getloadavg()[0]
                        made.append(((model, shown), {
                            "scheme": label, **setup.row_keys(label, model), "devices": n, **row,
                            "lab_cores": max(cores.values()), "measured_host_load": load,
                            **calibration_columns(calibrations, model, shown)}))  # fmt: skip
                        progress(
                            f"lab: {model} {planned.scheme} on {fleet_name}: period "
                            f"{row['measured_period_s']:.2f} s, latency {row['measured_latency_s']:.2f} s "
                            f"real time (x{row['lab_dilation']:g}, load {load:.1f}), bit-exact"
                        )
        rechecks = {(m, p): recheck(m, calibration_fleet(setup.fleets, p), tries[-1], dilation, scratch,
                                    progress)
                    for (m, p), tries in calibrations.items()}  # fmt: skip
    rows = [{**row, **recheck_columns(calibrations[key][-1], rechecks[key])} for key, row in made]
    return Measured(pd.DataFrame(rows), calibrations, dilation, setup.columns, rechecks)


def describe_exchanges(split: Mapping[str, float]) -> str:
    """One device's sending and receiving in a time split's sentence, each with the part of it spent
    waiting for the other end to post (the pipeline waiting, not the link)."""
    return (
        f"sends {split['send']:.2f} s ({split['send_wait']:.2f} s of it waiting for the receiver), "
        f"receives {split['recv']:.2f} s ({split['recv_wait']:.2f} s of it waiting for the sender)"
    )


def point(run: RunSummary, devices_csv: Path) -> dict:
    """A run's measured period, throughput and median latency in real time, the lab's dilation, and
    each device's compute, send (and of that, waiting for the receiver), receive (and of that, waiting
    for the sender) and idle seconds per frame (real time) from its timelines."""
    period = 1 / run.real_time.throughput_fps
    table = pd.read_csv(devices_csv)
    table = table[(table.run == "plan") & (table.device != "coordinator")]
    dilation = run.network.dilation  # the lab's, as the run found it in the inventory
    per_frame = {f"lab_{kind}_s": (table[f"{kind}_s"] * dilation / (run.frames + 1)).round(4).tolist()
                 for kind in TIME_SPLIT}  # fmt: skip
    return {
        "measured_period_s": period,
        "measured_throughput_fpm": 60 / period,
        "measured_latency_s": run.real_time.latency_s,
        "lab_dilation": dilation,
        "lab_devices": table.device.tolist(),
        **per_frame,
    }
