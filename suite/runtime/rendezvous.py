"""The run's rendezvous: a key-value store that only the run's own parties can use.

The coordinator serves it on the one address the run binds (never every interface). Each run has a
random secret, delivered out of band (in a local worker's environment, over SSH to a fleet's), and
every connection must prove it knows it before anything is served: both sides exchange nonces and
check each other's HMAC-SHA256 of them, so a worker also knows it talks to its own coordinator. A
peer that fails, or takes more than HANDSHAKE_S over the whole handshake, is disconnected and
counted; at most MAX_HANDSHAKES connections are in their handshake at once. Every later message
carries an HMAC over its sequence number and direction under a key derived from both nonces, so
nobody on the path can inject, alter or replay one. Messages are not encrypted: the plan is not a
secret, the run secret never travels, and no message names code to run.

gloo rendezvouses through this store (its set/get/wait), so only the run's parties learn where
each other listens; gloo's tensor connections themselves are not authenticated (every output is
checked bit for bit, so tampered tensors show up as a mismatch). The client is a `dist.Store`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import torch.distributed as dist

SECRET_ENV = "SUITE_RUN_SECRET"  # how a worker receives the run's secret
NONCE = 32
MAC = 32
MAX_MESSAGE = 64 * 2**20  # a plan or a worker's timeline; nothing legitimate is larger
HANDSHAKE_S = 10.0  # the whole handshake, however its bytes trickle in; a party's takes milliseconds
MAX_HANDSHAKES = 32  # connections still proving the secret at once; more wait to be accepted
MAX_REFUSED_NAMED = 20  # refused peers named in a run's summary; all are counted


class RendezvousError(RuntimeError):
    """The other side failed the handshake, a message failed its check, or the store is gone."""


def new_secret() -> str:
    return secrets.token_hex(32)


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def _read(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    """`n` bytes; with a `deadline` (time.monotonic()), all of them by then, not each read by a
    timeout (a peer trickling a byte at a time would otherwise hold the connection forever)."""
    data = bytearray()
    while len(data) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RendezvousError("the handshake took too long")
            sock.settimeout(left)
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RendezvousError("the connection closed")
        data += chunk
    return bytes(data)


@dataclass
class _Channel:
    """One authenticated connection: framed messages, each with its sequence number's MAC."""

    sock: socket.socket
    key: bytes
    role: bytes  # b"s" (server) or b"c" (client): the direction a message's MAC binds
    sent: int = 0
    received: int = 0

    @classmethod
    def handshake(cls, sock: socket.socket, secret: str, server: bool, deadline: float | None = None
                  ) -> _Channel:  # fmt: skip
        """Prove knowledge of `secret` both ways over fresh nonces, by `deadline` if given; raises
        RendezvousError if the peer cannot."""
        key = secret.encode()
        mine = secrets.token_bytes(NONCE)
        if server:
            sock.sendall(mine)
            theirs = _read(sock, NONCE, deadline)
            if not hmac.compare_digest(_read(sock, MAC, deadline), _mac(key, b"client", mine, theirs)):
                raise RendezvousError("the peer does not know the run's secret")
            sock.sendall(_mac(key, b"server", theirs, mine))
            session = _mac(key, b"session", mine, theirs)
        else:
            theirs = _read(sock, NONCE)
            sock.sendall(mine + _mac(key, b"client", theirs, mine))
            try:
                proof = _read(sock, MAC)
            except RendezvousError:
                raise RendezvousError("the coordinator refused this party: its run secret is wrong") from None
            if not hmac.compare_digest(proof, _mac(key, b"server", mine, theirs)):
                raise RendezvousError("the coordinator does not know the run's secret")
            session = _mac(key, b"session", theirs, mine)
        return cls(sock, session, b"s" if server else b"c")

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        tag = _mac(self.key, self.role, struct.pack(">Q", self.sent), body)
        self.sent += 1
        self.sock.sendall(struct.pack(">I", len(body)) + tag + body)

    def receive(self) -> dict:
        (size,) = struct.unpack(">I", _read(self.sock, 4))
        if size > MAX_MESSAGE:
            raise RendezvousError(f"a message of {size} bytes is larger than any the run sends")
        tag, body = _read(self.sock, MAC), _read(self.sock, size)
        other = b"c" if self.role == b"s" else b"s"
        if not hmac.compare_digest(tag, _mac(self.key, other, struct.pack(">Q", self.received), body)):
            raise RendezvousError("a message failed its integrity check")
        self.received += 1
        return json.loads(body)


# -- the coordinator's side ------------------------------------------------------------------------


