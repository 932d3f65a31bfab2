"""MkDocs hook: the CLI reference page (cli.md) gets every command's usage and options appended at
build time, read from `suite.cli.build_parser`, so the reference cannot drift from the code."""

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
PAGE = "cli.md"
USAGE_WIDTH = 96  # the usage block's width, whatever the terminal that builds the site


def commands(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.ArgumentParser, str]]:
    """Every command under `parser`, depth first, with the one-line help its parent gives it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                sub = action.choices[choice.dest]
                yield sub, choice.help or ""
                yield from commands(sub)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _sentence(text: str) -> str:
    text = _cell(text)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _table(columns: list[str], rows: list[list[str]]) -> str:
    from suite.markdown import markdown_table  # once the page's hook has put this checkout on the path

    return markdown_table(columns, rows) if rows else ""


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return f"```text\n{formatter.format_help().strip()}\n```"


def _subcommands(parser: argparse.ArgumentParser) -> str:
    depth = parser.prog.count(" ") + 1
    rows = [
        [f"[`{sub.prog}`](#{sub.prog.replace(' ', '-')})", _cell(text)]
        for sub, text in commands(parser)
        if sub.prog.count(" ") == depth
    ]
    return _table(["command", "what it does"], rows)


def _options(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        meaning = formatter._expand_help(action) if action.help else ""
        if action.required and action.option_strings:
            meaning = f"required; {meaning}"
        rows.append([f"`{formatter._format_action_invocation(action)}`", _cell(meaning)])
    return _table(["option", "meaning"], rows)


def reference(parser: argparse.ArgumentParser) -> str:
    """The reference in Markdown: per command (the program first), what it does, its usage, its
    subcommands and its options."""
    sections = []
    for command, text in [(parser, parser.description or ""), *commands(parser)]:
        blocks = [
            f"## {command.prog}",
            _sentence(text),
            _usage(command),
            _subcommands(command),
            _options(command),
        ]
        sections += [block for block in blocks if block]
    return "\n\n".join(sections) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """The reference goes on the CLI page, after its hand-written introduction."""
    if page.file.src_uri != PAGE:
        return markdown
    if str(REPOSITORY) not in sys.path:
        sys.path.insert(0, str(REPOSITORY))  # this checkout's parser, installed or not
    from suite.cli import build_parser

    return f"{markdown}\n{reference(build_parser())}"
