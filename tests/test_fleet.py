"""Fleet and profile loading, the cost arithmetic, one-line errors, and a quick on-host measurement."""

import math

import numpy as np
import pytest
import torch
import yaml

from suite.cost import OpWork, node_time, node_work
from suite.fleet import (
    Device,
    Fleet,
    FleetError,
    Link,
    OpCost,
    Profile,
    bundled_fleets,
    bundled_profiles,
    load_fleet,
    load_profile,
    local_profile,
    local_profile_name,
    uniform_fleet,
)
from suite.graph.ir import COST_KINDS, GEMM_CONVS
from suite.profile import measure_profile, write_profile

PAPER_PROFILES = {"rpi4b-600mhz", "rpi4b-800mhz", "rpi4b-1200mhz", "rpi4b-1500mhz", "jetson-agx-xavier",
                  "gtx1080ti"}  # fmt: skip
FLEETS = {f"pico-homo-{n}" for n in range(2, 9)} | {"pico-hetero", "halp-gpu", "halp-pi", "local"}


DEVICE = {"name": "pi", "kind": "rpi4b", "profile": "rpi4b-1500mhz", "cores": 1, "freq_ghz": 1.5,
          "memory_gib": 4}  # fmt: skip


def _device(**overrides) -> dict:
    return DEVICE | overrides


def _fleet(**overrides) -> dict:
    base = {
        "schema_version": 1,
        "name": "t",
        "source": "test",
        "link": {"bandwidth_mbps": 50, "latency_ms": 2, "shared": True},
        "devices": [_device(count=2)],
    }
    return base | overrides


def _error(tmp_path, data, loader=load_fleet) -> str:
    path = tmp_path / "x.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    with pytest.raises(FleetError) as info:
        loader(str(path))
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_every_bundled_profile_loads_with_a_source():
    assert PAPER_PROFILES | {"local"} <= set(bundled_profiles())
    for name in bundled_profiles():
        p = load_profile(name)
        assert p.name == name and p.macs_per_s > 0 and "default" in p.ops
        assert p.ops["conv"].alpha == 1
        assert p.source.strip()
        # convs by class, each with its reasoning: depthwise ones are where mobile nets spend their time
        assert {"depthwise_conv", "grouped_conv"} <= set(p.ops), name
        assert name.startswith("local") or "depthwise_conv" in p.source, name
    assert load_profile("local").source.startswith("measured: ")


def test_a_host_profile_is_named_for_its_backend_and_a_run_falls_back_to_the_torch_one():
    """`suite profile` writes `local` on torch and `local-<backend>` on another; a run on a backend
    with no bundled profile of the developers' host prices it by `local`."""
    assert [local_profile_name(b) for b in ("torch", "onnxruntime")] == ["local", "local-onnxruntime"]
    assert local_profile("onnxruntime") == "local-onnxruntime" in bundled_profiles()
    assert "local-torch-fast" not in bundled_profiles() and local_profile("torch-fast") == "local"


def test_pi_profiles_scale_with_the_clock():
    base = load_profile("rpi4b-1500mhz").macs_per_s
    for mhz in (600, 800, 1200):
        assert load_profile(f"rpi4b-{mhz}mhz").macs_per_s == pytest.approx(base * mhz / 1500, rel=1e-3)


def test_every_bundled_fleet_loads():
    assert FLEETS <= set(bundled_fleets())
    for name in bundled_fleets():
        fleet = load_fleet(name)
        assert fleet.name == name and fleet.devices and fleet.source.strip()
        assert len({d.name for d in fleet.devices}) == len(fleet.devices)


def test_paper_fleets_match_their_testbeds():
    for n in range(2, 9):
        fleet = load_fleet(f"pico-homo-{n}")
        assert [d.name for d in fleet.devices] == [f"pi{i}" for i in range(n)]
        assert {d.profile.name for d in fleet.devices} == {"rpi4b-1500mhz"}
        assert fleet.link.bandwidth_bps == 50e6 and fleet.link.shared
    hetero = load_fleet("pico-hetero")
    assert sorted(d.freq_ghz for d in hetero.devices) == [0.6] * 4 + [0.8] * 2 + [1.2] * 2
    gpu = load_fleet("halp-gpu")
    assert gpu.devices[0].kind == "gtx1080ti" and gpu.fastest() is gpu.devices[0]
    assert {d.kind for d in gpu.devices[1:]} == {"jetson-agx-xavier"}
    assert len(load_fleet("halp-pi").devices) == 3
    assert gpu.device("xavier1").memory_bytes == 32 * 2**30


