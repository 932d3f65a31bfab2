"""Tests for the model zoo: architecture fidelity, traceability and seeded weights."""

from functools import cache

import pytest
import torch
from torch import fx, nn

from suite.graph import from_torch
from suite.models import ZOO, build_zoo_model

# torchvision's published parameter counts (inception_v3 and googlenet without aux heads).
TORCHVISION_PARAMS = {
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "inception_v3": 23_834_568,
    "googlenet": 6_624_904,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "efficientnet_b0": 5_288_548,
    "shufflenet_v2_x1_0": 2_278_604,
}
# Darknet's yolov2.weights holds 50,983,561 floats (203,934,260 bytes less a 16-byte header): the
# parameters plus each batch norm's running mean and variance.
DARKNET_FLOATS = {"yolov2": 50_983_561}
OUTPUT_SHAPES = {"yolov2": (1, 425, 14, 14), "yolov2_16": (1, 256, 38, 38)}
NAMES = sorted(ZOO)


@cache
def model(name: str) -> nn.Module:
    """Seed-0 model, built once per test session because VGG-16 alone takes seconds."""
    return build_zoo_model(name)


def sample_input(name: str) -> torch.Tensor:
    return torch.randn(1, *ZOO[name].input_size, generator=torch.Generator().manual_seed(0))


def test_zoo_covers_published_models() -> None:
    assert set(ZOO) == set(TORCHVISION_PARAMS) | set(OUTPUT_SHAPES)
    assert all(entry.name == key for key, entry in ZOO.items())


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(name: str) -> None:
    assert sum(p.numel() for p in model(name).parameters()) == TORCHVISION_PARAMS[name]


def test_yolov2_matches_darknet_weights_file() -> None:
    m = model("yolov2")
    stats = sum(2 * bn.num_features for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))
    assert sum(p.numel() for p in m.parameters()) + stats == DARKNET_FLOATS["yolov2"]


def test_yolov2_16_is_darknets_first_16_layers() -> None:
    kinds = [type(m) for m in model("yolov2_16").modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
    assert kinds.count(nn.Conv2d) == 12 and kinds.count(nn.MaxPool2d) == 4
    first = [m for m in model("yolov2").modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))][:16]
    assert [repr(m) for m in first] == [repr(m) for m in model("yolov2_16").modules()
                                        if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_ready_for_inference(name: str) -> None:
    m = model(name)
    assert not any(mod.training for mod in m.modules())
    assert not any(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_activations_healthy(name: str) -> None:
    with torch.no_grad():
        out = model(name)(sample_input(name))
    assert out.shape == OUTPUT_SHAPES.get(name, (1, 1000))
    assert torch.isfinite(out).all()
    assert out.std() > 0


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_trace_is_exact_and_graph_friendly(name: str) -> None:
    m = model(name)
    traced = fx.symbolic_trace(m)
    x = sample_input(name)
    with torch.no_grad():
        assert torch.equal(traced(x), m(x))
    # In-place ops would confuse the graph analyses built on these traces.
    # (fx records `a += b` as operator.add, so that case can only be ruled out by review.)
    for node in traced.graph.nodes:
        if node.op in ("call_function", "call_method"):
            op_name = getattr(node.target, "__name__", str(node.target))
            assert not op_name.endswith("_"), node.format_node()
            assert not node.kwargs.get("inplace", False), node.format_node()
    assert not any(getattr(mod, "inplace", False) for mod in m.modules())


@pytest.mark.parametrize("name", NAMES)
def test_every_node_imports_as_an_op_the_ir_knows(name: str) -> None:
    """Reshapes, channel shuffles, the reorg and squeeze-and-excite import as IR kinds; only a few
    tails (ShuffleNet's `mean`) stay opaque."""
    graph = from_torch(model(name), ZOO[name].input_size, name)
    opaque = [n.name for n in graph.nodes.values() if n.op == "opaque"]
    assert opaque == (["mean"] if name == "shufflenet_v2_x1_0" else [])


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_deterministic_in_the_seed(name: str) -> None:
    reference = model(name).state_dict()
    same = build_zoo_model(name, seed=0).state_dict()
    other = build_zoo_model(name, seed=1).state_dict()
    assert reference.keys() == same.keys() == other.keys()
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert not all(torch.equal(reference[k], other[k]) for k in reference)


def test_build_leaves_global_rng_untouched() -> None:
    before = torch.get_rng_state()
    build_zoo_model("resnet18", seed=123)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["resnet18", "inception_v3", "googlenet"])
def test_batchnorm_is_not_the_identity(name: str) -> None:
    bns = [m for m in model(name).modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    for bn in bns:
        assert bn.running_var is not None and bn.running_mean is not None
        assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.equal(bn.weight, torch.ones_like(bn.weight))


def test_unknown_name_lists_choices() -> None:
    expected = (
        "unknown model 'xyz'; choose one of: "
        "efficientnet_b0, googlenet, inception_v3, mobilenet_v2, mobilenet_v3_large, resnet18, "
        "resnet34, resnet50, shufflenet_v2_x1_0, vgg16, yolov2, yolov2_16"
    )
    with pytest.raises(ValueError) as excinfo:
        build_zoo_model("xyz")
    assert str(excinfo.value) == expected


def test_googlenet_pools_round_up() -> None:
    pools = [m for m in model("googlenet").modules() if isinstance(m, nn.MaxPool2d)]
    # maxpool1-4 plus one branch pool in each of the nine Inception blocks.
    assert len(pools) == 4 + 9
    assert all(p.ceil_mode for p in pools)


def test_inception_v3_has_factorised_kernels() -> None:
    kernels = {m.kernel_size for m in model("inception_v3").modules() if isinstance(m, nn.Conv2d)}
    assert {(1, 7), (7, 1), (1, 3), (3, 1)} <= kernels
