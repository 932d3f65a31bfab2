"""SSH connections to a fleet's devices through Fabric, host keys always checked.

Each device is reached with the inventory's key, or without one with the SSH agent's keys (and an
ssh_config's IdentityFile, ~/.ssh/id_* as ssh would); through the jump hosts of its `proxy_jump`
or of its ssh_config's ProxyJump; with the ssh_config the inventory names, and only that one (a
fleet run does not depend on whatever ~/.ssh/config holds unless the inventory says so). Fabric
accepts unknown host keys by default (paramiko's AutoAddPolicy): every connection here, jump hosts
included, refuses a host key that is not in the inventory's known_hosts. A connection that fails
for a reason that may pass (no answer, refused, reset: a device on WiFi, a sshd restarting) is
tried again after 1 s and 2 s; every failure ends as one line naming the device and what to do.
"""

from __future__ import annotations

import shlex
import socket
import time
from pathlib import Path

import paramiko
from fabric import Config, Connection
from paramiko.config import SSHConfig

from suite.errors import UserError
from suite.inventory import Host

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 5  # a dead peer is noticed within a few keepalives
CONNECT_ATTEMPTS = 3  # a transient failure is tried again after BACKOFF_S, then twice that
BACKOFF_S = 1.0


class DeviceError(UserError):
    """A device that cannot be reached or used; the message is one line that names it."""


def connect(host: Host, known_hosts: Path, timeout_s: float = CONNECT_TIMEOUT_S,
            attempts: int = CONNECT_ATTEMPTS) -> Connection:  # fmt: skip
    """An open connection to `host` (through its jump hosts), host keys checked against
    `known_hosts`; a transient failure is tried again, up to `attempts` tries in all."""
    config = SSHConfig.from_path(str(host.ssh_config)) if host.ssh_config else SSHConfig()
    jumps = host.proxy_jump or config.lookup(host.host).get("proxyjump")
    for attempt in range(1, attempts + 1):
        conn = _connection(host.host, host.user, host.port, host, known_hosts, timeout_s, config, jumps)
        try:
            conn.open()
        except Exception as exc:  # paramiko and socket errors alike end as one line
            asked = conn.gateway if isinstance(exc, paramiko.ChannelException) else None  # to forward
            gateway = _failed_hop(conn) or asked
            _close(conn)
            if attempt < attempts and transient(exc):
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
                continue
            tries = f" (tried {attempt} times)" if attempt > 1 else ""
            via = "" if gateway is None else f"jump host {gateway.user}@{gateway.host}:{gateway.port}: "
            raise DeviceError(
                f"device {host.name} ({host.address}): {via}{why(exc, host, known_hosts, timeout_s)}{tries}"
            ) from None
        conn.transport.set_keepalive(KEEPALIVE_S)
        return conn
    raise AssertionError("unreachable: the last attempt returns or raises")


def _connection(address: str, user: str | None, port: int | None, host: Host, known_hosts: Path,
                timeout_s: float, config: SSHConfig, jumps: str | None) -> Connection:  # fmt: skip
    """An unopened Fabric connection to `address` through `jumps` ("hop1,hop2": the first is
    reached first), authenticated as `host` is, refusing unknown host keys."""
    gateway = False  # not None: Fabric would make its own gateway, accepting any host key
    if jumps:
        *before, last = [hop.strip() for hop in jumps.split(",")]
        hop_user, hop_host, hop_port = _hop(last)
        gateway = _connection(hop_host, hop_user or user, hop_port, host, known_hosts, timeout_s, config,
                              ",".join(before) or None)  # fmt: skip
    conn = Connection(
        address,
        user=user,
        port=port,
        config=Config(ssh_config=config),
        gateway=gateway,
        connect_timeout=timeout_s,
        connect_kwargs={
            **({"key_filename": str(host.key)} if host.key else {}),
            "look_for_keys": host.key is None,
            "allow_agent": host.key is None,
            "banner_timeout": timeout_s,
            "auth_timeout": timeout_s,
        },
    )
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if known_hosts.is_file():
        conn.client.load_system_host_keys(str(known_hosts))
    return conn


def _hop(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` as ProxyJump writes a hop."""
    user, _, rest = spec.rpartition("@")
    address, colon, port = rest.partition(":")
    return user or None, address, int(port) if colon and port.isdigit() else None


def _failed_hop(conn: Connection) -> Connection | None:
    """The jump host that could not be reached, if the failure was on the way to the device."""
    hop, failed = conn.gateway, None
    while isinstance(hop, Connection):
        if not hop.is_connected:
            failed = hop
        hop = hop.gateway
    return failed


def _close(conn: Connection) -> None:
    hop = conn
    while isinstance(hop, Connection):
        hop.close()
        hop = hop.gateway


def transient(exc: BaseException) -> bool:
    """Whether trying again may help: no answer, a refused or reset connection, a greeting cut
    short; not a refused key, a wrong host key or a name that does not resolve."""
    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException | socket.gaierror):
        return False
    if isinstance(exc, paramiko.ChannelException):  # a jump host that would not forward
        return exc.code != paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
    if isinstance(exc, paramiko.SSHException):
        return "known_hosts" not in str(exc) and "No authentication methods" not in str(exc)
    return isinstance(exc, OSError | EOFError)


def why(exc: BaseException, host: Host, known_hosts: Path, timeout_s: float) -> str:
    """What went wrong connecting, and the fix."""
    if isinstance(exc, paramiko.PasswordRequiredException):
        return (
            f"key {host.key} is protected by a passphrase; give a key without one (a key for this fleet only)"
        )
    if isinstance(exc, paramiko.AuthenticationException) and host.key is None:
        return (
            f"the device refused every key the SSH agent and ~/.ssh offered for user {host.user} "
            "(`ssh-add` the fleet's key, or give its path in `key`)"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return (
            f"the device refused key {host.key} for user {host.user} (add {host.key}.pub to the user's "
            "~/.ssh/authorized_keys on the device, or fix `key`/`user`)"
        )
    if isinstance(exc, paramiko.SSHException) and "No authentication methods" in str(exc):
        return ("no key to offer: no `key` in the inventory, no SSH agent ($SSH_AUTH_SOCK) holding one "
                "and no ~/.ssh/id_* (give `key`, or `ssh-add` the fleet's key)")  # fmt: skip
    if isinstance(exc, paramiko.ChannelException):
        return f"would not forward the connection to {host.host}:{host.port} ({exc.text})"  # said of a jump
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
