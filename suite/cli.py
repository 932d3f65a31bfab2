"""The `suite` command line. Bad input ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from suite.arguments import MAX_SIMULATED_FRAMES, exit_codes
from suite.arguments import at_least as _at_least
from suite.arguments import finite as _finite
from suite.arguments import port as _port
from suite.arguments import seed as _seed
from suite.arguments import simulated_frames as _simulated_frames
from suite.arguments import timeout as _timeout
from suite.errors import RunFailed, UserError
from suite.orchestrate.cli import add_commands as add_orchestrate_commands

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a reader that went away (141)


class _Parser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line, like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


class _Version(argparse.Action):
    """`--version`: worked out only when asked for (it may run git), then exit as --help does."""

    def __init__(self, option_strings: list[str], dest: str) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="print the version (and the commit, in a git checkout) and exit",
        )

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from suite.package import version

        print(version())
        parser.exit()


def _grid(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise UserError(f"--grid '{text}' is not RxC with positive integers, e.g. 2x2")
    return int(match[1]), int(match[2])


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="vgg16",
        help="zoo name, path/to/model.onnx, or package.module:factory (default: vgg16)",
    )
    p.add_argument(
        "--input-size", metavar="CxHxW", help="input size; zoo models and ONNX files have defaults"
    )
    p.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed for the input and the weights of zoo models and module:factory models (default: 0)",
    )
    p.add_argument(
        "--backend",
        help="onnxruntime (exact), torch (exact by construction) or torch-fast "
        "(oneDNN, not exact); default: the fastest that `suite doctor` finds exact on this host",
    )
    p.add_argument(
        "--threads",
        type=_at_least(1),
        default=None,
        help="compute threads (default: all; `suite run`: per worker, default 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="suite", description="Collaborative CNN inference: partition, run, verify.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    v = sub.add_parser("verify", help="tile a model's spatial layers and compare with the whole "
                       "model, bit for bit",
                       **exit_codes("a tiled output differs from the whole model's"))  # fmt: skip
    _add_model_args(v)
    cut = v.add_mutually_exclusive_group()
    cut.add_argument("--parts", type=_at_least(1), help="row strips (default: 4)")
    cut.add_argument("--grid", help="RxC grid of tiles, e.g. 2x2")
    v.add_argument(
        "--layerwise",
        action="store_true",
        help="cut every layer and gather between layers (MoDNN) instead of fusing",
    )
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(run=cmd_verify)

    p = sub.add_parser(
        "plan", help="plan a scheme for a model on a fleet and predict its speed", **exit_codes()
    )
    _add_model_args(p)
    p.add_argument(
        "--scheme",
        required=True,
        help="single, modnn, modnn-gather, deepthings, deepthings-reuse, efl, halp, pico or ofl",
    )
    _add_fleet_args(p)
    p.add_argument(
        "--search",
        default="dp",
        choices=["dp", "exhaustive"],
        help="pico: the paper's DP (default) or exhaustive search (small instances)",
    )
    p.add_argument("--tasks", type=_at_least(1), default=1, help="halp: tasks per batch (default: 1)")
    _add_grid_rounding(p)
    p.add_argument("--json", action="store_true", help="print the plan JSON")
    p.add_argument("-o", "--output", help="write the plan JSON to this file")
    p.set_defaults(run=cmd_plan)

    s = sub.add_parser(
        "simulate", help="play a stream of frames through a plan (discrete events)", **exit_codes()
    )
    s.add_argument("--plan", required=True, help="plan JSON from `suite plan -o`")
    s.add_argument("--fleet", help="fleet name or YAML (default: the plan's)")
    s.add_argument("--model", help="the plan's model: zoo name, ONNX file or module:factory (default: the "
                   "plan's model, when it is a zoo name)")  # fmt: skip
    s.add_argument(
        "--frames",
        type=_simulated_frames,
        default=50,
        help=f"frames to simulate (default: 50, at most {MAX_SIMULATED_FRAMES})",
    )
    arrivals = s.add_mutually_exclusive_group()
    arrivals.add_argument("--rate", type=_finite(positive=True), help="frames per second at fixed intervals")
    arrivals.add_argument(
        "--poisson", type=_finite(positive=True), help="mean frames per second, Poisson arrivals"
    )
    s.add_argument("--tasks", type=_at_least(1), default=1, help="frames arriving together (default: 1)")
    s.add_argument(
        "--channel",
        default="fixed",
        choices=["fixed", "rayleigh"],
        help="fixed or rayleigh (per-frame fading)",
    )
    s.add_argument("--snr-db", type=_finite(), default=20.0, help="mean SNR for rayleigh (default: 20)")
    s.add_argument(
        "--deadline", type=_finite(positive=True), help="seconds; report the share of frames meeting it"
    )
    s.add_argument("--seed", type=_seed, default=0, help="seed for arrivals and fading (default: 0)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(run=cmd_simulate)

    u = sub.add_parser("run", help="run a scheme's plan on local worker processes, time it and check "
                       "every output bit for bit",
                       **exit_codes("the run failed (a worker, a device, a timeout) or an output differs "
                                    "from the monolithic model's"))  # fmt: skip
    _add_model_args(u)
    u.set_defaults(threads=1)
    u.add_argument(
        "--scheme",
        default="pico",
        help="single, modnn, modnn-gather, deepthings, deepthings-reuse, efl, halp, pico or ofl "
        "(default: pico)",
    )
    _add_fleet_args(u)
    u.add_argument("--inventory", help="run on the devices of this inventory over SSH (`suite deploy` it "
                   "first; `suite lab up` writes one for the emulated lab)")  # fmt: skip
    u.add_argument("--plan", help="run this plan JSON (from `suite plan -o`) instead of planning")
    u.add_argument(
        "--tasks",
        type=_at_least(1),
        default=1,
        help="halp: frames kept in flight together (tasks per batch, default: 1)",
    )
    _add_grid_rounding(u)
    u.add_argument("--frames", type=_at_least(1), default=20, help="frames to time (default: 20)")
    u.add_argument(
        "--warmup", type=_at_least(0), default=2, help="frames run first and not timed (default: 2)"
    )
    u.add_argument("--repeat", type=_at_least(1), default=1,
                   help="runs of the plan, each followed by a single-device run, pooled into percentiles "
                   "and 95%% confidence intervals (default: 1)")  # fmt: skip
    u.add_argument("--images", help="folder of your images (default: the photos bundled in scikit-image)")
    u.add_argument(
        "--timeout",
        type=_timeout,
        default=30.0,
        help="seconds to wait for any worker before the run fails (default: 30)",
    )
    u.add_argument("--host", default="127.0.0.1", help="address the coordinator listens on")
    u.add_argument("--port", type=_port, default=0, help="coordinator port (default: a free one)")
    u.add_argument("--no-emulate", dest="emulate", action="store_false",
                   help="run every worker at full speed (default: cpu quotas slow each worker to its "
                   "device's profile when root)")  # fmt: skip
    u.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the single-device run that the speedup is measured against",
    )
    u.add_argument(
        "--worker-python",
        default=sys.executable,
        help="interpreter that runs the workers (default: this one)",
    )
    u.add_argument("-o", "--output", help="results folder (default: results/<time>-<scheme>-<model>)")
    u.add_argument("--json", action="store_true", help="print one JSON object")
    u.set_defaults(run=cmd_run)

    r = sub.add_parser(
        "report", help="predicted speedups of every scheme over single, per model and fleet", **exit_codes()
    )
    r.add_argument("--models", default="vgg16,resnet34,inception_v3", help="comma-separated zoo names")
    r.add_argument(
        "--fleets",
        default="pico-homo-2,pico-homo-4,pico-homo-8,pico-hetero,halp-gpu,halp-pi",
        help="comma-separated fleet names or YAML paths",
    )
    r.add_argument("-o", "--output", help="also write the tidy table as CSV")
    r.add_argument("--json", action="store_true", help="print the tidy table as JSON records")
    r.set_defaults(run=cmd_report)

    c = sub.add_parser("compare", help="measured runs side by side from their result folders: speedup, "
                       "latency percentiles, bytes and energy per frame, prediction error, Pareto "
                       "front", **exit_codes())  # fmt: skip
    c.add_argument("results", nargs="+", metavar="RESULT", help="result folders (`suite run -o DIR`)")
    c_format = c.add_mutually_exclusive_group()
    c_format.add_argument("--json", action="store_true", help="print the table as JSON records")
    c_format.add_argument("--csv", action="store_true", help="print the table as CSV")
    c.add_argument("-o", "--output", help="also draw the comparison to this PNG file")
    c.set_defaults(run=cmd_compare)

    f = sub.add_parser(
        "profile", help="measure this machine per op kind and write a profile YAML", **exit_codes()
    )
    f.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnxruntime"],
        help="time the ops on this backend (default: torch)",
    )
    f.add_argument("--name", help="profile name (default: local on torch, local-<backend> on another, "
                   "the profile a run on that backend prices this host by)")  # fmt: skip
    f.add_argument("--threads", type=_at_least(1), default=1, help="compute threads (default: 1)")
    f.add_argument("--quick", action="store_true", help="a few small tiles only (seconds)")
    f.add_argument("-o", "--output", help="YAML path (default: suite/data/profiles/NAME.yaml)")
    f.add_argument("--json", action="store_true", help="print the profile as one JSON object")
    f.set_defaults(run=cmd_profile)

    d = sub.add_parser("doctor", help="check which backends compute tiles exactly on this host, and which "
                       "is fastest",
                       **exit_codes("no backend computes tiles exactly on this host"))  # fmt: skip
    d.add_argument(
        "--backend",
        action="append",
        choices=["torch", "torch-fast", "onnxruntime"],
        help="examine this backend (repeat it; default: all three)",
    )
    d.add_argument(
        "--threads",
        type=_at_least(1),
        action="append",
        help="thread counts to check (repeat it; default: 1 and this host's cores)",
    )
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.set_defaults(run=cmd_doctor)

    add_orchestrate_commands(sub)  # deploy, lab
    from suite.reproduce.cli import add_parser as add_reproduce

    add_reproduce(sub)
    from suite.tracking.cli import add_parser as add_nightly

    add_nightly(sub)
    return parser


def _add_fleet_args(p: argparse.ArgumentParser) -> None:
    fleet = p.add_mutually_exclusive_group()
    fleet.add_argument("--fleet", help="bundled fleet name or fleet YAML (default: local)")
    fleet.add_argument("--devices", type=_at_least(1), help="N identical devices with the local profile")
    p.add_argument("--reprofile", action="store_true",
                   help="measure this host's profile again (`local`: measured on the backend the first time "
                        "a prediction needs it, then cached)")  # fmt: skip


def _add_grid_rounding(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid-rounding", choices=["up", "nearest"],
                   help="deepthings, deepthings-reuse, efl: cut the grid as DeepThings' code does, every "
                        "part ceil(length / parts) and the last the rest (up, the default), or to the "
                        "nearest row (nearest)")  # fmt: skip


def _scheme_options(args: argparse.Namespace, **by_scheme: dict) -> dict:
    """The options the command passes the chosen scheme: `by_scheme[scheme]`, and --grid-rounding
    for the DeepThings schemes (refused for the others)."""
    options = dict(by_scheme.get(args.scheme, {}))
    if args.grid_rounding is not None:
        if not args.scheme.startswith("deepthings") and args.scheme != "efl":
            raise UserError(f"--grid-rounding cuts DeepThings' grid; scheme {args.scheme} has none: drop it "
                            "or use --scheme deepthings, deepthings-reuse or efl")  # fmt: skip
        options["grid_rounding"] = args.grid_rounding
    return options


def _output_file(text: str | None) -> Path | None:
    """`-o FILE`, checked before any work: its folder must exist and FILE must not be a folder."""
    if text is None:
        return None
    path = Path(text)
    if not path.parent.is_dir():
        raise UserError(f"-o {text}: folder '{path.parent}' does not exist; create it or write elsewhere")
    if path.is_dir():
        raise UserError(f"-o {text} is a folder; give a file name")
    return path


def _inventory(args: argparse.Namespace):
    """`--inventory`, loaded and checked against `--fleet`/`--devices`, which it replaces."""
    if getattr(args, "inventory", None) is None:
        return None
    from suite.inventory import load_inventory

    inventory = load_inventory(args.inventory)
    if args.devices is not None or (args.fleet is not None and args.fleet != inventory.fleet.name):
        raise UserError(f"--inventory {args.inventory} runs fleet '{inventory.fleet.name}'; drop --fleet and "
                        "--devices (the inventory names its fleet)")  # fmt: skip
    return inventory


def _remote_workers(inventory):
    """What starts the workers on `inventory`'s devices (None: no inventory, local workers)."""
    if inventory is None:
        return None
    from suite.orchestrate.remote import RemoteWorkers  # Fabric, only for fleets

    return RemoteWorkers


