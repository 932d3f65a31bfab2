"""Whole-zoo bit-exactness, the verify report, and the CLI's one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from toys import suite

from suite.backends import BackendError, Prepared, make_backend
from suite.backends.torch import EXACT_KERNELS
from suite.models import ZOO
from suite.models.load import load_model
from suite.regions import full_box
from suite.verify import compare_tensors, verify

CUTS = [(p, 1) for p in (1, 2, 3, 4, 7, 8)] + [(2, 2), (3, 3)]
# The mobile nets and YOLOv2 at their default sizes: three strips and a 2x2 grid fused, three strips
# layer-wise (a layer-wise grid of YOLOv2 on onnxruntime alone takes 25 s: a session per layer and
# tile), to keep the matrix's added time small; tests/test_import.py covers them at 32x32 in strips
# and grids, fused and layer-wise.
MOBILE_ZOO = ("mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "shufflenet_v2_x1_0", "yolov2",
              "yolov2_16")  # fmt: skip
MOBILE_CUTS = {False: [(3, 1), (2, 2)], True: [(3, 1)]}
# CI (`slow`) runs every model on torch and the others on onnxruntime; these take a minute or more each
# on onnxruntime (a session per tile, and per layer layer-wise) and run nightly (`zoo`): their idioms
# are in CI on torch, and on onnxruntime in the cheaper models (ResNet-18's residuals, GoogLeNet's and
# Inception's branches fused, the mobile nets' depthwise convs).
ORT_NIGHTLY = {False: {"vgg16"}, True: {"vgg16", "resnet34", "resnet50", "googlenet", "inception_v3"}}


def _input_size(model: str, rows: int) -> tuple[int, int, int]:
    """The default size, or 256 px where the default leaves fewer output rows than strips."""
    c, h, w = ZOO[model].input_size
    return (c, 256, 256) if rows == 8 and h == 224 else (c, h, w)


def _cuts(model: str, layerwise: bool) -> list[tuple[int, int]]:
    """CUTS; MOBILE_CUTS for the mobile zoo."""
    return MOBILE_CUTS[layerwise] if model in MOBILE_ZOO else CUTS


def _check_zoo(model: str, backend_name: str, layerwise: bool) -> None:
    backend = make_backend(backend_name)
    prepared: dict[tuple[int, int, int], Prepared] = {}  # per size: YOLOv2's weights take seconds to draw
    for rows, cols in _cuts(model, layerwise):
        size = _input_size(model, rows)
        if size not in prepared:
            prepared = {size: backend.prepare(load_model(model, size))}
        x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
        report = verify(prepared[size], backend, x, rows, cols, layerwise)
        assert report.bit_exact, (model, rows, cols, report.first_mismatch, report.max_ulp)


def _zoo_cases(layerwise: bool) -> list:
    """Every zoo model on both backends: `zoo` where ORT_NIGHTLY names it, else `slow`."""
    cases = []
    for model in sorted(ZOO):
        for backend in ("torch", "onnxruntime"):
            nightly = backend == "onnxruntime" and model in ORT_NIGHTLY[layerwise]
            cases.append(pytest.param(model, backend, marks=pytest.mark.zoo if nightly else pytest.mark.slow))
    return cases


@pytest.mark.parametrize("model,backend_name", _zoo_cases(layerwise=False))
def test_zoo_fused_tiles_are_bit_exact(model, backend_name):
    _check_zoo(model, backend_name, layerwise=False)


@pytest.mark.parametrize("model,backend_name", _zoo_cases(layerwise=True))
def test_zoo_layerwise_tiles_are_bit_exact(model, backend_name):
    _check_zoo(model, backend_name, layerwise=True)


@pytest.mark.parametrize(("model", "backend_name"), [("vgg16", "torch"), ("resnet18", "torch"),
                                                     ("resnet18", "onnxruntime")])  # fmt: skip
def test_small_input_fused_and_layerwise(model, backend_name):
    backend = make_backend(backend_name)
    loaded = load_model(model, (3, 64, 64))
    prepared = backend.prepare(loaded)
    x = torch.randn(1, 3, 64, 64)
    for layerwise in (False, True):
        report = verify(prepared, backend, x, 2, 1, layerwise)
        assert report.bit_exact and report.ir_matches_monolithic, (model, layerwise)
        assert report.redundancy >= 0 and report.tiles == 2


def test_drift_in_tiles_is_reported_with_the_first_node(monkeypatch):
    """A kernel whose tiles round differently from the whole map (as oneDNN's per-shape algorithms
    do on torch-fast) must turn the verdict: not bit-exact, its ULPs, and that node named first."""
    backend = make_backend("torch")
    loaded = load_model("vgg16", (3, 96, 96))
    prepared = backend.prepare(loaded)
    exact_pool = EXACT_KERNELS["maxpool"]

    def drifting_pool(node, xs, region):
        y = exact_pool(node, xs, region)
        return y if region.out == full_box(node) else torch.nextafter(y, y + 1)

    monkeypatch.setitem(EXACT_KERNELS, "maxpool", drifting_pool)
    report = verify(prepared, backend, torch.randn(1, 3, 96, 96), 3, layerwise=True)  # every pool cut
    first_pool = next(n for n in prepared.graph.nodes if prepared.graph[n].op == "maxpool")
    assert not report.bit_exact and report.max_ulp > 0 and report.max_abs_diff > 0
    assert report.first_mismatch == first_pool and report.ir_matches_monolithic


def test_torch_fast_records_its_flags():
    backend = make_backend("torch-fast")
    loaded = load_model("resnet18", (3, 64, 64))
    report = verify(backend.prepare(loaded), backend, torch.randn(1, 3, 64, 64), 2)
    assert report.flags["mkldnn"] is True and report.flags["nnpack"] is True
    assert report.bit_exact == (report.max_ulp == 0 and report.max_abs_diff == 0)


def test_compare_counts_ulps():
    a = torch.tensor([1.0, 2.0])
    b = torch.nextafter(a, torch.tensor([2.0, 3.0]))
    assert compare_tensors(a, a).bit_exact
    c = compare_tensors(a, b)
    assert not c.bit_exact and c.max_ulp == 1 and c.max_abs_diff == pytest.approx(2**-22)


def test_user_onnx_model_runs_on_both_backends(tmp_path):
    from suite.backends.export import export_onnx

    module = load_model("resnet18", (3, 64, 64)).module
    path = tmp_path / "net.onnx"
    path.write_bytes(export_onnx(module, (3, 64, 64)))
    for name in ("onnxruntime", "torch"):
        out = suite("verify", "--model", str(path), "--backend", name, "--parts", "2", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["bit_exact"] is True


class _CeilPoolNet(torch.nn.Module):
    """conv, a ceil-mode pool, conv, then a global pool and FC tail (the part tiles never cut)."""

    def __init__(self, pool: torch.nn.Module):
        super().__init__()
        self.a, self.pool = torch.nn.Conv2d(3, 4, 3, padding=1), pool
        self.b, self.fc = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Linear(4, 2)

    def forward(self, x):
        y = torch.relu(self.b(self.pool(self.a(x))))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


@pytest.mark.parametrize("pool", [torch.nn.MaxPool2d(2, 2, 1, ceil_mode=True),
                                  torch.nn.AvgPool2d(3, 3, 1, ceil_mode=True, count_include_pad=False)],
                         ids=["maxpool", "avgpool"])  # fmt: skip
def test_onnx_ceil_mode_pool_takes_torch_output_length(pool):
    """On 11 rows ONNX shape inference counts a last window that starts past the input and its
    leading padding (7 and 5 rows where torch and onnxruntime compute 6 and 4); the import must
    take the window's own length, and tiles of the corrected graph must be bit-exact."""
    import onnx

    from suite.backends.export import export_onnx
    from suite.graph.from_onnx import from_onnx
    from suite.models.load import LoadedModel

    shape = (3, 11, 10)  # rows hit the disagreement, columns do not
    module = _CeilPoolNet(pool).eval()
    onnx_bytes = export_onnx(module, shape)
    inferred = onnx.shape_inference.infer_shapes(onnx.ModelProto.FromString(onnx_bytes))
    graph = from_onnx(onnx.ModelProto.FromString(onnx_bytes), "ceil")
    (node,) = [n for n in graph.nodes.values() if n.op in ("maxpool", "avgpool")]
    (onnx_rows,) = [v.type.tensor_type.shape.dim[2].dim_value for v in inferred.graph.value_info
                    if v.name == node.name]  # fmt: skip
    expected = tuple(module.pool(module.a(torch.zeros(1, *shape))).shape)
    assert onnx_rows == expected[2] + 1  # the case still triggers ONNX's count
    assert node.shape == expected
    assert graph[graph.outputs[0]].shape == (1, 2)
    backend = make_backend("onnxruntime")
    prepared = backend.prepare(LoadedModel("ceil", shape, onnx_bytes=onnx_bytes))
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    for rows, cols in [(2, 1), (3, 1), (2, 2)]:
        for layerwise in (False, True):
            report = verify(prepared, backend, x, rows, cols, layerwise)
            assert report.bit_exact and report.ir_matches_monolithic, (rows, cols, layerwise)


