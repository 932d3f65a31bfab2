"""The core's own costs: receptive-field region math, a tiled forward, and a worker's memory."""

import dataclasses
import time

from suite.graph.cuts import spatial_front
from suite.regions import WHOLE, plan_regions, tile_boxes


class RegionMath:
    """Regions of all 8 row strips of Inception-v3 (299x299): the spatial front, each output's tile
    boxes and `plan_regions` per strip, as a scheme computes them for every candidate cut."""

    timeout = 300

    def setup(self):
        from suite.graph import from_model
        from suite.models.load import load_model

        self.graph = from_model(load_model("inception_v3", weights=False))

    def time_inception_v3_8_strips(self):
        graph = self.graph
        front = spatial_front(graph)
        outputs = graph.boundary(front)
        boxes = {o: tile_boxes(graph[o], 8) for o in outputs}
        for i in range(8):
            plan_regions(graph, front, {o: boxes[o][i] for o in outputs})


class TiledForward:
    """ResNet-18 (224x224) front in 4 fused row strips on the exact backend, one thread, each tile
    dropped after its last reader as a worker runs it; CPU time, so other jobs count less."""

    timer = time.process_time
    timeout = 300

    def setup(self):
        import torch

        from suite.backends import make_backend
        from suite.models.load import load_model

        self.backend = dataclasses.replace(make_backend("torch", threads=1), observes_all_nodes=False)
        graph = self.backend.prepare(load_model("resnet18")).graph
        self.graph, self.front = graph, spatial_front(graph)
        self.outputs = graph.boundary(self.front)
        boxes = {o: tile_boxes(graph[o], 4) for o in self.outputs}
        self.regions = [plan_regions(graph, self.front, {o: boxes[o][i] for o in self.outputs})
                        for i in range(4)]  # fmt: skip
        self.x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def time_resnet18_4_strips(self):
        from suite.backends import run_segment

        with self.backend.active():
            for regions in self.regions:
                run_segment(self.graph, self.front, {self.graph.input: (WHOLE, self.x)}, self.backend,
                            regions, self.outputs)  # fmt: skip


class WorkerMemory:
    """Peak memory of a worker process once it has built its share of a plan (VGG-16 224x224 on 4
    local devices): the interpreter, torch, and the weights and graph it keeps, built by the
    worker's own code. The party measured is the one that keeps the most weights."""

    params = ["single", "modnn", "deepthings", "halp", "pico", "ofl"]
    param_names = ["scheme"]
    timeout = 300
    devices = 4

    def setup_cache(self):
        from suite.fleet import uniform_fleet
        from suite.graph import from_model
        from suite.models.load import load_model
        from suite.runtime.engine import compile_program, parties, prune_weights
        from suite.runtime.worker import WorkerConfig
        from suite.schemes import make_plan

        graph = from_model(load_model("vgg16", weights=False))
        configs = {}
        for scheme in self.params:
            plan = make_plan(scheme, graph, uniform_fleet(self.devices))
            names = parties(plan)
            kept = {p: sum(n.param_bytes for n in prune_weights(graph, compile_program(plan, graph, p))
                           .nodes.values()) for p in names[1:]}  # fmt: skip
            config = WorkerConfig(plan.to_dict(), {p: r for r, p in enumerate(names)}, "torch", 1, 60.0, {})
            configs[scheme] = (config, max(kept, key=kept.get))
        return configs

    setup_cache.timeout = 300

    def peakmem_worker(self, configs, scheme):
        import argparse

        from suite.runtime.worker import _build

        config, party = configs[scheme]
        args = argparse.Namespace(rank=config.ranks[party], model="vgg16", input_size="3x224x224", seed=0,
                                  model_file=None)  # fmt: skip
        _build(config, args, bytes(32))  # the key of the messages it would authenticate
