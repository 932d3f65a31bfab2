"""The README stays a front page, the manual's nav holds every page, and the generated CLI reference
covers every command and option of the parser."""

import argparse
import importlib.util
import re
from pathlib import Path

import yaml

from suite.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
README_MAX_WIDTH = 100
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs/hooks/cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_a_short_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    wide = [n for n, line in enumerate(lines, 1) if len(line) > README_MAX_WIDTH]
    assert not wide, f"README.md lines over {README_MAX_WIDTH} characters: {wide}"


def test_readme_links_stay_inside_the_repository():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "://" not in text, "README.md links outside the repository"
    for target in LINK.findall(text):
        path = (ROOT / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"README.md links to missing {target}"


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = {page for entry in config["nav"] for page in entry.values()}
    on_disk = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert in_nav == on_disk


def test_cli_reference_covers_every_command_and_option():
    hook = _cli_reference()
    parser = build_parser()
    reference = hook.reference(parser)
    commands = [parser, *(sub for sub, _ in hook.commands(parser))]
    assert {"suite lab up", "suite nightly baseline"} <= {c.prog for c in commands}
    for command in commands:
        section = reference.split(f"## {command.prog}\n", 1)[1].split("\n## ", 1)[0]
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue  # each subcommand has its own section, checked in its turn
            names = action.option_strings or [str(action.metavar or action.dest)]
            for name in names:
                if name not in ("-h", "--help"):
                    assert name in section, f"{command.prog} {name} missing from the CLI reference"
