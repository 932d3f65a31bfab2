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
    so no command a test starts examines them and prints its lines; the user's cache is not touched.
    This host is priced by the bundled `local` profiles, not its own measured one, so the plans the
    tests check do not depend on the host they run on (`suite.profile.host_profile`)."""
    saved = {name: os.environ.get(name) for name in ("XDG_CACHE_HOME", "SUITE_HOST_PROFILE")}
    os.environ["XDG_CACHE_HOME"] = str(CACHE)
    os.environ["SUITE_HOST_PROFILE"] = "bundled"
    from suite import doctor

    doctor.cached(doctor.EXACT_BACKENDS)
    yield
    for name, value in saved.items():
        if value is None:
            del os.environ[name]
        else:
            os.environ[name] = value