class _OddWidthConvs(torch.nn.Module):
    """A strided conv to `width` channels, then a conv of those: with 21, onnxruntime runs the second
    in plain layout (16 or more input channels, not a multiple of 4), by MLAS's im2col GEMM."""

    def __init__(self, width: int):
        super().__init__()
        self.a = torch.nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.b = torch.nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x))


def _odd_width(width: int):
    from suite.models.load import LoadedModel

    torch.manual_seed(0)
    backend = make_backend("onnxruntime", 1)
    module = _OddWidthConvs(width).eval()
    return backend, backend.prepare(LoadedModel(f"width{width}", (3, 32, 32), module=module))


def test_onnxruntime_runs_a_plain_layout_conv_with_a_long_sum_whole():
    """MLAS sums a plain-layout conv's 189 products an output in runs of 128 for the whole map and
    in one run for a tile's few outputs: its tiles drifted by up to 6144 ULP. The backend's graph
    marks it untiled, so the tiles end before it, the verifier saying why; a plan that tiles it
    anyway (made on another host, or from the module's graph) is refused in one line naming it."""
    backend, prepared = _odd_width(21)
    report = verify(prepared, backend, torch.randn(1, 3, 32, 32), 3, 3)
    assert report.bit_exact and report.max_ulp == 0
    assert [s["node"] for s in report.tiling_stops] == ["b"]
    assert "plain layout, summing 189 products" in report.tiling_stops[0]["reason"]
    del prepared.graph["b"].attrs["untiled"]
    refused = r"node 'b' \(a convolution summing 189 products .* --backend torch"
    with pytest.raises(BackendError, match=refused):
        verify(prepared, backend, torch.randn(1, 3, 32, 32), 3, 3)


def test_onnxruntime_tiles_of_a_plain_layout_conv_with_a_short_sum_are_exact():
    """14 input channels, 126 products an output: one run of MLAS's sum whatever the output's size
    (plain layout where the NCHWc block is 8, NCHWc where it is 16), so tiled and exact."""
    backend, prepared = _odd_width(14)
    report = verify(prepared, backend, torch.randn(1, 3, 32, 32), 3, 3)
    assert report.bit_exact and report.max_ulp == 0 and not report.tiling_stops


def test_onnxruntime_runs_a_regrouped_conv_on_one_thread_whatever_the_thread_count():
    """The whole map's sum of a plain-layout conv follows the outputs each thread gets: on a 16x16
    map 4 threads summed it otherwise than 1. The session holding it runs on one thread, so the
    reference and the device that runs the conv whole agree whatever their thread counts."""
    from suite.models.load import LoadedModel

    torch.manual_seed(0)
    module, x = _OddWidthConvs(21).eval(), torch.randn(1, 3, 32, 32)
    outputs = [make_backend("onnxruntime", threads).prepare(LoadedModel("w21", (3, 32, 32), module=module))
               .monolithic(x) for threads in (1, 4)]  # fmt: skip
    assert torch.equal(*outputs)