def _fleet(args: argparse.Namespace):
    from suite.fleet import load_fleet, uniform_fleet

    if getattr(args, "devices", None) is not None:
        return uniform_fleet(args.devices)
    return load_fleet(args.fleet or "local")


def _backend(args: argparse.Namespace, compute: bool = True) -> str:
    """The backend a command runs: the one asked for, refused when it promises exactness and this host
    cannot keep the promise; by default the fastest exact one here. Both per `suite doctor`, which
    runs once per host and is cached. A command that only prices a backend (`compute` False) takes
    the one asked for, or the default as far as the doctor knows it, and examines nothing."""
    from suite import doctor
    from suite.backends import check_backend

    args.backend_is_default = args.backend is None
    if args.backend is not None:
        check_backend(args.backend)
        if compute:
            doctor.require_exact(args.backend, _say)
        return args.backend
    args.backend = doctor.default_backend(_say, examine=compute)
    return args.backend


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _default_note(args: argparse.Namespace) -> str:
    return ", the fastest exact backend on this host (`suite doctor`)" if args.backend_is_default else ""


def cmd_doctor(args: argparse.Namespace) -> int:
    from suite.doctor import doctor

    backends = list(dict.fromkeys(args.backend or ["onnxruntime", "torch", "torch-fast"]))
    threads = sorted(set(args.threads)) if args.threads else None
    report = doctor(backends, threads, say=_say if sys.stderr.isatty() else lambda _: None)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        host = report.host
        print(f"{host['cpu']} ({host['machine']}, {host['isa']}, {host['blas']}), torch {host['torch']}, "
              f"onnxruntime {host['onnxruntime']}"
              + "".join(f", {k}={v}" for k, v in host["environment"].items()))  # fmt: skip
        for verdict in report.verdicts.values():
            print(verdict.describe())
        default = report.default_backend
        print(f"default backend for verify and run: {default} (the fastest exact one)" if default else
              "no backend is exact on this host: verify and run refuse torch and onnxruntime")  # fmt: skip
    return EXIT_OK if report.default_backend else EXIT_MISMATCH