def test_uniform_fleet():
    fleet = uniform_fleet(3)
    assert fleet.name == "3xlocal"
    assert [d.name for d in fleet.devices] == ["dev0", "dev1", "dev2"]
    assert fleet.link.bandwidth_bps == 1e9 and not fleet.link.shared
    assert all(d.profile == load_profile("local") for d in fleet.devices)
    assert uniform_fleet(1, "rpi4b-600mhz").devices[0].capability == load_profile("rpi4b-600mhz").macs_per_s
    with pytest.raises(FleetError, match="between 1 and 64"):
        uniform_fleet(0)


def test_prices_per_unit_and_per_call():
    p = Profile("hand", "test", 1e9, {"conv": OpCost(1.0, 1e-3), "relu": OpCost(4.0, 0.0),
                                      "default": OpCost(2.0, 5e-6)})  # fmt: skip
    per_unit, per_call = p.prices
    at = {kind: i for i, kind in enumerate(COST_KINDS)}
    assert (per_unit[at["conv"]], per_call[at["conv"]]) == pytest.approx((1e-9, 1e-3))
    assert (per_unit[at["relu"]], per_call[at["relu"]]) == pytest.approx((4e-9, 0.0))
    assert (per_unit[at["mul"]], per_call[at["mul"]]) == pytest.approx((2e-9, 5e-6))  # falls back to default
    assert per_unit[at["pointwise_conv"]] == pytest.approx(1e-9)  # a 1x1 conv is a conv here
    with pytest.raises(FleetError, match="'bare' has no cost for op 'adaptive_avgpool'"):
        Profile("bare", "test", 1e9, {"conv": OpCost(1, 0)}).prices  # noqa: B018


def test_transfer_time_and_fleet_queries():
    link = Link(bandwidth_bps=8e6, latency_s=0.01, shared=True)
    assert link.transfer_time(1e6) == pytest.approx(1.01)
    slow = Profile("slow", "test", 1e9, {"default": OpCost(1, 0)})
    fast = Profile("fast", "test", 4e9, {"default": OpCost(1, 0)})
    fleet = Fleet("f", (Device("a", "k", slow, 1, 1.0, 1), Device("b", "k", fast, 1, 1.0, 1),
                        Device("c", "k", fast, 1, 1.0, 1)), link, "test")  # fmt: skip
    assert fleet.fastest().name == "b"
    assert fleet.device("c").capability == 4e9
    with pytest.raises(FleetError, match=r"fleet 'f' has no device 'z'; its devices: a, b, c"):
        fleet.device("z")


def test_missing_field(tmp_path):
    data = _fleet()
    del data["source"]
    assert "source: Field required" in _error(tmp_path, data)


def test_wrong_type_names_the_field_path(tmp_path):
    data = _fleet(devices=[_device(name="a"), _device(name="b"), _device(name="c", freq_ghz="fast")])
    msg = _error(tmp_path, data)
    assert "devices.2.freq_ghz: Input should be a valid number" in msg and "'fast'" in msg


def test_unknown_profile_names_the_device(tmp_path):
    msg = _error(tmp_path, _fleet(devices=[_device(name="edge", profile="nope")]))
    assert "devices.0.profile: unknown profile 'nope' for device 'edge'" in msg and "rpi4b-1500mhz" in msg


def test_wrong_schema_version(tmp_path):
    msg = _error(tmp_path, _fleet(schema_version=2))
    assert "schema_version: Input should be 1" in msg and "got 2" in msg


def test_duplicate_names(tmp_path):
    twice = _fleet(devices=[_device(name="a"), _device(name="a")])
    assert "duplicate device name 'a'" in _error(tmp_path, twice)
    clash = _fleet(devices=[_device(name="pi", count=2), _device(name="pi1")])
    assert "duplicate device name 'pi1'" in _error(tmp_path, clash)


