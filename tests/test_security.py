"""Who can talk to a run: the rendezvous binds only where asked, refuses peers without the run's
secret, and no message it carries can make a worker import code."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from suite.cli import _warn_wildcard
from suite.plan import SCHEMA_VERSION
from suite.runtime import rendezvous
from suite.runtime.rendezvous import (
    SECRET_ENV,
    RendezvousError,
    RendezvousServer,
    RendezvousStore,
    new_secret,
)


@pytest.fixture
def server():
    served = RendezvousServer("127.0.0.1", 0, new_secret()).start()
    yield served
    served.close()


def test_parties_with_the_secret_share_the_store(server):
    a = RendezvousStore("127.0.0.1", server.port, server.secret, timeout_s=5)
    b = RendezvousStore("127.0.0.1", server.port, server.secret, timeout_s=5)
    a.set("config", b"plan")
    assert b.get("config") == b"plan" and b.check(["config"]) and not b.check(["nothing"])
    assert a.add("count", 2) == 2 and b.add("count", 3) == 5
    assert a.compare_set("k", b"", b"v") == b"v" and b.compare_set("k", b"x", b"w") == b"v"
    with pytest.raises(RendezvousError, match="timed out"):
        b.wait(["never"], timedelta(seconds=0.2))
    assert server.refused == []


def test_a_peer_without_the_secret_is_refused(server):
    with pytest.raises(RendezvousError, match="run secret is wrong"):
        RendezvousStore("127.0.0.1", server.port, new_secret(), timeout_s=5)
    # a plain client that speaks no handshake at all is cut off and gets nothing
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
        plain.recv(32)  # the server's nonce
        plain.sendall(b"GET config\r\n" + bytes(64))
        try:
            answer = plain.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed without an answer
    deadline = time.monotonic() + 5
    while len(server.refused) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.refused == ["127.0.0.1", "127.0.0.1"]


def test_a_tampered_message_is_refused(server):
    store = RendezvousStore("127.0.0.1", server.port, server.secret, timeout_s=5)
    store.set("a", b"1")
    channel = store._channel
    channel.sent += 1  # as if a message had been injected in between: the sequence no longer matches
    with pytest.raises(RendezvousError):
        store.get("a")


def _handshaking() -> int:
    return sum("(_serve)" in thread.name for thread in threading.enumerate())


def test_a_trickled_handshake_is_cut_off_at_the_limit_for_the_whole_handshake(server, monkeypatch):
    """A byte every 0.3 s kept the connection open however long (the limit was per read)."""
    monkeypatch.setattr(rendezvous, "HANDSHAKE_S", 1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        slow.recv(32)  # the server's nonce
        start, closed = time.monotonic(), False
        while not closed and time.monotonic() - start < 5:
            try:
                slow.sendall(b"x")
                time.sleep(0.3)
                closed = slow.recv(1, socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                pass  # still open, nothing to read
            except OSError:
                closed = True
        assert closed and time.monotonic() - start < 2.0
    _wait_for(lambda: server.refused_count == 1, 5)


def test_handshakes_at_once_are_capped_and_refused_peers_bounded(server, monkeypatch):
    monkeypatch.setattr(rendezvous, "HANDSHAKE_S", 1.0)
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
              for _ in range(rendezvous.MAX_HANDSHAKES + 20)]  # fmt: skip
    try:
        time.sleep(0.5)
        assert _handshaking() <= rendezvous.MAX_HANDSHAKES
        # the ones held back are served as slots free up; a party with the secret still gets in
        store = RendezvousStore("127.0.0.1", server.port, server.secret, timeout_s=5)
        store.set("a", b"1")
    finally:
        for sock in silent:
            sock.close()
    _wait_for(lambda: server.refused_count == len(silent), 10)
    assert len(server.refused) == rendezvous.MAX_REFUSED_NAMED and server.refused[0] == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_wildcard_host_is_warned_about_in_one_line(capsys, host):
    _warn_wildcard(host)
    _warn_wildcard("127.0.0.1")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"warning: --host '{host}' listens on every interface")


def _listeners(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets these processes listen on (from `ss -ltnp`)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            found.add(line.split()[3].rsplit(":", 1)[0])
    return found


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_a_run_listens_only_on_the_address_asked_for(tmp_path):
    """`ss` during a run: the coordinator's store and every gloo socket of it and its workers are
    bound to loopback, none to every interface. Ended with SIGTERM, as a service manager would."""
    run = subprocess.Popen([sys.executable, "-m", "suite", "run", "--model", "vgg16", "--input-size",
                            "3x32x32", "--scheme", "pico", "--devices", "2", "--frames", "100000",
                            "--no-baseline", "-o", str(tmp_path / "out")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines = _lines(run.stderr)
    try:
        _wait_for(lambda: any("0/100002 frames" in line for line in lines) or run.poll() is not None, 240)
        assert run.poll() is None, "".join(lines)
        time.sleep(1.0)  # frames are flowing: every party has joined the gloo group
        addresses = _listeners({run.pid, *_children(run.pid)})
        assert addresses == {"127.0.0.1"}, addresses
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
    assert run.returncode == 130, "".join(lines)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["complete"] is False and "interrupted" in summary["error"]


def _lines(stream) -> list[str]:
    """Lines of a child's output as they come (read by a thread, so the child never blocks)."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True).start()
    return lines


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_forged_config_cannot_make_a_worker_import_code(tmp_path, server):
    """The store once carried the model spec and workers imported whatever it named; a config that
    still names code (as the old key did) and a plan for another model change nothing: the worker
    builds the model on its own command line, refuses the plan, and never imports the named module."""
    marker = tmp_path / "imported"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build(): pass\n")
    store = RendezvousStore("127.0.0.1", server.port, server.secret, timeout_s=5)
    plan = {"schema_version": SCHEMA_VERSION, "scheme": "single", "model": "evil", "input_shape": [3, 8, 8],
            "fleet": "1xlocal", "devices": ["dev0"], "hub": "dev0", "graph": "torch", "frames_in_flight": 1,
            "stages": [{"index": 0, "group": 0, "nodes": ["x"], "overlap": False, "transfers": [],
                        "work": [{"device": "dev0", "outputs": {"x": None}, "inputs": {}}]}]}  # fmt: skip
    store.set(
        "config",
        json.dumps(
            {
                "plan": plan,
                "ranks": {"coordinator": 0, "dev0": 1},
                "backend": "torch",
                "frames": 1,
                "timeout_s": 5,
                "threads": {"dev0": 1},
                "model": {"spec": "evil:build", "input_size": [3, 8, 8], "seed": 0},
            }
        ),
    )
    env = {**os.environ, SECRET_ENV: server.secret, "PYTHONPATH": str(tmp_path)}
    worker = subprocess.run([sys.executable, "-m", "suite.runtime.worker", "--rank", "1", "--world", "2",
                             "--master", f"127.0.0.1:{server.port}", "--model", "vgg16", "--input-size",
                             "3x32x32"], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert worker.returncode == 2
    assert "the plan is for evil" in store.get("error/1").decode()
    assert not marker.exists()


def test_a_worker_without_the_secret_cannot_join(server):
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    worker = subprocess.run([sys.executable, "-m", "suite.runtime.worker", "--rank", "1", "--world", "2",
                             "--master", f"127.0.0.1:{server.port}", "--model", "vgg16", "--input-size",
                             "3x32x32"], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert worker.returncode == 2
    assert f"no run secret: the coordinator passes it in {SECRET_ENV}" in worker.stderr
    bad = {**env, SECRET_ENV: new_secret()}
    worker = subprocess.run(worker.args, env=bad, capture_output=True, text=True, timeout=120)
    assert worker.returncode == 2 and "run secret is wrong" in worker.stderr
    assert Path("/proc/self").exists()  # (the secret never appears on a command line: see the worker's argv)
    assert not any(SECRET_ENV in arg or server.secret in arg for arg in worker.args)