def cmd_plan(args: argparse.Namespace) -> int:
    from suite.backends import mark_untiled_for
    from suite.graph import from_model
    from suite.models.load import load_model, parse_input_size
    from suite.plan import save_plan
    from suite.profile import priced_here
    from suite.schemes import check_scheme, make_plan

    check_scheme(args.scheme)  # before the model is traced
    _backend(args, compute=False)  # it prices the fleet
    output = _output_file(args.output)
    fleet = priced_here(_fleet(args), args.backend, args.reprofile, _say)
    size = parse_input_size(args.input_size) if args.input_size else None
    graph = mark_untiled_for(from_model(load_model(args.model, size, args.seed, weights=False)), args.backend)
    options = _scheme_options(args, pico={"search": args.search}, halp={"tasks_per_batch": args.tasks})
    plan = make_plan(args.scheme, graph, fleet, **options)
    if output:
        save_plan(plan, output)
    print(plan.to_json() if args.json else _describe_plan(plan, graph, args.backend, fleet))
    return EXIT_OK


def _predicted_energy(predicted, fleet) -> str:
    """`, energy X J/frame` from the devices' published power, where every device of the plan has it."""
    from suite.runtime.energy import predicted_energy, total

    joules = total(predicted_energy(predicted, fleet))
    return "" if joules is None else f", energy {joules:.3g} J/frame (published power figures)"


