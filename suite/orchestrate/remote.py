"""Worker processes on a fleet's devices, started over SSH: the remote counterpart of `LocalWorkers`.

Each worker runs under `lifeline.py` on its device (in the device's work folder, with the
inventory's interpreter running the lifeline and `argv` running the worker), over its own Fabric
connection. Its environment variables travel inside the SSH channel; its output streams into
`<log_dir>/<device>.log`, which the results folder keeps. The lifeline kills the worker's whole
process group as soon as its stdin ends, so every way the coordinator can end (stop(), an
exception, Ctrl-C, SIGTERM, even SIGKILL, which closes its sockets) ends the remote worker too.
Only a network that breaks silently delays that, until sshd's keepalive gives up on the client
(`ClientAliveInterval`; the lab sets 5 s x 3).

An onnxruntime run's folded model (`suite.backends.folded`) is copied to each device once per
content (`place`), rather than exported on the device: exporting VGG-16 takes 3-4 GB, more than a
4 GB Pi can give, while its copy is 0.55 GB on the wire once and then costs nothing.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fabric import Connection
from paramiko import Channel

from suite.inventory import Inventory
from suite.orchestrate import lifeline
from suite.orchestrate.ssh import CONNECT_TIMEOUT_S, DeviceError, connect, quote, run

# the lifeline's code without its docstring (`ps` on the device shows the whole command line)
LIFELINE = Path(lifeline.__file__).read_text().split('"""', 2)[2].strip()
# for a stopped worker's exit status before the connection is closed anyway: short, since a device
# whose link is down never answers, and a run must end within its --timeout + 5 s
STOP_WAIT_S = 2.0


@dataclass
class _Remote:
    conn: Connection
    channel: Channel
    pump: threading.Thread


@dataclass
class RemoteWorkers:
    """The run's worker processes on the inventory's devices, and their logs."""

    inventory: Inventory
    log_dir: Path  # one <device>.log per worker
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    names: dict[int, str] = field(default_factory=dict)
    logs: dict[int, Path] = field(default_factory=dict)
    _remotes: dict[int, _Remote] = field(default_factory=dict)
    _digests: dict[Path, str] = field(default_factory=dict)  # folded model folder -> content digest

    def place(self, device_name: str, folded: Path) -> str:
        """The folded model on the device, in `<workdir>/models/<digest of its content>/`: copied
        there over SFTP unless that folder exists (later runs of the same model copy nothing). A
        copy is written into a folder of its own and renamed into place once whole, so a copy cut
        short is never used, and of two runs copying at once one keeps its copy."""
        from suite.backends.folded import DATA, MODEL, content_digest

        if folded not in self._digests:
            self._digests[folded] = content_digest(folded)
        host = self.inventory.host(device_name)
        final = f"{host.workdir}/models/{self._digests[folded]}"
        conn = connect(host, self.inventory.known_hosts, self.connect_timeout_s)
        try:
            if conn.run(f"test -d {quote(final)}", hide=True, warn=True, in_stream=False).exited != 0:
                partial = f"{final}.{secrets.token_hex(4)}.partial"
                run(conn, host, f"mkdir -p {quote(partial)}", "making a folder for the folded model")
                for name in (MODEL, DATA):
                    if (folded / name).is_file():
                        conn.put(str(folded / name), remote=f"{partial}/{name}")
                run(conn, host, f"mv -T {quote(partial, final)} 2>/dev/null || rm -rf {quote(partial)}",
                    "moving the folded model into place")  # fmt: skip
        except DeviceError:
            raise
        except Exception as exc:  # SFTP and channel errors: one line naming the device
            said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DeviceError(f"device {device_name} ({host.address}): copying the folded model to {final} "
                              f"failed: {said}") from None  # fmt: skip
        finally:
            conn.close()
        return f"{final}/{MODEL}"

    def start(self, rank: int, device_name: str, argv: list[str], env: dict[str, str]) -> None:
        """Start `argv` on the device in its work folder, with `env` added to sshd's environment."""
        if rank in self._remotes:
            raise ValueError(f"rank {rank} already runs on device {self.names[rank]}")
        host = self.inventory.host(device_name)
        conn = connect(host, self.inventory.known_hosts, self.connect_timeout_s)
        try:
            channel = conn.transport.open_session()
            channel.set_combine_stderr(True)
            channel.exec_command(f"exec {quote(host.python, '-u', '-c', LIFELINE)}")
            channel.sendall(json.dumps({"argv": argv, "env": env, "cwd": host.workdir}).encode() + b"\n")
        except Exception as exc:
            conn.close()
            raise DeviceError(
                f"device {device_name} ({host.address}): cannot start the worker: {exc}"
            ) from None
        log = self.log_dir / f"{device_name}.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        sink = log.open("ab")
        pump = threading.Thread(target=_copy, args=(channel, sink), name=f"log-{device_name}", daemon=True)
        pump.start()
        self.names[rank], self.logs[rank] = device_name, log
        self._remotes[rank] = _Remote(conn, channel, pump)

    def dead(self) -> dict[int, int]:
        """Workers that have exited: rank -> exit code, negative for a fault of the run as for local
        workers (-N: killed by signal N, which the lifeline reports as 128 + N; -1: the connection
        was lost)."""
        return {
            r: _as_local(w.channel.recv_exit_status())
            for r, w in self._remotes.items()
            if w.channel.exit_status_ready()
        }

    def rank_of(self, name: str) -> int:
        return next((r for r, n in self.names.items() if n == name), -1)

    def exit_text(self, rank: int) -> str:
        remote = self._remotes.get(rank)
        if remote is None or not remote.channel.exit_status_ready():
            return "stopped answering"
        code = remote.channel.recv_exit_status()
        if code == -1:
            return "lost its SSH connection"
        if 128 < code < 128 + signal.NSIG:
            return f"was killed by signal {code - 128} ({signal.Signals(code - 128).name})"
        return f"exited with code {code}"

    def last_line(self, rank: int) -> str | None:
        """The last line the worker printed, if any (a traceback's last line says what failed)."""
        if rank not in self.logs or not self.logs[rank].is_file():
            return None
        lines = [ln.strip() for ln in self.logs[rank].read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else None

    def finish(self, timeout_s: float) -> None:
        """Wait for every worker to exit on its own, then stop what is left."""
        deadline = time.monotonic() + timeout_s
        while any(not w.channel.exit_status_ready() for w in self._remotes.values()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.stop()

    def stop(self) -> None:
        """Kill every worker's process tree on its device and close the connections; safe to call twice."""
        for remote in self._remotes.values():
            try:
                remote.channel.shutdown_write()  # the lifeline reads the end of its stdin and kills the group
            except Exception:
                pass  # the connection is already gone: sshd ends the session, which ends the lifeline too
        deadline = time.monotonic() + STOP_WAIT_S
        for remote in self._remotes.values():
            while not remote.channel.exit_status_ready() and remote.conn.is_connected:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            remote.conn.close()
            remote.pump.join(timeout=STOP_WAIT_S)


def _as_local(code: int) -> int:
    """A lifeline's exit status as `subprocess` gives a local one: a signal's 128 + N as -N."""
    return -(code - 128) if 128 < code < 128 + signal.NSIG else code


def _copy(channel: Channel, sink: BinaryIO) -> None:
    """Append everything the worker prints to its log, as it arrives."""
    with sink:
        while True:
            try:
                data = channel.recv(65536)
            except Exception:
                return  # the connection closed under us
            if not data:
                return
            sink.write(data)
            sink.flush()
