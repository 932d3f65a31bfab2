"""A TCP sender and receiver for `suite lab check`, run inside the lab's namespaces (standard library only,
so they start fast): `python -m suite.orchestrate.netprobe recv HOST` / `send HOST PORT SECONDS`.

The receiver timestamps data with the kernel's arrival time (SO_TIMESTAMPNS), not the time it got
around to reading it: on a loaded host a reader that is not scheduled for 100 ms and then catches up
would otherwise make a shaped link look 10% faster or slower than it is.
"""

import json
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = 35  # Linux; the control message it delivers has the same number (SCM_TIMESTAMPNS)
SAMPLE_S = 0.005  # keep at most one sample per this much arrival time


def receive(host: str) -> None:
    """Print `ready PORT`, take one connection, and at its end print [[arrival time, bytes so far], ...]."""
    with socket.create_server((host, 0)) as server:
        print(f"ready {server.getsockname()[1]}", flush=True)
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            samples, total, last = [[time.time(), 0]], 0, 0.0
            while True:
                data, ancillary, _, _ = conn.recvmsg(1 << 20, socket.CMSG_SPACE(16))
                if not data:
                    break
                total += len(data)
                stamps = [_seconds(data) for level, kind, data in ancillary if kind == SO_TIMESTAMPNS]
                arrived = stamps[0] if stamps else time.time()
                if arrived - last >= SAMPLE_S:
                    samples.append([arrived, total])
                    last = arrived
            samples.append([time.time(), total])
    print(json.dumps(samples))


def _seconds(timespec: bytes) -> float:
    sec, nsec = struct.unpack("qq", timespec[:16])
    return sec + nsec * 1e-9


def send(host: str, port: int, seconds: float) -> None:
    """Stream zeros for `seconds`; print when the stream started and ended (wall clock, as the receiver)."""
    block = bytes(1 << 16)
    with socket.create_connection((host, port), timeout=30) as conn:
        start = time.time()
        while time.time() - start < seconds:
            conn.sendall(block)
        end = time.time()
    print(json.dumps({"start": start, "end": end}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "recv":
        receive(args[0])
    else:
        send(args[0], int(args[1]), float(args[2]))
