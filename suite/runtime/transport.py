"""Messages between parties: gloo over TCP between processes, or queues inside one process.

Gloo (torch.distributed) carries the runtime: point-to-point `isend`/`irecv` with tags, the same
code on one host or many. Its group forms through the run's authenticated rendezvous
(`rendezvous.py`), and `pin_gloo` keeps its sockets on the interface of the address the run uses,
not whatever the host name resolves to. `LocalTransport` plays the same program with every party
in one process, to replay a frame and find the first node that differs.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

MAC_BYTES = 16


class AuthenticationError(RuntimeError):
    """A message whose MAC does not match: not sent by that party of this run, or altered on the way."""


def data_key(secret: str) -> bytes:
    """The key of the data plane's MACs, from the run's secret (which only its parties hold)."""
    return hashlib.blake2b(secret.encode(), digest_size=32, person=b"suite-transfers").digest()


def _mac(key: bytes, tensor: torch.Tensor, sender: str, receiver: str, tag: int) -> bytes:
    """Keyed BLAKE2b over a message's bytes, who sends it to whom, and its tag (the frame and the
    message: a message replayed from another frame or pair does not match)."""
    digest = hashlib.blake2b(key=key, digest_size=MAC_BYTES)
    digest.update(f"{sender}>{receiver}#{tag}:{tensor.dtype}{tuple(tensor.shape)};".encode())
    digest.update(tensor.numpy().data.cast("B") if tensor.numel() else b"")
    return digest.digest()


@dataclass
class GlooTransport:
    """Parties by name on the ranks of the default process group.

    Gloo's sockets are not authenticated: anyone who reaches a port can pair with it. So each message
    is followed, with the same tag, by its MAC under the run's key (`data_key`), and a receiver
    checks it before the tensor is used: a party that has not proved the run's secret cannot make
    a run compute on its bytes (gloo keeps a pair's messages of one tag in order)."""

    ranks: dict[str, int]
    party: str
    key: bytes

    def send(self, tensor: torch.Tensor, peer: str, tag: int):
        rank = self.ranks[peer]
        sending = dist.isend(tensor, dst=rank, tag=tag)  # the MAC is computed while the bytes travel
        mac = torch.frombuffer(bytearray(_mac(self.key, tensor, self.party, peer, tag)), dtype=torch.uint8)
        return _GlooHandle([sending, dist.isend(mac, dst=rank, tag=tag)])

    def recv(self, tensor: torch.Tensor, peer: str, tag: int):
        mac, rank = torch.empty(MAC_BYTES, dtype=torch.uint8), self.ranks[peer]
        works = [dist.irecv(tensor, src=rank, tag=tag), dist.irecv(mac, src=rank, tag=tag)]
        expected = lambda: _mac(self.key, tensor, peer, self.party, tag)
        return _GlooHandle(works, lambda: hmac.compare_digest(bytes(mac.numpy()), expected()))


@dataclass
class _GlooHandle:
    works: list
    authentic: Callable[[], bool] | None = None  # a receive: checks the MAC once the bytes are in

    def wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for work in self.works:
            work.wait(timedelta(seconds=max(deadline - time.monotonic(), 0.001)))
        if self.authentic is not None and not self.authentic():
            raise AuthenticationError("its MAC does not match: not sent by that party of this run, or "
                                      "altered on the way")  # fmt: skip


SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


def interface_of(address: str) -> str | None:
    """The name of this host's network interface that holds IPv4 `address` (None: none does)."""
    try:
        packed = socket.inet_aton(address)
    except OSError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                request = struct.pack("256s", name.encode()[:15])
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on it
                continue
            if answer[20:24] == packed:
                return name
    return None


def route_to(host: str, port: int) -> str:
    """This host's address on the route to `host` (no packet is sent: a UDP socket only routes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return probe.getsockname()[0]


def pin_gloo(address: str) -> None:
    """Keep gloo's sockets on the interface that holds `address` (GLOO_SOCKET_IFNAME)."""
    interface = interface_of(address)
    if interface is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = interface


def join(store: dist.Store, rank: int, world: int, timeout_s: float) -> None:
    """Join the gloo process group: returns once every rank has joined."""
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))  # fmt: skip


CLOCK_ROUNDS = 8


def failure_reason(exc: Exception, timeout_s: float) -> str:
    """What a failed gloo wait or post means, in words (gloo raises a RuntimeError naming its source
    file), for a one-line error."""
    if isinstance(exc, AuthenticationError):
        return str(exc)
    text = str(exc).lower()
    if "closed by peer" in text:
        return "the connection closed"
    if "pair closure" in text:
        return "the connection was closed after an earlier timeout"
    if "timed out" in text:
        return f"nothing within {timeout_s:g} s"
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


CLOCK_TAG = 2**31 - 1  # above every frame message's tag (`Runner._tag`)


def clock_offset(gloo: GlooTransport, peer: str, timeout_s: float, clock=time.perf_counter) -> float:
    """Coordinator side: the peer's clock minus ours, from the round trip with the smallest delay
    (Cristian's method), so timelines from several hosts line up."""
    best = (float("inf"), 0.0)
    reply = torch.zeros(1, dtype=torch.float64)
    for _ in range(CLOCK_ROUNDS):
        start = clock()
        gloo.send(torch.zeros(1, dtype=torch.float64), peer, CLOCK_TAG).wait(timeout_s)
        gloo.recv(reply, peer, CLOCK_TAG).wait(timeout_s)
        end = clock()
        best = min(best, (end - start, float(reply) - (start + end) / 2))
    return best[1]


def answer_clock(gloo: GlooTransport, coordinator: str, timeout_s: float, clock=time.perf_counter) -> None:
    """Worker side of `clock_offset`."""
    ping = torch.zeros(1, dtype=torch.float64)
    for _ in range(CLOCK_ROUNDS):
        gloo.recv(ping, coordinator, CLOCK_TAG).wait(timeout_s)
        gloo.send(torch.tensor([clock()], dtype=torch.float64), coordinator, CLOCK_TAG).wait(timeout_s)


@dataclass
class LocalTransport:
    """Every party in one process (one thread each); a message is a queue entry."""

    boxes: dict[tuple[str, str, int], queue.Queue] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _box(self, src: str, dst: str, tag: int) -> queue.Queue:
        with self.lock:
            return self.boxes.setdefault((src, dst, tag), queue.Queue(maxsize=1))

    def party(self, name: str) -> _LocalEnd:
        return _LocalEnd(self, name)


@dataclass
class _LocalEnd:
    hub: LocalTransport
    name: str

    def send(self, tensor: torch.Tensor, peer: str, tag: int):
        self.hub._box(self.name, peer, tag).put(tensor.clone())
        return _Done()

    def recv(self, tensor: torch.Tensor, peer: str, tag: int):
        return _LocalRecv(self.hub._box(peer, self.name, tag), tensor)


class _Done:
    def wait(self, timeout_s: float) -> None:
        return None


@dataclass
class _LocalRecv:
    box: queue.Queue
    into: torch.Tensor

    def wait(self, timeout_s: float) -> None:
        try:
            self.into.copy_(self.box.get(timeout=timeout_s))
        except queue.Empty:
            raise RuntimeError(f"timed out after {timeout_s} s") from None
