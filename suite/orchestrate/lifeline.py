"""Runs on a device under sshd: start one command and tie its whole process tree to the SSH channel.

`RemoteWorkers` runs `python -u -c <this file's text>` over SSH (standard library only, so any
Python 3 on the device will do) and writes one JSON line to its stdin: `{"argv": [...], "env":
{...}, "cwd": "..."}`. The environment travels inside the encrypted channel, never on a command
line or in a file another user could read. The command runs in a process group of its own, its
stdout and stderr merged into ours (the channel the coordinator logs).

The group is killed with SIGKILL when our stdin ends (the coordinator stopped the worker, closed
the connection or died, and sshd closed the channel), when we get SIGTERM, SIGHUP or SIGINT, and
when the command exits on its own (whatever it left behind). Exit status: the command's, or 128 +
the signal that killed it.
"""

import json
import os
import signal
import subprocess
import sys
import threading


def main() -> int:
    spec = _read_spec()
    if spec is None:
        return 2  # the channel closed before the command arrived
    try:
        child = subprocess.Popen(
            spec["argv"],
            cwd=spec["cwd"],
            env={**os.environ, **spec["env"]},
            stdin=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        print(f"cannot start {spec['argv'][0]} in {spec['cwd']}: {exc.strerror}", flush=True)
        return 127

    def kill_group() -> None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is already empty

    def on_signal(signum: int, _frame) -> None:
        kill_group()
        os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, on_signal)

    def watch_stdin() -> None:
        while os.read(0, 4096):
            pass
        kill_group()

    threading.Thread(target=watch_stdin, daemon=True).start()
    code = child.wait()
    kill_group()
    return code if code >= 0 else 128 - code


def _read_spec() -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 65536)
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


if __name__ == "__main__":
    sys.exit(main())