def _describe_plan(plan, graph, backend: str, fleet) -> str:
    p = plan.predicted
    shape = "x".join(map(str, plan.input_shape))
    lines = [
        f"{plan.scheme} plan for {plan.model} {shape} on {plan.fleet} ({len(plan.devices)} devices, "
        f"priced for {backend}), planned in {plan.planning_time_s:.2f} s, plan {plan.digest}"
    ]
    for stage, cost in zip(plan.stages, p.stages):
        parts = ", ".join(f"{w.device} {r}" for w in stage.work for r in w.outputs.values())
        if stage.continues:
            bands = sum(len(b) for w in stage.work for b in w.reused.values())
            parts += f"; continues stage {stage.index - 1}, reusing {bands} bands it computed"
        if stage.keeps:
            parts += "; strips kept on their devices"
        lines.append(
            f"  stage {stage.index} (pipeline stage {stage.group}): {len(stage.nodes)} nodes "
            f"{stage.nodes[0]}..{stage.nodes[-1]}; {parts}; compute {cost.compute_s:.3g} s, "
            f"comm {cost.comm_s:.3g} s ({cost.bytes / 1e6:.2f} MB)"
        )
    lines.append(f"  predicted: latency {p.latency_s:.3g} s, period {p.period_s:.3g} s, "
                 f"throughput {p.throughput_fps:.3g} fps, redundancy {p.redundancy:.1%}"
                 + _predicted_energy(p, fleet))  # fmt: skip
    lines.append(_describe_plan_coverage(p.tiled_share, graph))
    return "\n".join(lines)


def _describe_plan_coverage(share: float, graph) -> str:
    """One line: the share of the model's MACs the plan tiles, what the model allows, where it stops."""
    from suite.graph.cuts import coverage, spatial_front

    cover = coverage(graph, spatial_front(graph))
    stops = [asdict(stop) for stop in cover.stops]
    return _describe_coverage(share, stops, f" in this plan (the model can be tiled up to "
                                            f"{cover.tiled_share:.1%})")  # fmt: skip


