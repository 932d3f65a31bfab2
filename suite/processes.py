"""Whether a process on this host still runs: one check for every sweep that removes what a dead
process left (cgroups, folded models, output claims, a lab's stray workers)."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host. Another user's process counts; a zombie (exited,
    waiting for its parent to reap it) does not. Without /proc, whether the pid exists at all."""
    if Path("/proc/self/stat").is_file():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
