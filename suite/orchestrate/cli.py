"""`suite deploy` and `suite lab up|status|check|down`: parsers and commands (registered by suite/cli.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from suite.arguments import at_least, exit_codes, finite
from suite.errors import UserError

EXIT_OK, EXIT_USAGE = 0, 2


def add_commands(sub) -> None:
    """Add `deploy` and `lab` to the `suite` command's subparsers."""
    d = sub.add_parser(
        "deploy",
        help="install this checkout of the suite on every device of an inventory and check each device",
        **exit_codes(usage="bad input, or a device failed to deploy (its line names it and why)"),
    )
    d.add_argument("--inventory", required=True, help="inventory name (suite/data/inventories) or YAML path")
    d.add_argument("--force", action="store_true", help="reinstall devices that are up to date")
    d.add_argument("--jobs", type=at_least(1, 64), default=8, help="devices deployed at once (default: 8)")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.set_defaults(run=cmd_deploy)

    lab = sub.add_parser(
        "lab",
        help="an emulated fleet on this host: a network namespace, sshd and CPU cap "
        "per device, links shaped with tc (root)",
    )
    labs = lab.add_subparsers(dest="lab_command", required=True, parser_class=type(lab))
    u = labs.add_parser(
        "up",
        help="make the lab and write its inventory",
        **exit_codes(usage="bad input, or the lab could not be made (the line says why)"),
    )
    u.add_argument("--fleet", required=True, help="bundled fleet name or fleet YAML")
    u.add_argument(
        "--dilate",
        default="1",
        metavar="F|auto",
        help="run F times faster than the real fleet: CPU caps and link rates x F; auto: the largest "
        "F this host's cores allow (default: 1)",
    )
    u.add_argument(
        "--deploy",
        action="store_true",
        help="then deploy this checkout to every device (`suite deploy` on the lab's inventory)",
    )
    u.add_argument("--json", action="store_true", help="print one JSON object")
    s = labs.add_parser(
        "status",
        help="devices, addresses, shaping, CPU caps and sshd health",
        **exit_codes(usage="bad input, no such lab, or the lab is not healthy"),
    )
    s.add_argument("--json", action="store_true", help="print one JSON object")
    c = labs.add_parser(
        "check",
        help="measure each link (alone and all at once) and each device's compute against the fleet spec",
        **exit_codes(usage="bad input, or no such lab"),
    )
    c.add_argument(
        "--seconds",
        type=finite(positive=True, high=600),
        default=1.5,
        help="each transfer's duration (default: 1.5)",
    )
    c.add_argument("--json", action="store_true", help="print one JSON object")
    w = labs.add_parser(
        "down", help="remove everything the lab made (also what a killed `lab up` left)", **exit_codes()
    )
    w.add_argument("--json", action="store_true", help="print one JSON object")
    for p, command in ((u, cmd_lab_up), (s, cmd_lab_status), (c, cmd_lab_check), (w, cmd_lab_down)):
        p.add_argument("--name", default="lab", help="the lab's name (default: lab)")
        p.set_defaults(run=command)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_deploy(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs} must be at least 1")
    return _deploy(args.inventory, args.force, args.jobs, args.json)


def _deploy(path: str, force: bool, jobs: int, as_json: bool) -> int:
    """`suite deploy`: every device of the inventory made ready, a progress line each, then a table
    (or one JSON object)."""
    from suite.inventory import load_inventory
    from suite.orchestrate.deploy import DeviceReport, deploy, describe
    from suite.package import require_checkout

    require_checkout("suite deploy")  # before anything is checked or connected
    inventory = load_inventory(path)
    _say(
        f"deploying to {len(inventory.hosts)} devices of inventory '{inventory.name}' "
        f"(fleet {inventory.fleet.name})"
    )

    def progress(r: DeviceReport) -> None:
        if r.error is not None:
            _say(f"error: {r.error}")
        elif r.status == "up to date":
            _say(f"{r.device} ({r.address}): up to date, skipped")
        else:
            _say(f"{r.device} ({r.address}): installed and checked in {r.seconds:.1f} s ({r.environment})")

    start = time.monotonic()
    reports = deploy(inventory, force=force, jobs=jobs, progress=progress)
    failed = [r for r in reports if r.status == "failed"]
    if as_json:
        print(
            json.dumps(
                {
                    "inventory": str(inventory.path),
                    "seconds": time.monotonic() - start,
                    "ready": len(reports) - len(failed),
                    "failed": len(failed),
                    "devices": [vars(r) for r in reports],
                }
            )
        )
    else:
        _table(describe(reports))
    return EXIT_USAGE if failed else EXIT_OK


