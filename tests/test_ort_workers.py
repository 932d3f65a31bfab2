"""onnxruntime workers start from the coordinator's folded model: no module built, nothing exported,
and only the weights of their own nodes read; a damaged file is one line naming it; a device keeps
one copy of each folded model's content."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from suite.backends.folded import DATA, MODEL, FoldedModelError, WeightFile, content_digest
from suite.backends.ort import OrtBackend, folded_model
from suite.errors import UserError
from suite.fleet import uniform_fleet
from suite.graph import from_model
from suite.models.load import LoadedModel
from suite.orchestrate.remote import RemoteWorkers
from suite.plan import COORDINATOR
from suite.profile import priced_here
from suite.runtime import worker
from suite.runtime.coordinator import Coordinator
from suite.runtime.engine import Runner, compile_program, parties, prune_weights, segments
from suite.runtime.lowering import lower_plan, model_graph
from suite.runtime.measurement import RunOptions
from suite.runtime.transport import LocalTransport
from suite.schemes import make_plan
from suite.verify import compare_tensors

KEY = bytes(32)  # the data plane's MAC key: any key for a worker that is only built here


def _net(seed: int = 0) -> LoadedModel:
    """Convolutions, a batch norm that folds, and a two-layer head: every weight over 1 KiB, so
    each lies in the data file."""
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                           nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))  # fmt: skip
    return LoadedModel("net", (3, 8, 8), module=module.eval().requires_grad_(False))


@pytest.fixture(scope="module")
def coordinator():
    """The coordinator's side: the prepared graph, its folded model, the model graph."""
    loaded = _net()
    prepared = OrtBackend(threads=1).prepare(loaded)
    return prepared, folded_model(prepared.graph), from_model(loaded)


def _config(coordinator, scheme: str) -> worker.WorkerConfig:
    """The run configuration a worker finds in the store, for `scheme` on two devices."""
    prepared, _, model = coordinator
    fleet = priced_here(uniform_fleet(2), "onnxruntime")
    plan = lower_plan(make_plan(scheme, model, fleet), model, prepared.graph, fleet)
    ranks = {p: r for r, p in enumerate(parties(plan))}
    config = worker.WorkerConfig(plan.to_dict(), ranks, "onnxruntime", 1, 30.0, {p: 1 for p in ranks})
    return worker.WorkerConfig.from_json(config.to_json())  # as it travels through the store


def _args(rank: int, model_file: Path | None) -> argparse.Namespace:
    return argparse.Namespace(rank=rank, model="net", input_size="3x8x8", seed=0,
                              model_file=None if model_file is None else str(model_file))  # fmt: skip


@pytest.mark.parametrize("scheme", ["deepthings", "modnn"])
def test_a_worker_reads_only_its_own_nodes_weights_from_the_folded_model(coordinator, monkeypatch, scheme):
    """A worker as `suite.runtime.worker` builds one: it never builds the module or exports it; it
    reads (for its digests) and references (for its sessions) the weights of its own nodes only,
    and its digests are the coordinator's. DeepThings leaves the head's weights to one device;
    MoDNN splits the linear layers, and each device references only its rows of them."""
    prepared, folder, _ = coordinator
    graph, config = prepared.graph, _config(coordinator, scheme)

    def refused(*args, **kwargs):
        raise AssertionError("an onnxruntime worker built or exported the module")

    monkeypatch.setattr("suite.models.load.load_model", refused)
    monkeypatch.setattr("suite.backends.ort.export_onnx", refused)
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: None)  # once a process, and this is one
    digested, referenced = set(), []
    chunks, session = WeightFile.chunks, OrtBackend.session
    monkeypatch.setattr(WeightFile, "chunks", lambda self, c, t: digested.add(c) or chunks(self, c, t))
    monkeypatch.setattr(OrtBackend, "session", lambda self, model, level="all", threads=None: (
        referenced.extend(_references(model)) or session(self, model, level, threads)))  # fmt: skip
    least = None
    for rank in (1, 2):
        digested.clear()
        referenced.clear()
        runner, report, weights = worker._build(config, _args(rank, folder / MODEL), KEY)
        stored = runner.backend._weights
        own = {c for n in runner.program.nodes if graph[n].onnx for c in graph[n].onnx[1]}
        own &= set(stored.tensors)
        assert weights == {n: graph[n].param_digest() for n in weights} and report.rank == rank
        assert digested & set(stored.tensors) == own
        spans = [(stored.tensors[c].offset, stored.tensors[c].offset + stored.tensors[c].length) for c in own]
        assert referenced and all(any(a <= offset and offset + length <= b for a, b in spans)
                                  for offset, length in referenced)  # fmt: skip
        assert not any(n.params or (n.onnx and n.onnx[1]) for n in runner.graph.nodes.values())
        total = sum(length for _, length in referenced)
        least = total if least is None else min(least, total)
    assert least < sum(t.length for t in stored.tensors.values())  # a device that never reads some


