"""asv for `nox -s asv`: benchmark a commit in an existing environment, compare it with the previous
stored result, publish the HTML.

    python -m suite.tracking.asvtrack run [--quick] [--bench RE]  # HEAD; fails on a regression
    python -m suite.tracking.asvtrack backfill N                  # the last N commits without a result
    python -m suite.tracking.asvtrack compare [OLD NEW]           # stored results (previous, HEAD)
    python -m suite.tracking.asvtrack noise [--runs 2]            # tracked speedups' run-to-run change
    python -m suite.tracking.asvtrack publish                     # the HTML of the stored results

Results live in `benchmarks/results/<machine>/` and are committed, so the next run (a fresh clone
in CI too) finds the history there and the graphs draw a line. asv's `existing` environment saves
nothing unless it is told which commit it measured (`--set-commit-hash`); it names the environment
after the interpreter's path, which differs between checkouts of the same machine, so each result
is renamed to `existing-py<version>` and one machine's results form one line wherever they ran.

A commit is measured with its own code: the running interpreter when it imports this checkout's
`suite`, else a bare venv beside it (`.asv/python-<commit>`) whose path puts the checkout first and
this interpreter's packages after (how `backfill` measures older commits from git worktrees).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from suite.errors import UserError
from suite.package import data
from suite.schema import shown, write_atomically

CONFIG = "asv.conf.json"
RESULTS = Path("benchmarks/results")
HTML = Path("reports/asv")
SCRATCH = Path(".asv")  # asv's home (its machine file), bare venvs, worktrees; not committed
MACHINE_ENV = "SUITE_ASV_MACHINE"

SPEEDUP = "runtime.Schemes.track_period_over_single"  # period / single device's = 1 / speedup
EXACT = "runtime.Schemes.track_bit_exact"
# A tracked speedup may fall by this fraction between two commits before the session fails. Measured
# noise (`noise --runs 3`, one commit, the 2-core benchmark machine shared with other jobs): the
# speedups of 60-frame runs moved by at most 7.9% between runs; of 30-frame runs during a load
# spike (load average 766 falling to 5), by up to 27%. 25% is 3x the first; PICO planned onto one
# device falls by about 50%.
SPEEDUP_FALL_THRESHOLD = 0.25

# asv 0.6's page loads its libraries from CDNs; these copies (suite/data/asv_vendor_js/README.md says
# where they come from) make the published page work offline.
VENDOR = data("asv_vendor_js")
_CDNJS, _JSDELIVR = "https://cdnjs.cloudflare.com/ajax/libs", "https://cdn.jsdelivr.net/npm"
OFFLINE_COPIES = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    f"{_CDNJS}/flot/0.8.3/jquery.flot.min.js": "jquery.flot-0.8.3.min.js",
    f"{_CDNJS}/flot/0.8.3/jquery.flot.time.min.js": "jquery.flot-0.8.3.time.min.js",
    f"{_CDNJS}/flot/0.8.3/jquery.flot.selection.min.js": "jquery.flot-0.8.3.selection.min.js",
    f"{_CDNJS}/flot/0.8.3/jquery.flot.categories.min.js": "jquery.flot-0.8.3.categories.min.js",
    f"{_JSDELIVR}/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    f"{_CDNJS}/stupidtable/1.0.1/stupidtable.min.js": "stupidtable.js",
    f"{_CDNJS}/blueimp-md5/2.19.0/js/md5.min.js": "md5.js",
    f"{_JSDELIVR}/bootstrap@3.1.1/dist/js/bootstrap.min.js": "bootstrap-3.1.0.min.js",
    f"{_JSDELIVR}/bootstrap@3.1.1/dist/css/bootstrap.min.css": "bootstrap-3.1.0.min.css",
}


@dataclass(frozen=True)
class Regression:
    benchmark: str  # name(params)
    previous: float | None
    current: float | None
    reason: str

    def __str__(self) -> str:
        return f"{self.benchmark}: {self.reason}"


def tracked(path: Path) -> dict[str, float | None]:
    """`{"name(param, ...)": value}` of one asv result file (None where the benchmark failed)."""
    from asv.results import Results

    results = Results.load(str(path))
    values = {}
    for key in results.get_all_result_keys():
        params = results.get_result_params(key)
        value = results.get_result_value(key, params)
        if not params:
            values[key] = value[0] if isinstance(value, list) else value
            continue
        for combo, v in zip(itertools.product(*params), value):
            values[f"{key}({', '.join(combo)})"] = v
    return values


def regressions(previous: dict[str, float | None], current: dict[str, float | None],
                threshold: float = SPEEDUP_FALL_THRESHOLD) -> list[Regression]:  # fmt: skip
    """What got worse from `previous` to `current`: a tracked speedup that fell by more than
    `threshold` (or stopped being measured), any output that is no longer bit-exact."""
    found = []
    for name, before in previous.items():
        now = current.get(name, _absent)
        if now is _absent or before is None or _missing(before):
            continue  # not run this time (--bench), or nothing to compare with
        if name.startswith(SPEEDUP + "("):
            if _missing(now):
                found.append(Regression(name, before, None, "failed on this commit (see asv's output above)"))
            elif before / now < 1 - threshold:  # speedups are 1 / period
                found.append(
                    Regression(
                        name,
                        before,
                        now,
                        f"speedup fell from {1 / before:.2f}x to {1 / now:.2f}x "
                        f"({before / now - 1:+.0%}; the threshold is -{threshold:.0%}, "
                        f"period over the single device's {before:.3g} -> {now:.3g})",
                    )
                )
        elif name.startswith(EXACT + "(") and (_missing(now) or now < 1):
            shown = "failed" if _missing(now) else f"{now:g}"
            found.append(
                Regression(
                    name, before, now, f"outputs are no longer bit-exact (was {before:g}, now {shown})"
                )
            )
    return found


_absent = object()


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---- asv, git and the environment -------------------------------------------------------------


def machine_name() -> str:
    """`$SUITE_ASV_MACHINE`, else the CPU model and count (`amd-epyc-2cpu`): the same for every
    container of one machine type, so CI's fresh clones append to the same history."""
    if os.environ.get(MACHINE_ENV):
        return os.environ[MACHINE_ENV]
    model = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1]
                break
    except OSError:
        pass
    slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*", "", model.lower())).strip("-")
    return f"{slug or 'cpu'}-{os.cpu_count() or 1}cpu"


