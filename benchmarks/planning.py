"""The cost model's side: each scheme's planning time and the redundant compute of its plan, for
the PICO paper's models on its heterogeneous cluster of 8 Raspberry Pi 4B (`pico-hetero`)."""

import statistics
import time

from suite.fleet import load_fleet
from suite.graph import from_model
from suite.models.load import load_model
from suite.schemes import SCHEMES, make_plan

MODELS = ["vgg16", "resnet34", "inception_v3"]
FLEET = "pico-hetero"
ROUNDS = 3


class Planning:
    params = [SCHEMES, MODELS]
    param_names = ["scheme", "model"]

    def setup_cache(self):
        """Per (scheme, model): the median CPU seconds of planning over a few rounds, and the
        plan's redundancy (extra FLOPs of overlapping tiles over the model's own)."""
        fleet = load_fleet(FLEET)
        measured = {}
        for model in MODELS:
            graph = from_model(load_model(model, weights=False))
            for scheme in SCHEMES:
                seconds = []
                for _ in range(ROUNDS):
                    start = time.process_time()
                    plan = make_plan(scheme, graph, fleet)
                    seconds.append(time.process_time() - start)
                measured[scheme, model] = {
                    "cpu_s": statistics.median(seconds),
                    "redundancy": plan.predicted.redundancy,
                }
        return measured

    setup_cache.timeout = 900

    def track_planning_cpu_seconds(self, measured, scheme, model):
        """CPU seconds to plan (the process's, so other jobs on the machine count less)."""
        return measured[scheme, model]["cpu_s"]

    track_planning_cpu_seconds.unit = "CPU seconds"

    def track_redundancy(self, measured, scheme, model):
        return measured[scheme, model]["redundancy"]

    track_redundancy.unit = "extra FLOPs / model FLOPs"