def cmd_simulate(args: argparse.Namespace) -> int:
    from suite.fleet import load_fleet, plan_fleet
    from suite.graph import from_model
    from suite.models import ZOO
    from suite.models.load import load_model
    from suite.plan import load_plan
    from suite.runtime.energy import predicted_energy, total
    from suite.simulate import SimWorkload, simulate

    plan = load_plan(args.plan)
    fleet = load_fleet(args.fleet) if args.fleet else plan_fleet(plan.fleet, args.plan)
    if args.model is None and plan.model not in ZOO:
        raise UserError(f"plan {args.plan} is for model '{plan.model}', which is not in the zoo; pass it "
                        "with --model (path/to/model.onnx or package.module:factory)")  # fmt: skip
    size = tuple(plan.input_shape)
    graph = from_model(load_model(args.model or plan.model, size, weights=False))
    plan = _trusted(plan, graph, fleet, args.plan)
    workload = SimWorkload(frames=args.frames, rate=args.rate, poisson=args.poisson,
                           tasks_per_batch=args.tasks, channel=args.channel, snr_db=args.snr_db,
                           deadline_s=args.deadline, seed=args.seed)  # fmt: skip
    result = simulate(plan, fleet, workload)
    energy = total(predicted_energy(plan.predicted, fleet))
    summary = {"scheme": plan.scheme, "model": plan.model, "fleet": fleet.name, "frames": args.frames,
               **result.summary(), "predicted": {"latency_s": plan.predicted.latency_s,
                                                 "throughput_fps": plan.predicted.throughput_fps,
                                                 "energy_per_frame_j": energy}}  # fmt: skip
    if args.json:
        print(json.dumps(summary))
    else:
        met = "" if result.deadline_met is None else f", deadline met by {result.deadline_met:.1%}"
        print(
            f"{plan.scheme} {plan.model} on {fleet.name}, {args.frames} frames: throughput "
            f"{result.throughput_fps:.3g} fps (predicted {plan.predicted.throughput_fps:.3g}), latency "
            f"median {result.latency_median_s:.3g} s, p95 {result.latency_p95_s:.3g} s "
            f"(predicted {plan.predicted.latency_s:.3g}){met}"
        )
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from suite.report import PAPER_RANGES, predicted_speedups
    from suite.schema import write_atomically

    output = _output_file(args.output)
    table = predicted_speedups(args.models.split(","), args.fleets.split(","))
    if output:
        write_atomically(output, table.to_csv(index=False))
    if args.json:
        print(json.dumps({"predicted": table.to_dict(orient="records"), "papers": PAPER_RANGES}))
        return EXIT_OK
    wide = table.pivot_table(index=["model", "fleet"], columns="scheme", values="throughput_speedup",
                             sort=False)  # fmt: skip
    print("Predicted throughput speedup over single device (cost model):")
    print(wide.round(2).to_string())
    print("\nReported by the papers:")
    for scheme, reported in PAPER_RANGES.items():
        print(f"  {scheme}: {reported}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from suite.compare import compare_table, describe, load_result, records, save_figure

    output = _output_file(args.output)  # checked before any folder is read
    table = compare_table([load_result(path) for path in args.results])
    if output:
        save_figure(table, output)
    if args.json:
        print(json.dumps(records(table)))
    elif args.csv:
        print(table.to_csv(index=False), end="")
    else:
        print(describe(table))
        if output:
            print(f"figure: {output}")
    return EXIT_OK


def cmd_profile(args: argparse.Namespace) -> int:
    from suite.fleet import PROFILES_DIR, local_profile_name
    from suite.profile import measure_profile, write_profile

    name = args.name or local_profile_name(args.backend)
    path = _output_file(args.output) or PROFILES_DIR / f"{name}.yaml"  # checked before measuring
    if not os.access(path.parent, os.W_OK):  # the bundled profiles of a wheel installed as root
        raise UserError(f"cannot write to {path.parent}; give -o FILE (a fleet YAML can name it by path)")
    profile = measure_profile(name, threads=args.threads, quick=args.quick, backend=args.backend)
    write_profile(profile, path)
    if args.json:
        ops = {op: {"alpha": c.alpha, "overhead_s": c.overhead_s} for op, c in profile.ops.items()}
        print(json.dumps({"path": str(path), "name": profile.name, "source": profile.source,
                          "macs_per_s": profile.macs_per_s, "ops": ops}))  # fmt: skip
        return EXIT_OK
    print(f"wrote {path}: {profile.macs_per_s / 1e9:.3g} GMAC/s for conv, {len(profile.ops)} op kinds")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from suite.backends import check_backend
    from suite.models.load import load_model, parse_input_size
    from suite.runtime.coordinator import INTERRUPTED
    from suite.runtime.emulate import sweep_stale
    from suite.runtime.energy import RaplSampler
    from suite.runtime.engine import parties
    from suite.runtime.measurement import RunOptions
    from suite.runtime.metrics import (
        host_state,
        keep_failed_logs,
        logs_folder,
        release_results,
        reserve_results,
    )
    from suite.runtime.outcome import summarize, summary_json
    from suite.runtime.results import save
    from suite.runtime.setup import set_up_run
    from suite.schemes import check_scheme

    if args.plan is None:
        check_scheme(args.scheme)
    if args.backend is not None:
        check_backend(args.backend)  # an unknown name before the model loads
    sweep_stale()  # cpu limits left by runs that were killed
    inventory = _inventory(args)
    size = parse_input_size(args.input_size) if args.input_size else None
    loaded = load_model(args.model, size, args.seed)
    setup = set_up_run(loaded, _backend(args), args.threads, args.images)
    graph = setup.prepared.graph
    plan, fleet = _run_plan(args, setup.model, graph, None if inventory is None else inventory.fleet)
    output = Path(args.output or f"results/{time.strftime('%Y%m%d-%H%M%S')}-{plan.scheme}-{plan.model}")
    reserve_results(output)  # a taken or non-empty folder is refused now, not after every frame
    logs = logs_folder(output)  # moved into the results when they are saved
    try:
        host_before = host_state()
        if inventory is None:
            workers = len(parties(plan)) - 1
            _warn_oversubscribed(workers, args.threads)
            _warn_busy(host_before, workers * args.threads)
            _warn_wildcard(args.host)
        options = RunOptions(model=args.model, input_size=loaded.input_shape, seed=args.seed,
                             backend=args.backend, frames=args.frames, warmup=args.warmup,
                             timeout_s=args.timeout, threads=args.threads, emulate=args.emulate,
                             host=args.host, port=args.port, python=args.worker_python,
                             inventory=inventory, remote_workers=_remote_workers(inventory), log_dir=logs,
                             repeats=args.repeat)  # fmt: skip
        coordinator = setup.coordinator(fleet, options)
        local = inventory is None  # RAPL measures this host: its workers' run, not a fleet's
        with _progress(options.warmup + options.frames) as progress, RaplSampler(enabled=local) as energy:
            runs = coordinator.run_repeats(plan, args.baseline, progress)
        outcome = summarize(runs, fleet, options, energy.trace)
        if inventory is None:
            _warn_above_cap(outcome.speedup_vs_single, workers * args.threads)
        folder = save(output, runs, outcome, fleet, options, host_before)
    except (UserError, RunFailed) as exc:
        kept = keep_failed_logs(output)
        if kept is None:
            raise
        raise type(exc)(f"{exc}; the workers' logs are kept in {kept}") from None
    finally:
        release_results(output)  # the claim, if nothing was saved (a saved folder stays)
        shutil.rmtree(logs, ignore_errors=True)
    if args.json:
        print(
            json.dumps(
                summary_json(outcome)
                | {"results": str(folder), "backend_is_default": args.backend_is_default}
            )
        )
    else:
        print(_describe_run(outcome, folder, graph, _default_note(args)))
    if not outcome.complete:
        print(f"error: {outcome.error}", file=sys.stderr)
        return EXIT_INTERRUPTED if outcome.error and INTERRUPTED in outcome.error else EXIT_MISMATCH
    return EXIT_OK


def _warn_wildcard(host: str) -> None:
    """A rendezvous on every interface is open to every network this host is on (it still refuses
    peers without the run's secret): say so, since local workers never need it."""
    if host in ("0.0.0.0", "::", ""):
        print(f"warning: --host '{host}' listens on every interface of this host; local workers need only "
              "127.0.0.1 (the default)", file=sys.stderr)  # fmt: skip


def _warn_busy(host: dict, needed: int) -> None:
    """Other processes busy on this host take cores the run's workers need (`needed`): say so, and
    which."""
    others = sum(p["cpu"] for p in host["busy"])
    if others >= 0.5 and others + needed > host["cores"]:
        named = ", ".join(f"{p['name']} ({p['pid']}) {p['cpu']:.0%}" for p in host["busy"][:3])
        print(
            f"warning: other processes use {others:.1f} of this host's {host['cores']} cores ({named}; "
            f"load {host['load_avg'][0]:g}): the run's times include waiting for them",
            file=sys.stderr,
        )


def _warn_oversubscribed(workers: int, threads: int) -> None:
    cores = os.cpu_count() or 1
    if workers * threads > cores:
        print(f"warning: {workers} workers x {threads} thread(s) on {cores} cores: the workers share CPUs, "
              f"so the measured speedup is capped near {cores}x", file=sys.stderr)  # fmt: skip


def _warn_above_cap(speedup: float | None, threads: int) -> None:
    """Local workers cannot beat one device by more than the cores they share: a speedup above that
    says the single-device run was slowed (by other jobs on the host), not that the plan is faster."""
    cap = min(os.cpu_count() or 1, threads)
    if speedup is not None and speedup > cap * 1.25:  # caches can make a split a little superlinear
        print(f"warning: the measured speedup {speedup:.2f}x is above the {cap}x that {cap} core(s) allow: "
              "the single-device run was slowed (other processes on this host?); measure again with "
              "--repeat", file=sys.stderr)  # fmt: skip


def _run_plan(args: argparse.Namespace, model, executed, fleet=None):
    """The plan to run and its fleet (`fleet`, else the command's, priced for the backend): planned
    now on the model graph, or read from --plan and checked against the command and the graph it
    names (the model graph, or the backend's own)."""
    from suite.fleet import plan_fleet
    from suite.plan import load_plan
    from suite.profile import priced_here
    from suite.schemes import make_plan

    if args.plan is None:
        fleet = priced_here(fleet or _fleet(args), args.backend, args.reprofile, _say)
        options = _scheme_options(args, halp={"tasks_per_batch": args.tasks})
        return make_plan(args.scheme, model, fleet, **options), fleet
    if args.grid_rounding is not None:
        raise UserError(f"--grid-rounding cuts a grid while planning; plan {args.plan} is cut already: drop "
                        "it, or re-plan with `suite plan --grid-rounding`")  # fmt: skip
    plan = load_plan(args.plan)
    if plan.graph not in (model.source, executed.source):
        raise UserError(f"plan {args.plan} names the nodes of the {plan.graph} graph, but the command's "
                        f"model is the {model.source} graph; re-plan it with `suite plan`")  # fmt: skip
    graph = executed if plan.graph == executed.source else model
    shape = list(graph.input_shape[1:])
    if plan.model != graph.name or plan.input_shape != shape:
        raise UserError(f"plan {args.plan} is for {plan.model} {'x'.join(map(str, plan.input_shape))}, "
                        f"but the command runs {graph.name} {'x'.join(map(str, shape))}; pass the plan's "
                        "--model and --input-size or re-plan")  # fmt: skip
    explicit = args.fleet is not None or args.devices is not None
    if fleet is None:
        fleet = _fleet(args) if explicit else plan_fleet(plan.fleet, args.plan)
    fleet = priced_here(fleet, args.backend, args.reprofile, _say)
    if fleet.name != plan.fleet:
        raise UserError(f"plan {args.plan} was made for fleet '{plan.fleet}', but the command names fleet "
                        f"'{fleet.name}'; drop --fleet/--devices to use the plan's")  # fmt: skip
    return _trusted(plan, graph, fleet, args.plan), fleet


def _trusted(plan, graph, fleet, path: str):
    """A plan from a file, checked through and through, with its prediction recomputed (the file's
    own numbers are not trusted)."""
    from suite.cost import predict
    from suite.plan import PlanError, check_plan

    try:
        check_plan(plan, graph, fleet)
    except PlanError as exc:
        raise PlanError(f"plan {path}: {exc}") from None
    plan.predicted = predict(plan, graph, fleet)
    return plan


@contextlib.contextmanager
def _progress(total: int):
    """Yields `progress(label)`, which gives a run's progress callback: a bar on stderr (frames done,
    of warm-up + timed), or without a terminal a line when the workers are up and at every quarter."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:

        def lines(label: str):
            def tick(done: int, total: int) -> None:
                if done == 0 or done * 4 // total != (done - 1) * 4 // total:
                    print(f"{label}: {done}/{total} frames", file=sys.stderr, flush=True)

            return tick

        yield lines
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:

        def bars(label: str):
            task = bar.add_task(label, total=total)
            return lambda done, total: bar.update(task, completed=done)

        yield bars


def _describe_run(r, results: Path, graph, default_note: str = "") -> str:
    """`suite run`'s text: a `RunSummary` (`suite.runtime.outcome`) and where its results are."""
    shape = "x".join(map(str, r.input_shape))
    verdict = "all BIT-EXACT" if r.bit_exact else "NOT bit-exact"
    repeats = f" x {len(r.repeats)} repeats" if len(r.repeats) > 1 else ""
    lines = [
        f"{r.scheme} on {r.model} {shape}, fleet {r.fleet} ({r.devices} workers, "
        f"{r.backend}{default_note}): {r.frames} frames (+{r.warmup} warm-up){repeats}, {verdict}"
    ]
    figures, p = r.statistics, r.predicted
    if r.latency_s is not None:
        latency = figures.latency_s
        lines.append(f"  latency    {r.latency_s:.3f} s median, p90 {latency.p90:.3f}, p99 "
                     f"{latency.p99:.3f}, mean {latency.mean:.3f}"
                     + _vs(p and p.latency_s, p and p.latency_error))  # fmt: skip
        lines.append(f"  throughput {r.throughput_fps:.2f} fps{_ci(figures.throughput_fps)}, "
                     f"{r.in_flight} frame(s) in flight"
                     + _vs(p and p.throughput_fps, p and p.throughput_error))  # fmt: skip
        if r.simulated is not None and r.simulated.throughput_error is not None:
            sim = r.simulated
            lines.append(f"             simulated {sim.throughput_fps:.3g} fps (stages contending for the "
                         f"medium), measured {sim.throughput_error:+.0%}")  # fmt: skip
    if r.single is not None:
        s = r.single
        lines.append(f"  single device ({s.device}): latency {s.latency_s:.3f} s, {s.throughput_fps:.2f} fps"
                     f"{_ci(figures.single_throughput_fps)} -> speedup {r.speedup_vs_single:.2f}x"
                     f"{_ci(figures.speedup_vs_single)} throughput, {r.latency_speedup_vs_single:.2f}x"
                     f"{_ci(figures.latency_speedup_vs_single)} latency")  # fmt: skip
        lines += [f"  inconclusive: {why}" for why in figures.inconclusive.values()]
    if r.network.dilation != 1.0:
        real, dilation = r.real_time, r.network.dilation
        lines.append(
            f"  real time (x{dilation:g}): latency {real.latency_s:.3f} s, "
            f"throughput {real.throughput_fps:.3g} fps"
        )
    lines += _describe_energy(r.energy)
    if r.tiled_share is not None:
        lines.append(_describe_plan_coverage(r.tiled_share, graph))
    lines.append(f"  network: {r.network.description}")
    if r.refused_count:
        lines.append(
            f"  warning: refused {r.refused_count} connection(s) without the run's secret "
            f"from {', '.join(sorted(set(r.refused_peers)))}"
        )
    lines.append(f"  results: {results}")
    return "\n".join(lines)


def _ci(estimate) -> str:
    """` [95% CI low-high]`: an estimate's bootstrap interval, where it has one."""
    return "" if estimate is None else f" [{estimate.level:.0%} CI {estimate.low:.2f}-{estimate.high:.2f}]"


def _describe_energy(e: dict | None) -> list[str]:
    """The energy lines of a run's description: per frame from the profiles' power figures, and
    this host's RAPL measurement where there is one."""
    lines = []
    if e is None:  # a summary from before energy was reported
        return lines
    if e["per_frame_j"] is not None:
        single = (
            ""
            if e["single_per_frame_j"] is None
            else f"; single device {e['single_per_frame_j']:.3g} J/frame, ratio {e['ratio_vs_single']:.2f}"
        )
        vs = _vs(e["predicted_per_frame_j"], e["error"])
        lines.append(f"  energy     {e['per_frame_j']:.3g} J/frame over {len(e['devices'])} devices from "
                     f"their published power{vs}{single}")  # fmt: skip
    elif e["no_power"]:
        lines.append(
            f"  energy     not estimated: profile(s) {', '.join(e['no_power'])} give no power figures"
        )
    rapl = e["rapl"]
    if rapl is not None and rapl["per_frame_j"] is not None:
        alone = rapl["single_per_frame_j"]
        single = "" if alone is None else f", single device {alone:.3g} J"
        lines.append(f"  measured   {rapl['per_frame_j']:.3g} J/frame by this host's RAPL "
                     f"({', '.join(rapl['domains'])}, every process on it){single}")  # fmt: skip
    return lines


def _vs(predicted: float | None, error: float | None) -> str:
    if predicted is None or error is None:
        return ""
    return f" (predicted {predicted:.3g}, measured {error:+.0%})"


def cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from suite.backends import check_backend, make_backend
    from suite.models.load import load_model, parse_input_size
    from suite.verify import verify

    if args.parts is not None and args.parts < 1:
        raise UserError(f"--parts {args.parts} must be at least 1")
    rows, cols = _grid(args.grid) if args.grid else (args.parts or 4, 1)
    if args.backend is not None:
        check_backend(args.backend)  # an unknown name before the model loads
    size = parse_input_size(args.input_size) if args.input_size else None
    loaded = load_model(args.model, size, args.seed)
    backend = make_backend(_backend(args), args.threads)
    prepared = backend.prepare(loaded)
    x = torch.randn(1, *loaded.input_shape, generator=torch.Generator().manual_seed(args.seed))
    report = verify(prepared, backend, x, rows, cols, args.layerwise)
    if args.json:
        print(json.dumps(report.to_dict() | {"backend_is_default": args.backend_is_default}))
    else:
        print(_describe(report, _default_note(args)))
    return EXIT_OK if report.bit_exact and report.reference_is_model else EXIT_MISMATCH


def _describe(r, default_note: str = "") -> str:
    from suite.verify import NATIVE_TOLERANCE

    cut = f"{r.parts} strips" if r.parts else f"a {r.grid} grid"
    shape = "x".join(map(str, r.input_shape))
    verdict = ("BIT-EXACT" if r.bit_exact else
               f"DIFFERS: max |diff| {r.max_abs_diff:.3g}, max {r.max_ulp} ULP, "
               f"first at node {r.first_mismatch}")  # fmt: skip
    lines = [
        f"{r.model} {shape} on {r.backend}{default_note}, {r.mode} into {cut}: {verdict}",
        f"  {r.tiled_nodes} spatial nodes tiled, redundant compute {r.redundancy:.1%}, {r.seconds:.1f} s",
        f"  compared with {r.reference}"
        + (
            ""
            if r.native_rel_diff is None
            else f", which is {r.native_rel_diff:.1e} (relative) from the "
            "module's forward on PyTorch's kernels"
        ),
    ]
    if not r.reference_is_model:
        lines.append(f"  error: that is more than rounding ({NATIVE_TOLERANCE:g}): this backend computes "
                     "another function than the module")  # fmt: skip
    lines.append(_describe_coverage(r.tiled_share, r.tiling_stops))
    if r.unpartitioned_from:
        lines.append(f"  runs unpartitioned from node {r.unpartitioned_from}")
    if not r.ir_matches_monolithic:
        lines.append("  note: the node-by-node whole run already differs from the monolithic model")
    return "\n".join(lines)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a command as Ctrl-C does: workers stopped, results kept


def _describe_coverage(share: float, stops: list[dict], scope: str = "") -> str:
    """One line: the share of the model's MACs computed in tiles (`scope`: in what), and where (and
    why) tiling stops."""
    where = "; ".join(f"{s['node']} ({s['reason']})" for s in stops[:2])
    more = f" and {len(stops) - 2} more" if len(stops) > 2 else ""
    line = f"  tiled {share:.1%} of the model's MACs{scope}"
    if stops:
        line += f"; tiling stops at {where}{more}"
    if share < 0.5:
        line += ": LESS THAN HALF of the model is computed in tiles"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args = parser.parse_args(argv)
        code = args.run(args)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
        return code
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISMATCH
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _reader_gone():  # a worker's or a device's connection: not ours to hide
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush goes nowhere
        return EXIT_BROKEN_PIPE


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (`suite plan --json | head -1`): then the
    command stops quietly, as Python's docs advise ("Note on SIGPIPE"), instead of a traceback."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


if __name__ == "__main__":
    sys.exit(main())
