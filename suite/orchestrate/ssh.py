"""SSH connections to a fleet's devices through Fabric: the inventory's key only, host keys checked.

Fabric accepts unknown host keys by default (paramiko's AutoAddPolicy) and reads ~/.ssh/config;
a fleet run must not depend on either, so every connection here uses exactly the inventory's key
and address and refuses a host key that is not in the inventory's known_hosts. Every failure is
one line naming the device and what to do.
"""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import paramiko
from fabric import Config, Connection
from paramiko.config import SSHConfig

from suite.errors import UserError
from suite.orchestrate.inventory import Host

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 5  # a dead peer is noticed within a few keepalives


class DeviceError(UserError):
    """A device that cannot be reached or used; the message is one line that names it."""


def connect(host: Host, known_hosts: Path, timeout_s: float = CONNECT_TIMEOUT_S) -> Connection:
    """An open connection to `host`, authenticated with its key and checked against `known_hosts`."""
    conn = Connection(
        host.host,
        user=host.user,
        port=host.port,
        config=Config(ssh_config=SSHConfig()),
        connect_timeout=timeout_s,
        connect_kwargs={
            "key_filename": str(host.key),
            "look_for_keys": False,
            "allow_agent": False,
            "banner_timeout": timeout_s,
            "auth_timeout": timeout_s,
        },
    )
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if known_hosts.is_file():
        conn.client.load_system_host_keys(str(known_hosts))
    try:
        conn.open()
    except Exception as exc:  # paramiko and socket errors alike end as one line
        conn.close()
        raise DeviceError(
            f"device {host.name} ({host.address}): {why(exc, host, known_hosts, timeout_s)}"
        ) from None
    conn.transport.set_keepalive(KEEPALIVE_S)
    return conn


def why(exc: BaseException, host: Host, known_hosts: Path, timeout_s: float) -> str:
    """What went wrong connecting, and the fix."""
    if isinstance(exc, paramiko.PasswordRequiredException):
        return (
            f"key {host.key} is protected by a passphrase; give a key without one (a key for this fleet only)"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return (
            f"the device refused key {host.key} for user {host.user} (add {host.key}.pub to the user's "
            "~/.ssh/authorized_keys on the device, or fix `key`/`user`)"
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return (
            f"its host key differs from the one in {known_hosts} (reinstalled, or someone in between): "
            f"check it, then `ssh-keygen -R {host.host} -f {known_hosts}`"
        )
    if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        return (
            f"its host key is not in {known_hosts}; check the device's fingerprint and add it "
            f"(`ssh-keyscan -p {host.port} {host.host} >> {known_hosts}`)"
        )
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):  # every address failed: say the first
        exc = next(iter(exc.errors.values()))
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused on port {host.port} (is sshd running there?)"
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"no answer within {timeout_s:g} s (is the device up and reachable from here?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host '{host.host}'"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect: {exc.strerror}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"SSH failed: {text}"


def run(conn: Connection, host: Host, command: str, what: str, timeout_s: float | None = None) -> str:
    """Run a shell command on the device; its stdout, or a DeviceError naming the device and `what`."""
    try:
        result = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout_s)
    except Exception as exc:  # the connection broke, or the command timed out
        raise DeviceError(
            f"device {host.name} ({host.address}): {what} failed: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    if result.exited != 0:
        said = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        said = [line for line in said if line.startswith("ERROR")] or said  # pip's own error, when it is pip
        raise DeviceError(
            f"device {host.name} ({host.address}): {what} failed (exit {result.exited}): "
            f"{said[-1] if said else 'no output'}"
        )
    return result.stdout


def quote(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)