def test_empty_devices_and_bad_bandwidth(tmp_path):
    assert "devices: List should have at least 1 item" in _error(tmp_path, _fleet(devices=[]))
    link = {"bandwidth_mbps": 0, "latency_ms": 2, "shared": True}
    assert "link.bandwidth_mbps: Input should be greater than 0" in _error(tmp_path, _fleet(link=link))


def test_extra_field_and_bad_yaml(tmp_path):
    msg = _error(tmp_path, _fleet(devices=[_device(speed=3)]))
    assert "devices.0.speed: Extra inputs are not permitted" in msg and "allowed here: name, count" in msg
    assert "not valid YAML" in _error(tmp_path, "devices: [a, b\nname: x\n")
    assert "expected a mapping" in _error(tmp_path, "- just\n- a list\n")


def test_profile_errors(tmp_path):
    good = {"schema_version": 1, "name": "p", "source": "test", "macs_per_s": 1e9,
            "ops": {"conv": {"alpha": 1, "overhead_s": 0}}}  # fmt: skip
    assert "ops.default: missing" in _error(tmp_path, good, load_profile)
    bad = good | {"ops": {"default": {"alpha": -1, "overhead_s": 0}}}
    msg = _error(tmp_path, bad, load_profile)
    assert "ops.default.alpha: Input should be greater than or equal to 0" in msg


def test_unknown_bundled_names():
    with pytest.raises(FleetError) as info:
        load_fleet("pico-homo-99")
    assert "unknown fleet 'pico-homo-99'" in str(info.value) and "pico-homo-8" in str(info.value)
    with pytest.raises(FleetError, match="unknown profile 'rpi5'.*gtx1080ti"):
        load_profile("rpi5")
    with pytest.raises(FleetError, match="does not exist"):
        load_fleet("no/such/fleet.yaml")


def test_measure_profile_quick(tmp_path):
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    p = measure_profile("quick", quick=True)
    assert (torch.get_num_threads(), torch.backends.mkldnn.enabled) == (threads, mkldnn)
    assert p.macs_per_s > 0 and math.isfinite(p.macs_per_s)
    assert p.ops["conv"].alpha == pytest.approx(1.0)
    assert {"conv", "pointwise_conv", "depthwise_conv", "strided_depthwise_conv", "grouped_conv", "conv_copy",
            "gemm_call", "maxpool", "avgpool", "batchnorm", "relu", "clamp", "add", "concat", "scale",
            "identity",
            "linear", "adaptive_avgpool", "default"} <= set(p.ops)  # fmt: skip
    for cost in p.ops.values():
        assert math.isfinite(cost.alpha) and cost.alpha >= 0
        assert math.isfinite(cost.overhead_s) and cost.overhead_s >= 0
    assert p.source.startswith("measured: ")
    write_profile(p, tmp_path / "quick.yaml")
    loaded = load_profile(str(tmp_path / "quick.yaml"))
    assert loaded.macs_per_s == pytest.approx(p.macs_per_s, rel=1e-3)
    assert loaded.ops["relu"].alpha == pytest.approx(p.ops["relu"].alpha, rel=1e-3, abs=1e-9)


def test_uniform_fleet_name_loads_back():
    fleet = load_fleet(uniform_fleet(3).name)
    assert fleet.name == "3xlocal" and len(fleet.devices) == 3


def test_this_host_is_priced_by_its_own_profile_measured_once(tmp_path, monkeypatch):
    """The first prediction for this host's devices measures its profile on the backend (quick here),
    later ones read it from the per-host cache, --reprofile measures again; a fleet of other devices
    needs none."""
    from suite import profile

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SUITE_HOST_PROFILE")
    measured = []

    def quick(name, backend):
        measured.append(backend)
        return measure_profile(name, quick=True, backend=backend)

    monkeypatch.setattr(profile, "measure_profile", quick)
    said = []
    fleet = profile.priced_here(uniform_fleet(2), "torch", say=said.append)
    host = fleet.devices[0].profile
    assert measured == ["torch"] and "measuring this host on torch" in said[0]
    assert host.source.startswith("measured: ") and host != load_profile("local")
    assert all(d.profile is host for d in fleet.devices)
    [cached] = (tmp_path / "suite").glob("profile-torch-*.yaml")
    again = profile.priced_here(uniform_fleet(3), "torch", say=said.append)
    assert measured == ["torch"] and len(said) == 2  # from the cache, silently
    assert again.devices[0].profile.macs_per_s == pytest.approx(host.macs_per_s, rel=1e-3)
    profile.priced_here(uniform_fleet(2), "torch", reprofile=True)
    assert measured == ["torch", "torch"]
    pis = load_fleet("pico-homo-2")
    assert profile.priced_here(pis, "onnxruntime") is pis and measured == ["torch", "torch"]
    assert cached.is_file()


