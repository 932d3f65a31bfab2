"""The runtime on onnxruntime: plans made on the model graph run on onnxruntime's own graph (batch
norms folded, names kept), in one process and on real workers, every output bit-exact."""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from toys import suite

from suite.backends import SegmentCall, run_segment
from suite.backends.export import _AveragingProducts
from suite.backends.ort import OrtBackend
from suite.fleet import OpCost, load_fleet, uniform_fleet
from suite.graph import from_model
from suite.models.load import LoadedModel, load_model
from suite.plan import COORDINATOR, PlanError, build_stages, save_plan
from suite.profile import measure_profile, priced_here
from suite.regions import WHOLE, FeatureRange, feature_region
from suite.runtime.engine import Runner, compile_program, parties, prune_weights, segments
from suite.runtime.lowering import lower_plan
from suite.runtime.measurement import RunOptions
from suite.runtime.replay import locate_mismatch, replay
from suite.runtime.setup import set_up_run
from suite.runtime.transport import LocalTransport
from suite.schemes import SCHEMES, make_plan
from suite.verify import compare_tensors

SMALL = {"vgg16": (3, 64, 64), "resnet18": (3, 64, 64), "inception_v3": (3, 160, 160)}


class _Head(nn.Module):
    """conv + batch norm + in-place ReLU, a dropout, and a linear head: what onnxruntime folds or drops."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu, self.drop, self.fc = nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.relu(self.bn(self.conv(x))), 1)))


def _head() -> LoadedModel:
    torch.manual_seed(0)
    module = _Head().eval().requires_grad_(False)
    module.bn.running_var.uniform_(0.5, 1.5)  # a batch norm that is not the identity
    return LoadedModel("head", (3, 6, 6), module=module)


def test_onnxruntime_graph_keeps_the_model_graph_names():
    """Folded nodes are gone and a fused node keeps the last name it absorbs; the rest is named as
    torch.fx names it, the in-place ReLU included."""
    loaded = _head()
    model, graph = from_model(loaded), OrtBackend().prepare(loaded).graph
    assert graph.source == "onnxruntime" and graph.name == "head" and graph.input == model.input
    assert set(graph.nodes) == set(model.nodes) - {"conv", "drop"}
    assert graph["bn"].op == "conv" and graph["relu"].op == "relu" and graph["fc"].inputs == ("flatten",)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_run_setup_plans_on_the_model_graph_and_checks_each_frame_on_the_backend(tmp_path, backend):
    """`set_up_run`, as `suite run` and the nightly matrix use it: plans name the model graph's nodes
    whatever graph the backend runs (onnxruntime's folds the batch norm into the convolution), and
    the coordinator checks each frame against that frame's own output of the backend's model."""
    import skimage.io

    for name, seed in (("a.png", 1), ("b.png", 2)):  # small images: the bundled ones take seconds to scale
        pixels = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), np.uint8)
        skimage.io.imsave(tmp_path / name, pixels, check_contrast=False)
    loaded = _head()
    setup = set_up_run(loaded, backend, images=tmp_path)
    assert setup.model.source == "torch" and set(setup.model.nodes) == set(from_model(loaded).nodes)
    assert (setup.prepared.graph.source, setup.prepared.graph is setup.model) == (
        ("torch", True) if backend == "torch" else ("onnxruntime", False)
    )
    assert [f.name for f in setup.frames] == ["a.png", "b.png"]
    assert all(f.tensor.shape == (1, 3, 6, 6) for f in setup.frames)
    coordinator = setup.coordinator(uniform_fleet(2), RunOptions("head", loaded.input_shape, backend=backend))
    assert coordinator.graph is setup.prepared.graph and coordinator.model_graph is setup.model
    assert list(coordinator.references) == [f.name for f in setup.frames]
    with setup.backend.active():
        for frame in setup.frames:
            assert torch.equal(coordinator.references[frame.name], setup.prepared.monolithic(frame.tensor))
    assert not torch.equal(coordinator.references["a.png"], coordinator.references["b.png"])


@pytest.mark.parametrize("in_hw,out_hw", [((2, 2), (7, 7)), ((3, 5), (7, 7)), ((10, 9), (4, 3))])
def test_adaptive_pools_the_exporter_refuses_average_as_torch_does(in_hw, out_hw):
    x = torch.randn(2, 3, *in_hw)
    pooled = _AveragingProducts(in_hw, out_hw)(x)
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(x, out_hw), rtol=1e-6, atol=1e-6)


def test_lower_plan_moves_a_plan_onto_the_folded_graph_and_refuses_a_cut_inside_a_fold():
    loaded, fleet = _head(), uniform_fleet(2)
    model, graph = from_model(loaded), OrtBackend().prepare(loaded).graph
    plan = make_plan("modnn", model, fleet)  # the head's linear split across both devices
    lowered = lower_plan(plan, model, graph, fleet)
    assert lowered.graph == "onnxruntime" and plan.graph == "torch"
    assert [s.nodes for s in lowered.stages][0] == ["bn", "relu"]  # the conv folded into its batch norm
    assert lower_plan(lowered, model, graph, fleet) is lowered  # already on that graph
    rest = [n for n in model.nodes if n not in (model.input, "conv")]
    plan.stages = build_stages(model, plan.hub, [(0, ["conv"], [("dev0", {"conv": WHOLE})]),
                                                (0, rest, [("dev0", {"fc": WHOLE})])])  # fmt: skip
    with pytest.raises(PlanError, match="stage 0: 'conv' does not exist on onnxruntime, which folds it"):
        lower_plan(plan, model, graph, fleet)
    with pytest.raises(PlanError, match="names the onnx graph of head"):
        lower_plan(replace(plan, graph="onnx"), model, graph, fleet)


def test_split_linear_is_exact_at_any_cut_on_onnxruntime():
    """MoDNN's FC split as a Gemm of the weight's rows, from the rows a device holds: exact at cuts
    that are not multiples of 4 too (torch needs those), against the whole model on the same backend."""
    backend, loaded = OrtBackend(threads=1), _head()
    prepared = backend.prepare(loaded)
    graph, x = prepared.graph, torch.randn(1, 3, 6, 6)
    whole = run_segment(graph, ["bn", "relu", "flatten"], {graph.input: (WHOLE, x)}, backend)["flatten"]
    expected = prepared.monolithic(x)
    for rows in (FeatureRange(0, 3), FeatureRange(3, 7), FeatureRange(7, 10)):
        held = replace(graph["fc"], params={k: v[rows.rows].clone() for k, v in graph["fc"].params.items()},
                       attrs={**graph["fc"].attrs, "weight_rows": rows})  # fmt: skip
        share = replace(graph, nodes={**graph.nodes, "fc": held})
        out = run_segment(share, ["fc"], {"flatten": whole}, backend, {"fc": feature_region(held, rows)})
        assert compare_tensors(out["fc"][1], expected[:, rows.rows]).bit_exact, rows


@functools.lru_cache(maxsize=1)  # one model at a time: VGG-16 is 0.5 GB a copy
def _zoo_on_ort(name: str):
    """A zoo model's torch graph, its onnxruntime graph, an input, and the model's output for it
    on onnxruntime (the reference) and on torch."""
    loaded = load_model(name, SMALL[name], 0)
    prepared = OrtBackend(threads=1).prepare(loaded)
    x = torch.randn(1, *SMALL[name], generator=torch.Generator().manual_seed(1))
    return from_model(loaded), prepared.graph, x, prepared.monolithic(x), loaded.module(x)


# The zoo on two fleets: ResNet-18 in every run, Inception's branches on 3 devices in CI (`slow`), the
# rest (a minute or two each here) nightly (`zoo`).
REPLAYS = [pytest.param(m, f, marks=[] if m == "resnet18" else pytest.mark.slow
                        if (m, f) == ("inception_v3", "3") else pytest.mark.zoo)
           for m in sorted(SMALL) for f in ("3", "pico-hetero")]  # fmt: skip


@pytest.mark.parametrize("model_name,fleet", REPLAYS)
def test_every_scheme_replays_bit_exact_on_onnxruntime(model_name, fleet):
    """Every scheme's plan, made on the torch graph, lowered and played with every party in this
    process on onnxruntime: the output is the monolithic session's, bit for bit."""
    model, graph, x, reference, _ = _zoo_on_ort(model_name)
    fleet = uniform_fleet(3) if fleet == "3" else load_fleet(fleet)
    backend = OrtBackend(threads=1)  # the plans share the sessions of the segments they share
    for scheme in SCHEMES:
        plan = lower_plan(make_plan(scheme, model, fleet), model, graph, fleet)
        out = replay(plan, graph, backend, x, 60.0)[graph.outputs[0]]
        assert compare_tensors(out, reference).bit_exact, scheme


@pytest.mark.parametrize("model_name", [pytest.param(m, marks=[] if m == "resnet18" else pytest.mark.slow)
                                        for m in sorted(SMALL)])  # fmt: skip
def test_onnxruntime_computes_the_model(model_name):
    """The exported model is the module's (VGG-16's 7x7 pool at 64 px as averaging products)."""
    _, _, _, reference, on_torch = _zoo_on_ort(model_name)
    scale = float(on_torch.abs().max())  # rounding differs (folded batch norms): judged on the outputs' scale
    torch.testing.assert_close(reference, on_torch, rtol=1e-3, atol=1e-4 * scale)


def test_sessions_are_built_by_compile_one_per_stage_of_a_device(monkeypatch):
    """A worker's sessions are built before the first frame, one per stage however many tiles the
    device computes in it (DeepThings' 4x4 grid on two devices: 8 each); the compiled graph holds
    no weights, and the frames build no session."""
    loaded, fleet = load_model("resnet18", (3, 64, 64), 0), uniform_fleet(2)
    backend = OrtBackend(threads=1)
    graph = backend.prepare(loaded).graph
    model = from_model(loaded)
    plan = lower_plan(make_plan("deepthings", model, fleet, grid=(4, 4)), model, graph, fleet)
    program = compile_program(plan, graph, "dev0")
    calls = segments(program, graph)
    built = []
    monkeypatch.setattr(
        OrtBackend, "session", lambda self, model, level="all", threads=None: built.append(model) or _Run()
    )
    compiled = backend.compile(prune_weights(graph, program), calls)
    stages = {(c.names, tuple(c.held.items())) for c in calls}
    assert len(built) == compiled.executables == len(stages) < len(calls)
    assert not any(n.params or (n.onnx and n.onnx[1]) for n in compiled.graph.nodes.values())
    for call in calls:  # the frames find every session built
        values = {s: (region, torch.zeros(region.shape(graph[s].shape))) for s, region in call.held.items()}
        backend.run(compiled.graph, call.names, values, call.regions, call.outputs)
    assert len(built) == compiled.executables


class _Run:
    def run(self, outputs, feeds):
        return [np.zeros(1, np.float32) for _ in outputs]


def test_compiled_workers_are_bit_exact():
    """Every party with its own compiled backend, as workers run (a device's tiles of a stage in
    one session), over the in-process transport: DeepThings' 3x3 grid on two devices, and MoDNN."""
    loaded, fleet = load_model("resnet18", (3, 64, 64), 0), uniform_fleet(2)
    graph = OrtBackend().prepare(loaded).graph
    model = from_model(loaded)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    reference = OrtBackend().prepare(loaded).monolithic(x)
    for plan in (make_plan("deepthings", model, fleet, grid=(3, 3)), make_plan("modnn", model, fleet)):
        plan = lower_plan(plan, model, graph, fleet)
        local, runners = LocalTransport(), {}
        for party in parties(plan):
            backend, program = OrtBackend(threads=1), compile_program(plan, graph, party)
            compiled = backend.compile(prune_weights(graph, program), segments(program, graph))
            runners[party] = Runner(compiled.graph, program, backend, local.party(party), 60.0)
        assert compare_tensors(_play(runners, x)[graph.outputs[0]], reference).bit_exact, plan.scheme


def test_compiled_reuse_tiles_are_bit_exact_and_share_a_session_per_run():
    """DeepThings' FTP with data reuse on compiled workers: a device's B tiles each run up to a reused
    map, take the bands, and run on. Their runs are played run by run, so the tiles of one run share
    a session that computes them all at the first one's call with every input in place (played tile
    by tile, a session computed the later tiles' next runs from maps their previous runs had not made
    yet, 2e9 ULP off). A one-process replay of the plan finds no node differing either: it compares
    what each task computed, not the canvases it read (it blamed the first max pool's canvas)."""
    loaded, fleet = load_model("yolov2_16", (3, 160, 160), 0), uniform_fleet(1)
    backend = OrtBackend(threads=1)
    prepared = backend.prepare(loaded)
    graph, model = prepared.graph, from_model(loaded)
    plan = lower_plan(make_plan("deepthings-reuse", model, fleet, grid=(3, 3), fused_pieces=16), model, graph,
                      fleet)  # fmt: skip
    local, runners, sessions = LocalTransport(), {}, {}
    for party in parties(plan):
        worker, program = OrtBackend(threads=1), compile_program(plan, graph, party)
        calls = segments(program, graph)
        compiled = worker.compile(prune_weights(graph, program), calls)
        runners[party] = Runner(compiled.graph, program, worker, local.party(party), 60.0)
        segments_by_stage = [{tuple(t.nodes) for t in step.tasks} for step in program.steps]
        sessions[party] = compiled.executables, sum(map(len, segments_by_stage)), len(calls)
    for frame, seed in enumerate((3, 4)):
        x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(seed))
        reference = prepared.monolithic(x)
        assert compare_tensors(_play(runners, x, frame)[graph.outputs[0]], reference).bit_exact, frame
    executables, stage_segments, calls = sessions["dev0"]  # one session per segment of a stage
    assert executables == stage_segments < calls and stage_segments > 2
    found = locate_mismatch(plan, graph, backend, x, reference, 60.0)
    assert "a one-process replay of the plan is exact" in found