def _table(rows: list[list[str]]) -> None:
    """Columns padded to their widest cell, never cut (the table may go to a log or a pipe)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_lab_up(args: argparse.Namespace) -> int:
    from suite.orchestrate import lab
    from suite.orchestrate.labplan import LATENCY_NOTE
    from suite.package import require_checkout

    if args.deploy:
        require_checkout("suite lab up --deploy")  # before the lab is brought up
    start = time.monotonic()
    made = lab.up(args.fleet, args.dilate, args.name, say=_say)
    seconds = time.monotonic() - start
    inventory = made.inventory_path()
    if args.deploy:
        with contextlib.redirect_stdout(sys.stderr):  # stdout stays the lab's own report (or JSON)
            code = _deploy(str(inventory), force=False, jobs=8, as_json=False)
        if code != EXIT_OK:
            return code
    if args.json:
        print(
            json.dumps(
                {
                    "lab": made.name,
                    "inventory": str(inventory),
                    "fleet": made.fleet_name,
                    "dilation": made.dilation,
                    "rate_mbps": round(made.rate_bps / 1e6, 6),
                    "shared": made.shared,
                    "shaping": made.shaping,
                    "latency": LATENCY_NOTE,
                    "seconds": seconds,
                    "coordinator": {"address": made.coordinator_address, "interface": made.root_link},
                    "devices": [
                        {"name": d.name, "address": d.address, "cpu_cores": d.cpu_cores} for d in made.devices
                    ],
                }
            )
        )
        return EXIT_OK
    print(
        f"lab '{made.name}' is up in {seconds:.1f} s: fleet {made.fleet_name}, {len(made.devices)} devices, "
        f"dilation {made.dilation:g} (times measured here x {made.dilation:g} = the real fleet's)"
    )
    print(f"  links: {made.shaping}")
    print(f"  latency: {LATENCY_NOTE}")
    print(f"  coordinator: {made.coordinator_address} on {made.root_link}")
    for d in made.devices:
        print(f"  {d.name}: {d.address}, {d.cpu_cores:.3g} cores, namespace {d.namespace}")
    print(f"inventory: {inventory}")
    print(f"next: suite run --inventory {inventory}" if args.deploy else
          f"next: suite deploy --inventory {inventory}")  # fmt: skip
    return EXIT_OK


def cmd_lab_status(args: argparse.Namespace) -> int:
    from suite.orchestrate import lab

    found = lab.status(args.name)
    if args.json:
        print(json.dumps(found))
        return EXIT_OK if found["healthy"] else EXIT_USAGE
    print(
        f"lab '{found['lab']}': fleet {found['fleet']}, dilation {found['dilation']:g}, "
        f"subnet {found['subnet']}, "
        f"{'healthy' if found['healthy'] else 'NOT healthy'}"
    )
    print(f"  links: {found['shaping']}" + ("" if found["shaping_in_place"] else " (MISSING: no htb qdiscs)"))
    print(f"  latency: {found['latency']}")
    print(f"  coordinator: {found['coordinator']['address']} on {found['coordinator']['interface']}")
    for d in found["devices"]:
        sshd = (
            f"sshd {d['sshd_pid']} answering"
            if d["sshd_answers"]
            else f"sshd {'pid ' + str(d['sshd_pid']) if d['sshd_pid'] else 'not running'}, NOT answering"
        )
        cores = f"{d['cpu_cores']:.3g} cores" if d["cpu_cores"] else "NO cgroup"
        print(
            f"  {d['device']}: {d['address']}, {cores}, {sshd}"
            + ("" if d["namespace_up"] else f", namespace {d['namespace']} MISSING")
        )
    print(f"inventory: {found['inventory']}")
    if not found["healthy"]:
        raise UserError(
            f"lab '{found['lab']}' is not healthy (see above); `suite lab down --name {found['lab']}` "
            "and up again"
        )
    return EXIT_OK


def cmd_lab_check(args: argparse.Namespace) -> int:
    from suite.orchestrate import labcheck

    result = labcheck.check(args.name, args.seconds, say=_say)
    print(json.dumps(result) if args.json else labcheck.describe(result))
    return EXIT_OK


def cmd_lab_down(args: argparse.Namespace) -> int:
    from suite.orchestrate import lab

    start = time.monotonic()
    removed = lab.down(args.name)
    if args.json:
        print(json.dumps({"lab": args.name, "removed": removed, "seconds": time.monotonic() - start}))
    elif not any(removed.values()):
        print(f"no lab '{args.name}': nothing to remove")
    else:
        print(
            f"lab '{args.name}' removed in {time.monotonic() - start:.1f} s: "
            f"{removed['namespaces']} namespaces, "
            f"{removed['processes']} processes, {removed['cgroups']} cgroups, {removed['links']} links"
        )
    return EXIT_OK
