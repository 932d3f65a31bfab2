"""Run outputs: a loadable Chrome trace, busy/idle arithmetic under overlap, provenance, atomic saving."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from suite.errors import UserError
from suite.runtime.metrics import Event, chrome_trace, device_table, run_metadata, save_results

DEVICES = ["d0", "d1"]
EVENTS = [
    Event("d0", 0, "compute", frame=0, stage=0, start_s=10.0, end_s=10.4),
    Event("d0", 0, "send", frame=0, stage=0, start_s=10.3, end_s=10.5, bytes=1000, peer="d1"),  # over compute
    Event("d0", 0, "send", frame=0, stage=0, start_s=10.35, end_s=10.45, bytes=500, peer="d1"),  # over send
    Event("d1", 1, "recv", frame=0, stage=1, start_s=10.3, end_s=10.5, bytes=1500, peer="d0"),
    Event("d1", 1, "compute", frame=0, stage=1, start_s=10.5, end_s=10.9),
]
RECEIVED_TOO = Event("d1", 1, "recv", frame=0, stage=1, start_s=10.5, end_s=10.55, bytes=500, peer="d0")


def test_event_rejects_unknown_kind_and_negative_duration():
    with pytest.raises(ValueError, match="kind"):
        Event("d0", 0, "think", 0, 0, 0.0, 1.0)
    with pytest.raises(ValueError, match="ends before"):
        Event("d0", 0, "compute", 0, 0, 1.0, 0.5)


def test_chrome_trace_has_a_process_per_device_and_tracks_that_nest():
    """Perfetto draws slices on one track only where they nest: the two sends posted together get a
    track each ("send", "send 2"); a send is joined by a flow to the receive it matches (the pair,
    the frame and the bytes), and only to one."""
    trace = json.loads(json.dumps(chrome_trace(EVENTS + [RECEIVED_TOO], DEVICES)))
    assert trace["displayTimeUnit"] == "ms"
    meta = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    names = {e["args"]["name"]: e["pid"] for e in meta if e["name"] == "process_name"}
    assert names == {"d0": 1, "d1": 2}
    tracks = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert set(tracks.values()) == {"compute", "send", "send 2", "recv"}
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(EVENTS) + 1
    first = spans[0]
    assert first["ts"] == 0 and first["dur"] == pytest.approx(400_000)
    assert first["name"] == "compute s0 f0" and first["pid"] == 1
    sends = [e for e in spans if e["cat"] == "send"]
    assert [tracks[(e["pid"], e["tid"])] for e in sends] == ["send", "send 2"]
    assert sends[0]["args"] == {"frame": 0, "stage": 0, "rank": 0, "bytes": 1000, "peer": "d1"}
    for (pid, tid), name in tracks.items():  # what Perfetto needs: slices on one track nest
        mine = sorted((e["ts"], e["ts"] + e["dur"]) for e in spans if (e["pid"], e["tid"]) == (pid, tid))
        assert all(a[1] <= b[0] for a, b in zip(mine, mine[1:])), name
    recvs = {e["args"]["bytes"]: e for e in spans if e["cat"] == "recv"}
    assert sends[1]["flow_out"] and recvs[500]["flow_in"] and sends[1]["bind_id"] == recvs[500]["bind_id"]
    assert "bind_id" not in sends[0] and "bind_id" not in recvs[1500]  # 1000 bytes sent, 1500 received


def test_chrome_trace_without_events_still_names_devices():
    trace = chrome_trace([], DEVICES)
    assert {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"} == set(DEVICES)


def test_events_from_outside_the_fleet_are_a_bug():
    with pytest.raises(ValueError, match="d9"):
        chrome_trace([Event("d9", 0, "compute", 0, 0, 0.0, 1.0)], DEVICES)


def test_device_table_unions_overlapping_busy_time():
    table = device_table(EVENTS, DEVICES, start_s=10.0, end_s=11.0).set_index("device")
    assert list(table.columns) == ["compute_s", "send_s", "send_wait_s", "recv_s", "recv_wait_s", "idle_s",
                                   "bytes_sent", "bytes_received", "utilisation"]  # fmt: skip
    d0, d1 = table.loc["d0"], table.loc["d1"]
    assert d0.compute_s == pytest.approx(0.4)
    assert d0.send_s == pytest.approx(0.2)  # two sends overlap: their union, not their sum
    assert d0.send_wait_s == 0  # 1000 and 500 bytes match no receive: transfer throughout
    assert d0.idle_s == pytest.approx(0.5)  # busy 10.0-10.5
    assert d0.bytes_sent == 1500 and d0.bytes_received == 0
    assert d0.utilisation == pytest.approx(0.4)
    assert d1.recv_s == pytest.approx(0.2) and d1.idle_s == pytest.approx(0.4)
    assert d1.recv_wait_s == 0  # its 1500 bytes match no send: transfer throughout
    assert d1.bytes_received == 1500


def test_a_receive_waits_for_its_sender_until_the_send_is_posted_then_transfers():
    """d1 waits from 1.0; d0 posts the matching send at 1.75 (d0 still computing before it), so 0.75 s
    of the 1.0 s receive is waiting and 0.25 s transfer. A send posted (by the aligned clocks) before
    its receive starts or after it ends is clamped into it: all transfer, or all waiting."""
    events = [
        Event("d0", 0, "compute", 0, 0, 0.0, 1.75),
        Event("d0", 0, "send", 0, 0, 1.75, 1.9, bytes=64, peer="d1"),
        Event("d1", 1, "recv", 0, 1, 1.0, 2.0, bytes=64, peer="d0"),
    ]
    d1 = device_table(events, DEVICES, 0.0, 4.0).set_index("device").loc["d1"]
    assert d1.recv_s == pytest.approx(1.0) and d1.recv_wait_s == pytest.approx(0.75)
    early = [Event("d0", 0, "send", 1, 0, 2.5, 2.6, bytes=8, peer="d1"),
             Event("d1", 1, "recv", 1, 1, 3.0, 3.5, bytes=8, peer="d0")]  # fmt: skip
    late = [Event("d0", 0, "send", 2, 0, 3.9, 4.0, bytes=8, peer="d1"),
            Event("d1", 1, "recv", 2, 1, 3.6, 3.8, bytes=8, peer="d0")]  # fmt: skip
    d1 = device_table(events + early + late, DEVICES, 0.0, 4.0).set_index("device").loc["d1"]
    assert d1.recv_s == pytest.approx(1.7) and d1.recv_wait_s == pytest.approx(0.75 + 0.2)


def test_receive_waits_count_once_where_receives_overlap_and_not_while_a_message_moves():
    """Two receives wait together over 0-1 (counted once); from 1 the first one's message moves, so
    its transfer, not the second's wait, is what 1-1.5 counts as; 1.5-2 waits again. A receive whose
    send is outside the events (another bytes count) is transfer throughout."""
    events = [
        Event("d0", 0, "send", 0, 0, 1.0, 1.1, bytes=10, peer="d1"),
        Event("d0", 0, "send", 0, 0, 2.0, 2.1, bytes=20, peer="d1"),
        Event("d1", 1, "recv", 0, 1, 0.0, 1.5, bytes=10, peer="d0"),
        Event("d1", 1, "recv", 0, 1, 0.0, 2.5, bytes=20, peer="d0"),
        Event("d1", 1, "recv", 0, 1, 3.0, 3.5, bytes=30, peer="d0"),
    ]
    d1 = device_table(events, DEVICES, 0.0, 4.0).set_index("device").loc["d1"]
    assert d1.recv_s == pytest.approx(3.0)
    assert d1.recv_wait_s == pytest.approx(1.0 + 0.5)  # 0-1 and 1.5-2; 1-1.5, 2-2.5 and 3-3.5 transfer
    clipped = device_table(events, DEVICES, 0.5, 1.2).set_index("device").loc["d1"]
    assert clipped.recv_s == pytest.approx(0.7) and clipped.recv_wait_s == pytest.approx(0.5)


def test_a_send_waits_for_its_receiver_until_the_receive_is_posted_then_transfers():
    """gloo's large sends block until the receive is posted. d0 posts two sends at 0 while d1 computes
    (waiting 0-1, counted once); d1 posts the first's receive at 1 and the second's at 2, so 1-1.5 the
    first message moves, 1.5-2 waits again and 2-2.5 transfers; a send matching no receive is transfer
    throughout. A receive posted before its send starts or after it ends is clamped into it."""
    events = [
        Event("d0", 0, "send", 0, 0, 0.0, 1.5, bytes=10, peer="d1"),
        Event("d0", 0, "send", 0, 0, 0.0, 2.5, bytes=20, peer="d1"),
        Event("d1", 1, "compute", 0, 1, 0.0, 1.0),
        Event("d1", 1, "recv", 0, 1, 1.0, 1.6, bytes=10, peer="d0"),
        Event("d1", 1, "recv", 0, 1, 2.0, 2.6, bytes=20, peer="d0"),
        Event("d0", 0, "send", 0, 0, 3.0, 3.5, bytes=30, peer="d1"),
    ]
    d0 = device_table(events, DEVICES, 0.0, 4.0).set_index("device").loc["d0"]
    assert d0.send_s == pytest.approx(3.0) and d0.send_wait_s == pytest.approx(1.0 + 0.5)
    clipped = device_table(events, DEVICES, 0.5, 1.2).set_index("device").loc["d0"]
    assert clipped.send_s == pytest.approx(0.7) and clipped.send_wait_s == pytest.approx(0.5)
    early = [Event("d1", 1, "recv", 1, 1, 3.5, 3.7, bytes=8, peer="d0"),
             Event("d0", 0, "send", 1, 0, 3.6, 3.7, bytes=8, peer="d1")]  # fmt: skip
    late = [Event("d0", 0, "send", 2, 0, 3.8, 3.9, bytes=8, peer="d1"),
            Event("d1", 1, "recv", 2, 1, 3.95, 4.0, bytes=8, peer="d0")]  # fmt: skip
    table = device_table(events + early + late, DEVICES, 0.0, 4.0).set_index("device")
    assert table.loc["d0", "send_s"] == pytest.approx(3.2)
    assert table.loc["d0", "send_wait_s"] == pytest.approx(1.5 + 0.1)  # early all transfer, late all waiting
    assert table.loc["d1", "recv_wait_s"] == pytest.approx(0.1)  # the early receive waits for its send


def test_device_table_clips_to_the_window_and_lists_idle_devices():
    table = device_table(EVENTS, [*DEVICES, "d2"], start_s=10.2, end_s=10.6).set_index("device")
    assert table.loc["d0", "compute_s"] == pytest.approx(0.2)
    assert table.loc["d1", "compute_s"] == pytest.approx(0.1)
    assert table.loc["d0", "idle_s"] == pytest.approx(0.1)
    assert table.loc["d2"].tolist() == [0, 0, 0, 0, 0, pytest.approx(0.4), 0, 0, 0]
    with pytest.raises(ValueError, match="empty window"):
        device_table(EVENTS, DEVICES, 1.0, 1.0)


def test_run_metadata_records_provenance_and_extras():
    meta = run_metadata(fleet="pico-homo-4", plan_hash="abc")
    assert meta["fleet"] == "pico-homo-4" and meta["plan_hash"] == "abc"
    assert set(meta["versions"]) == {"python", "torch", "numpy", "onnxruntime", "pandas", "suite"}
    assert meta["versions"]["suite"] and meta["cpu_count"] >= 1 and meta["torch_threads"] >= 1
    assert meta["timestamp_utc"].endswith("+00:00")
    if meta["git"] is not None:  # None when the package is installed outside a checkout
        assert len(meta["git"]["commit"]) == 40 and isinstance(meta["git"]["dirty"], bool)
    json.dumps(meta)


def test_save_results_writes_tables_and_documents(tmp_path):
    table = pd.DataFrame({"device": ["d0"], "compute_s": [0.5]})
    out = save_results(tmp_path / "run", {"devices": table}, {"summary": {"n": table["compute_s"].sum()}})
    assert out == tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["devices.csv", "summary.json"]
    assert pd.read_csv(out / "devices.csv").equals(table)
    assert json.loads((out / "summary.json").read_text()) == {"n": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging directory left
    assert os.stat(out).st_mode & 0o777 == 0o755


def test_save_results_fills_an_empty_directory_but_never_overwrites(tmp_path):
    (tmp_path / "empty").mkdir()
    save_results(tmp_path / "empty", {}, {"summary": {}})
    with pytest.raises(UserError, match="already exists and is not empty"):
        save_results(tmp_path / "empty", {}, {"summary": {"again": True}})
    assert json.loads((tmp_path / "empty" / "summary.json").read_text()) == {}


def test_interrupted_save_leaves_nothing(tmp_path):
    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        save_results(tmp_path / "run", {"t": pd.DataFrame({"a": [1]})}, {"summary": {"x": Unserialisable()}})
    assert list(tmp_path.iterdir()) == []


def test_result_names_must_be_plain_file_names(tmp_path):
    with pytest.raises(ValueError, match="plain file names"):
        save_results(Path(tmp_path / "run"), {"../escape": pd.DataFrame()}, {})


def test_host_state_names_the_other_busy_processes():
    import subprocess
    import sys

    from suite.runtime.metrics import host_state

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        state = host_state(sample_s=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert len(state["load_avg"]) == 3 and state["cores"] >= 1
    busy = {p["pid"]: p for p in state["busy"]}
    assert spinner.pid in busy and busy[spinner.pid]["cpu"] >= 0.2, state  # a whole core when it is free
