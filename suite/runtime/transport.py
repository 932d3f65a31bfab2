"""Messages between parties: gloo over TCP between processes, or queues inside one process.

Gloo (torch.distributed) carries the runtime: point-to-point `isend`/`irecv` with tags, the same
code on one host or many. Its group forms through the run's authenticated rendezvous
(`rendezvous.py`), and `pin_gloo` keeps its sockets on the interface of the address the run uses,
not whatever the host name resolves to. `LocalTransport` plays the same program with every party
in one process, to replay a frame and find the first node that differs.
"""

from __future__ import annotations

import fcntl
import os
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class GlooTransport:
    """Parties by name on the ranks of the default process group."""

    ranks: dict[str, int]

    def send(self, tensor: torch.Tensor, peer: str, tag: int):
        return _GlooHandle(dist.isend(tensor, dst=self.ranks[peer], tag=tag))

    def recv(self, tensor: torch.Tensor, peer: str, tag: int):
        return _GlooHandle(dist.irecv(tensor, src=self.ranks[peer], tag=tag))


@dataclass
class _GlooHandle:
    work: object

    def wait(self, timeout_s: float) -> None:
        self.work.wait(timedelta(seconds=timeout_s))


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


def clock_offset(peer_rank: int, clock=time.perf_counter) -> float:
    """Coordinator side: the peer's clock minus ours, from the round trip with the smallest delay
    (Cristian's method), so timelines from several hosts line up."""
    best = (float("inf"), 0.0)
    reply = torch.zeros(1, dtype=torch.float64)
    for _ in range(CLOCK_ROUNDS):
        start = clock()
        dist.send(torch.zeros(1, dtype=torch.float64), dst=peer_rank, tag=0)
        dist.recv(reply, src=peer_rank, tag=0)
        end = clock()
        best = min(best, (end - start, float(reply) - (start + end) / 2))
    return best[1]


def answer_clock(clock=time.perf_counter) -> None:
    """Worker side of `clock_offset`."""
    ping = torch.zeros(1, dtype=torch.float64)
    for _ in range(CLOCK_ROUNDS):
        dist.recv(ping, src=0, tag=0)
        dist.send(torch.tensor([clock()], dtype=torch.float64), dst=0, tag=0)


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
