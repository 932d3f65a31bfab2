"""argparse types for every number a command takes, in one place: each checks its range, so a bad
number is one line naming the option and the allowed range (exit 2), never a traceback later."""

from __future__ import annotations

import argparse
import math
import textwrap

MAX_SEED = 2**32 - 1  # numpy's legacy seeding (a model factory's global RNG) takes no more
MAX_TIMEOUT_S = 86_400.0  # a day; far longer waits overflow torch's and gloo's timeouts
MAX_SIMULATED_FRAMES = 1_000_000  # pins every statistic the simulator reports; longer streams only take time


def at_least(low: int, high: int | None = None):
    """A whole number of at least `low` (and at most `high`)."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} must be between {low} and {high}")
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        return value

    return whole


def finite(positive: bool = False, high: float | None = None):
    """A finite number (not nan or inf), optionally above zero and at most `high`."""

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(value) or (positive and value <= 0) or (high is not None and value > high):
            above = " above 0" if positive else ""
            at_most = f" and at most {high:g}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"{text} must be a finite number{above}{at_most}")
        return value

    return number


def port(text: str) -> int:
    value = at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0 picks a free one)")
    return value


seed = at_least(0, MAX_SEED)
timeout = finite(positive=True, high=MAX_TIMEOUT_S)
simulated_frames = at_least(1, MAX_SIMULATED_FRAMES)


def exit_codes(failed: str | None = None, usage: str = "bad input (one line naming what to fix)") -> dict:
    """A command's exit codes as its --help epilog (`add_parser(..., **exit_codes(...))`): `failed`
    is what exit 1 means for it (None: it never exits 1), `usage` what exit 2 means."""
    codes = {
        0: "done",
        1: failed,
        2: usage,
        130: "interrupted (Ctrl-C or SIGTERM)",
        141: "the reader of the output went away (a closed pipe)",
    }
    lines = [textwrap.fill(meaning, 79, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
             for code, meaning in codes.items() if meaning]  # fmt: skip
    epilog = "\n".join(["exit codes:", *lines])
    return {"epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}
