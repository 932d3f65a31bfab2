"""SSH to devices (suite/orchestrate/ssh.py) against real sshds on loopback (root): the inventory's
key or the agent's, jump hosts from the inventory or an ssh_config, and retries that end in one line."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from suite.inventory import Host
from suite.orchestrate import ssh
from suite.orchestrate.lab import SSHD

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SSHD).exists() or not shutil.which("ssh-agent"),
    reason="needs root, sshd and ssh-agent (apt-get install -y openssh-server)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@contextmanager
def _sshd(folder: Path, port: int, authorized: Path, known_hosts: Path, forwarding: bool) -> Iterator[int]:
    """sshd on 127.0.0.1:`port`, in the foreground of a process this test owns, its host key added
    to `known_hosts`; stopped on the way out, whatever happened."""
    folder.mkdir(parents=True, exist_ok=True)
    key = _keygen(folder / "host_key")
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}", f"HostKey {key}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}", "AuthenticationMethods publickey", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "AllowUsers root",
        "UsePAM no", f"AllowTcpForwarding {'yes' if forwarding else 'no'}", "StrictModes no",
        ""]))  # fmt: skip
    with known_hosts.open("a") as known:
        known.write(f"[127.0.0.1]:{port} {' '.join(Path(f'{key}.pub').read_text().split()[:2])}\n")
    server = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(folder / "sshd.log")],
                              stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        yield server.pid
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait(port: int) -> None:
    deadline = time.monotonic() + 10
    while not _greets(port):
        assert time.monotonic() < deadline, f"sshd on port {port} did not start"
        time.sleep(0.05)


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


@pytest.fixture
def net(tmp_path: Path) -> Iterator[dict]:
    """A device sshd that forwards nothing, a jump host that forwards and one that refuses to."""
    key = _keygen(tmp_path / "id_fleet")
    authorized = tmp_path / "authorized_keys"
    shutil.copy(f"{key}.pub", authorized)
    known = tmp_path / "known_hosts"
    ports = {name: _free_port() for name in ("device", "jump", "closed_jump")}
    forwards = {"device": False, "jump": True, "closed_jump": False}
    with contextlib.ExitStack() as servers:
        for name, port in ports.items():
            servers.enter_context(_sshd(tmp_path / name, port, authorized, known, forwards[name]))
        for port in ports.values():
            _wait(port)
        yield {"key": key, "known": known, "tmp": tmp_path, **ports}


def _host(net: dict, **fields) -> Host:
    defaults = {"name": "d1", "host": "127.0.0.1", "port": net["device"], "user": "root", "key": net["key"],
                "python": "/usr/bin/python3", "workdir": "/tmp", "interface": None}  # fmt: skip
    return Host(**(defaults | fields))


def _echo(host: Host, known: Path) -> str:
    conn = ssh.connect(host, known, timeout_s=5)
    try:
        return ssh.run(conn, host, "echo reached", "echo").strip()
    finally:
        conn.close()


def test_a_device_is_reached_through_its_jump_host_and_a_jump_that_will_not_forward_is_named(net):
    through = _host(net, proxy_jump=f"root@127.0.0.1:{net['jump']}")
    assert _echo(through, net["known"]) == "reached"
    refused = _host(net, proxy_jump=f"root@127.0.0.1:{net['closed_jump']}")
    start = time.monotonic()
    with pytest.raises(ssh.DeviceError) as failed:
        _echo(refused, net["known"])
    said = str(failed.value)
    assert said.startswith(f"device d1 (root@127.0.0.1:{net['device']}): jump host "
                           f"root@127.0.0.1:{net['closed_jump']}: would not forward")  # fmt: skip
    assert "\n" not in said and "tried" not in said
    assert time.monotonic() - start < ssh.BACKOFF_S  # not tried again


def test_an_ssh_configs_host_alias_and_proxyjump_are_honoured(net):
    config = net["tmp"] / "ssh_config"
    config.write_text(
        f"Host fleet-d1\n    HostName 127.0.0.1\n    ProxyJump root@127.0.0.1:{net['jump']}\n"
        f"Host fleet-d2\n    HostName 127.0.0.1\n    ProxyJump root@127.0.0.1:{net['closed_jump']}\n"
    )
    assert _echo(_host(net, host="fleet-d1", ssh_config=config), net["known"]) == "reached"
    with pytest.raises(ssh.DeviceError, match=f"jump host root@127.0.0.1:{net['closed_jump']}: would not"):
        _echo(_host(net, host="fleet-d2", ssh_config=config), net["known"])  # its ProxyJump was taken
    with pytest.raises(ssh.DeviceError, match="cannot resolve host 'fleet-d1'"):
        _echo(_host(net, host="fleet-d1"), net["known"])  # no ssh_config in the inventory: none read


def test_without_a_key_the_agents_keys_are_used(net, monkeypatch):
    home = net["tmp"] / "home"  # no ~/.ssh/id_* to fall back on
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(ssh.DeviceError, match="d1 .*no key to offer: no `key` in the inventory"):
        _echo(_host(net, key=None), net["known"])
    sock = net["tmp"] / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(net["key"])], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        assert _echo(_host(net, key=None), net["known"]) == "reached"
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_a_device_that_answers_late_is_tried_again_and_one_that_never_does_is_one_line(net):
    late = _free_port()
    authorized = net["tmp"] / "authorized_keys"

    def start_later(stop: threading.Event) -> None:
        time.sleep(0.5)  # inside the first wait between tries
        with _sshd(net["tmp"] / "late", late, authorized, net["known"], forwarding=False):
            stop.wait(30)

    stop = threading.Event()
    starter = threading.Thread(target=start_later, args=(stop,))
    starter.start()
    try:
        assert _echo(_host(net, port=late), net["known"]) == "reached"
    finally:
        stop.set()
        starter.join()
    nobody = _free_port()
    start = time.monotonic()
    with pytest.raises(ssh.DeviceError) as failed:
        _echo(_host(net, port=nobody), net["known"])
    assert str(failed.value) == (f"device d1 (root@127.0.0.1:{nobody}): connection refused on port "
                                 f"{nobody} (is sshd running there?) (tried {ssh.CONNECT_ATTEMPTS} "
                                 "times)")  # fmt: skip
    assert time.monotonic() - start >= ssh.BACKOFF_S * (2 ** (ssh.CONNECT_ATTEMPTS - 1) - 1)


def test_a_refused_key_is_not_tried_again(net):
    other = _keygen(net["tmp"] / "id_other")
    start = time.monotonic()
    with pytest.raises(ssh.DeviceError, match=f"the device refused key {other} for user root"):
        _echo(_host(net, key=other), net["known"])
    assert time.monotonic() - start < ssh.BACKOFF_S


def test_transient_failures_are_told_from_lasting_ones():
    import paramiko

    assert ssh.transient(ConnectionRefusedError()) and ssh.transient(TimeoutError())
    assert ssh.transient(paramiko.SSHException("Error reading SSH protocol banner"))
    assert not ssh.transient(paramiko.AuthenticationException("no"))
    assert not ssh.transient(socket.gaierror(-2, "Name or service not known"))
    assert not ssh.transient(paramiko.SSHException("Server '[h]:22' not found in known_hosts"))
    assert not ssh.transient(paramiko.ChannelException(1, "Administratively prohibited"))