@dataclass
class RendezvousServer:
    """Serves the store on `host:port` (0: a free port) to peers that know `secret`."""

    host: str
    port: int
    secret: str
    refused: list[str] = field(default_factory=list)  # the first MAX_REFUSED_NAMED that failed the handshake
    refused_count: int = 0  # every peer that failed it
    _data: dict[str, bytes] = field(default_factory=dict)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _handshakes: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(MAX_HANDSHAKES))
    _sock: socket.socket | None = None
    _closed: bool = False

    def start(self) -> RendezvousServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((self.host, self.port))
        except OSError:
            self._sock.close()
            raise
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="rendezvous").start()
        return self

    def close(self) -> None:
        self._closed = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        with self._changed:
            self._changed.notify_all()

    def _accept(self) -> None:
        while not self._closed:
            if not self._handshakes.acquire(timeout=0.5):
                continue  # at the cap: the kernel's backlog holds new connections until a slot frees
            try:
                conn, address = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, address[0]), daemon=True).start()

    def _serve(self, conn: socket.socket, address: str) -> None:
        with conn:
            conn.settimeout(HANDSHAKE_S)
            try:
                channel = _Channel.handshake(conn, self.secret, server=True,
                                             deadline=time.monotonic() + HANDSHAKE_S)  # fmt: skip
            except (RendezvousError, OSError, ValueError):
                self._refuse(address)
                return
            finally:
                self._handshakes.release()
            conn.settimeout(None)
            try:
                while not self._closed:
                    channel.send(self._answer(channel.receive()))
            except (RendezvousError, OSError, ValueError, KeyError, TypeError):
                return  # the peer left (or sent nonsense after authenticating): drop it

    def _refuse(self, address: str) -> None:
        with self._changed:
            self.refused_count += 1
            if len(self.refused) < MAX_REFUSED_NAMED:
                self.refused.append(address)

    def _answer(self, request: dict) -> dict:
        op = request["op"]
        keys = request.get("keys", [])
        with self._changed:
            if op == "set":
                self._data[request["key"]] = bytes.fromhex(request["value"])
                self._changed.notify_all()
                return {}
            if op == "add":
                value = int(self._data.get(request["key"], b"0")) + int(request["amount"])
                self._data[request["key"]] = str(value).encode()
                self._changed.notify_all()
                return {"value": value}
            if op == "compare_set":
                key, expected = request["key"], bytes.fromhex(request["expected"])
                current = self._data.get(key)
                if current == expected or (current is None and not expected):
                    self._data[key] = bytes.fromhex(request["desired"])
                    self._changed.notify_all()
                return {"value": self._data.get(key, expected).hex()}
            if op == "check":
                return {"value": all(k in self._data for k in keys)}
            if op == "delete":
                return {"value": self._data.pop(request["key"], None) is not None}
            if op == "num_keys":
                return {"value": len(self._data)}
            if op in ("get", "wait"):
                wanted = [request["key"]] if op == "get" else keys
                ready = self._changed.wait_for(lambda: self._closed or all(k in self._data for k in wanted),
                                               timeout=float(request["timeout"]))  # fmt: skip
                if not ready or self._closed:
                    return {"error": f"timed out waiting for {', '.join(wanted)}"}
                return {"value": self._data[wanted[0]].hex()} if op == "get" else {}
        return {"error": f"unknown operation {op!r}"}


# -- every party's side ------------------------------------------------------------------------


class RendezvousStore(dist.Store):
    """A client of the run's rendezvous, usable wherever torch.distributed takes a store."""

    def __init__(self, host: str, port: int, secret: str, timeout_s: float, connect_timeout_s: float = 30.0):
        super().__init__()
        self.set_timeout(timedelta(seconds=timeout_s))
        self._lock = threading.Lock()
        self._channel = _Channel.handshake(_connect(host, port, connect_timeout_s), secret, server=False)

    def _call(self, **request) -> dict:
        with self._lock:
            try:
                self._channel.send(request)
                answer = self._channel.receive()
            except OSError as exc:
                raise RendezvousError(f"the coordinator's store is gone ({exc.strerror or exc})") from None
        if "error" in answer:
            raise RendezvousError(answer["error"])
        return answer

    def _timeout(self, timeout: timedelta | None = None) -> float:
        return (timeout or self.timeout).total_seconds()

    def set(self, key: str, value: str | bytes) -> None:
        value = value.encode() if isinstance(value, str) else bytes(value)
        self._call(op="set", key=key, value=value.hex())

    def get(self, key: str) -> bytes:
        return bytes.fromhex(self._call(op="get", key=key, timeout=self._timeout())["value"])

    def add(self, key: str, amount: int) -> int:
        return self._call(op="add", key=key, amount=amount)["value"]

    def compare_set(self, key: str, expected: str | bytes, desired: str | bytes) -> bytes:
        enc = lambda v: (v.encode() if isinstance(v, str) else bytes(v)).hex()
        return bytes.fromhex(self._call(op="compare_set", key=key, expected=enc(expected),
                                        desired=enc(desired))["value"])  # fmt: skip

    def check(self, keys: Sequence[str]) -> bool:
        return self._call(op="check", keys=list(keys))["value"]

    def wait(self, keys: Sequence[str], timeout: timedelta | None = None) -> None:
        self._call(op="wait", keys=list(keys), timeout=self._timeout(timeout))

    def delete_key(self, key: str) -> bool:
        return self._call(op="delete", key=key)["value"]

    def num_keys(self) -> int:
        return self._call(op="num_keys")["value"]


def _connect(host: str, port: int, timeout_s: float) -> socket.socket:
    """A TCP connection to the coordinator, retried until `timeout_s` (it may still be binding)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=min(5.0, timeout_s))
            sock.settimeout(None)
            return sock
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RendezvousError(f"cannot reach the coordinator at {host}:{port} ({exc.strerror or exc})"
                                      ) from None  # fmt: skip
            time.sleep(0.2)


def secret_from_environment() -> str:
    secret = os.environ.pop(SECRET_ENV, "")  # not inherited by anything the worker starts
    if not secret:
        raise RendezvousError(f"no run secret: the coordinator passes it in {SECRET_ENV}")
    return secret