def machine_details(name: str) -> dict[str, str]:
    """asv's description of this host (CPU model, cores, RAM, OS, architecture, as asv reads them)
    under `name`. `asv machine --yes --machine NAME` alone stores the name and nothing else."""
    from asv.machine import Machine

    return Machine.get_defaults() | {"machine": name}


def offline_page(html: Path) -> None:
    """Point the published pages' CDN libraries at copies in `html`/vendor/ (OFFLINE_COPIES), so
    the page draws its graphs without the network; a library asv loads that has no copy fails."""
    pages = {page: _TAG.sub(_local_copy, page.read_text()) for page in sorted(html.glob("*.html"))}
    for page, text in pages.items():
        remote = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="(https?://[^"]+)"', text)
        if remote:
            raise UserError(f"{shown(page)}: asv's page loads {remote[0]} from the network and "
                            f"{shown(VENDOR)} has no copy of it (asv changed its libraries); add one and its "
                            "address to OFFLINE_COPIES in suite/tracking/asvtrack.py")  # fmt: skip
    shutil.copytree(VENDOR, html / "vendor", dirs_exist_ok=True)
    for page, text in pages.items():
        write_atomically(page, text)


_TAG = re.compile(r"<(?:script|link)\b[^>]*>")


def _local_copy(tag: re.Match) -> str:
    """A <script> or <link> tag with its CDN address replaced by the copy's, less the CDN file's
    integrity hash (the copy is another build of the same version) and its cross-origin mode (a
    page opened from a file has no origin to share)."""
    text = tag.group(0)
    for address, name in OFFLINE_COPIES.items():
        if f'"{address}"' in text:
            text = text.replace(f'"{address}"', f'"vendor/{name}"')
            return re.sub(r'\s(?:integrity|crossorigin|referrerpolicy)="[^"]*"', "", text)
    return text


