"""The `suite` command line. Bad input ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import re
import sys

from suite.errors import UserError

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line, like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def _grid(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise UserError(f"--grid '{text}' is not RxC with positive integers, e.g. 2x2")
    return int(match[1]), int(match[2])


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vgg16",
                   help="zoo name, path/to/model.onnx, or package.module:factory (default: vgg16)")
    p.add_argument("--input-size", metavar="CxHxW",
                   help="input size; zoo models and ONNX files have defaults")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and input (default: 0)")
    p.add_argument("--backend", default="torch",
                   help="torch (exact), torch-fast (oneDNN) or onnxruntime (default: torch)")
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: all)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="suite", description="Collaborative CNN inference: partition, run, verify.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    v = sub.add_parser("verify", help="tile a model's spatial layers and compare with the whole "
                       "model, bit for bit")  # fmt: skip
    _add_model_args(v)
    cut = v.add_mutually_exclusive_group()
    cut.add_argument("--parts", type=int, help="row strips (default: 4)")
    cut.add_argument("--grid", help="RxC grid of tiles, e.g. 2x2")
    v.add_argument("--layerwise", action="store_true",
                   help="cut every layer and gather between layers (MoDNN) instead of fusing")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(run=cmd_verify)

    p = sub.add_parser("plan", help="plan a scheme for a model on a fleet and predict its speed")
    _add_model_args(p)
    p.add_argument("--scheme", required=True, help="single, modnn, deepthings, halp or pico")
    _add_fleet_args(p)
    p.add_argument("--search", default="dp", choices=["dp", "exhaustive"],
                   help="pico: the paper's DP (default) or exhaustive search (small instances)")
    p.add_argument("--tasks", type=int, default=1, help="halp: tasks per batch (default: 1)")
    p.add_argument("--json", action="store_true", help="print the plan JSON")
    p.add_argument("-o", "--output", help="write the plan JSON to this file")
    p.set_defaults(run=cmd_plan)

    s = sub.add_parser("simulate", help="play a stream of frames through a plan (discrete events)")
    s.add_argument("--plan", required=True, help="plan JSON from `suite plan -o`")
    s.add_argument("--fleet", help="fleet name or YAML (default: the plan's)")
    s.add_argument("--frames", type=int, default=50, help="frames to simulate (default: 50)")
    arrivals = s.add_mutually_exclusive_group()
    arrivals.add_argument("--rate", type=float, help="frames per second at fixed intervals")
    arrivals.add_argument("--poisson", type=float, help="mean frames per second, Poisson arrivals")
    s.add_argument("--tasks", type=int, default=1, help="frames arriving together (default: 1)")
    s.add_argument("--channel", default="fixed", help="fixed or rayleigh (per-frame fading)")
    s.add_argument("--snr-db", type=float, default=20.0, help="mean SNR for rayleigh (default: 20)")
    s.add_argument("--deadline", type=float, help="seconds; report the share of frames meeting it")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(run=cmd_simulate)

    r = sub.add_parser("report", help="predicted speedups of every scheme over single, per model and fleet")
    r.add_argument("--models", default="vgg16,resnet34,inception_v3", help="comma-separated zoo names")
    r.add_argument("--fleets", default="pico-homo-2,pico-homo-4,pico-homo-8,pico-hetero,halp-gpu,halp-pi",
                   help="comma-separated fleet names or YAML paths")
    r.add_argument("-o", "--output", help="also write the tidy table as CSV")
    r.set_defaults(run=cmd_report)

    f = sub.add_parser("profile", help="measure this machine per op kind and write a profile YAML")
    f.add_argument("--name", default="local", help="profile name (default: local)")
    f.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    f.add_argument("--quick", action="store_true", help="a few small tiles only (seconds)")
    f.add_argument("-o", "--output", help="YAML path (default: hardware/profiles/NAME.yaml)")
    f.set_defaults(run=cmd_profile)
    return parser


def _add_fleet_args(p: argparse.ArgumentParser) -> None:
    fleet = p.add_mutually_exclusive_group()
    fleet.add_argument("--fleet", help="bundled fleet name or fleet YAML (default: local)")
    fleet.add_argument("--devices", type=int, help="N identical devices with the local profile")


def _fleet(args: argparse.Namespace):
    from suite.fleet import load_fleet, uniform_fleet

    if getattr(args, "devices", None) is not None:
        return uniform_fleet(args.devices)
    return load_fleet(args.fleet or "local")


def cmd_plan(args: argparse.Namespace) -> int:
    from suite.execute import make_backend, prepare
    from suite.models.load import load_model, parse_input_size
    from suite.plan import save_plan
    from suite.schemes import check_scheme, make_plan

    check_scheme(args.scheme)  # before the model is traced
    fleet = _fleet(args)
    size = parse_input_size(args.input_size) if args.input_size else None
    graph = prepare(load_model(args.model, size, args.seed), make_backend("torch")).graph
    options = {"pico": {"search": args.search}, "halp": {"tasks_per_batch": args.tasks}}
    plan = make_plan(args.scheme, graph, fleet, **options.get(args.scheme, {}))
    if args.output:
        save_plan(plan, args.output)
    print(plan.to_json() if args.json else _describe_plan(plan))
    return EXIT_OK


def _describe_plan(plan) -> str:
    p = plan.predicted
    shape = "x".join(map(str, plan.input_shape))
    lines = [f"{plan.scheme} plan for {plan.model} {shape} on {plan.fleet} ({len(plan.devices)} devices), "
             f"planned in {plan.planning_time_s:.2f} s, plan {plan.digest}"]
    for stage, cost in zip(plan.stages, p.stages):
        parts = ", ".join(f"{w.device} {_region(r)}" for w in stage.work for r in w.outputs.values())
        lines.append(f"  stage {stage.index} (pipeline stage {stage.group}): {len(stage.nodes)} nodes "
                     f"{stage.nodes[0]}..{stage.nodes[-1]}; {parts}; compute {cost.compute_s:.3g} s, "
                     f"comm {cost.comm_s:.3g} s ({cost.bytes / 1e6:.2f} MB)")
    lines.append(f"  predicted: latency {p.latency_s:.3g} s, period {p.period_s:.3g} s, "
                 f"throughput {p.throughput_fps:.3g} fps, redundancy {p.redundancy:.1%}")
    return "\n".join(lines)


def _region(region) -> str:
    if region is None:
        return "whole"
    if len(region) == 2:
        return f"features {region[0]}-{region[1]}"
    return f"rows {region[0]}-{region[1]} cols {region[2]}-{region[3]}"


def cmd_simulate(args: argparse.Namespace) -> int:
    from suite.fleet import load_fleet
    from suite.plan import load_plan
    from suite.simulate import Workload, simulate

    plan = load_plan(args.plan)
    fleet = load_fleet(args.fleet or plan.fleet)
    missing = [d for d in plan.devices if d not in {x.name for x in fleet.devices}]
    if missing:
        raise UserError(f"plan {args.plan} uses device '{missing[0]}', which fleet '{fleet.name}' "
                        "does not have; pass the plan's fleet with --fleet")  # fmt: skip
    workload = Workload(frames=args.frames, rate=args.rate, poisson=args.poisson,
                        tasks_per_batch=args.tasks, channel=args.channel, snr_db=args.snr_db,
                        deadline_s=args.deadline, seed=args.seed)  # fmt: skip
    result = simulate(plan, fleet, workload)
    summary = {"scheme": plan.scheme, "model": plan.model, "fleet": fleet.name, "frames": args.frames,
               **result.summary(), "predicted": {"latency_s": plan.predicted.latency_s,
                                                 "throughput_fps": plan.predicted.throughput_fps}}
    if args.json:
        print(json.dumps(summary))
    else:
        met = "" if result.deadline_met is None else f", deadline met by {result.deadline_met:.1%}"
        print(f"{plan.scheme} {plan.model} on {fleet.name}, {args.frames} frames: throughput "
              f"{result.throughput_fps:.3g} fps (predicted {plan.predicted.throughput_fps:.3g}), latency "
              f"median {result.latency_median_s:.3g} s, p95 {result.latency_p95_s:.3g} s "
              f"(predicted {plan.predicted.latency_s:.3g}){met}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from suite.report import PAPER_RANGES, predicted_speedups

    table = predicted_speedups(args.models.split(","), args.fleets.split(","))
    if args.output:
        table.to_csv(args.output, index=False)
    wide = table.pivot_table(index=["model", "fleet"], columns="scheme", values="throughput_speedup",
                             sort=False)  # fmt: skip
    print("Predicted throughput speedup over single device (cost model):")
    print(wide.round(2).to_string())
    print("\nReported by the papers:")
    for scheme, reported in PAPER_RANGES.items():
        print(f"  {scheme}: {reported}")
    return EXIT_OK


def cmd_profile(args: argparse.Namespace) -> int:
    from suite.fleet import PROFILES_DIR
    from suite.profile import measure_profile, write_profile

    if args.threads < 1:
        raise UserError(f"--threads {args.threads} must be at least 1")
    profile = measure_profile(args.name, threads=args.threads, quick=args.quick)
    path = args.output or PROFILES_DIR / f"{args.name}.yaml"
    write_profile(profile, path)
    print(f"wrote {path}: {profile.macs_per_s / 1e9:.3g} GMAC/s for conv, {len(profile.ops)} op kinds")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from suite.execute import make_backend, prepare
    from suite.models.load import load_model, parse_input_size
    from suite.verify import verify

    if args.parts is not None and args.parts < 1:
        raise UserError(f"--parts {args.parts} must be at least 1")
    rows, cols = _grid(args.grid) if args.grid else (args.parts or 4, 1)
    backend = make_backend(args.backend, args.threads)
    size = parse_input_size(args.input_size) if args.input_size else None
    loaded = load_model(args.model, size, args.seed)
    prepared = prepare(loaded, backend)
    x = torch.randn(1, *loaded.input_shape, generator=torch.Generator().manual_seed(args.seed))
    report = verify(prepared, backend, x, rows, cols, args.layerwise)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(_describe(report))
    return EXIT_OK if report.bit_exact else EXIT_MISMATCH


def _describe(r) -> str:
    cut = f"{r.parts} strips" if r.parts else f"a {r.grid} grid"
    shape = "x".join(map(str, r.input_shape))
    verdict = ("BIT-EXACT" if r.bit_exact else
               f"DIFFERS: max |diff| {r.max_abs_diff:.3g}, max {r.max_ulp} ULP, "
               f"first at node {r.first_mismatch}")  # fmt: skip
    lines = [
        f"{r.model} {shape} on {r.backend}, {r.mode} into {cut}: {verdict}",
        f"  {r.tiled_nodes} spatial nodes tiled, redundant compute {r.redundancy:.1%}, "
        f"{r.seconds:.1f} s",
    ]
    if r.unpartitioned_from:
        lines.append(f"  runs unpartitioned from node {r.unpartitioned_from}")
    if not r.ir_matches_monolithic:
        lines.append("  note: the node-by-node whole run already differs from the monolithic model")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