def _references(model_bytes: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every weight a session's model references in the data file."""
    model = onnx.ModelProto.FromString(model_bytes)
    found = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            assert info["location"] == DATA
            found.append((int(info["offset"]), int(info["length"])))
    return found


def test_an_onnxruntime_worker_without_the_folded_model_says_so(coordinator, monkeypatch):
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: None)
    with pytest.raises(UserError, match="pass --model-file"):
        worker._build(_config(coordinator, "pico"), _args(1, None), KEY)


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "folded"
    shutil.copytree(folder, copy)
    return copy


@pytest.mark.parametrize("damage,said", [
    (lambda f: os.truncate(f / DATA, (f / DATA).stat().st_size - 1), "is truncated"),
    (lambda f: (f / DATA).unlink(), "does not exist"),
    (lambda f: (f / MODEL).write_bytes(b"not a model"), "is not a readable ONNX model"),
    (lambda f: shutil.rmtree(f), "does not exist"),
])  # fmt: skip
def test_a_damaged_folded_model_is_one_line_naming_the_file(coordinator, tmp_path, damage, said):
    copy = _copy(coordinator[1], tmp_path)
    damage(copy)
    with pytest.raises(FoldedModelError, match=said) as raised:
        OrtBackend().load_folded(copy / MODEL)
    assert str(copy) in str(raised.value) and "\n" not in str(raised.value)


def test_a_weight_changed_in_the_file_is_named_by_the_coordinators_check(coordinator, tmp_path):
    """Bytes changed in place (same size): the worker's digest of the node differs from the
    coordinator's, and the run stops naming the device, the node and the file it read."""
    prepared, folder, _ = coordinator
    copy = _copy(folder, tmp_path)
    backend = OrtBackend()
    graph = backend.load_folded(copy / MODEL)
    name = next(n for n in graph.nodes if graph[n].op == "linear")
    weight = backend._weights.tensors[graph[name].onnx[0].input[1]]
    with (copy / DATA).open("r+b") as data:
        data.seek(weight.offset)
        data.write(bytes(4))
    digest = graph[name].param_digest(backend.weight_bytes)
    assert digest != prepared.graph[name].param_digest()
    check = Coordinator(prepared.graph, backend, None, [], {}, RunOptions("net", (3, 8, 8)))
    said = f"device dev0 read other weights for node '{name}' from {copy / MODEL}"
    with pytest.raises(UserError, match=said):
        check._check_weights({"dev0": {name: digest}}, {"dev0": str(copy / MODEL)})


def test_a_folded_model_is_known_by_its_content(coordinator):
    """The same model and seed fold to the same bytes (a device's copy is found again), another
    seed to another digest (a device never reuses a copy made for other weights)."""
    _, folder, _ = coordinator
    again, other = OrtBackend().prepare(_net(0)).graph, OrtBackend().prepare(_net(1)).graph
    assert content_digest(folded_model(again)) == content_digest(folder)
    assert content_digest(folded_model(other)) != content_digest(folder)


def test_the_folded_model_lives_as_long_as_its_graph():
    prepared = OrtBackend().prepare(_net())
    folder = folded_model(prepared.graph)
    assert sorted(p.name for p in folder.iterdir()) == [MODEL, DATA]
    del prepared
    assert not folder.exists()


