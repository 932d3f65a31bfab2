"""Session-wide test settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "tests"


@pytest.fixture(autouse=True, scope="session")
def _doctor_cache():
    """`suite doctor`'s verdicts for this host live in the checkout's `.cache/tests` (the commands the
    tests start inherit it), examined once at the start when the cache lacks them (about a minute),
    so no command a test starts examines them and prints its lines; the user's cache is not touched."""
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(CACHE)
    from suite import doctor

    doctor.cached(doctor.EXACT_BACKENDS)
    yield
    if saved is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = saved
