"""The torch backend's exact kernels: a tile equals the whole map bit for bit by construction, on this
CPU's default BLAS path and on others (`MKL_CBWR`, `MKL_ENABLE_INSTRUCTIONS`, `ATEN_CPU_CAPABILITY`),
at any thread count; and the premises of that construction hold for a sweep of GEMM shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suite.backends import make_backend, run_segment, run_whole
from suite.backends.exact import LINEAR_ROWS, MAX_BLOCK_COLS, MIN_BLOCK, gemm_grid, linear_share
from suite.graph import from_torch
from suite.regions import WHOLE, Box, FeatureRange, feature_region, node_region
from suite.verify import compare_tensors


def _whole_and_tile(module: nn.Module, shape: tuple[int, int, int], box: Box, threads: int = 1):
    """The module's one layer on the whole map and on `box` of its output, on the exact backend."""
    torch.manual_seed(1)
    graph = from_torch(module.eval(), shape, "t")
    (name,) = [n for n in graph.nodes if n != graph.input]
    node = graph[name]
    x = torch.randn(1, *shape)
    backend = make_backend("torch", threads)
    region = node_region(graph, node, box)
    (read,) = region.reads
    with backend.active():
        whole = run_whole(graph, x, backend, [name])[name]
        tile = run_segment(graph, [name], {graph.input: (read, x[read.index])}, backend, {name: region},
                           [name])[name][1]  # fmt: skip
    return whole[box.index], tile


