"""A run's setup, made one way for `suite run`, the nightly lab's matrix and the runtime benchmarks.

`set_up_run` makes the backend, prepares the model on it and loads the frames; the caller plans on
`RunSetup.model` in between (a plan needs the graph, and the fleet it is priced for comes with it),
then `RunSetup.coordinator` computes each frame's reference and gives the coordinator of its runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from suite.backends import Backend, Prepared, make_backend
from suite.datasets import Frame, load_frames
from suite.graph import Graph
from suite.runtime.coordinator import Coordinator
from suite.runtime.lowering import model_graph
from suite.runtime.measurement import RunOptions

if TYPE_CHECKING:
    from suite.fleet import Fleet
    from suite.models.load import LoadedModel


@dataclass(frozen=True)
class RunSetup:
    """A model prepared on a backend, and the frames its runs feed it: what every run of it shares."""

    loaded: LoadedModel
    backend: Backend
    prepared: Prepared
    model: Graph  # the graph plans name: `prepared.graph`, or the model graph it was folded from
    frames: tuple[Frame, ...]

    def coordinator(self, fleet: Fleet, options: RunOptions) -> Coordinator:
        """The coordinator of runs on `fleet`, checking every frame against the monolithic model's
        output on this backend (computed now, once per frame)."""
        with self.backend.active():
            references = {f.name: self.prepared.monolithic(f.tensor) for f in self.frames}
        return Coordinator(self.prepared.graph, self.backend, fleet, list(self.frames), references, options,
                           self.model)  # fmt: skip


def set_up_run(loaded: LoadedModel, backend: str, threads: int | None = 1,
               images: str | Path | None = None) -> RunSetup:  # fmt: skip
    """`loaded` prepared on a new `backend` running `threads` threads, with every image of `images`
    (the bundled samples by default) as a frame of its input size."""
    made = make_backend(backend, threads)
    prepared = made.prepare(loaded)
    frames = tuple(load_frames(loaded.input_shape, images))
    return RunSetup(loaded, made, prepared, model_graph(loaded, prepared.graph), frames)