def _play(runners: dict[str, Runner], x: torch.Tensor, frame: int = 0) -> dict[str, torch.Tensor]:
    """One frame with every party on its own thread; what the coordinator holds at the end."""
    held: dict[str, dict] = {}

    def play(party: str) -> None:
        held[party] = runners[party].frame(frame, x if party == COORDINATOR else None)

    threads = [threading.Thread(target=play, args=(p,)) for p in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return held[COORDINATOR]


def test_segments_name_what_each_task_reads_as_held():
    loaded, fleet = load_model("resnet18", (3, 64, 64), 0, weights=False), uniform_fleet(3)
    graph = from_model(loaded)
    plan = make_plan("halp", graph, fleet)
    for party in parties(plan)[1:]:
        program = compile_program(plan, graph, party)
        calls = segments(program, graph)
        assert len(calls) == sum(len(s.tasks) for s in program.steps)
        assert all(isinstance(c, SegmentCall) and set(c.held) <= set(program.canvases) for c in calls)


def test_a_run_on_onnxruntime_prices_this_host_by_its_profile():
    """Under the tests' SUITE_HOST_PROFILE=bundled, the bundled profile of each backend."""
    torch_fleet = priced_here(uniform_fleet(2), "torch")
    ort_fleet = priced_here(uniform_fleet(2), "onnxruntime")
    assert {d.profile.name for d in ort_fleet.devices} == {"local-onnxruntime"}
    assert {d.profile.name for d in torch_fleet.devices} == {"local"}
    assert ort_fleet.name == torch_fleet.name  # the same fleet, this host priced by another backend
    pis = load_fleet("pico-homo-2")
    assert priced_here(pis, "onnxruntime") is pis  # a Pi is a Pi on any backend here


def test_measure_profile_quick_on_onnxruntime():
    p = measure_profile("quick", quick=True, backend="onnxruntime")
    assert p.ops["conv"].alpha == pytest.approx(1.0) and p.macs_per_s > 0
    assert {"conv", "pointwise_conv", "depthwise_conv", "strided_depthwise_conv", "grouped_conv", "maxpool",
            "relu", "clamp", "add", "mul", "scale", "concat", "linear", "default"} <= set(p.ops)  # fmt: skip
    for kind in ("relu", "clamp", "add"):  # fused into the conv before them: free
        assert p.ops[kind] == OpCost(0.0, 0.0)
    assert all(cost.overhead_s == 0 for cost in p.ops.values())  # a session's call is not a node's
    assert p.ops["default"].alpha == pytest.approx(p.ops["elementwise"].alpha + p.ops["mul"].alpha)
    assert "onnxruntime" in p.source and "blocks" in p.source


# -- real workers ---------------------------------------------------------------------------------

# Every scheme once on real workers, each zoo model twice; the whole matrix is nightly (`zoo`).
WORKER_RUNS = [("single", "resnet18", 1), ("modnn", "vgg16", 2), ("deepthings", "inception_v3", 3),
               ("halp", "resnet18", 3), ("pico", "inception_v3", 2), ("ofl", "resnet18", 2)]  # fmt: skip
MATRIX = [(s, m, 2) for s in SCHEMES for m in SMALL if (s, m) not in {(r[0], r[1]) for r in WORKER_RUNS}]


def _run_on_workers(tmp_path, scheme: str, model: str, devices: int) -> dict:
    """A plan file made on the model graph (DeepThings with a 3x3 grid, so a device computes several
    tiles of a stage), run on workers on onnxruntime."""
    shape, fleet = SMALL[model], priced_here(uniform_fleet(devices), "onnxruntime")
    options = {"grid": (3, 3)} if scheme == "deepthings" else {}
    plan = make_plan(scheme, from_model(load_model(model, shape, weights=False)), fleet, **options)
    save_plan(plan, tmp_path / "plan.json")
    done = suite("run", "--plan", str(tmp_path / "plan.json"), "--model", model, "--input-size",
                 "x".join(map(str, shape)), "--backend", "onnxruntime", "--frames", "2", "--warmup", "1",
                 "--no-baseline", "--json", "-o", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["bit_exact"] and result["complete"] and result["frames"] == 2, result
    assert result["backend"] == "onnxruntime" and result["scheme"] == scheme
    assert pd.read_csv(tmp_path / "out" / "frames.csv")["bit_exact"].all()
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["graph"] == "torch"  # the plan as made
    return result


@pytest.mark.parametrize("scheme,model,devices", WORKER_RUNS, ids=[f"{s}-{m}" for s, m, _ in WORKER_RUNS])
def test_every_scheme_runs_bit_exact_on_onnxruntime_workers(tmp_path, scheme, model, devices):
    """A plan file from `suite plan` (the torch graph's names) on real workers running onnxruntime;
    each worker reports its start-up, sessions and memory."""
    _run_on_workers(tmp_path, scheme, model, devices)
    workers = pd.read_csv(tmp_path / "out" / "devices.csv").query("device != 'coordinator'")
    assert 1 <= len(workers) <= devices  # the devices the plan gives work (OFL may keep one busy)
    assert (workers["startup_s"] > workers["compile_s"]).all() and (workers["compile_s"] > 0).all()
    assert (workers["executables"] >= 1).all()
    assert (workers["peak_rss_bytes"] >= workers["rss_bytes"]).all() and (workers["rss_bytes"] > 0).all()


@pytest.mark.zoo
@pytest.mark.parametrize("scheme,model,devices", MATRIX, ids=[f"{s}-{m}" for s, m, _ in MATRIX])
def test_the_zoo_runs_bit_exact_on_onnxruntime_workers(tmp_path, scheme, model, devices):
    _run_on_workers(tmp_path, scheme, model, devices)


def test_plan_on_onnxruntime_prices_by_its_profile():
    """`suite plan --backend onnxruntime` plans for this host's onnxruntime speed (faster than
    torch's here), on the same model graph."""
    plans = {}
    for backend in ("torch", "onnxruntime"):
        done = suite("plan", "--model", "resnet18", "--input-size", "3x64x64", "--scheme", "single",
                     "--devices", "1", "--backend", backend, "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        plans[backend] = json.loads(done.stdout)
    assert plans["onnxruntime"]["stages"] == plans["torch"]["stages"]
    assert plans["onnxruntime"]["predicted"]["latency_s"] < plans["torch"]["predicted"]["latency_s"]


def _conv_model(scale: float, channels: int, side: int) -> bytes:
    """A 3x3 convolution and a ReLU on a `channels` x `side` x `side` map, as ONNX bytes."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((channels, channels, 3, 3), scale, np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, side, side])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "conv", [x], [z], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_the_sessions_of_a_process_share_one_arena_not_one_each():
    """A per-layer plan's worker holds a session per layer: once the first has run, the others run
    in the buffers it freed instead of each growing and keeping an arena of its own maps."""

    def rss() -> int:
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return int(status["VmRSS"].split()[0]) * 1024

    backend, x = OrtBackend(threads=1), np.ones((1, 32, 256, 256), np.float32)
    sessions = [backend.session(_conv_model(0.01 * i, 32, 256)) for i in range(1, 5)]
    sessions[0].run(None, {"x": x})
    before = rss()
    for session in sessions[1:]:
        session.run(None, {"x": x})  # its output is dropped: only the sessions' own buffers stay
    assert rss() - before < x.nbytes  # each session's own arena would keep about two maps: 6 here
