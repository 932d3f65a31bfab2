"""The data plane's MACs on a real gloo group of two processes: a message passes only under the
run's key, from the party it names, with the tag it was sent with."""

from __future__ import annotations

import multiprocessing
import socket
from datetime import timedelta

import torch

from suite.runtime import transport

SECRET = "ab" * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _party(rank: int, port: int, secrets: tuple[str, str], cases: list, results) -> None:
    """Rank 0 sends each case's tensor (on its own tag, or another), rank 1 receives it and says
    whether it was taken; both with their own idea of the run's secret."""
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", port, 2, rank == 0, timeout=timedelta(seconds=30))
    transport.join(store, rank, 2, 30)
    gloo = transport.GlooTransport({"a": 0, "b": 1}, "ab"[rank], transport.data_key(secrets[rank]))
    for sent_tag, expected_tag in cases:
        if rank == 0:
            gloo.send(torch.arange(6.0).reshape(2, 3), "b", sent_tag).wait(10)
            continue
        into = torch.empty(2, 3)
        try:
            gloo.recv(into, "a", expected_tag).wait(10)
            results.put(("taken", into.tolist()))
        except transport.AuthenticationError as exc:
            results.put(("refused", str(exc)))
    dist.barrier()
    dist.destroy_process_group()


def _exchange(secrets: tuple[str, str], cases: list) -> list:
    context = multiprocessing.get_context("spawn")
    results, port = context.Queue(), _free_port()
    parties = [context.Process(target=_party, args=(r, port, secrets, cases, results)) for r in (0, 1)]
    for p in parties:
        p.start()
    try:
        got = [results.get(timeout=60) for _ in cases]
    finally:
        for p in parties:
            p.join(timeout=30)
            p.kill()
    return got


def test_a_message_passes_under_the_runs_key_only():
    same = _exchange((SECRET, SECRET), [(7, 7)])
    assert same == [("taken", [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])]
    (outsider,) = _exchange(("cd" * 32, SECRET), [(7, 7)])
    assert outsider[0] == "refused" and "MAC does not match" in outsider[1]


def test_the_mac_names_the_message():
    """A MAC made for one message fails for another frame's slot (a replay), the other direction or
    other bytes."""
    key = transport.data_key(SECRET)
    tensor = torch.arange(4.0)
    made = transport._mac(key, tensor, "a", "b", 7)
    assert made == transport._mac(key, tensor.clone(), "a", "b", 7)
    assert made != transport._mac(key, tensor, "a", "b", 8)
    assert made != transport._mac(key, tensor, "b", "a", 7)
    assert made != transport._mac(key, tensor + 1, "a", "b", 7)