class _Device:
    """A device's shell and SFTP, on this host: what `RemoteWorkers.place` asks of a connection."""

    def __init__(self, log: list[str]):
        self.log = log

    def run(self, command: str, **kwargs):
        self.log.append(command.split()[0])
        done = subprocess.run(command, shell=True, capture_output=True, text=True)
        return SimpleNamespace(exited=done.returncode, stdout=done.stdout, stderr=done.stderr)

    def put(self, local: str, remote: str):
        self.log.append("put")
        shutil.copyfile(local, remote)

    def close(self):
        pass


def test_a_device_gets_one_copy_of_each_folded_model(coordinator, tmp_path, monkeypatch):
    """Copied into the device's work folder under its content digest, once: a later run copies
    nothing; another model is another folder; no partial copy is left behind."""
    _, folder, _ = coordinator
    log: list[str] = []
    monkeypatch.setattr("suite.orchestrate.remote.connect", lambda *a, **k: _Device(log))
    host = SimpleNamespace(name="d0", address="d0:22", workdir=str(tmp_path / "work"))
    inventory = SimpleNamespace(host=lambda name: host, known_hosts=tmp_path / "known_hosts")
    path = RemoteWorkers(inventory, tmp_path / "logs").place("d0", folder)
    assert path == f"{host.workdir}/models/{content_digest(folder)}/{MODEL}" and log.count("put") == 2
    assert (Path(path).parent / DATA).read_bytes() == (folder / DATA).read_bytes()
    log.clear()
    assert RemoteWorkers(inventory, tmp_path / "logs").place("d0", folder) == path and "put" not in log
    other = folded_model(OrtBackend().prepare(_net(1)).graph)
    assert RemoteWorkers(inventory, tmp_path / "logs").place("d0", other) != path
    assert sorted(p.name for p in (tmp_path / "work" / "models").iterdir()) == sorted(
        [content_digest(folder), content_digest(other)])  # fmt: skip


def test_a_run_on_onnxruntime_workers_leaves_no_folded_model_behind(tmp_path):
    """A real run: the workers load the coordinator's folded model, every frame is exact, and the
    model's folder goes with the coordinator."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-m", "suite", "run", "--model", "resnet18", "--input-size",
                           "3x32x32", "--scheme", "pico", "--devices", "2", "--backend", "onnxruntime",
                           "--frames", "2", "--warmup", "0", "--no-baseline", "--json",
                           "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(scratch)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bit_exact"]
    assert not list(scratch.glob("suite-folded-*"))


def test_a_folded_model_left_by_a_killed_process_is_removed_by_the_next_fold(tmp_path, monkeypatch):
    """A process killed outright never runs its finaliser; the next process that folds a model removes
    that process's folder, and leaves a living process's and a folder it cannot attribute."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    left = tmp_path / f"suite-folded-{gone}-abc"
    living = tmp_path / f"suite-folded-{os.getpid()}-def"
    unnamed = tmp_path / "suite-folded-xyz"
    for folder in (left, living, unnamed):
        folder.mkdir()
        (folder / MODEL).write_bytes(b"weights")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    loaded = LoadedModel("tiny", (3, 8, 8), nn.Sequential(nn.Conv2d(3, 4, 3)).eval())
    graph = OrtBackend().prepare(loaded).graph
    assert not left.exists() and living.exists() and unnamed.exists()
    assert folded_model(graph).name.startswith(f"suite-folded-{os.getpid()}-")


