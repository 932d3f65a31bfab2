"""Any CNN a user brings: the idioms of public model code through both importers, ONNX files from
`torch.onnx.export`, the mobile zoo, and what `verify` reports about coverage."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
import user_models

from suite.backends import BackendError, make_backend
from suite.backends.export import export_onnx
from suite.graph import from_torch
from suite.graph.cuts import coverage, spatial_front
from suite.graph.from_onnx import from_onnx
from suite.models import ZOO
from suite.models.load import LoadedModel, load_model
from suite.verify import verify

SIZE = (3, 32, 32)
# fused strips, a fused grid, layer-wise strips
CUTS = [(2, 1, False), (2, 2, False), (3, 1, True)]
BACKENDS = ["torch", "onnxruntime"]
TESTS = Path(__file__).parent

# Each idiom: the IR kinds it must import as, and the least share of its MACs computed in tiles.
IDIOMS = {
    "ShapeQueries": ({"flatten", "elementwise"}, 0.95),
    "ActivationsWrittenOut": ({"elementwise", "mul"}, 1.0),
    "ChannelShuffle": ({"channel_select", "concat"}, 0.95),
    "FunctionalConv": ({"conv"}, 1.0),
    "SqueezeExcite": ({"scale"}, 0.95),  # the branch is computed whole between tiled segments
    "Reorg": ({"reorg", "channel_select"}, 0.99),
    "DynamicSamePad": ({"pad"}, 1.0),
    "ChannelsLastHead": ({"opaque"}, 0.9),
    "FusedNormAct": ({"batchnorm", "elementwise"}, 1.0),
    "MeanSqueezeExcite": ({"scale", "adaptive_avgpool"}, 0.95),
    "ChannelNormBlocks": ({"elementwise", "identity"}, 1.0),
    "ZooStyleNet": ({"batchnorm", "scale", "adaptive_avgpool", "pad"}, 0.95),
    "NearestUpsample": ({"resize", "add"}, 0.95),
    "BilinearUpsample": ({"resize"}, 0.95),
    "ResizeVariants": ({"resize"}, 1.0),
    "ZooSegmentationNet": ({"batchnorm", "scale", "adaptive_avgpool", "pad", "resize"}, 0.9),
}


def _module(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(user_models, name)().eval()


def _input(shape=SIZE) -> torch.Tensor:
    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))


def _check_exact(loaded: LoadedModel, backend_name: str, cuts=CUTS) -> None:
    backend = make_backend(backend_name)
    prepared = backend.prepare(loaded)
    for rows, cols, layerwise in cuts:
        report = verify(prepared, backend, _input(loaded.input_shape), rows, cols, layerwise)
        where = (rows, cols, layerwise, report.first_mismatch, report.max_ulp)
        assert report.bit_exact and report.ir_matches_monolithic, where


def _export(module: torch.nn.Module, path: Path, exporter: str, shape=SIZE) -> Path:
    """An ONNX file as users make them: opset 17 and default options (the dynamo exporter in this
    torch), or the TorchScript exporter."""
    options = {} if exporter == "default" else {"dynamo": False}
    torch.onnx.export(module, (torch.zeros(1, *shape),), str(path), opset_version=17, **options)
    return path


@pytest.mark.parametrize("name", IDIOMS)
def test_torch_import_understands_the_idiom(name):
    graph = from_torch(_module(name), SIZE, name)
    kinds, least_share = IDIOMS[name]
    assert kinds <= {n.op for n in graph.nodes.values()}
    assert coverage(graph, spatial_front(graph)).tiled_share >= least_share


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name", IDIOMS)
def test_idiom_is_bit_exact_in_strips_and_grids(name, backend_name):
    _check_exact(LoadedModel(name, SIZE, module=_module(name)), backend_name)


@pytest.mark.parametrize("exporter", ["default", "torchscript"])
@pytest.mark.parametrize("name", [*IDIOMS, "SharedNorms"])
def test_onnx_file_imports_and_is_bit_exact_on_both_backends(tmp_path, name, exporter):
    """Weights the TorchScript exporter shares through Identity nodes (SharedNorms: a KeyError in the
    importer before), a Pad whose border is computed from Shape (DynamicSamePad: refused on torch
    before), Reshape/Transpose/Split chains and broadcast multiplies, from both exporters."""
    path = _export(_module(name), tmp_path / f"{name}.onnx", exporter)
    loaded = load_model(str(path))
    for backend_name in BACKENDS:
        _check_exact(loaded, backend_name, CUTS[:2])


def test_onnx_kinds_match_torch_kinds(tmp_path):
    """The ONNX importer turns the exporter's Reshape-Transpose-Reshape and Split into the same
    channel selections and reorg as the torch importer, each with an ONNX node onnxruntime runs, a
    ReduceMean over H and W into a squeeze-and-excite's global pool, and Resizes by scales or
    sizes into the same resizes."""
    for name in ("ChannelShuffle", "Reorg", "MeanSqueezeExcite", "NearestUpsample", "ResizeVariants"):
        path = _export(_module(name), tmp_path / f"{name}.onnx", "torchscript")
        graph = from_onnx(onnx.load(str(path)), name)
        kinds = {n.op for n in graph.nodes.values()}
        assert IDIOMS[name][0] <= kinds, kinds
        assert coverage(graph, spatial_front(graph)).tiled_share >= IDIOMS[name][1]
        ops = {n.onnx[0].op_type for n in graph.nodes.values() if n.op in ("channel_select", "reorg")}
        assert ops <= {"Gather", "SpaceToDepth"}
        resized = [n.attrs["resampling"] for n in graph.nodes.values() if n.op == "resize"]
        traced = from_torch(_module(name), SIZE, name)
        assert resized == [n.attrs["resampling"] for n in traced.nodes.values() if n.op == "resize"]


def test_interpolate_in_every_form_is_a_resize_or_runs_whole_saying_why():
    """`F.upsample*` trace to `F.interpolate`; a scale recomputed from the sizes is the sizes'; an
    antialiased or bicubic resize runs whole with its reason."""

    class Forms(torch.nn.Module):
        def forward(self, x):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # F.upsample* are deprecated
                a = F.upsample(x, scale_factor=2, mode="bilinear") + F.upsample_nearest(x, scale_factor=2)
                b = F.upsample_bilinear(x, size=(16, 16))  # align_corners
            c = F.interpolate(x, scale_factor=2.5, recompute_scale_factor=True)
            d = F.interpolate(x, scale_factor=2, mode="bilinear", antialias=True)
            return a + b + d + F.interpolate(x, scale_factor=2, mode="bicubic"), c

    graph = from_torch(Forms(), (3, 8, 8), "forms")
    found = [n.attrs.get("resampling") or n.attrs["reason"] for n in graph.nodes.values()
             if n.op in ("resize", "opaque")]  # fmt: skip
    assert [(r.mode, r.transform, r.scale, r.out_hw) for r in found[:4]] == [
        ("linear", "half_pixel", (2.0, 2.0), (16, 16)),
        ("nearest", "asymmetric", (2.0, 2.0), (16, 16)),
        ("linear", "align_corners", (2.0, 2.0), (16, 16)),
        ("nearest", "asymmetric", (2.5, 2.5), (20, 20)),
    ]
    assert found[4:] == ["interpolate (bilinear) with antialias",
                         "Resize (cubic, half_pixel): only nearest (asymmetric, floor) and bilinear resizing "
                         "are tiled"]  # fmt: skip


@pytest.mark.parametrize("opset", [9, 10])
def test_older_opsets_upsample_and_resize_are_resizes(tmp_path, opset):
    """Opset 9's Upsample and opset 10's Resize (X, scales) resize on asymmetric coordinates and
    floor for nearest; onnxruntime tiles only opset 10 (an opset 9 segment has no Slice with inputs)."""
    path = tmp_path / "up.onnx"
    torch.onnx.export(_module("NearestUpsample"), (torch.zeros(1, *SIZE),), str(path), opset_version=opset,
                      dynamo=False)  # fmt: skip
    graph = from_onnx(onnx.load(str(path)), "up")
    (resize,) = [n for n in graph.nodes.values() if n.op == "resize"]
    assert resize.onnx[0].op_type == ("Upsample" if opset == 9 else "Resize")
    traced = from_torch(_module("NearestUpsample"), SIZE)
    assert resize.attrs["resampling"] == traced["up"].attrs["resampling"]
    loaded = load_model(str(path))
    for backend_name in BACKENDS if opset > 9 else ["torch"]:
        _check_exact(loaded, backend_name, CUTS[:2])


def test_onnx_import_keeps_the_model_name(tmp_path):
    path = _export(_module("Reorg"), tmp_path / "reorg.onnx", "torchscript")
    assert from_onnx(onnx.load(str(path)), "reorg").name == "reorg"


def test_resize_tail_is_exact_on_onnxruntime():
    """21 class maps into a bilinear Resize: the whole graph runs an NCHWc Upsample, so the tail's
    fed-in map is relaid out in NCHWc through channels padded to a whole block (1024-16384 ULP off
    before, when 21 channels stayed in plain layout)."""
    _check_exact(LoadedModel("seg", SIZE, module=_module("SegmentationHead")), "onnxruntime")


def test_adaptive_max_pool_the_exporter_refuses_is_one_line_naming_the_node():
    """The TorchScript exporter refuses an adaptive max pool whose output does not divide its input
    with a SymbolicValueError naming no node; at 18 px its 16x16 map divides and it exports."""
    module = _module("AdaptiveMaxPoolHead")
    with pytest.raises(BackendError, match=r"^node 'pool' \(adaptive max pool of a 14x14 map to 4x4\): .*"
                                           r"a multiple of 4x4, or --backend torch$"):  # fmt: skip
        export_onnx(module, (3, 16, 16))
    assert onnx.load_from_string(export_onnx(module, (3, 18, 18))).graph.node


def test_fused_cut_ends_where_the_map_gets_too_small():
    """A fixed 7x7 pool leaves a 1x1 map: two strips end the tiled part before it (refused before)."""
    backend = make_backend("torch")
    prepared = backend.prepare(LoadedModel("pool", (3, 56, 56), module=_module("FixedPoolHead")))
    report = verify(prepared, backend, _input((3, 56, 56)), 2)
    assert report.bit_exact
    (stop,) = report.tiling_stops
    assert stop["op"] == "avgpool" and "1x1 map has fewer rows or columns than 2x1 tiles" in stop["reason"]
    assert 0.5 < report.tiled_share < 1.0


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_cut_ends_before_a_border_a_strip_would_lie_all_in(backend_name):
    """Dynamic "same" pads before strided convs: where the conv is too small to tile, its border
    goes whole with it (at 8 strips of an 8-row map, the last strip of the 9-row padded map lay
    all in the border, and the map before it was refused as an empty region)."""
    backend = make_backend(backend_name)
    prepared = backend.prepare(LoadedModel("same", SIZE, module=_module("SameStridedStack")))
    stops = {}
    for parts in (3, 5, 8, 16):
        report = verify(prepared, backend, _input(), parts)
        assert report.bit_exact and report.ir_matches_monolithic, (parts, report.first_mismatch)
        stops[parts] = report.tiling_stops
    assert stops[3] == []  # the whole model in 3 strips
    assert [s["node"] for s in stops[8]] == ["pad_4"]
    assert "a border for 'convs_4', added to the whole map with it: its 4x4 map" in stops[8][0]["reason"]


def _suite(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def test_verify_reports_coverage_in_json_and_summary():
    args = ("verify", "--model", "user_models:running_sum", "--input-size", "3x32x32", "--parts", "2")
    report = json.loads(_suite(*args, "--json").stdout)
    assert report["bit_exact"] and report["tiled_share"] < 0.5
    assert [s["op"] for s in report["tiling_stops"]] == ["opaque"]
    summary = _suite(*args).stdout.splitlines()
    (line,) = [s for s in summary if "of the model's MACs" in s]
    assert "LESS THAN HALF" in line and "tiling stops at" in line
    se = (
        "verify",
        "--model",
        "user_models:squeeze_excite",
        "--input-size",
        "3x32x32",
        "--parts",
        "2",
        "--json",
    )
    report = json.loads(_suite(*se).stdout)  # its branch is computed between two tiled segments
    assert report["bit_exact"] and report["tiled_share"] > 0.99 and report["tiling_stops"] == []
    yolo = json.loads(_suite("verify", "--model", "yolov2_16", "--input-size", "3x64x64", "--json").stdout)
    assert yolo["tiled_share"] == 1.0 and yolo["tiling_stops"] == []


def test_failed_onnx_export_under_json_prints_nothing_on_stdout():
    out = _suite("verify", "--model", "user_models:unexportable", "--input-size", "3x16x16",
                 "--backend", "onnxruntime", "--json")  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    assert "cannot export the model to ONNX" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_seed_seeds_a_factory_the_same_in_every_process():
    code = (
        "import hashlib, sys; from suite.models.load import load_model; "
        "m = load_model('user_models:random_net', (3, 8, 8), int(sys.argv[1])).module; "
        "state = b''.join(t.numpy().tobytes() for t in m.state_dict().values()); "
        "print(hashlib.sha256(state).hexdigest())"
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    digest = [subprocess.run([sys.executable, "-c", code, seed], capture_output=True, text=True, env=env,
                             check=True).stdout for seed in ("1", "1", "2")]  # fmt: skip
    assert digest[0] == digest[1] != digest[2]
    before = torch.get_rng_state()
    here = load_model("user_models:random_net", (3, 8, 8), 1).module
    assert torch.equal(torch.get_rng_state(), before)  # the caller's randomness is left alone
    state = b"".join(t.numpy().tobytes() for t in here.state_dict().values())
    assert hashlib.sha256(state).hexdigest() == digest[0].strip()


def test_run_with_a_random_factory_is_bit_exact_on_workers(tmp_path):
    """Each worker builds the model from the factory itself: seeded, all get the coordinator's weights."""
    out = _suite("run", "--model", "user_models:random_net", "--input-size", "3x32x32", "--scheme", "pico",
                 "--devices", "2", "--frames", "2", "--warmup", "0", "--no-baseline", "--json",
                 "-o", str(tmp_path / "out"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["bit_exact"] and result["complete"]


def test_se_nets_run_bit_exact_on_workers_through_their_branches(tmp_path):
    """HALP as it plans MobileNetV3, and a PICO plan through every one of its SE branches (saved,
    then run with --plan): the branches run whole between tiled segments, every frame bit-exact."""
    from toys import forced_pico_plan

    from suite.fleet import uniform_fleet
    from suite.plan import save_plan

    model = ("--model", "mobilenet_v3_large", "--input-size", "3x96x96")
    graph = from_torch(load_model("mobilenet_v3_large", (3, 96, 96), weights=False).module, (3, 96, 96),
                       "mobilenet_v3_large")  # fmt: skip
    save_plan(forced_pico_plan(graph, uniform_fleet(3)), tmp_path / "through.json")
    for name, how in [("halp", ("--scheme", "halp", "--devices", "3")),
                      ("through", ("--plan", str(tmp_path / "through.json")))]:  # fmt: skip
        out = _suite("run", *model, *how, "--frames", "2", "--warmup", "0", "--no-baseline", "--json",
                     "-o", str(tmp_path / name))  # fmt: skip
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["bit_exact"] and result["complete"], result["error"]
    assert result["tiled_share"] > 0.9  # at 96x96 the classifier weighs more than at 224x224


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name", ["ZooStyleNet", "ZooSegmentationNet"])
def test_zoo_style_net_runs_bit_exact_on_workers(tmp_path, name, backend_name):
    """The idioms together (fused norm + act, a mean-pooled squeeze-and-excite, a LayerNorm2d block,
    a dynamic same pad; a classifier, or a bilinear Resize head) in a PICO plan through all of it,
    on workers."""
    from toys import forced_pico_plan

    from suite.fleet import uniform_fleet
    from suite.plan import save_plan

    model = ("--model", f"user_models:{name}", "--input-size", "3x32x32", "--backend", backend_name)
    graph = from_torch(_module(name), SIZE, name)
    save_plan(forced_pico_plan(graph, uniform_fleet(2)), tmp_path / "plan.json")
    out = _suite("run", *model, "--plan", str(tmp_path / "plan.json"), "--frames", "2", "--warmup", "0",
                 "--no-baseline", "--json", "-o", str(tmp_path / "run"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["bit_exact"] and result["complete"], result["error"]
    assert result["tiled_share"] > 0.95


@pytest.mark.parametrize("backend_name,env,threads", [
    ("torch", {"MKL_CBWR": "AVX2"}, "1"), ("torch", {"MKL_CBWR": "AVX2"}, "2"),
    ("torch", {"MKL_CBWR": "COMPATIBLE"}, "1"), ("torch", {"MKL_CBWR": "COMPATIBLE"}, "2"),
    ("onnxruntime", {}, "2")])  # fmt: skip
def test_zoo_segmentation_net_is_exact_under_other_blas_code_paths(backend_name, env, threads):
    """The Resize head in a 3x3 grid under MKL's AVX2 and compatible code paths at 1 and 2 threads
    (MKL sums differently on each; a tile must not care), and on onnxruntime at 2 threads."""
    if "Math Kernel Library" not in torch.__config__.show() and env:
        pytest.skip("no MKL")
    model = ("--model", "user_models:zoo_segmentation_net", "--input-size", "3x64x64", "--grid", "3x3")
    out = _suite("verify", *model, "--threads", threads, "--backend", backend_name, "--json", env=env)
    report = json.loads(out.stdout)
    assert report["bit_exact"], (env, threads, report["first_mismatch"], report["max_ulp"])
    assert report["tiled_share"] > 0.9 and report["tiling_stops"] == []


MOBILE = [
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "shufflenet_v2_x1_0",
    "yolov2",
    "yolov2_16",
]


@pytest.mark.parametrize(
    ("model", "backend_name"),
    [(m, b) for m in MOBILE for b in BACKENDS if (m, b) != ("yolov2", "onnxruntime")],
)
def test_mobile_zoo_is_bit_exact_at_a_small_size(model, backend_name):
    """YOLOv2 on onnxruntime is in the slow matrix: its 51M weights, exported and loaded per tile
    session, take 16 s even at 32x32."""
    _check_exact(load_model(model, SIZE), backend_name)


def test_tiled_share_of_the_zoo_at_default_sizes():
    """Every zoo net is tiled up to its classifier: the SE nets' squeeze-and-excite branches are
    computed between tiled segments, so nothing stops the front before the pooled head."""
    share = {}
    for name in MOBILE:
        graph = from_torch(load_model(name, weights=False).module, ZOO[name].input_size, name)
        cover = coverage(graph, spatial_front(graph))
        share[name] = cover.tiled_share
        assert not any("squeeze-and-excite" in s.reason for s in cover.stops), name
    assert min(share.values()) >= 0.97, share
    assert share["yolov2"] == share["yolov2_16"] == 1.0