def test_the_profile_fit_recovers_the_prices_it_was_timed_with():
    """Times made by a known profile on the profile's own synthetic layers come back as that
    profile: every kind's price per unit and per call, the copies and matrix products included."""
    from suite.graph import from_torch
    from suite.profile import QUICK_LINEAR_SHAPES, SIZES, _cases, _fit, _priced

    ops = {kind: OpCost(1.0 + i, 0.0 if kind in GEMM_CONVS else 1e-6 * (i % 3))
           for i, kind in enumerate(COST_KINDS)}  # fmt: skip
    ops["conv"], ops["gemm_call"] = OpCost(1.0, 0.0), OpCost(2e5, 0.0)
    known = Profile("known", "test", 5e10, ops)
    cases = _cases(SIZES[:3], QUICK_LINEAR_SHAPES)
    nodes = [list(from_torch(module, shape).nodes.values())[-1] for module, shape in cases]
    seconds = np.array([node_time(known, n) for n in nodes])
    per_unit, per_call = _fit([OpWork.of([(n, n.flops)]) for n in nodes], seconds, _priced("torch"))
    counted = {kind for n in nodes for kind, units in node_work(n).items() if units}  # concat: no MACs
    for kind in counted:
        i = COST_KINDS.index(kind)
        assert per_unit[i] == pytest.approx(known.prices[0][i], rel=1e-4), kind
    for kind in {n.cost_kind for n in nodes}:
        i = COST_KINDS.index(kind)
        assert per_call[i] == pytest.approx(known.prices[1][i], rel=1e-4, abs=1e-12), kind
    assert {"conv", "pointwise_conv", "conv_copy", "gemm_call", "depthwise_conv", "relu", "clamp"} <= counted


def test_the_onnxruntime_fit_recovers_prices_from_whole_blocks():
    """Times of whole synthetic blocks (each the sum of its nodes' times, plus its session's own cost:
    a call and the values it lays out) made by a known profile come back as that profile: the
    session's costs are fitted apart and left out, the kinds a session fuses into its convs stay free."""
    from suite.graph import from_torch
    from suite.profile import (
        FUSED_ON_ORT,
        QUICK_LINEAR_SHAPES,
        QUICK_SIZES,
        _blocks,
        _fit,
        _priced,
        _session_work,
    )

    free = {*FUSED_ON_ORT, "batchnorm", "conv_copy", "gemm_call"}  # batch norm: folded on onnxruntime
    ops = {kind: OpCost(0.0 if kind in free else 1.0 + i, 0.0) for i, kind in enumerate(COST_KINDS)}
    ops["conv"] = OpCost(1.0, 0.0)
    known = Profile("known", "test", 5e10, ops)
    rows, sessions, seconds = [], [], []
    for module, shape in _blocks(QUICK_SIZES, QUICK_LINEAR_SHAPES):
        graph = from_torch(module, shape)
        nodes = [n for name, n in graph.nodes.items() if name != graph.input]
        rows.append(OpWork.of((n, n.flops) for n in nodes))
        sessions.append(_session_work(nodes, shape))
        seconds.append(sum(node_time(known, n) for n in nodes) + sessions[-1] @ [30e-6, 2e-10])
    priced = _priced("onnxruntime")
    priced[COST_KINDS.index("batchnorm")] = False
    per_unit, per_call = _fit(rows, np.array(seconds), priced, np.array(sessions))
    assert not per_call.any()
    for kind in {kind for row in rows for kind in np.array(COST_KINDS)[row.units != 0]}:
        i = COST_KINDS.index(kind)
        assert per_unit[i] == pytest.approx(known.prices[0][i], rel=1e-4, abs=1e-15), kind