def _transposed_head() -> LoadedModel:
    """An ONNX file whose linear layer is a Gemm of a weight stored transposed (transB=0)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((48, 8)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias")
    nodes = [helper.make_node("Relu", ["x"], ["relu"]), helper.make_node("Flatten", ["relu"], ["flat"]),
             helper.make_node("Gemm", ["flat", "weight", "bias"], ["y"])]  # fmt: skip
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8])
    graph = helper.make_graph(nodes, "head", [x], [y], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return LoadedModel("head", (3, 4, 4), onnx_bytes=model.SerializeToString())


@pytest.mark.parametrize(
    "head,scheme,runs",
    [
        (False, "deepthings", False),
        (False, "modnn", False),
        (False, "pico", True),
        (False, "modnn", True),
        (True, "modnn", True),
    ],
    ids=["deepthings", "modnn", "pico-runs", "modnn-runs", "modnn-runs-transposed-gemm"],
)
def test_workers_from_the_folded_model_are_bit_exact(head, scheme, runs, monkeypatch):
    """Every worker from the folded model, the coordinator from its prepared graph, a frame in this
    process: the monolithic session's output, bit for bit. With `runs`, linear layers are computed
    in runs of a few rows, as VGG-16's are (a transposed Gemm weight's rows read from its columns)."""
    gemms, session = [], OrtBackend.session
    monkeypatch.setattr(OrtBackend, "session", lambda self, model, level="all", threads=None: gemms.extend(
        n.name for n in onnx.ModelProto.FromString(model).graph.node if n.op_type == "Gemm") or session(
        self, model, level, threads))  # fmt: skip
    if runs:
        monkeypatch.setattr("suite.backends.ort.PREPACK_BYTES", 512)
    loaded = _transposed_head() if head else _net()
    prepared = OrtBackend(threads=1).prepare(loaded)
    graph, model, fleet = prepared.graph, from_model(loaded), uniform_fleet(2)
    plan = lower_plan(make_plan(scheme, model, fleet), model, graph, fleet)
    x = torch.randn(1, *loaded.input_shape, generator=torch.Generator().manual_seed(3))
    assert compare_tensors(_frame_on_workers(plan, graph, x), prepared.monolithic(x)).bit_exact
    assert any("__rows" in g for g in gemms) == runs


def _frame_on_workers(plan, graph, x: torch.Tensor) -> torch.Tensor:
    """One frame of `plan` on `graph`'s folded model: every worker from the folded model, the
    coordinator from the prepared graph, each party in a thread of this process."""
    local, runners = LocalTransport(), {}
    for party in parties(plan):
        backend = OrtBackend(threads=1)
        own = graph if party == COORDINATOR else backend.load_folded(folded_model(graph) / MODEL)
        program = compile_program(plan, own, party)
        compiled = backend.compile(prune_weights(own, program), segments(program, own))
        runners[party] = Runner(compiled.graph, program, backend, local.party(party), 60.0)
    held: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda p=p: held.update({p: runners[p].frame(0, x if p == COORDINATOR
                                                                                   else None)}))
               for p in runners]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return held[COORDINATOR][graph.outputs[0]]


def test_a_conv_onnxruntime_cannot_tile_exactly_runs_whole_on_a_worker():
    """A 21-channel conv onnxruntime keeps in plain layout (its sum regrouped by the output's size):
    the plan made on the module's graph runs it whole on one device, and the frame is exact."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 21, 3, stride=2, padding=1), nn.ReLU(),
                           nn.Conv2d(21, 21, 3, padding=1))  # fmt: skip
    loaded = LoadedModel("odd", (3, 32, 32), module=module.eval().requires_grad_(False))
    prepared = OrtBackend(threads=2).prepare(loaded)
    model, fleet = model_graph(loaded, prepared.graph), uniform_fleet(2)
    assert not model["_2"].spatial and "plain layout" in model["_2"].attrs["untiled"]
    plan = lower_plan(make_plan("pico", model, fleet), model, prepared.graph, fleet)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert compare_tensors(_frame_on_workers(plan, prepared.graph, x), prepared.monolithic(x)).bit_exact


def test_a_worker_asks_onnxruntime_for_its_graphs_layout_once(coordinator, monkeypatch):
    """The layout (and the untiled marks) follow shapes, not weights: a worker asks for them when it
    loads the folded model, and the weight-pruned graph it compiles keeps them."""
    prepared, folder, model = coordinator
    asked, layout = [], OrtBackend._layout
    monkeypatch.setattr(
        OrtBackend, "_layout", lambda self, graph: asked.append(graph.name) or layout(self, graph)
    )
    fleet = uniform_fleet(2)
    plan = lower_plan(make_plan("pico", model, fleet), model, prepared.graph, fleet)
    backend = OrtBackend(threads=1)
    own = backend.load_folded(folder / MODEL)
    program = compile_program(plan, own, parties(plan)[1])
    backend.compile(prune_weights(own, program), segments(program, own))
    assert asked == ["net"]