@st.composite
def _convs(draw):
    kind = draw(st.sampled_from(["dense", "dense", "grouped", "depthwise"]))
    if kind == "dense":
        cin, cout, groups = draw(st.sampled_from([3, 8, 16])), draw(st.sampled_from([4, 8, 24])), 1
    elif kind == "grouped":
        groups = draw(st.sampled_from([2, 4]))
        cin, cout = groups * draw(st.sampled_from([2, 4])), groups * draw(st.sampled_from([1, 3]))
    else:
        cin = groups = draw(st.sampled_from([4, 8]))
        cout = cin * draw(st.sampled_from([1, 2]))  # a channel multiplier of 2 too
    kh, kw = draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 3, 7]))
    stride, dilation = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = (dilation * (kh // 2), dilation * (kw // 2)) if draw(st.booleans()) else (0, 0)
    h, w = draw(st.integers(kh * dilation + 4, 40)), draw(st.integers(kw * dilation + 4, 90))
    conv = nn.Conv2d(cin, cout, (kh, kw), stride, padding, dilation, groups, bias=draw(st.booleans()))
    return conv, (cin, h, w)


@given(_convs(), st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_conv_tile_equals_the_whole_map(conv_and_shape, data):
    """Dense, grouped and depthwise convs, strided, dilated, padded or not, on any box of the output:
    the tile's values are the whole map's, bit for bit."""
    conv, shape = conv_and_shape
    out = from_torch(nn.Sequential(conv).eval(), shape, "t")["_0"].shape
    h0 = data.draw(st.integers(0, out[2] - 1))
    w0 = data.draw(st.integers(0, out[3] - 1))
    box = Box(h0, data.draw(st.integers(h0 + 1, out[2])), w0, data.draw(st.integers(w0 + 1, out[3])))
    whole, tile = _whole_and_tile(nn.Sequential(conv), shape, box, data.draw(st.sampled_from([1, 2])))
    assert compare_tensors(tile, whole).bit_exact


@pytest.mark.parametrize("fn", [nn.Sigmoid(), nn.SiLU(), nn.GELU(), nn.Hardswish(), nn.Mish(), nn.ELU(),
                                nn.Tanh()])  # fmt: skip
def test_pointwise_functions_are_exact_in_any_tile(fn):
    """Each element on the SIMD path: a tile (here every strip and a corner of a map whose size leaves
    a scalar tail in PyTorch's loop) equals the whole map."""
    shape = (16, 17, 17)
    for box in [Box(0, 6, 0, 17), Box(6, 17, 0, 17), Box(11, 17, 9, 17), Box(16, 17, 16, 17)]:
        for threads in (1, 2):
            whole, tile = _whole_and_tile(nn.Sequential(fn), shape, box, threads)
            assert compare_tensors(tile, whole).bit_exact, (fn, box, threads)


def test_batchnorm_and_average_pool_are_exact_in_any_tile():
    bn = nn.BatchNorm2d(8).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    pool = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    for module in (nn.Sequential(bn), nn.Sequential(pool)):
        for box in [Box(0, 3, 0, 9), Box(3, 9, 4, 9), Box(8, 9, 8, 9)]:
            whole, tile = _whole_and_tile(module, (8, 17, 17), box)
            assert compare_tensors(tile, whole).bit_exact, (module, box)


class _Interpolate(nn.Module):
    def __init__(self, **how):
        super().__init__()
        self.how = how

    def forward(self, x):
        return F.interpolate(x, **self.how)


RESIZES = [dict(scale_factor=2, mode="nearest"), dict(scale_factor=3, mode="nearest"),
           dict(size=(23, 30), mode="nearest"), dict(scale_factor=2, mode="bilinear"),
           dict(scale_factor=4, mode="bilinear"), dict(scale_factor=3, mode="bilinear"),
           dict(size=(23, 30), mode="bilinear"), dict(scale_factor=2, mode="bilinear", align_corners=True),
           dict(size=(23, 30), mode="bilinear", align_corners=True)]  # fmt: skip


@pytest.mark.parametrize("how", RESIZES, ids=lambda how: "-".join(f"{k}={v}" for k, v in how.items()))
def test_resize_is_onnxruntimes_cpu_kernel_bit_for_bit_and_exact_in_any_tile(how):
    """The exact kernel computes onnxruntime's CPU Resize (plain layout: a graph input's) bit for bit,
    in onnxruntime's order of multiplies and adds, and any tile of it as the whole map does."""
    import onnxruntime as ort

    from suite.backends.export import export_onnx

    module, shape = _Interpolate(**how), (5, 7, 9)
    session = ort.InferenceSession(export_onnx(module, shape), providers=["CPUExecutionProvider"])
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    expected = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    graph = from_torch(module, shape, "t")
    node = graph["interpolate"]
    assert node.op == "resize"
    with make_backend("torch").active():
        whole = run_whole(graph, x, make_backend("torch"), ["interpolate"])["interpolate"]
    assert compare_tensors(whole, expected).bit_exact
    height, width = node.shape[2:]
    for box in (Box(1, height // 2, 3, width - 2), Box(height // 2, height, 0, width // 3 + 1)):
        whole_part, tile = _whole_and_tile(module, shape, box)
        assert torch.equal(whole_part, tile), box


@pytest.mark.parametrize("cut", [(0, 1), (1, 17), (17, 333), (333, 1000), (0, 1000), (992, 1000)])
def test_linear_share_equals_the_whole_layer_with_the_rows_a_device_keeps(cut):
    """MoDNN's split: a share of the features, from whole chunks of the weight's rows as
    `prune_weights` keeps them, equals the same features of the whole layer."""
    torch.manual_seed(0)
    graph = from_torch(nn.Sequential(nn.Flatten(), nn.Linear(2048, 1000)).eval(), (2048, 1, 1), "t")
    node = graph["_1"]
    share = FeatureRange(*cut)
    kept = linear_share(node, share)
    rows = kept.attrs["weight_rows"]
    assert rows.start % LINEAR_ROWS == 0 and rows.contains(share) and len(kept.params["weight"]) == rows.size
    x = torch.randn(1, 2048, 1, 1)
    backend = make_backend("torch", 1)
    with backend.active():
        values = run_whole(graph, x, backend, ["_0", "_1"])
        pruned = replace(graph, nodes={**graph.nodes, "_1": kept})
        got = run_segment(pruned, ["_1"], {"_0": (WHOLE, values["_0"])}, backend,
                          {"_1": feature_region(kept, share)}, ["_1"])["_1"][1]  # fmt: skip
    assert compare_tensors(got, values["_1"][..., share.start : share.stop]).bit_exact


def test_whole_model_is_the_same_at_any_thread_count_and_close_to_pytorch():
    """The exact backend's reference: one set of bits at 1, 2 and 3 threads (each op runs on one
    thread; threads run independent GEMM calls), within rounding of the module's own forward."""
    from suite.models.load import load_model

    loaded = load_model("resnet18", (3, 64, 64))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outputs = []
    before = torch.get_num_threads()
    for threads in (1, 2, 3):
        backend = make_backend("torch", threads)
        prepared = backend.prepare(loaded)
        with backend.active():
            outputs.append(prepared.monolithic(x))
        assert torch.get_num_threads() == before  # restored
    assert all(compare_tensors(o, outputs[0]).bit_exact for o in outputs)
    with torch.inference_mode():
        native = loaded.module(x)
    assert (outputs[0] - native).abs().max() <= 1e-5 * native.abs().max()


def test_gemm_grid_covers_every_map_with_bounded_blocks():
    """Blocks are at most MAX_BLOCK_COLS wide, divide the map where a divisor is within half the target
    (no block past the edge), and hold enough positions for the BLAS to run near its rate."""
    for height, width, m, k in [(224, 224, 64, 27), (56, 56, 256, 2304), (7, 7, 512, 4608),
                                (38, 38, 512, 2304), (299, 299, 32, 27), (17, 17, 192, 1344),
                                (1, 1000, 8, 8)]:  # fmt: skip
        graph = from_torch(nn.Sequential(nn.Conv2d(k, m, 1)).eval(), (k, height, width), "t")
        grid = gemm_grid(graph["_0"])
        assert 1 <= grid.cols <= min(width, MAX_BLOCK_COLS) and 1 <= grid.rows <= height
        assert grid.rows * grid.cols >= min(MIN_BLOCK // 2, height * width) or grid.rows == height
        if width == 224:
            assert width % grid.cols == 0


# The GEMM shapes the construction relies on: M output channels x K (channels x kernel) x N block
# positions, as `gemm_grid` makes them for the zoo's layers.
GEMM_SWEEP = [(m, k, n) for m in (16, 64, 256, 512) for k in (27, 64, 256, 576, 1152, 2304, 4608)
              for n in (49, 96, 112, 196, 224, 448)]  # fmt: skip


def test_gemm_sweep_a_column_does_not_depend_on_the_others_or_the_thread():
    """What `suite/backends/exact.py` assumes of the BLAS, over a sweep of M, K and N: a call's column
    is the same whatever the other columns hold, and whether the call is made on the main thread or
    another one (each on one thread). Where a BLAS broke this, `suite doctor` would refuse it."""
    generator = torch.Generator().manual_seed(0)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for m, k, n in GEMM_SWEEP:
                a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
                other = b.clone()
                other[:, 1::2] = torch.randn(k, n // 2, generator=generator)
                alone = a @ b
                assert torch.equal(alone[:, ::2], (a @ other)[:, ::2]), (m, k, n)
                assert torch.equal(alone, pool.submit(torch.mm, a, b).result()), (m, k, n)
    finally:
        torch.set_num_threads(saved)


def _verify(env: dict[str, str], *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "suite", "verify", "--backend", "torch", "--json", *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **env})  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def _cbwr_paths() -> list[str]:
    """The MKL code paths this CPU can run (MKL_CBWR), the widest last; none without MKL."""
    if "Math Kernel Library" not in torch.__config__.show():
        return []
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    have = {"SSE4_2": "sse4_2", "AVX": " avx ", "AVX2": "avx2", "AVX512": "avx512f"}
    return ["COMPATIBLE"] + [path for path, flag in have.items() if flag in flags]


# One 1x1-heavy model under every code path and thread count this CPU offers (the whole-zoo matrix
# under them is `nox -s blas`): MKL sums differently on each, and a tile must not care. The paths and
# thread counts that CI's slow cases of that matrix run too (MKL_CBWR=AVX2 at 1 and 2 threads,
# COMPATIBLE at 2) run here nightly (`zoo`).
def _other_paths() -> list:
    envs = [{"MKL_CBWR": "AVX2"}, {"MKL_CBWR": "COMPATIBLE"}, {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
            {"ATEN_CPU_CAPABILITY": "default"}]  # fmt: skip
    in_slow = {("AVX2", "1"), ("AVX2", "2"), ("COMPATIBLE", "2")}
    return [pytest.param(env, threads, marks=[pytest.mark.zoo] * ((env.get("MKL_CBWR"), threads) in in_slow),
                         id=f"{threads}-" + ",".join(f"{k}={v}" for k, v in env.items()))
            for threads in ("1", "2") for env in envs]  # fmt: skip


@pytest.mark.parametrize("env,threads", _other_paths())
def test_exact_under_other_blas_code_paths(env, threads):
    key, value = next(iter(env.items()))
    if key == "MKL_CBWR" and value not in _cbwr_paths():
        pytest.skip(f"this CPU has no MKL {value} path")
    report = _verify(env, "--model", "resnet50", "--input-size", "3x112x112", "--grid", "3x3",
                     "--threads", threads)  # fmt: skip
    assert report["bit_exact"], (env, threads, report["first_mismatch"], report["max_ulp"])
    assert report["reference_is_model"]


# The whole matrix (`nox -s blas`, 50 cases): the 1x1-heavy models and YOLOv2's 3x3 grid (whose
# 256->512 conv at 38x38 drifted at 2 threads only) under each MKL code path this CPU has, MKL's
# instruction cap and PyTorch's own SIMD dispatch, at 1, 2 and 4 threads, each at its default size.
# CI runs every path once (`nox -s zoo`, marked slow), each with another model.
MATRIX_MODELS = [("resnet50", "--parts", "7"), ("googlenet", "--grid", "3x3"),
                 ("mobilenet_v3_large", "--parts", "3"), ("efficientnet_b0", "--parts", "4"),
                 ("yolov2_16", "--grid", "3x3")]  # fmt: skip
MATRIX_PATHS = [({}, "1"), ({}, "4"), ({"MKL_CBWR": "COMPATIBLE"}, "2"), ({"MKL_CBWR": "SSE4_2"}, "1"),
                ({"MKL_CBWR": "AVX"}, "2"), ({"MKL_CBWR": "AVX2"}, "1"), ({"MKL_CBWR": "AVX2"}, "2"),
                ({"MKL_CBWR": "AVX512"}, "4"), ({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "2"),
                ({"ATEN_CPU_CAPABILITY": "avx2"}, "1")]  # fmt: skip
MATRIX = [pytest.param(*model, env, threads,
                       marks=[pytest.mark.blas] + [pytest.mark.slow] * (i % len(MATRIX_MODELS) == j),
                       id=f"{model[0]}-" + ",".join([*(f"{k}={v}" for k, v in env.items()), f"{threads}t"]))
          for i, (env, threads) in enumerate(MATRIX_PATHS)
          for j, model in enumerate(MATRIX_MODELS)]  # fmt: skip


@pytest.mark.parametrize("model,cut,parts,env,threads", MATRIX)
def test_zoo_exact_under_every_blas_code_path(model, cut, parts, env, threads):
    if "MKL_CBWR" in env and env["MKL_CBWR"] not in _cbwr_paths():
        pytest.skip(f"this CPU has no MKL {env['MKL_CBWR']} path")
    report = _verify(env, "--model", model, cut, parts, "--threads", threads)
    assert report["bit_exact"], (env, threads, report["first_mismatch"], report["max_ulp"])
    assert report["reference_is_model"]
