"""What exactness costs: the monolithic forward on the exact `torch` backend (oneDNN and NNPACK
off) over `torch-fast` (oneDNN on), one thread, CPU time, the two sides alternating round by round
so that load from other processes falls on both alike."""

import statistics
import time

ROUNDS = 7


class ExactBackend:
    params = ["vgg16", "resnet18"]
    param_names = ["model"]
    timeout = 300

    def track_exact_over_fastest(self, model):
        import torch

        from suite.backends import make_backend
        from suite.models.load import load_model

        module = load_model(model).module
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        sides = {name: make_backend(name, threads=1) for name in ("torch", "torch-fast")}
        seconds = {name: [] for name in sides}
        for round_ in range(ROUNDS + 1):  # the first round warms both up and is not counted
            for name, backend in sides.items():
                with backend.active(), torch.inference_mode():
                    start = time.process_time()
                    module(x)
                    if round_:
                        seconds[name].append(time.process_time() - start)
        return statistics.median(seconds["torch"]) / statistics.median(seconds["torch-fast"])

    track_exact_over_fastest.unit = "exact CPU time / fastest"