def publish(checkout: Path) -> None:
    _asv(["publish"], checkout)
    offline_page(checkout / HTML)
    print(
        f"published {HTML}/index.html; it needs no network but loads its data over http: "
        f"python -m http.server -b 127.0.0.1 -d {HTML}"
    )


def _git(*args: str, cwd: Path = Path(".")) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise UserError(f"git {' '.join(args)}: {said[-1] if said else 'failed'}")
    return done.stdout.strip()


def _asv(args: list[str], checkout: Path, check: bool = True) -> int:
    """asv in `checkout`, with its machine file in the scratch folder (the user's home untouched)."""
    home = (checkout / SCRATCH / "home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home)}
    code = subprocess.run([sys.executable, "-m", "asv", *args], cwd=checkout, env=env).returncode
    if check and code != 0:
        raise UserError(f"asv {args[0]} failed (exit {code}); see its output above")
    return code


def _save_machine(checkout: Path, machine: str) -> None:
    """This host's details in asv's machine file (in the scratch home `_asv` gives asv); asv copies
    them into the results' machine.json."""
    from asv.machine import MachineCollection

    home = (checkout / SCRATCH / "home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    MachineCollection.save(machine, machine_details(machine), _path=str(home / ".asv-machine.json"))


def interpreter_for(checkout: Path, commit: str) -> Path:
    """An interpreter that imports `checkout`'s suite: this one if it does, else a bare venv."""
    mine = subprocess.run([sys.executable, "-c", "import suite, os; print(os.path.dirname(suite.__file__))"],
                          capture_output=True, text=True, cwd="/").stdout.strip()  # fmt: skip
    if mine and Path(mine).resolve() == (checkout / "suite").resolve():
        return Path(sys.executable)
    venv = (checkout / SCRATCH / f"python-{commit[:12]}").resolve()
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    own = next((venv / "lib").glob("python*/site-packages"))
    (own / "suite-checkout.pth").write_text(f"{checkout.resolve()}\n{packages}\n")
    return venv / "bin" / "python"


def canonical_env(python: Path) -> str:
    version = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    return f"existing-py{version}"


def result_file(results: Path, machine: str, commit: str) -> Path | None:
    found = sorted((results / machine).glob(f"{commit[:8]}-*.json"))
    return found[0] if found else None


def _canonicalise(results: Path, machine: str, commit: str, env_name: str) -> Path:
    """Store this commit's new result under `env_name` (see the module's docstring), merged into
    what was stored for it before: benchmarks run now replace theirs, the others stay."""
    target = results / machine / f"{commit[:8]}-{env_name}.json"
    for path in (results / machine).glob(f"{commit[:8]}-*.json"):
        if path == target:
            continue
        data = json.loads(path.read_text())
        if target.is_file():
            before = json.loads(target.read_text())
            data["results"] = before["results"] | data["results"]
            data["durations"] = before.get("durations", {}) | data.get("durations", {})
        version = env_name.removeprefix("existing-py")
        data.update(env_name=env_name, python=version)
        data["params"]["python"] = version
        write_atomically(target, json.dumps(data, indent=4, sort_keys=True) + "\n")
        path.unlink()
    if not target.is_file():
        raise UserError(f"asv wrote no result for {commit[:8]} under {results / machine}")
    return target


def measure(checkout: Path, commit: str, quick: bool = False, bench: str | None = None,
            code: Path | None = None, config: Path | None = None,
            results: Path = RESULTS) -> Path:  # fmt: skip
    """Run `checkout`'s benchmarks on `commit`, with the suite imported from `code` (default: the
    checkout itself; `backfill` gives a worktree of the commit); the stored result file."""
    machine = machine_name()
    python = interpreter_for(code or checkout, commit)
    head = [] if config is None else ["--config", str(config)]
    _save_machine(checkout, machine)
    args = [*head, "run", "--environment", f"existing:{python}", "--set-commit-hash", commit,
            "--machine", machine, "--show-stderr"]  # fmt: skip
    args += ["--quick"] if quick else []
    args += ["--bench", bench] if bench else []
    failed = _asv(args, checkout, check=False)
    path = _canonicalise(checkout / results, machine, commit, canonical_env(python))
    if failed:
        print(f"warning: some benchmarks failed on {commit[:8]} (asv exit {failed}); see above",
              file=sys.stderr)  # fmt: skip
    return path


def previous_result(checkout: Path, commit: str, results: Path = RESULTS) -> tuple[str, Path] | None:
    """The nearest ancestor of `commit` with a stored result on this machine."""
    machine = machine_name()
    for ancestor in _git("rev-list", "--first-parent", commit, cwd=checkout).splitlines()[1:]:
        found = result_file(checkout / results, machine, ancestor)
        if found is not None:
            return ancestor, found
    return None


def compare_commits(checkout: Path, old: str, new: str, old_file: Path, new_file: Path) -> list[Regression]:
    """asv's own table of the two commits, then the regressions that fail the session."""
    _asv(["compare", old, new, "--machine", machine_name(), "--split",
          "--factor", f"{1 / (1 - SPEEDUP_FALL_THRESHOLD):.3f}"], checkout, check=False)  # fmt: skip
    return regressions(tracked(old_file), tracked(new_file))


def _report(old: str, new: str, found: list[Regression]) -> int:
    if not found:
        print(
            f"no regression from {old[:8]} to {new[:8]} (speedups may fall by "
            f"{SPEEDUP_FALL_THRESHOLD:.0%}; outputs must stay bit-exact)"
        )
        return 0
    for regression in found:
        print(f"REGRESSION {old[:8]} -> {new[:8]}: {regression}", file=sys.stderr)
    return 1


# ---- commands ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    checkout = Path.cwd()
    commit = _git("rev-parse", "HEAD")
    if _git("status", "--porcelain", "--untracked-files=no", "--", "suite", "benchmarks"):
        print(f"warning: suite/ or benchmarks/ has uncommitted changes: the result is stored under "
              f"{commit[:8]} but measures the working tree", file=sys.stderr)  # fmt: skip
    new_file = measure(checkout, commit, args.quick, args.bench)
    before = previous_result(checkout, commit)
    publish(checkout)
    if before is None:
        print(f"no earlier result on machine {machine_name()} in {RESULTS}: nothing to compare with")
        return 0
    old, old_file = before
    return _report(old, commit, compare_commits(checkout, old, commit, old_file, new_file))


def cmd_backfill(args: argparse.Namespace) -> int:
    checkout = Path.cwd()
    commits = _git("rev-list", "--first-parent", "-n", str(args.count), "HEAD").splitlines()[::-1]
    machine = machine_name()
    for commit in commits:
        if result_file(checkout / RESULTS, machine, commit) is not None and not args.force:
            print(f"{commit[:8]}: already measured on {machine}, skipped (--force to measure again)")
            continue
        tree = (checkout / SCRATCH / "worktrees" / commit[:12]).resolve()
        _git("worktree", "add", "--detach", "--force", str(tree), commit, cwd=checkout)
        try:
            print(f"{commit[:8]}: measuring its code from {tree}")
            measure(checkout, commit, args.quick, code=tree)
        finally:
            _git("worktree", "remove", "--force", str(tree), cwd=checkout)
            shutil.rmtree(checkout / SCRATCH / f"python-{commit[:12]}", ignore_errors=True)
    publish(checkout)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    publish(Path.cwd())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    checkout = Path.cwd()
    machine = machine_name()
    if args.old and args.new:
        old, new = _git("rev-parse", args.old), _git("rev-parse", args.new)
        files = [result_file(checkout / RESULTS, machine, c) for c in (old, new)]
        for commit, found in zip((old, new), files):
            if found is None:
                raise UserError(f"no stored result for {commit[:8]} on machine {machine} in {RESULTS}; "
                                "run `nox -s asv` on it or backfill")  # fmt: skip
        old_file, new_file = files
    else:
        new = _git("rev-parse", "HEAD")
        new_file = result_file(checkout / RESULTS, machine, new)
        before = previous_result(checkout, new)
        if new_file is None or before is None:
            raise UserError(f"need stored results for HEAD and an earlier commit on machine {machine}; run "
                            "`nox -s asv` (or give OLD and NEW)")  # fmt: skip
        old, old_file = before
    return _report(old, new, compare_commits(checkout, old, new, old_file, new_file))


def cmd_noise(args: argparse.Namespace) -> int:
    """Run the scheme benchmarks `--runs` times on this commit into a scratch results folder and
    print how far the tracked speedups moved between runs: the threshold's evidence."""
    from asv.util import load_json

    checkout = Path.cwd()
    commit = _git("rev-parse", "HEAD")
    speedups: dict[str, list[float]] = {}
    (checkout / SCRATCH).mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=checkout / SCRATCH) as tmp:
        for run in range(args.runs):
            results = Path(tmp) / f"run{run}"
            config = Path(tmp) / f"asv{run}.conf.json"
            settings = load_json(str(checkout / CONFIG), js_comments=True)
            config.write_text(json.dumps(settings | {
                "repo": str(checkout), "benchmark_dir": str(checkout / settings["benchmark_dir"]),
                "results_dir": str(results), "html_dir": str(Path(tmp) / "html")}))  # fmt: skip
            path = measure(checkout, commit, bench=r"runtime\.Schemes", config=config, results=results)
            for name, value in tracked(path).items():
                if name.startswith(SPEEDUP + "(") and not _missing(value):
                    speedups.setdefault(name, []).append(1 / value)
    worst = 0.0
    for name, values in sorted(speedups.items()):
        spread = max(a / b - 1 for a, b in itertools.permutations(values, 2)) if len(values) > 1 else 0.0
        worst = max(worst, spread)
        print(f"{name}: speedups {', '.join(f'{v:.3f}' for v in values)}: largest change {spread:.1%}")
    print(
        f"largest run-to-run change of a tracked speedup: {worst:.1%} (the threshold is "
        f"{SPEEDUP_FALL_THRESHOLD:.0%})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m suite.tracking.asvtrack",
        description="asv runs, comparisons and publishing for nox -s asv",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="benchmark HEAD, compare with the previous stored result, publish")
    r.add_argument("--quick", action="store_true", help="each benchmark once (asv --quick)")
    r.add_argument("--bench", help="only benchmarks matching this regular expression")
    r.set_defaults(run=cmd_run)
    b = sub.add_parser("backfill", help="benchmark the last N commits (first parent) that have no result")
    b.add_argument("count", type=int, metavar="N")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--force", action="store_true", help="measure commits that already have a result")
    b.set_defaults(run=cmd_backfill)
    c = sub.add_parser("compare", help="two stored results; exit 1 on a regression")
    c.add_argument("old", nargs="?")
    c.add_argument("new", nargs="?")
    c.set_defaults(run=cmd_compare)
    p = sub.add_parser("publish", help="the HTML of the stored results, without running anything")
    p.set_defaults(run=cmd_publish)
    n = sub.add_parser("noise", help="the tracked speedups' run-to-run change on this commit")
    n.add_argument("--runs", type=int, default=2)
    n.set_defaults(run=cmd_noise)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
