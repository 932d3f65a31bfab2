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
    return parser


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
