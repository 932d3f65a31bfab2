"""What the installed package carries (its data) and where it came from (version, source checkout).

Fleets, profiles, inventories, nightly matrices and baselines are package data under `suite/data/`,
found through importlib.resources, so a wheel installed anywhere finds them from any folder. pip
installs a wheel unpacked, so each resource is a real file the YAML readers and error messages
take as a Path. A few things exist only in the source checkout (the project to build a wheel from
for `suite deploy`, constraints.txt); `require_checkout` says so in one line when they are asked for
outside one.
"""

from __future__ import annotations

import subprocess
from importlib import metadata, resources
from pathlib import Path

from suite.errors import UserError


def data(*parts: str) -> Path:
    """A bundled data folder or file, e.g. `data("fleets", "local.yaml")`."""
    return Path(resources.files("suite")).joinpath("data", *parts)


def checkout() -> Path | None:
    """The source checkout this package is imported from (an editable install), or None when it is
    installed from a wheel."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "constraints.txt").is_file() else None


def require_checkout(what: str) -> Path:
    """The checkout, or one line saying that `what` needs one."""
    root = checkout()
    if root is None:
        raise UserError(
            f"{what} needs the suite's source checkout (clone it, then pip install -c "
            f"constraints.txt -e .), but this suite is installed in {Path(__file__).parent}"
        )
    return root


def version() -> str:
    """`suite <version>` from the package metadata, and the commit when run from a git checkout
    (`git describe`: a few milliseconds), so a report can name exactly what produced it."""
    try:
        text = f"suite {metadata.version('suite')}"
    except metadata.PackageNotFoundError:  # the checkout on PYTHONPATH, never installed
        text = "suite (not installed)"
    root = checkout()
    if root is None or not (root / ".git").exists():
        return text
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root,
                                   capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return text
    return f"{text} (git {described.stdout.strip()})"
