"""A nightly matrix and its baseline, as loaded (`suite.tracking.nightly` reads the YAML; the report
draws them)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from suite.tracking.measure import Workload


@dataclass(frozen=True)
class Matrix:
    name: str
    description: str
    fleet: str  # what `lab up` and `load_fleet` take: a bundled name or a YAML path
    fleet_name: str
    devices: tuple[int, ...]
    schemes: tuple[str, ...]
    workloads: tuple[Workload, ...]
    path: Path

    @property
    def digest(self) -> str:
        """What the matrix runs (not its description), so a baseline knows the matrix it belongs to."""
        what = [self.fleet_name, self.devices, self.schemes,
                [(w.model, w.input_size, w.frames, w.warmup) for w in self.workloads]]  # fmt: skip
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    @property
    def cells(self) -> list[tuple[str, int, str]]:
        return [(w.model, n, s) for w in self.workloads for n in self.devices for s in self.schemes]


@dataclass(frozen=True)
class Baseline:
    matrix: str
    matrix_digest: str
    tolerance: dict[str, float]
    noise: dict[str, float]
    cells: pd.DataFrame  # nightly.KEYS + nightly.METRICS
    path: Path
